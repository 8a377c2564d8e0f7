/**
 * A topic over NATS: the subject `<prefix>.topic.<name>` (or one given), core NATS publish and
 * subscribe. Messages are encoded with the same codecs as a local topic. Delivery is NATS's:
 * at most once, no history, a publisher never waits for subscribers; a subscriber that falls
 * behind by more than `maxPending` messages loses the oldest (counted in `lost`). See
 * docs/scaling-out.md for how that differs from a local topic.
 */
import type { Msg, MsgHdrs, Subscription as NatsSub } from '@nats-io/transport-node';
import { checkSignal, isAborted } from '../abort';
import { type Codec, decodeBytes, encodeBytes, resolveCodec } from '../codec/codec';
import { abortError, closedError, ErrorCodes, ShmkitError } from '../errors';
import { checkName } from '../naming';
import type { TopicHandle, TopicSubscription, TransportTopicOptions } from '../transport';
import { checkInt, checkObject, checkTimeout, describe } from '../validate';
import { nats } from './load';
import { checkFilter, checkSubject } from './names';
import { MessageQueue } from './queue';
import type { NatsTransport } from './transport';

/** The header naming the bridge a message came through (a bridge never forwards its own messages back). */
export const ORIGIN_HEADER = 'Shmkit-Origin';

export interface NatsTopicOptions<T = unknown> extends TransportTopicOptions<T> {
  /** The subject, instead of `<prefix>.topic.<name>`. */
  subject?: string;
  /** Messages a subscription holds before it drops the oldest. Default 65,536. */
  maxPending?: number;
}

/** A message as a bridge sees it: its bytes and the bridge it came through, if any. */
export interface RawMessage {
  data: Uint8Array;
  origin: string | undefined;
}

export class NatsTopic<T = unknown> implements TopicHandle<T> {
  readonly name: string;
  readonly subject: string;
  readonly codec: Codec<T>;
  private readonly transport: NatsTransport;
  private readonly maxMessageSize: number;
  private readonly maxPending: number;
  private readonly subs = new Set<NatsSubscription<unknown>>();
  private published = 0;
  private ended = false;

  /** @internal Use transport.topic(). */
  constructor(transport: NatsTransport, name: string, options: NatsTopicOptions<T> | undefined) {
    const o = checkObject('options', options) as NatsTopicOptions<T>;
    this.transport = transport;
    this.name = checkName(name);
    this.subject = o.subject === undefined ? checkSubject(`${transport.prefix}.topic.${name}`, 'name') : checkSubject(o.subject, 'options.subject');
    this.codec = resolveCodec(o.codec) as Codec<T>;
    this.maxMessageSize = o.maxMessageSize === undefined ? Infinity : checkInt('options.maxMessageSize', o.maxMessageSize, 1, 64 * 1024 * 1024);
    this.maxPending = o.maxPending === undefined ? 65_536 : checkInt('options.maxPending', o.maxPending, 1, 1 << 24);
    this.label = `topic "${name}" (NATS ${this.subject})`;
    if (o.history !== undefined && o.history !== 0) throw new ShmkitError(ErrorCodes.UNSUPPORTED, `topic "${name}": history is not kept over NATS (core subjects keep nothing); use JetStream for replay`, { argument: 'options.history' });
  }

  /** How errors name this topic. */
  readonly label: string;
  /** The origin header of the bridge publishing through this handle (made once). */
  private origin: { id: string; headers: MsgHdrs } | null = null;

  get closed(): boolean {
    return this.ended;
  }

