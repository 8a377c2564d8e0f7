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
 * Robustness: the recovery notice of a dead writer lives in shared memory, so exactly one writer
 * receives it whatever the interleaving. The writer word holds 0 (free), a positive owner token
 * (a writer claims or holds it), or a "dirty" value: the dead writer's token with bit 63 set, which
 * means "free, but the last writer died holding it and no writer has been told yet". A reader that
 * finds a dead writer turns its token dirty (one CAS) and reads on, warned (`recovered: true` on a
 * read guard). A writer claims with one CAS from 0, from a dirty value or from a dead token; the
 * last two hand it the notice, and only one CAS can succeed. A writer that gives its claim back
 * without entering (tryWriteLock finding readers, a timeout while draining) puts the notice back.
 * A dead reader's slot is simply cleared (readers change nothing): no notice. At most 64 read
 * holds can exist at once; more readers wait.
 */
import { abortError, ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { fromToken, type ProcessIdentity, SELF_TOKEN, self, tokenAlive } from '../identity';
import { Kind, type Segment } from '../segment';
import { checkObject } from '../validate';
import { Deadline, parkAsync, parkSync, spin, tuning, wake } from '../wait';
import { type AsyncWaitOptions, checkPlacement, DEFAULT, namedPrimitive, onClose, type NamedOptions, parseWait, Primitive, type WaitOptions, type ParsedWait, type OpenOptions } from './primitive';

const SLOTS = 64;
const BUSY = -1;
const DIRTY_BIT = 1n << 63n;
const TOKEN_MASK = DIRTY_BIT - 1n;
/** The writer word's "dirty" value for a dead writer's token (negative as a signed 64-bit word). */
const dirty = (token: bigint): bigint => BigInt.asIntN(64, (token & TOKEN_MASK) | DIRTY_BIT);

const GUARD_KEY = Symbol('RwLockGuard');

/** A held read or write lock; `using` releases it. */
export class RwLockGuard {
  readonly mode: 'read' | 'write';
  /**
   * Write guard: true if this writer took over from a writer that died holding the lock; it is
   * the one acquirer told, and should repair the protected state. Read guard: true if a writer died
   * holding the lock and no writer has taken over since: the state may be half-updated.
   */
  readonly recovered: boolean;
  /** The process that died holding the write lock, when `recovered` is true. */
  readonly deadOwner: ProcessIdentity | null;
  #lock: RwLock | null;
  readonly #slot: number;

  /** @internal */
  constructor(key: symbol, lock: RwLock, mode: 'read' | 'write', slot: number, deadToken: bigint) {
    if (key !== GUARD_KEY) throw invalidArg('RwLockGuard', 'is returned by the RwLock methods; it cannot be constructed');
    this.#lock = lock;
    this.mode = mode;
    this.#slot = slot;
    this.recovered = deadToken !== 0n;
    this.deadOwner = deadToken === 0n ? null : fromToken(deadToken & TOKEN_MASK);
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

  private readonly writerWord: number; // i64 index of writer
  private readonly seqWord: number;
  private readonly sleepersWord: number;
  private readonly firstReaderWord: number; // i64 index of readers[0]
  /** The writer word seen by the last successful tryRead (0, or a dirty value: the read guard's warning). */
  private readWarning = 0n;

  private constructor(segment: Segment, offset: number, owns: boolean) {
    super(segment, offset, owns);
    this.writerWord = this.base >> 3;
    this.seqWord = this.firstWord + 2;
    this.sleepersWord = this.firstWord + 3;
    this.firstReaderWord = this.writerWord + 2;
  }

  static create(name: string, options?: NamedOptions): RwLock {
    return namedPrimitive('create', name, Kind.RWLOCK, RwLock.SIZE, checkObject('options', options), undefined, (s) => new RwLock(s, 0, true));
  }
  static open(name: string, options?: OpenOptions): RwLock {
    return namedPrimitive('open', name, Kind.RWLOCK, RwLock.SIZE, checkObject('options', options), undefined, (s) => new RwLock(s, 0, true));
  }
  static openOrCreate(name: string, options?: NamedOptions): RwLock {
    return namedPrimitive('openOrCreate', name, Kind.RWLOCK, RwLock.SIZE, checkObject('options', options), undefined, (s) => new RwLock(s, 0, true));
  }
  /** The lock at data offset `offset` of `segment`. Zeroed memory is an unlocked RwLock. */
  static at(segment: Segment, offset: number): RwLock {
    const p = checkPlacement(segment, offset, RwLock.SIZE);
    return new RwLock(p.segment, p.offset, false);
  }
  static init(segment: Segment, offset: number): RwLock {
    const l = RwLock.at(segment, offset);
    Atomics.store(l.i64, l.writerWord, 0n);
    Atomics.store(l.i32, l.seqWord, 0);
    Atomics.store(l.i32, l.sleepersWord, 0);
    for (let i = 0; i < SLOTS; i++) Atomics.store(l.i64, l.firstReaderWord + i, 0n);
    return l;
  }

  /**
   * Snapshot: number of read holds, whether a writer holds or is claiming the lock, and whether a
   * dead writer's recovery notice is waiting for the next writer.
   */
  get state(): { readers: number; writer: boolean; recoveryPending: boolean } {
    this.assertOpen();
    let readers = 0;
    for (let i = 0; i < SLOTS; i++) if (Atomics.load(this.i64, this.firstReaderWord + i) !== 0n) readers++;
    const w = Atomics.load(this.i64, this.writerWord);
    return { readers, writer: w > 0n, recoveryPending: w < 0n };
  }

  // Read side ------------------------------------------------------------------------------------------

  tryReadLock(): RwLockGuard | null {
    this.assertOpen();
    const s = this.tryRead(true);
    return s === BUSY ? null : this.readGuard(s);
  }

  readLockSync(options?: WaitOptions): RwLockGuard {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    let s = this.tryRead(false);
    if (s !== BUSY) return this.readGuard(s);
    if (Atomics.load(this.i64, this.writerWord) === SELF_TOKEN) throw this.deadlock('readLockSync', 'holds the write lock');
    s = this.blockSync(o, (check) => this.tryRead(check), 'RwLock.readLockSync');
    return this.readGuard(s);
  }

  async readLock(options?: AsyncWaitOptions): Promise<RwLockGuard> {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (isAborted(o.signal)) throw abortError(o.signal!, 'RwLock.readLock');
    let s = this.tryRead(false);
    if (s !== BUSY) return this.readGuard(s);
    s = await this.blockAsync(o, (check) => this.tryRead(check), 'RwLock.readLock');
    return this.readGuard(s);
  }

  // Write side -----------------------------------------------------------------------------------------

  tryWriteLock(): RwLockGuard | null {
    this.assertOpen();
    const notice = this.claimWriter(true);
    if (notice === null) return null;
    if (this.drained(true)) return new RwLockGuard(GUARD_KEY, this, 'write', -1, notice);
    this.giveBack(notice);
    return null;
  }

  writeLockSync(options?: WaitOptions): RwLockGuard {
    this.assertOpen();
    const o = parseWait(options, false);
    const w = Atomics.load(this.i64, this.writerWord);
    if (w === SELF_TOKEN) throw this.deadlock('writeLockSync', 'holds the write lock');
    const deadline = new Deadline(o.timeout);
    let notice: bigint | null = null;
    this.blockSync(o, (check) => ((notice = this.claimWriter(check)) === null ? BUSY : 0), 'RwLock.writeLockSync');
    const got = notice as unknown as bigint;
    if (this.ownReadSlot() >= 0) {
      this.giveBack(got);
      throw this.deadlock('writeLockSync', 'holds a read lock');
    }
    try {
      this.blockSync({ ...o, timeout: deadline.remaining() }, (check) => (this.drained(check) ? 0 : BUSY), 'RwLock.writeLockSync', o.timeout);
    } catch (err) {
      this.giveBack(got);
      throw err;
    }
    return new RwLockGuard(GUARD_KEY, this, 'write', -1, got);
  }

  async writeLock(options?: AsyncWaitOptions): Promise<RwLockGuard> {
    this.assertOpen();
    const o = parseWait(options, true);
    const deadline = new Deadline(o.timeout);
    let notice: bigint | null = null;
    // Registered before the claim: if the segment closes at any point after it (even before this
    // function resumes), the claim and the notice it carries go back first.
    const undo = onClose(this.segment, () => {
      if (notice !== null) this.giveBack(notice);
    });
    try {
      await this.blockAsync(o, (check) => ((notice = this.claimWriter(check)) === null ? BUSY : 0), 'RwLock.writeLock');
      this.assertOpen();
      await this.blockAsync({ ...o, timeout: deadline.remaining() }, (check) => (this.drained(check) ? 0 : BUSY), 'RwLock.writeLock', o.timeout);
      this.assertOpen();
    } catch (err) {
      if (this.i32.length > 0 && notice !== null) this.giveBack(notice);
      throw err;
    } finally {
      undo();
    }
    return new RwLockGuard(GUARD_KEY, this, 'write', -1, notice as unknown as bigint);
  }

  /** Releases the write lock. Throws ERR_SHMKIT_NOT_OWNER unless this thread holds it. */
  writeUnlock(): void {
    this.assertOpen();
    if (Atomics.compareExchange(this.i64, this.writerWord, SELF_TOKEN, 0n) !== SELF_TOKEN) {
      throw new ShmkitError(ErrorCodes.NOT_OWNER, `RwLock.writeUnlock: this thread does not hold the write lock in segment "${this.segment.name}"`, { segment: this.segment.name });
    }
    this.wakeAll();
  }

  /** Releases one read hold of this thread. Throws ERR_SHMKIT_NOT_OWNER if it has none. */
  readUnlock(): void {
    this.assertOpen();
    const s = this.ownReadSlot();
    if (s < 0) {
      throw new ShmkitError(ErrorCodes.NOT_OWNER, `RwLock.readUnlock: this thread holds no read lock in segment "${this.segment.name}"`, { segment: this.segment.name });
    }
    this.releaseSlot(s);
  }

  /** @internal */
  releaseSlot(slot: number): void {
    this.assertOpen();
    if (Atomics.compareExchange(this.i64, this.firstReaderWord + slot, SELF_TOKEN, 0n) !== SELF_TOKEN) {
      throw new ShmkitError(ErrorCodes.NOT_OWNER, `RwLock: read hold was taken away (slot ${slot} of segment "${this.segment.name}")`, { segment: this.segment.name });
    }
    this.wakeAll();
  }

  // Internals ------------------------------------------------------------------------------------------

  private readGuard(slot: number): RwLockGuard {
    const w = this.readWarning;
    this.readWarning = 0n;
    return new RwLockGuard(GUARD_KEY, this, 'read', slot, w);
  }

  private deadlock(op: string, why: string): ShmkitError {
    return new ShmkitError(ErrorCodes.WOULD_DEADLOCK, `RwLock.${op}: this thread ${why} in segment "${this.segment.name}"`, { segment: this.segment.name });
  }

  /**
   * One read attempt: a slot index, or BUSY. With `check`, a dead writer's token is turned dirty
   * (the notice stays for the next writer) and, when every slot is taken, dead readers' slots are
   * cleared. On success `readWarning` holds the writer word if it was dirty.
   */
  private tryRead(check: boolean): number {
    const i64 = this.i64;
    const w = Atomics.load(i64, this.writerWord);
    if (w > 0n) {
      if (!check || w === SELF_TOKEN || tokenAlive(w)) return BUSY;
      if (Atomics.compareExchange(i64, this.writerWord, w, dirty(w)) === w) this.wakeAll();
      if (Atomics.load(i64, this.writerWord) > 0n) return BUSY;
    }
    const start = (self.pid * 7 + self.threadSlot) % SLOTS;
    for (let k = 0; k < SLOTS; k++) {
      const i = (start + k) % SLOTS;
      if (Atomics.load(i64, this.firstReaderWord + i) === 0n && Atomics.compareExchange(i64, this.firstReaderWord + i, 0n, SELF_TOKEN) === 0n) {
        const now = Atomics.load(i64, this.writerWord);
        if (now <= 0n) {
          this.readWarning = now;
          return i;
        }
        // A writer came: give the slot back and let it drain.
        Atomics.store(i64, this.firstReaderWord + i, 0n);
        this.wakeAll();
        return BUSY;
      }
    }
    if (check) this.clearDeadReaders();
    return BUSY;
  }

  /**
   * One claim of the writer word: null if busy; otherwise 0n (a clean claim) or the token of the
   * dead writer whose recovery notice this claim took over (from a dirty value or a dead token).
   */
  private claimWriter(check: boolean): bigint | null {
    const i64 = this.i64;
    const cur = Atomics.compareExchange(i64, this.writerWord, 0n, SELF_TOKEN);
    if (cur === 0n) return 0n;
    if (cur < 0n) return Atomics.compareExchange(i64, this.writerWord, cur, SELF_TOKEN) === cur ? cur & TOKEN_MASK : null;
    if (!check || cur === SELF_TOKEN || tokenAlive(cur)) return null;
    return Atomics.compareExchange(i64, this.writerWord, cur, SELF_TOKEN) === cur ? cur : null;
  }

  /** Gives a claim back without having entered: the notice it carried (if any) goes back too. */
  private giveBack(notice: bigint): void {
    if (this.i32.length === 0) return;
    Atomics.compareExchange(this.i64, this.writerWord, SELF_TOKEN, notice === 0n ? 0n : dirty(notice));
    this.wakeAll();
  }

  /** True when no read hold remains. With `check`, slots of dead readers are cleared. */
  private drained(check: boolean): boolean {
    const i64 = this.i64;
    let busy = false;
    for (let i = 0; i < SLOTS; i++) {
      const t = Atomics.load(i64, this.firstReaderWord + i);
      if (t === 0n) continue;
      if (check && t !== SELF_TOKEN && !tokenAlive(t) && Atomics.compareExchange(i64, this.firstReaderWord + i, t, 0n) === t) continue;
      busy = true;
    }
    return !busy;
  }

  private clearDeadReaders(): void {
    let cleared = false;
    for (let i = 0; i < SLOTS; i++) {
      const t = Atomics.load(this.i64, this.firstReaderWord + i);
      if (t !== 0n && t !== SELF_TOKEN && !tokenAlive(t) && Atomics.compareExchange(this.i64, this.firstReaderWord + i, t, 0n) === t) cleared = true;
    }
    if (cleared) this.wakeAll();
  }

  /**
   * For the liveness tick of async waits (no side effects): could a waiter's next attempt succeed
   * although nobody woke it? The writer word is free or dirty, or its holder died; or, for this
   * thread's own draining claim, no other live reader holds a slot (a reader that released its slot,
   * or gave it back, and died before waking us); or a reader holding a slot died.
   */
  private readonly holderGone = (): boolean => {
    const w = Atomics.load(this.i64, this.writerWord);
    if (w <= 0n) return true;
    if (w !== SELF_TOKEN && !tokenAlive(w)) return true;
    let liveOthers = false;
    for (let i = 0; i < SLOTS; i++) {
      const t = Atomics.load(this.i64, this.firstReaderWord + i);
      if (t === 0n || t === SELF_TOKEN) continue;
      if (!tokenAlive(t)) return true;
      liveOthers = true;
    }
    return w === SELF_TOKEN && !liveOthers;
  };

  private ownReadSlot(): number {
    for (let i = 0; i < SLOTS; i++) if (Atomics.load(this.i64, this.firstReaderWord + i) === SELF_TOKEN) return i;
    return -1;
  }

  private wakeAll(): void {
    if (Atomics.load(this.i32, this.sleepersWord) > 0) {
      Atomics.add(this.i32, this.seqWord, 1);
      wake(this.i32, this.seqWord, 0);
    }
  }

  /** Spin, then park on `seq` until `attempt` succeeds; liveness checks after each timed-out slice. */
  private blockSync(o: ParsedWait, attempt: (check: boolean) => number, what: string, reportMs = o.timeout): number {
    const deadline = new Deadline(o.timeout);
    let r = BUSY;
    if (spin(() => (r = attempt(false)) !== BUSY, o.spin)) return r;
    const i32 = this.i32;
    Atomics.add(i32, this.sleepersWord, 1);
    try {
      let check = true;
      for (;;) {
        const seq = Atomics.load(i32, this.seqWord);
        r = attempt(check);
        if (r !== BUSY) return r;
        const left = deadline.remaining();
        if (left === 0) break;
        check = !parkSync(i32, this.seqWord, seq, Math.min(left, tuning.livenessIntervalMs));
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } finally {
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1); // unmapped if a truncation could not be repaired
    }
    throw timeoutError(what, reportMs, this.segment.name);
  }

  private async blockAsync(o: ParsedWait, attempt: (check: boolean) => number, what: string, reportMs = o.timeout): Promise<number> {
    if (isAborted(o.signal)) throw abortError(o.signal!, what);
    const deadline = new Deadline(o.timeout);
    let r = BUSY;
    if (spin(() => (r = attempt(false)) !== BUSY, o.spin)) return r;
    const i32 = this.i32;
    Atomics.add(i32, this.sleepersWord, 1);
    const undo = onClose(this.segment, () => Atomics.sub(i32, this.sleepersWord, 1));
    try {
      let check = true;
      for (;;) {
        const seq = Atomics.load(i32, this.seqWord);
        r = attempt(check);
        if (r !== BUSY) return r;
        const left = deadline.remaining();
        if (left === 0) break;
        check = await parkAsync(i32, this.seqWord, seq, left, o.signal, this.segment, what, this.holderGone);
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } finally {
      undo();
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1);
    }
    throw timeoutError(what, reportMs, this.segment.name);
  }
}
