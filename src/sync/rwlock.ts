/**
 * RwLock: many readers or one writer, robust against dead holders, and writers are not starved.
 *
 * Layout (528 bytes, 8-aligned):
 *   +0   i64 writer       0 or the writer's owner token
 *   +8   i32 seq          futex word, bumped on every release while someone sleeps
 *   +12  i32 sleepers
 *   +16  i64 readers[64]  one slot per current read hold: 0 or the reader's owner token
 *
 * A writer first takes `writer` (a CAS, as in Mutex), which stops new readers at once, then waits
 * until every reader slot is empty. A reader claims a free slot, then checks `writer`; if a writer
 * arrived it gives the slot back and waits. Both sides write first and read second, all
 * sequentially consistent, so at least one of them sees the other (Dekker). Because a pending
 * writer blocks new readers, a stream of readers cannot starve writers.
 *
 * Robustness: a dead writer's token is replaced (by the next writer, which gets `recovered`) or
 * cleared (by a reader, which gets `recovered`). A dead reader's slot is cleared by a writer
 * waiting for the readers to drain. At most 64 read holds can exist at once; more readers wait.
 */
import { abortError, ErrorCodes, ShmkitError, timeoutError } from '../errors';
import { SELF_TOKEN, self, tokenAlive } from '../identity';
import { Kind, type Segment } from '../segment';
import { checkObject } from '../validate';
import { Deadline, parkAsync, parkSync, spin, tuning, wake } from '../wait';
import { type AsyncWaitOptions, checkPlacement, DEFAULT, namedSegment, onClose, type NamedOptions, parseWait, Primitive, type WaitOptions, type ParsedWait } from './primitive';

const SLOTS = 64;
const BUSY = -1;

/** A held read or write lock; `using` releases it. */
export class RwLockGuard {
  readonly mode: 'read' | 'write';
  /** True if this acquisition cleared a holder that had died: shared state may be half-updated. */
  readonly recovered: boolean;
  #lock: RwLock | null;
  readonly #slot: number;

  /** @internal */
  constructor(lock: RwLock, mode: 'read' | 'write', slot: number, recovered: boolean) {
    this.#lock = lock;
    this.mode = mode;
    this.#slot = slot;
    this.recovered = recovered;
  }

  unlock(): void {
    const l = this.#lock;
    if (l === null) return;
    this.#lock = null;
    if (this.mode === 'write') l.writeUnlock();
    else l.releaseSlot(this.#slot);
  }

  [Symbol.dispose](): void {
    this.unlock();
  }
}

export class RwLock extends Primitive {
  static readonly SIZE = 16 + SLOTS * 8;
  /** How many read holds can exist at once. */
  static readonly MAX_READERS = SLOTS;

  private readonly wr: number; // i64 index of writer
  private readonly q: number;
  private readonly sl: number;
  private readonly r0: number; // i64 index of readers[0]
  private recoveredFlag = false;

  private constructor(segment: Segment, offset: number, owns: boolean) {
    super(segment, offset, owns);
    this.wr = this.base >> 3;
    this.q = this.w + 2;
    this.sl = this.w + 3;
    this.r0 = this.wr + 2;
  }

  static create(name: string, options?: NamedOptions): RwLock {
    return new RwLock(namedSegment('create', name, Kind.RWLOCK, RwLock.SIZE, checkObject('options', options), () => {}), 0, true);
  }
  static open(name: string): RwLock {
    return new RwLock(namedSegment('open', name, Kind.RWLOCK, RwLock.SIZE, {}, () => {}), 0, true);
  }
  static openOrCreate(name: string, options?: NamedOptions): RwLock {
    return new RwLock(namedSegment('openOrCreate', name, Kind.RWLOCK, RwLock.SIZE, checkObject('options', options), () => {}), 0, true);
  }
  /** The lock at data offset `offset` of `segment`. Zeroed memory is an unlocked RwLock. */
  static at(segment: Segment, offset: number): RwLock {
    const p = checkPlacement(segment, offset, RwLock.SIZE);
    return new RwLock(p.segment, p.offset, false);
  }
  static init(segment: Segment, offset: number): RwLock {
    const l = RwLock.at(segment, offset);
    Atomics.store(l.i64, l.wr, 0n);
    Atomics.store(l.i32, l.q, 0);
    Atomics.store(l.i32, l.sl, 0);
    for (let i = 0; i < SLOTS; i++) Atomics.store(l.i64, l.r0 + i, 0n);
    return l;
  }