  /**
   * Publishes `value` on the subject. Resolves with this handle's count of messages published
   * (NATS has no topic-wide sequence). While the connection is down, the NATS client keeps
   * messages in its reconnect buffer (8 MiB); beyond it publishing fails.
   */
  publish(value: T, options?: { timeout?: number; signal?: AbortSignal }): Promise<number> {
    try {
      if (options !== undefined) {
        const o = checkObject('options', options);
        if (o.timeout !== undefined) checkTimeout('options.timeout', o.timeout);
        const signal = checkSignal('options.signal', o.signal);
        if (isAborted(signal)) throw abortError(signal, `${this.label} publish`);
      }
      return Promise.resolve(this.publishBytes(encodeBytes(this.codec, value, 'message'), undefined));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** @internal Publishes encoded bytes (the bridge), naming the bridge they came through. */
  publishBytes(data: Uint8Array, origin: string | undefined): number {
    if (this.ended) throw closedError(this.label);
    this.transport.assertOpen(this.label);
    const max = Math.min(this.maxMessageSize, this.transport.maxPayload);
    if (data.byteLength > max) throw new ShmkitError(ErrorCodes.TOO_LARGE, `${this.label}: a message of ${data.byteLength} bytes is larger than ${max} bytes (${max === this.maxMessageSize ? 'maxMessageSize' : "the server's max_payload"}); nothing was published`);
    let headers: MsgHdrs | undefined;
    if (origin !== undefined) {
      if (this.origin?.id !== origin) {
        const h = nats().core.headers();
        h.set(ORIGIN_HEADER, origin);
        this.origin = { id: origin, headers: h };
      }
      headers = this.origin.headers;
    }
    try {
      this.transport.connection.publish(this.subject, data, headers === undefined ? undefined : { headers });
    } catch (err) {
      throw new ShmkitError(ErrorCodes.PEER_GONE, `${this.label}: NATS refused the message: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return ++this.published;
  }

  /** A subscription to messages published from now on ('from' other than 'now' is ERR_SHMKIT_UNSUPPORTED). */
  subscribe(options?: { from?: 'now'; subject?: string }): NatsSubscription<T> {
    const o = checkObject('options', options) as { from?: unknown; subject?: string };
    if (o.from !== undefined && o.from !== 'now') throw new ShmkitError(ErrorCodes.UNSUPPORTED, `${this.label}: from ${describe(o.from)}: NATS subjects keep no history; only 'now' is possible`, { argument: 'options.from' });
    if (this.ended) throw closedError(this.label);
    const subject = o.subject === undefined ? this.subject : checkFilter(o.subject, 'options.subject');
    const codec = this.codec;
    const label = this.label;
    const s = new NatsSubscription<T>(this.transport, subject, this.maxPending, label, (m) => decodeBytes(codec, m.data, label), () => this.subs.delete(s as NatsSubscription<unknown>));
    this.subs.add(s as NatsSubscription<unknown>);
    return s;
  }

  /** @internal A subscription that yields messages as they came (the bridge). */
  subscribeRaw(subject = this.subject): NatsSubscription<RawMessage> {
    const s = new NatsSubscription<RawMessage>(this.transport, checkFilter(subject, 'subject'), this.maxPending, this.label, (m) => m, () => this.subs.delete(s as NatsSubscription<unknown>));
    this.subs.add(s as NatsSubscription<unknown>);
    return s;
  }

  /** Closes this handle and its subscriptions. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    for (const s of [...this.subs]) s.close();
    this.transport.release(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A subscription to a NATS subject; messages wait in a bounded queue until received. */
export class NatsSubscription<T> implements TopicSubscription<T> {
  private readonly queue: MessageQueue<RawMessage>;
  private readonly sub: NatsSub;
  private ended = false;

  /** @internal */
  constructor(
    transport: NatsTransport,
    readonly subject: string,
    maxPending: number,
    private readonly label: string,
    private readonly decode: (m: RawMessage) => T,
    private readonly forget: () => void,
  ) {
    this.queue = new MessageQueue<RawMessage>(maxPending, `${label} receive`);
    this.sub = transport.connection.subscribe(subject, {
      callback: (err: Error | null, msg: Msg) => {
        if (err !== null) {
          this.queue.end(new ShmkitError(ErrorCodes.CLOSED, `${label}: the NATS subscription ended: ${err.message}`, { cause: err }));
          return;
        }
        this.queue.push({ data: msg.data, origin: msg.headers?.get(ORIGIN_HEADER) || undefined });
      },
    });
  }

  /** Messages dropped because this subscription fell more than maxPending behind. */
  get lost(): number {
    return this.queue.lost;
  }

  /** Messages received and not read yet. */
  get lag(): number {
    return this.queue.length;
  }

  get closed(): boolean {
    return this.ended;
  }

  /** The next message; ERR_SHMKIT_DECODE for one the codec refuses (it is skipped). */
  async receive(options?: { timeout?: number; signal?: AbortSignal }): Promise<T> {
    if (this.ended) throw closedError(`${this.label} subscription`);
    if (options === undefined) {
      const m = this.queue.tryShift(); // the common case: a message is there
      if (m !== undefined) return this.decode(m);
    }
    const o = checkObject('options', options);
    const timeout = o.timeout === undefined ? Infinity : checkTimeout('options.timeout', o.timeout);
    const signal = checkSignal('options.signal', o.signal);
    return this.decode(await this.queue.shift(timeout, signal));
  }

  tryReceive(): T | undefined {
    if (this.ended) return undefined;
    const m = this.queue.tryShift();
    return m === undefined ? undefined : this.decode(m);
  }

  /** Messages until the subscription is closed (or `signal` aborts: ABORT_ERR). */
  async *iterate(options?: { signal?: AbortSignal }): AsyncGenerator<T> {
    const signal = checkSignal('options.signal', checkObject('options', options).signal);
    try {
      for (;;) {
        let m: RawMessage;
        try {
          m = await this.queue.shift(Infinity, signal);
        } catch (err) {
          if (err instanceof ShmkitError && err.code === ErrorCodes.CLOSED) return;
          throw err;
        }
        yield this.decode(m);
      }
    } finally {
      this.close(); // leaving the loop ends the subscription, as it does a local one
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this.iterate();
  }

  close(): void {
    if (this.ended) return;
    this.ended = true;
    try {
      this.sub.unsubscribe();
    } catch {
      // the connection is closed already
    }
    this.queue.close();
    this.forget();
  }

  unsubscribe(): void {
    this.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
