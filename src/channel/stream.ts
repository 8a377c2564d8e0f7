/**
 * ShmStream: a stream.Duplex between two processes over shared memory: the pipe / FIFO analogue.
 *
 * Two single-producer / single-consumer channels carry the two directions: `<name>.0` from the
 * creator to the connector and `<name>.1` back. Writes wait while the ring is full (backpressure
 * reaches the writer's write() callback), reads pull only when the readable side asks, end() closes
 * the outgoing channel (the peer reads EOF after the queued bytes), and the death of the other
 * process surfaces as an ERR_SHMKIT_PEER_GONE error (through its liveness, not a timeout) instead of
 * a stream that waits forever.
 */
import { Duplex, type DuplexOptions } from 'node:stream';
import { ErrorCodes, ShmkitError } from '../errors';
import { checkName, derivedName, MAX_BASE_NAME_LENGTH } from '../naming';
import type { OpenOptions } from '../segment';
import { describe } from '../validate';
import { checkInt, checkObject } from '../validate';
import { Channel } from './channel';

export interface ShmStreamOptions extends OpenOptions {
  /** Bytes of each direction's ring (power of two). Default 1 MiB. */
  capacity?: number;
  /** Permission bits of the two segments. Default 0o600. */
  mode?: number;
  /** Options passed to stream.Duplex (highWaterMark, allowHalfOpen...). */
  duplex?: DuplexOptions;
}

/** Checks Duplex options by building a throwaway Duplex: before any segment exists. */
function checkDuplex(v: unknown): DuplexOptions | undefined {
  if (v === undefined) return undefined;
  const d = checkObject('options.duplex', v) as DuplexOptions;
  try {
    new Duplex(d).destroy();
  } catch (err) {
    throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `options.duplex: ${err instanceof Error ? err.message : describe(err)}`, { argument: 'options.duplex', cause: err });
  }
  return d;
}

/** The names of the stream's two channels: `<name>.0` (creator to connector) and `<name>.1`. */
function names(name: string): [string, string] {
  checkName(name, 'name', MAX_BASE_NAME_LENGTH);
  return [derivedName(name, '0'), derivedName(name, '1')];
}

export class ShmStream extends Duplex {
  readonly name: string;
  private readonly out: Channel<Uint8Array>;
  private readonly in: Channel<Uint8Array>;

  /** Like socket.unref(): a pending read or write no longer keeps the process alive. Returns this. */
  unref(): this {
    this.out.unref();
    this.in.unref();
    return this;
  }

  /** Undoes unref(). Returns this. */
  ref(): this {
    this.out.ref();
    this.in.ref();
    return this;
  }

  /** Whether a pending read or write keeps the process alive. */
  hasRef(): boolean {
    return this.out.hasRef();
  }
  private readonly owner: boolean;
  private reading = false;

  /** Set for a stream over channels someone else owns (a Connection): called instead of closing them. */
  private readonly onDestroy: (() => void) | null;

  private constructor(name: string, out: Channel<Uint8Array>, inbound: Channel<Uint8Array>, owner: boolean, duplex: DuplexOptions | undefined, onDestroy: (() => void) | null = null) {
    super(duplex);
    this.name = name;
    this.out = out;
    this.in = inbound;
    this.owner = owner;
    this.onDestroy = onDestroy;
    // Take both roles at once: the peer can tell if this end dies even before any byte moves.
    try {
      out.claim('producer');
      inbound.claim('consumer');
    } catch (err) {
      out.close();
      inbound.close();
      throw err;
    }
  }

  /** Creates the stream's two channels and returns the creator's end. */
  static create(name: string, options?: ShmStreamOptions): ShmStream {
    const [a, b] = names(name);
    const o = checkObject('options', options);
    const capacity = o.capacity === undefined ? 1 << 20 : checkInt('options.capacity', o.capacity, 1024, 2 ** 30);
    const duplex = checkDuplex(o.duplex);
    const common = { capacity, producers: 'single' as const, consumers: 'single' as const, ...(o.mode === undefined ? {} : { mode: o.mode as number }) };
    const out = Channel.create<Uint8Array>(a, common);
    let inbound: Channel<Uint8Array> | undefined;
    try {
      inbound = Channel.create<Uint8Array>(b, common);
      return new ShmStream(name, out, inbound, true, duplex);
    } catch (err) {
      // Nothing of a stream that failed to build stays in /dev/shm.
      out.close();
      inbound?.close();
      Channel.unlink(a);
      if (inbound) Channel.unlink(b);
      throw err;
    }
  }

  /** Connects to a stream created by another process and returns the other end. */
  static connect(name: string, options?: Pick<ShmStreamOptions, 'duplex' | 'trustedOwners'>): ShmStream {
    const [a, b] = names(name);
    const o = checkObject('options', options);
    const duplex = checkDuplex(o.duplex);
    const open = o.trustedOwners === undefined ? {} : { trustedOwners: o.trustedOwners as OpenOptions['trustedOwners'] };
    const inbound = Channel.open<Uint8Array>(a, open);
    let out: Channel<Uint8Array>;
    try {
      out = Channel.open<Uint8Array>(b, open);
    } catch (err) {
      inbound.close();
      throw err;
    }
    return new ShmStream(name, out, inbound, false, duplex);
  }

  /**
   * @internal A stream over two channels that `onDestroy` owns (a Connection's): destroying the
   * stream calls it instead of closing them.
   */
  static over(label: string, out: Channel<Uint8Array>, inbound: Channel<Uint8Array>, duplex: DuplexOptions | undefined, onDestroy: () => void): ShmStream {
    return new ShmStream(label, out, inbound, false, checkDuplex(duplex), onDestroy);
  }

  /** Removes the stream's names (connected ends keep working). True if either existed. */
  static unlink(name: string): boolean {
    let any = false;
    for (const n of names(name)) any = Channel.unlink(n) || any;
    return any;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send(chunk).then(() => callback(), callback);
  }

  private async send(chunk: Buffer): Promise<void> {
    const max = this.out.maxMessageSize;
    for (let off = 0; off < chunk.length; off += max) {
      const piece = off === 0 && chunk.length <= max ? chunk : chunk.subarray(off, Math.min(chunk.length, off + max));
      if (!this.out.trySend(piece)) await this.out.send(piece, { failIfPeerGone: true });
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    try {
      this.out.end();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _read(): void {
    if (this.reading) return;
    this.reading = true;
    void this.pump();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        let chunk = this.in.tryReceive();
        if (chunk === undefined) {
          try {
            chunk = await this.in.receive({ failIfPeerGone: true });
          } catch (err) {
            if (err instanceof ShmkitError && err.code === ErrorCodes.CLOSED && this.in.ended) {
              this.push(null); // the peer ended its side, and everything was read
              return;
            }
            throw err;
          }
        }
        if (!this.push(chunk)) break;
      }
      this.reading = false;
    } catch (err) {
      this.reading = false;
      if (!this.destroyed) this.destroy(err as Error);
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    try {
      if (this.onDestroy) {
        this.onDestroy();
        callback(error);
        return;
      }
      this.out.close();
      this.in.close();
      if (this.owner) for (const n of names(this.name)) Channel.unlink(n);
      callback(error);
    } catch (err) {
      callback(err as Error);
    }
  }
}