  /** Snapshot: number of read holds, and whether a writer holds or is claiming the lock. */
  get state(): { readers: number; writer: boolean } {
    this.live();
    let readers = 0;
    for (let i = 0; i < SLOTS; i++) if (Atomics.load(this.i64, this.r0 + i) !== 0n) readers++;
    return { readers, writer: Atomics.load(this.i64, this.wr) !== 0n };
  }

  // Read side ------------------------------------------------------------------------------------------

  tryReadLock(): RwLockGuard | null {
    this.live();
    this.recoveredFlag = false;
    const s = this.tryRead(true);
    return s === BUSY ? null : this.readGuard(s);
  }

  readLock(options?: WaitOptions): RwLockGuard {
    this.live();
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    this.recoveredFlag = false;
    let s = this.tryRead(false);
    if (s !== BUSY) return this.readGuard(s);
    if (Atomics.load(this.i64, this.wr) === SELF_TOKEN) throw this.deadlock('readLock', 'holds the write lock');
    s = this.blockSync(o, (check) => this.tryRead(check), 'RwLock.readLock');
    return this.readGuard(s);
  }

  async readLockAsync(options?: AsyncWaitOptions): Promise<RwLockGuard> {
    this.live();
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (o.signal?.aborted) throw abortError(o.signal, 'RwLock.readLockAsync');
    this.recoveredFlag = false;
    let s = this.tryRead(false);
    if (s !== BUSY) return this.readGuard(s);
    s = await this.blockAsync(o, (check) => this.tryRead(check), 'RwLock.readLockAsync');
    return this.readGuard(s);
  }

  // Write side -----------------------------------------------------------------------------------------

  tryWriteLock(): RwLockGuard | null {
    this.live();
    this.recoveredFlag = false;
    if (this.claimWriter(true) === BUSY) return null;
    if (this.drained(true)) return new RwLockGuard(this, 'write', -1, this.takeRecovered());
    this.writeUnlock();
    this.recoveredFlag = false;
    return null;
  }

  writeLock(options?: WaitOptions): RwLockGuard {
    this.live();
    const o = parseWait(options, false);
    const w = Atomics.load(this.i64, this.wr);
    if (w === SELF_TOKEN) throw this.deadlock('writeLock', 'holds the write lock');
    this.recoveredFlag = false;
    const deadline = new Deadline(o.timeout);
    this.blockSync(o, (check) => this.claimWriter(check), 'RwLock.writeLock');
    if (this.ownReadSlot() >= 0) {
      this.writeUnlock();
      throw this.deadlock('writeLock', 'holds a read lock');
    }
    try {
      this.blockSync({ ...o, timeout: deadline.remaining() }, (check) => (this.drained(check) ? 0 : BUSY), 'RwLock.writeLock', o.timeout);
    } catch (err) {
      this.writeUnlock();
      throw err;
    }
    return new RwLockGuard(this, 'write', -1, this.takeRecovered());
  }

