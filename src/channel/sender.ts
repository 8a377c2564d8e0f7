/**
 * The producer side of a channel handle: send, sendSync, trySend and loans, over a RingProducer.
 * Multi-producer channels serialize producers with a robust Mutex held across reserve, copy and
 * publish: a producer killed in the middle never published anything, and the next producer
 * recovers the lock and writes over its unpublished bytes. A single-producer channel holds that
 * lock for the life of the handle instead (the role), and its common case, bytes that fit, takes
 * RingProducer.putFast with no lock at all.
 */
import { ErrorCodes } from '../errors';
import { isAborted } from '../abort';
import type { Encoded } from '../codec/plan';
import { bufferView } from '../codec/slab';
import { reserveLength, utf8Write } from '../codec/utf8';
import { recordEnd } from '../ring/format';
import { RingProducer } from '../ring/producer';
import { lockWithin } from '../sync/lock-within';
import type { MutexGuard } from '../sync/mutex';
import { checkInt } from '../validate';
import { Deadline } from '../wait';
import { ROLE_CONSUMER, ROLE_PRODUCER } from './layout';
import { DEFAULT_CHANNEL, notPublished, parseChannelWait, type ParsedChannelWait } from './options';
import { type ChannelParts, lockForCaller, outstanding, peerWatch, takeRole } from './parts';
import type { ChannelAsyncOptions, ChannelWaitOptions, Loan } from './types';

export class ChannelSender<T> {
  readonly cursor: RingProducer;
  /** This handle has taken the producer role (in the peer table; single-producer: the lock too). */
  claimed = false;
  /** Single-producer role held, a codec with a bytes path, no loan: send() tries putFast(). */
  private fast = false;
  /** `fast`, and the values themselves are the bytes (the bytes codec). */
  private fastValue = false;
  private guard: MutexGuard | null = null;
  private readonly multi: boolean;
  private readonly consumersGone: () => void;

  constructor(private readonly p: ChannelParts<T>) {
    this.cursor = new RingProducer(p.ring);
    this.multi = p.params.multiProducer;
    this.consumersGone = peerWatch(p, ROLE_CONSUMER);
  }

  /** Takes the producer role (single producer: ERR_SHMKIT_BUSY if a live holder has it). */
  claim(): void {
    if (this.claimed) return;
    if (!this.multi) {
      this.guard = takeRole(this.p, this.p.producerLock, 'producer', () => this.cursor.reload());
    }
    this.p.peers.addRole(ROLE_PRODUCER);
    this.claimed = true;
    this.setFast(!this.multi && this.p.plan.fastSend !== null);
  }

  private setFast(on: boolean): void {
    this.fast = on;
    this.fastValue = on && this.p.plan.fastSend === 'value';
  }

  /** The flat path for a value that is (or encodes to) bytes. False: take the general path. */
  private putFast(data: unknown): boolean {
    // isView first: it never throws (a revoked Proxy), and it rules out everything but views.
    return ArrayBuffer.isView(data) && data instanceof Uint8Array && this.cursor.putFast(data);
  }

  /**
   * The flat path is kept small enough to be inlined into Channel.sendSync: bytes that fit, with the
   * role held. Everything else (and every error) goes through sendSlow(). RingProducer.putFast
   * throws nothing but ERR_SHMKIT_CORRUPT, already marked `published: false`.
   */
  sendSync(value: T, options: ChannelWaitOptions | undefined): void {
    if (options === undefined && this.fastValue && ArrayBuffer.isView(value) && value instanceof Uint8Array && this.cursor.putFast(value)) return;
    this.sendSlow(value, options);
  }

  private sendSlow(value: T, options: ChannelWaitOptions | undefined): void {
    try {
      if (options === undefined && this.fast && this.p.plan.fastSend === 'encoded') {
        // jsonb: encoded once; putFast takes the bytes if there is room, else the general path.
        const data = this.p.plan.encode(value);
        if (!this.putFast(data)) this.sendEncoded(data, DEFAULT_CHANNEL);
        return;
      }
      const o = parseChannelWait(options, false);
      this.p.assertOpen();
      this.claim();
      this.sendEncoded(this.p.plan.encode(value), o);
    } catch (err) {
      throw notPublished(err); // a send that throws never published its message
    }
  }

  trySend(value: T): boolean {
    if (this.fastValue && ArrayBuffer.isView(value) && value instanceof Uint8Array && this.cursor.putFast(value)) return true;
    return this.trySendSlow(value);
  }

  private trySendSlow(value: T): boolean {
    try {
      if (this.fast && this.p.plan.fastSend === 'encoded') {
        const data = this.p.plan.encode(value);
        if (this.putFast(data)) return true;
        this.p.assertOpen();
        return this.attempt(data, this.byteLength(data), null);
      }
      this.p.assertOpen();
      this.claim();
      const data = this.p.plan.encode(value);
      return this.attempt(data, this.byteLength(data), null);
    } catch (err) {
      throw notPublished(err);
    }
  }

