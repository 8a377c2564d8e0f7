/**
 * The public types of channels: options, statistics, and the objects some calls return.
 */
import type { Codec, CodecName } from '../codec/codec';
import type { OpenOptions } from '../segment';

export interface ChannelOptions<T = unknown> extends OpenOptions {
  /** Ring size in bytes, rounded up to a power of two (1 KiB .. 1 GiB). Default 1 MiB. */
  capacity?: number;
  /** Largest message in bytes. Default and maximum: capacity / 2 - 8. */
  maxMessageSize?: number;
  /** 'multi' (default): any number of producers. 'single': one at a time, no per-message lock. */
  producers?: 'single' | 'multi';
  /** 'multi' (default): any number of consumers. 'single': one at a time, no per-message lock. */
  consumers?: 'single' | 'multi';
  /**
   * 'at-most-once' (default): a message is consumed when it is received; if the receiver dies
   * before it is done with it, it is lost. 'at-least-once': consumers take() a message and ack()
   * it when done; a message whose taker dies (or nacks) before acking is delivered again to
   * another consumer. Fixed at creation.
   */
  delivery?: 'at-most-once' | 'at-least-once';
  /** 'bytes' (default), 'utf8', 'json', 'structured', or a Codec object. Per handle, not stored. */
  codec?: CodecName | Codec<T>;
  /** Permission bits of the segment. Default 0o600. */
  mode?: number;
}

export interface OpenChannelOptions<T = unknown> extends OpenOptions {
  codec?: CodecName | Codec<T>;
}

export interface ChannelWaitOptions {
  /** Milliseconds; then ERR_SHMKIT_TIMEOUT. Default: forever. */
  timeout?: number;
  /** Spin budget in µs before parking (default: configure().spinMicros; 0 = park at once). */
  spin?: number;
  /**
   * Default true: a wait fails with ERR_SHMKIT_PEER_GONE, within the liveness interval, once every
   * peer of the other role is gone (died, or closed its handle) after at least one had attached: a
   * receive whose producers are all gone, a send whose consumers are all gone. Queued messages are
   * still delivered first. A wait never fails while no peer of the other role ever attached. Pass
   * false where peers come and go (a consumer that outlives one producer and waits for the next).
   */
  failIfPeerGone?: boolean;
}

export interface ChannelAsyncOptions extends ChannelWaitOptions {
  signal?: AbortSignal;
}

export interface ChannelStats {
  sent: number;
  sentBytes: number;
  received: number;
  receivedBytes: number;
  /** Times a sender had to park because the ring was full. */
  sendWaits: number;
  /** Times a receiver had to park because the ring was empty. */
  receiveWaits: number;
  /** Messages queued (sent - received). */
  depth: number;
  /** Bytes of the ring in use, record headers and padding included. */
  depthBytes: number;
  capacity: number;
  /** end() was called (by any process). */
  ended: boolean;
  /** Live peers (processes or threads) that have sent / received on this channel. */
  producers: number;
  consumers: number;
}

/**
 * A message taken from an at-least-once channel. It stays in the channel, leased to this handle,
 * until ack(); if this process dies first (or calls nack()), another consumer gets it again.
 */
export interface Delivery<T> {
  readonly value: T;
  /** True if a consumer took this message before and died (or nacked) without acknowledging it. */
  readonly redelivered: boolean;
  /** Acknowledges the message: it is done, and its space goes back to producers. Idempotent. */
  ack(): void;
  /** Gives the message back unacknowledged, for another delivery at once. */
  nack(): void;
}

/** What tryReceiveResult() found. */
export type TryReceiveResult<T> = { ok: true; value: T } | { ok: false; reason: 'empty' | 'ended' | 'busy' };

/** A zero-copy view of a received message, valid until release(). */
export interface ReceivedView {
  /** The message bytes, inside shared memory. Do not use after release(). */
  readonly bytes: Buffer;
  /** Consumes the message and gives its space back to producers. Idempotent. */
  release(): void;
}

/** A zero-copy send: fill `bytes` in place, then commit. */
export interface Loan {
  /** Writable space inside shared memory, `size` bytes long. */
  readonly bytes: Buffer;
  /** Publishes the first `length` bytes (default: all) as one message. */
  commit(length?: number): void;
  /** Gives the space back; nothing is sent. */
  abort(): void;
}

/** A process attached to a channel (Channel.peerList()). */
export interface PeerInfo {
  pid: number;
  producer: boolean;
  consumer: boolean;
  /** False once it died or detached. */
  alive: boolean;
  /** True for this handle's own slot. */
  self: boolean;
}