  async writeLockAsync(options?: AsyncWaitOptions): Promise<RwLockGuard> {
    this.live();
    const o = parseWait(options, true);
    this.recoveredFlag = false;
    const deadline = new Deadline(o.timeout);
    await this.blockAsync(o, (check) => this.claimWriter(check), 'RwLock.writeLockAsync');
    const recovered = this.takeRecovered();
    // If the segment closes while we wait for readers to drain, give the writer claim back first.
    const undo = onClose(this.segment, () => this.writeUnlock());
    try {
      await this.blockAsync({ ...o, timeout: deadline.remaining() }, (check) => (this.drained(check) ? 0 : BUSY), 'RwLock.writeLockAsync', o.timeout);
    } catch (err) {
      if (this.i32.length > 0) this.writeUnlock();
      throw err;
    } finally {
      undo();
    }
    return new RwLockGuard(this, 'write', -1, recovered || this.takeRecovered());
  }

  /** Releases the write lock. Throws ERR_SHMKIT_NOT_OWNER unless this thread holds it. */
  writeUnlock(): void {
    this.live();
    if (Atomics.compareExchange(this.i64, this.wr, SELF_TOKEN, 0n) !== SELF_TOKEN) {
      throw new ShmkitError(ErrorCodes.NOT_OWNER, `RwLock.writeUnlock: this thread does not hold the write lock in segment "${this.segment.name}"`, { segment: this.segment.name });
    }
    this.wakeAll();
  }

  /** Releases one read hold of this thread. Throws ERR_SHMKIT_NOT_OWNER if it has none. */
  readUnlock(): void {
    this.live();
    const s = this.ownReadSlot();
    if (s < 0) {
      throw new ShmkitError(ErrorCodes.NOT_OWNER, `RwLock.readUnlock: this thread holds no read lock in segment "${this.segment.name}"`, { segment: this.segment.name });
    }
    this.releaseSlot(s);
  }

  /** @internal */
  releaseSlot(slot: number): void {
    this.live();
    if (Atomics.compareExchange(this.i64, this.r0 + slot, SELF_TOKEN, 0n) !== SELF_TOKEN) {
      throw new ShmkitError(ErrorCodes.NOT_OWNER, `RwLock: read hold was taken away (slot ${slot} of segment "${this.segment.name}")`, { segment: this.segment.name });
    }
    this.wakeAll();
  }

  // Internals ------------------------------------------------------------------------------------------

  private readGuard(slot: number): RwLockGuard {
    return new RwLockGuard(this, 'read', slot, this.takeRecovered());
  }

  private takeRecovered(): boolean {
    const r = this.recoveredFlag;
    this.recoveredFlag = false;
    return r;
  }

  private deadlock(op: string, why: string): ShmkitError {
    return new ShmkitError(ErrorCodes.WOULD_DEADLOCK, `RwLock.${op}: this thread ${why} in segment "${this.segment.name}"`, { segment: this.segment.name });
  }

  /** Clears a dead writer if `check`; returns true if the writer field is (now) free. */
  private writerFree(check: boolean): boolean {
    const w = Atomics.load(this.i64, this.wr);
    if (w === 0n) return true;
    if (!check || w === SELF_TOKEN || tokenAlive(w)) return false;
    if (Atomics.compareExchange(this.i64, this.wr, w, 0n) === w) {
      this.recoveredFlag = true;
      this.wakeAll();
    }
    return Atomics.load(this.i64, this.wr) === 0n;
  }

  /** One read attempt: a slot index, or BUSY. */
  private tryRead(check: boolean): number {
    const i64 = this.i64;
    if (Atomics.load(i64, this.wr) !== 0n && !this.writerFree(check)) return BUSY;
    const start = (self.pid * 7 + self.threadSlot) % SLOTS;
    for (let k = 0; k < SLOTS; k++) {
      const i = (start + k) % SLOTS;
      if (Atomics.load(i64, this.r0 + i) === 0n && Atomics.compareExchange(i64, this.r0 + i, 0n, SELF_TOKEN) === 0n) {
        if (Atomics.load(i64, this.wr) === 0n) return i;
        // A writer came: give the slot back and let it drain.
        Atomics.store(i64, this.r0 + i, 0n);
        this.wakeAll();
        return BUSY;
      }
    }
    if (check) this.clearDeadReaders();
    return BUSY;
  }