  async send(value: T, options: ChannelAsyncOptions | undefined): Promise<void> {
    try {
      await this.sendAsyncOrThrow(value, options);
    } catch (err) {
      throw notPublished(err);
    }
  }

  private async sendAsyncOrThrow(value: T, options: ChannelAsyncOptions | undefined): Promise<void> {
    const p = this.p;
    p.assertOpen();
    this.claim();
    const data = p.plan.encodeStable(value); // the bytes must survive the awaits below
    const len = this.byteLength(data);
    const o = options === undefined ? DEFAULT_CHANNEL : parseChannelWait(options, true);
    if (isAborted(o.signal)) throw p.errors.aborted(o.signal!, 'send');
    const deadline = new Deadline(o.timeout);
    if (await this.attemptAsync(data, len, o, deadline)) return;
    const ready = (): boolean => this.cursor.spaceFor(len, this.multi) || p.ring.closed;
    const spinner = (): boolean => this.cursor.spinForSpace(len, o.spin, this.multi);
    for (;;) {
      if (!(await p.ring.spaceWaits.wait(o, deadline, ready, o.failIfPeerGone ? this.consumersGone : null, 'send', spinner))) {
        throw p.errors.timeout('send', o.timeout);
      }
      if (await this.attemptAsync(data, len, o, deadline)) return;
    }
  }

  private sendEncoded(data: Encoded, o: ParsedChannelWait): void {
    const p = this.p;
    p.assertOpen();
    const len = this.byteLength(data);
    const deadline = new Deadline(o.timeout);
    if (this.attempt(data, len, deadline)) return;
    const ready = (): boolean => this.cursor.spaceFor(len, this.multi) || p.ring.closed;
    const spinner = (): boolean => this.cursor.spinForSpace(len, o.spin, this.multi);
    for (;;) {
      if (!p.ring.spaceWaits.waitSync(o, deadline, ready, o.failIfPeerGone ? this.consumersGone : null, spinner)) {
        throw p.errors.timeout('sendSync', o.timeout);
      }
      if (this.attempt(data, len, deadline)) return;
    }
  }

  /** Bytes to reserve for `data` (see reserveLength); ERR_SHMKIT_TOO_LARGE past the maximum. */
  private byteLength(data: Encoded): number {
    const max = this.p.params.maxMessageSize;
    const len = reserveLength(data, max);
    if (len > max) {
      throw this.p.errors.error(ErrorCodes.TOO_LARGE, `a ${len}-byte message exceeds the maximum of ${max} bytes; nothing was sent`);
    }
    return len;
  }

  /** One attempt to write `data`; false if the ring is full. Caller holds producer rights. */
  private put(data: Encoded, len: number): boolean {
    const r = this.p.ring;
    const pos = this.cursor.reserve(len);
    if (pos < 0) return false;
    const off = r.payloadIndex(pos);
    if (typeof data === 'string') {
      const n = utf8Write(r.bytes, data, off, len);
      if (n !== len) {
        // `len` was an upper bound (see reserveLength): the record shrinks to the bytes written.
        this.cursor.shrink(pos, n);
        len = n;
      }
    } else r.bytes.set(data, off);
    if (!this.cursor.publish(recordEnd(pos, len), len)) throw this.p.errors.closed();
    return true;
  }

  /**
   * One attempt under the multi-producer lock (or the held role). `deadline` null: do not wait
   * for the producer lock (trySend).
   */
  private attempt(data: Encoded, len: number, deadline: Deadline | null): boolean {
    const p = this.p;
    if (this.p.held.loan) throw p.errors.busy('a loan is outstanding; commit or abort it first');
    if (!this.multi) {
      if (p.ring.closed) throw p.errors.closed();
      return this.put(data, len);
    }
    if (deadline === null) {
      if (p.producerLock.tryLock() === null) return false;
    } else lockWithin(p.producerLock, deadline, p.errors.op('sendSync'), p.errors.name);
    try {
      return this.putLocked(data, len);
    } finally {
      p.producerLock.unlock();
    }
  }

  private async attemptAsync(data: Encoded, len: number, o: ParsedChannelWait, deadline: Deadline): Promise<boolean> {
    const p = this.p;
    p.assertOpen(); // after an await: close() may have run meanwhile
    if (!this.multi) return this.attempt(data, len, deadline);
    if (this.p.held.loan) throw p.errors.busy('a loan is outstanding; commit or abort it first');
    // Multi-producer: take the lock without blocking the event loop, then send (briefly) under it.
    const g = await lockForCaller(p, p.producerLock, deadline, o.signal, 'send');
    try {
      return this.putLocked(data, len);
    } finally {
      g.unlock();
    }
  }

