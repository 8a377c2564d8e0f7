/**
 * Channel memory layout. Offsets are bytes from the start of the segment's data area; see
 * docs/design.md ("Channels") for the protocol. Words written by producers and by consumers sit on
 * separate 128-byte lines, so a producer and a consumer on two cores do not share a cache line
 * except for the ring bytes they hand over.
 *
 * Parameters (segment header bytes 64..83, written once at creation, validated at every open):
 *   64 u32 capacity (power of two)   68 u32 max message size   72 u32 flags (1 multi-producer,
 *   2 multi-consumer, 4 at-least-once) 76 u32 ring offset      80 u32 peer slots
 */
import { ErrorCodes, ShmkitError } from '../errors';
import type { Segment } from '../segment';
import { maxMessageFor, MAX_CAPACITY, MIN_CAPACITY } from '../ring/format';
import type { RingPlace } from '../ring/ring';

export const CLOSED = 0; // i32: 1 once closed (the tail's CLOSED_BIT is the authoritative copy)
export const TAIL = 128; // i32: position (mod 2^32) after the last published record | flag bits
export const SENT = 136; // f64 messages sent
export const SENT_BYTES = 144; // f64 payload bytes sent
export const SEND_WAITS = 152; // f64 times a sender parked
export const PRODUCER_LOCK = 160; // Mutex (16 bytes)
export const HEAD = 256; // i32: position of the next record to consume | flag bits
export const RECEIVED = 264; // f64
export const RECEIVED_BYTES = 272; // f64
export const RECEIVE_WAITS = 280; // f64
export const CONSUMER_LOCK = 288; // Mutex (16 bytes)
export const READ = 304; // i32, at-least-once channels: position of the next record to hand out (HEAD..READ are in flight)
export const PRODUCER_BELLS = 384; // BELL_SLOTS (16) x u32: doorbells of senders waiting for space
export const CONSUMER_BELLS = 512; // BELL_SLOTS (16) x u32: doorbells of receivers waiting for messages
export const PEERS = 640; // PEER_SLOTS x 16 bytes: i64 token, i32 roles, i32 reserved
export const PEER_SLOTS = 32;
export const LEASES = 1152; // at-least-once channels: LEASE_SLOTS x 16 bytes: i64 taker token, u32 position, u32 state
export const LEASE_SLOTS = 48;
export const RING = 2048;

/** Peer roles (bits of a peer slot's roles word, see peers.ts). */
export const ROLE_PRODUCER = 1;
export const ROLE_CONSUMER = 2;

export const FLAG_MULTI_PRODUCER = 1;
export const FLAG_MULTI_CONSUMER = 2;
export const FLAG_AT_LEAST_ONCE = 4;

export interface ChannelParams {
  capacity: number;
  maxMessageSize: number;
  multiProducer: boolean;
  multiConsumer: boolean;
  /** Consumers take, then ack; a message taken by a consumer that died unacked is delivered again. */
  atLeastOnce: boolean;
}

/** Where the channel's ring parts are (see ring/ring.ts). */
export function ringPlace(p: ChannelParams): RingPlace {
  return {
    tail: TAIL,
    head: HEAD,
    closed: CLOSED,
    tailBells: CONSUMER_BELLS,
    headBells: PRODUCER_BELLS,
    sent: SENT,
    sentBytes: SENT_BYTES,
    sendWaits: SEND_WAITS,
    received: RECEIVED,
    receivedBytes: RECEIVED_BYTES,
    receiveWaits: RECEIVE_WAITS,
    bytes: RING,
    capacity: p.capacity,
    maxMessageSize: p.maxMessageSize,
  };
}

export function writeParams(seg: Segment, p: ChannelParams): void {
  const dv = seg.params();
  dv.setUint32(0, p.capacity, true);
  dv.setUint32(4, p.maxMessageSize, true);
  dv.setUint32(8, (p.multiProducer ? FLAG_MULTI_PRODUCER : 0) | (p.multiConsumer ? FLAG_MULTI_CONSUMER : 0) | (p.atLeastOnce ? FLAG_AT_LEAST_ONCE : 0), true);
  dv.setUint32(12, RING, true);
  dv.setUint32(16, PEER_SLOTS, true);
}

/** Reads and checks the parameters of an opened channel: they are untrusted input. */
export function readParams(seg: Segment): ChannelParams {
  const dv = seg.params();
  const capacity = dv.getUint32(0, true);
  const maxMessageSize = dv.getUint32(4, true);
  const flags = dv.getUint32(8, true);
  const bad = (why: string): never => {
    throw new ShmkitError(ErrorCodes.CORRUPT, `open channel "${seg.name}": ${why}`, { segment: seg.name });
  };
  if (capacity < MIN_CAPACITY || capacity > MAX_CAPACITY || (capacity & (capacity - 1)) !== 0) bad(`bad capacity ${capacity}`);
  if (maxMessageSize > maxMessageFor(capacity)) bad(`max message size ${maxMessageSize} too large for capacity ${capacity}`);
  if ((flags & ~7) !== 0) bad(`bad flags ${flags}`);
  if (dv.getUint32(12, true) !== RING || dv.getUint32(16, true) !== PEER_SLOTS) bad('bad ring offset or peer table');
  if (seg.size !== RING + capacity) bad(`data area is ${seg.size} bytes, expected ${RING + capacity}`);
  return { capacity, maxMessageSize, multiProducer: (flags & 1) !== 0, multiConsumer: (flags & 2) !== 0, atLeastOnce: (flags & 4) !== 0 };
}