  private claimWriter(check: boolean): number {
    const cur = Atomics.compareExchange(this.i64, this.wr, 0n, SELF_TOKEN);
    if (cur === 0n) return 0;
    if (!check || cur === SELF_TOKEN || tokenAlive(cur)) return BUSY;
    if (Atomics.compareExchange(this.i64, this.wr, cur, SELF_TOKEN) === cur) {
      this.recoveredFlag = true;
      return 0;
    }
    return BUSY;
  }

  /** True when no read hold remains. With `check`, slots of dead readers are cleared. */
  private drained(check: boolean): boolean {
    const i64 = this.i64;
    let busy = false;
    for (let i = 0; i < SLOTS; i++) {
      const t = Atomics.load(i64, this.r0 + i);
      if (t === 0n) continue;
      if (check && t !== SELF_TOKEN && !tokenAlive(t) && Atomics.compareExchange(i64, this.r0 + i, t, 0n) === t) {
        this.recoveredFlag = true;
        continue;
      }
      busy = true;
    }
    return !busy;
  }

  private clearDeadReaders(): void {
    let cleared = false;
    for (let i = 0; i < SLOTS; i++) {
      const t = Atomics.load(this.i64, this.r0 + i);
      if (t !== 0n && t !== SELF_TOKEN && !tokenAlive(t) && Atomics.compareExchange(this.i64, this.r0 + i, t, 0n) === t) cleared = true;
    }
    if (cleared) this.wakeAll();
  }

  private ownReadSlot(): number {
    for (let i = 0; i < SLOTS; i++) if (Atomics.load(this.i64, this.r0 + i) === SELF_TOKEN) return i;
    return -1;
  }

  private wakeAll(): void {
    if (Atomics.load(this.i32, this.sl) > 0) {
      Atomics.add(this.i32, this.q, 1);
      wake(this.i32, this.q, 0);
    }
  }

  /** Spin, then park on `seq` until `attempt` succeeds; liveness checks after each timed-out slice. */
  private blockSync(o: ParsedWait, attempt: (check: boolean) => number, what: string, reportMs = o.timeout): number {
    const deadline = new Deadline(o.timeout);
    let r = BUSY;
    if (spin(() => (r = attempt(false)) !== BUSY, o.spin)) return r;
    const i32 = this.i32;
    Atomics.add(i32, this.sl, 1);
    try {
      let check = true;
      for (;;) {
        const seq = Atomics.load(i32, this.q);
        r = attempt(check);
        if (r !== BUSY) return r;
        const left = deadline.remaining();
        if (left === 0) break;
        check = !parkSync(i32, this.q, seq, Math.min(left, tuning.livenessIntervalMs));
      }
    } finally {
      Atomics.sub(i32, this.sl, 1);
    }
    throw timeoutError(what, reportMs, this.segment.name);
  }

  private async blockAsync(o: ParsedWait, attempt: (check: boolean) => number, what: string, reportMs = o.timeout): Promise<number> {
    if (o.signal?.aborted) throw abortError(o.signal, what);
    const deadline = new Deadline(o.timeout);
    let r = BUSY;
    if (spin(() => (r = attempt(false)) !== BUSY, o.spin)) return r;
    const i32 = this.i32;
    Atomics.add(i32, this.sl, 1);
    const undo = onClose(this.segment, () => Atomics.sub(i32, this.sl, 1));
    try {
      let check = true;
      for (;;) {
        const seq = Atomics.load(i32, this.q);
        r = attempt(check);
        if (r !== BUSY) return r;
        const left = deadline.remaining();
        if (left === 0) break;
        check = await parkAsync(i32, this.q, seq, Math.min(left, tuning.livenessIntervalMs), o.signal, this.segment, what);
      }
    } finally {
      undo();
      if (i32.length > 0) Atomics.sub(i32, this.sl, 1);
    }
    throw timeoutError(what, reportMs, this.segment.name);
  }
}