  /** Multi-producer, holding the producer lock: refuse if closed, re-read the positions, write. */
  private putLocked(data: Encoded, len: number): boolean {
    if (this.p.ring.closed) throw this.p.errors.closed();
    this.cursor.reload();
    return this.put(data, len);
  }

  /** Whether a send of a small message would not wait now: there is room, or the channel ended (WaitSet). */
  writable(): boolean {
    return this.cursor.spaceFor(1, true) || this.p.ring.closed;
  }

  /** What every loan form checks first. */
  private loanStart(size: number): void {
    const p = this.p;
    p.assertOpen();
    checkInt('size', size, 0, p.params.maxMessageSize);
    this.claim();
    const out = outstanding(p);
    if (out !== null) throw p.errors.busy(`a ${out} is outstanding`);
  }

  /**
   * With the producer lock held (multi-producer) or the role: reserves `size` bytes and returns the
   * loan, which keeps the lock until commit or abort; or gives the lock back and returns null when
   * there is no space.
   */
  private loanLocked(size: number): Loan | null {
    const p = this.p;
    let pos: number;
    try {
      if (p.ring.closed) throw p.errors.closed();
      if (this.multi) this.cursor.reload();
      pos = this.cursor.reserve(size);
    } catch (err) {
      if (this.multi) p.producerLock.unlock();
      throw err;
    }
    if (pos >= 0) return this.makeLoan(pos, size);
    if (this.multi) p.producerLock.unlock();
    return null;
  }

  tryLoan(size: number): Loan | null {
    this.loanStart(size);
    if (this.multi && this.p.producerLock.tryLock() === null) return null;
    return this.loanLocked(size);
  }

  loanSync(size: number, options: ChannelWaitOptions | undefined): Loan {
    const p = this.p;
    this.loanStart(size);
    const o = parseChannelWait(options, false);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      if (this.multi) lockWithin(p.producerLock, deadline, p.errors.op('loanSync'), p.errors.name);
      const loan = this.loanLocked(size);
      if (loan !== null) return loan;
      const ready = (): boolean => this.cursor.spaceFor(size, this.multi) || p.ring.closed;
      if (!p.ring.spaceWaits.waitSync(o, deadline, ready, o.failIfPeerGone ? this.consumersGone : null, () => this.cursor.spinForSpace(size, o.spin, this.multi))) {
        throw p.errors.timeout('loanSync', o.timeout);
      }
    }
  }

  async loan(size: number, options: ChannelAsyncOptions | undefined): Promise<Loan> {
    const p = this.p;
    this.loanStart(size);
    const o = options === undefined ? DEFAULT_CHANNEL : parseChannelWait(options, true);
    if (isAborted(o.signal)) throw p.errors.aborted(o.signal!, 'loan');
    const deadline = new Deadline(o.timeout);
    const ready = (): boolean => this.cursor.spaceFor(size, this.multi) || p.ring.closed;
    const spinner = (): boolean => this.cursor.spinForSpace(size, o.spin, this.multi);
    for (;;) {
      p.assertOpen(); // after an await: close() may have run meanwhile
      if (this.multi) await lockForCaller(p, p.producerLock, deadline, o.signal, 'loan');
      const loan = this.loanLocked(size);
      if (loan !== null) return loan;
      if (!(await p.ring.spaceWaits.wait(o, deadline, ready, o.failIfPeerGone ? this.consumersGone : null, 'loan', spinner))) {
        throw p.errors.timeout('loan', o.timeout);
      }
    }
  }

  /** The loan of the record of `size` bytes reserved at `pos` (multi-producer: the lock is held). */
  private makeLoan(pos: number, size: number): Loan {
    const p = this.p;
    const r = p.ring;
    this.p.held.loan = true;
    const fast = this.fast;
    this.setFast(false);
    const view = bufferView(r.bytes.buffer, r.bytes.byteOffset + r.payloadIndex(pos), size);
    let done = false;
    const finish = (): void => {
      done = true;
      this.p.held.loan = false;
      this.setFast(fast);
      if (this.multi && !p.life.released) p.producerLock.unlock(); // released: release() gave it back
    };
    return {
      bytes: view,
      commit: (length = size) => {
        if (done) throw p.errors.busy('this loan was already committed or aborted');
        if (p.life.released || r.i32.length === 0) throw p.errors.released(); // close() gave the loan up
        checkInt('length', length, 0, size);
        try {
          this.cursor.shrink(pos, length); // the final length: the record only shrinks, so it still fits
          // Multi-producer: we hold the lock, so the cursor's tail is current.
          if (!this.cursor.publish(recordEnd(pos, length), length)) throw p.errors.closed();
        } finally {
          finish();
        }
      },
      abort: () => {
        if (done) return;
        finish();
      },
    };
  }

  /** On release of the handle: gives back the role and an outstanding loan's lock. */
  release(): void {
    this.setFast(false);
    if (this.p.held.loan && this.multi) this.p.producerLock.unlock();
    this.guard?.unlock();
  }
}
