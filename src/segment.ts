/**
 * Segment: a named POSIX shared-memory object, mapped into this process as an ArrayBuffer.
 *
 * Layout (little-endian, see docs/design.md):
 *
 *   0  u32  magic 0x4b4d4853 ("SHMK")
 *   4  u32  layout version (2)
 *   8  u32  kind (Kind)
 *   12 u32  state: 1 = ready (set last, before the segment gets its name)
 *   16 u64  total size in bytes, header included
 *   24 u32  data offset (128, or 384 with a name block)
 *   28 u32  flags: bit 0 = a name block follows the header (the name is hashed, see naming.ts)
 *   32 u32  creator pid
 *   36 u32  creator thread slot
 *   40 u64  creator start time
 *   48 u64  created at, ms since the epoch
 *   56 u32  header checksum: FNV-1a over bytes 0..11 and 16..55
 *   60 u32  reserved
 *   64..127 kind-specific parameters (a channel's parameter block; zero for the other kinds)
 *   128..383 name block, only with flag bit 0: u32 length, the full name (ASCII), zeros
 *   128.. or 384.. data
 *
 * Creation never exposes a half-built segment: the object is created under a private temporary
 * name, fully initialized, then given its public name with link(2), which fails if the name is
 * taken. Exactly one of many racing creators wins; an opener either finds nothing or a complete
 * segment. Openers still validate everything: the header is untrusted input.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { closedError, ErrorCodes, invalidArg, osError, ShmkitError } from './errors';
import { self } from './identity';
import { isFailure, native, type NativeMapping } from './native';
import { checkFunction, checkInt, checkObject } from './validate';
import { checkName, isHashed, objectName, TEMP_PREFIX } from './naming';

export { checkName, MAX_NAME_LENGTH, NAME_PREFIX, TEMP_PREFIX } from './naming';
import { checkOwner, parseTrust, type Trust, type TrustedOwners } from './trust';
import { debug } from './debug';

export const MAGIC = 0x4b4d4853;
export const LAYOUT_VERSION = 2;
export const HEADER_SIZE = 128;
export const PARAMS_OFFSET = 64;
export const STATE_READY = 1;
/** Header flag: a name block (the full name of a hashed object name) follows the header. */
export const FLAG_NAME_BLOCK = 1;
export const NAME_BLOCK_SIZE = 256;
export const MAX_SEGMENT_SIZE = 2 ** 40;

export const Kind = {
  SEGMENT: 1,
  SEMAPHORE: 2,
  MUTEX: 3,
  RWLOCK: 4,
  CONDITION: 5,
  BARRIER: 6,
  CHANNEL: 16,
  EVENT: 17,
  TOPIC: 18,
  SERVER: 19,
  MAP: 20,
  BRIDGE: 21,
} as const;

export function kindName(kind: number): string {
  for (const [k, v] of Object.entries(Kind)) if (v === kind) return k.toLowerCase();
  return `unknown kind ${kind}`;
}

/** Options of open(): which owners to accept besides this process's user. */
export interface OpenOptions {
  /**
   * Accept an object owned by these users or groups (or by anyone: 'any'). By default open() and
   * openOrCreate() refuse an object that another user owns, with ERR_SHMKIT_UNTRUSTED_OWNER: any
   * local user could have created it first to read or plant data. Every id listed is trusted
   * with what this process writes.
   */
  trustedOwners?: TrustedOwners | 'any';
}

export interface SegmentOptions extends OpenOptions {
  /** Bytes of user data (the header is extra). */
  size: number;
  /** Permission bits, applied exactly (not filtered by the umask). Default 0o600. */
  mode?: number;
  /** Runs on the new segment before any other process can open it. */
  initialize?: (segment: Segment) => void;
}

/** @internal kind-aware creation used by primitives and channels. */
export interface InternalCreate {
  kind: number;
  size: number;
  mode: number;
  initialize: ((segment: Segment) => void) | undefined;
  /** Owners accepted when an existing object is opened (openOrCreate). */
  trust: Trust;
}

function fnv1a(bytes: Uint8Array, ranges: Array<[number, number]>): number {
  let h = 0x811c9dc5;
  for (const [from, to] of ranges) {
    for (let i = from; i < to; i++) {
      h ^= bytes[i]!;
      h = Math.imul(h, 0x01000193);
    }
  }
  return h >>> 0;
}

const CHECKSUM_RANGES: Array<[number, number]> = [[0, 12], [16, 56]];

/** The header checksum: 32-bit FNV-1a over bytes 0..11 and 16..55 of `header`. */
export function headerChecksum(header: Uint8Array): number {
  return fnv1a(header, CHECKSUM_RANGES);
}

export class Segment extends EventEmitter {
  /** The name given by the user (without prefix). */
  readonly name: string;
  /** The name of the object in /dev/shm. */
  readonly shmName: string;
  /** Whether this call created the segment (openOrCreate tells you which happened). */
  readonly created: boolean;
  readonly kind: number;
  /** Total mapped bytes, header included. */
  readonly byteLength: number;
  /** Offset of the data area within `buffer` (after the header, and the name block if any). */
  readonly dataOffset: number;
  readonly creator: { pid: number; startTime: number };
  readonly createdAt: Date;
  /** @internal */
  readonly pendingWaits = new Set<() => void>();
  /** @internal rollbacks of in-flight async operations, run by close() before unmapping */
  readonly closeHooks = new Set<() => void>();

  #buffer: ArrayBuffer;
  #handle: object;
  #closed = false;
  /** Set once verify()/check() found the object truncated by another process. */
  #damage: ShmkitError | null = null;
  #data: Uint8Array;
  #i32: Int32Array;
  #i64: BigInt64Array;

  private constructor(name: string, mapping: NativeMapping, created: boolean) {
    super();
    this.name = name;
    this.shmName = objectName(name);
    this.created = created;
    this.#buffer = mapping.buffer;
    this.#handle = mapping.handle;
    this.byteLength = mapping.size;
    const dv = new DataView(mapping.buffer);
    this.kind = dv.getUint32(8, true);
    this.creator = { pid: dv.getUint32(32, true), startTime: Number(dv.getBigUint64(40, true)) };
    this.createdAt = new Date(Number(dv.getBigUint64(48, true)));
    this.dataOffset = dv.getUint32(24, true);
    this.#data = new Uint8Array(mapping.buffer, this.dataOffset);
    this.#i32 = new Int32Array(mapping.buffer, 0, Math.floor(mapping.size / 4));
    this.#i64 = new BigInt64Array(mapping.buffer, 0, Math.floor(mapping.size / 8));
  }

  // Creation and opening ----------------------------------------------------------------------------

  /** Creates a new segment; fails with ERR_SHMKIT_EXISTS if the name is taken. */
  static create(name: string, options: SegmentOptions): Segment {
    checkName(name);
    return Segment.createKind(name, parseOptions(options));
  }

  /** Opens an existing segment (owned by this user, or by one `options.trustedOwners` accepts). */
  static open(name: string, options?: OpenOptions): Segment {
    checkName(name);
    return Segment.openKind(name, Kind.SEGMENT, parseTrust(checkObject('options', options).trustedOwners));
  }

  /**
   * Opens the segment, or creates it if it does not exist. When many processes race, exactly one
   * creates it (`created` is true there) and the others open the initialized result. An existing
   * segment keeps its own size.
   */
  static openOrCreate(name: string, options: SegmentOptions): Segment {
    checkName(name);
    return Segment.openOrCreateKind(name, parseOptions(options));
  }

  /** Removes the name; processes that have it open keep using it. Returns false if absent. */
  static unlink(name: string): boolean {
    checkName(name);
    const rc = native.shmUnlink(objectName(name));
    debug('unlink %s (%s): %s', JSON.stringify(name), objectName(name), rc === 0 ? 'removed' : -rc === 2 ? 'absent' : `errno ${-rc}`);
    if (rc === 0) return true;
    if (-rc === 2 /* ENOENT */) return false;
    throw osError(-rc, 'shm_unlink', `unlink segment "${name}"`, name);
  }

  /** @internal */
  static createKind(name: string, c: InternalCreate): Segment {
    const hashed = isHashed(name);
    const dataOffset = hashed ? HEADER_SIZE + NAME_BLOCK_SIZE : HEADER_SIZE;
    const total = dataOffset + c.size;
    const tmp = TEMP_PREFIX + process.pid.toString(36) + '.' + randomBytes(6).toString('hex');
    const m = native.shmCreate(tmp, total, c.mode);
    if (isFailure(m)) throw osError(m.errno, m.syscall, `create segment "${name}" (${total} bytes)`, name);
    const bytes = new Uint8Array(m.buffer);
    const dv = new DataView(m.buffer);
    dv.setUint32(0, MAGIC, true);
    dv.setUint32(4, LAYOUT_VERSION, true);
    dv.setUint32(8, c.kind, true);
    dv.setBigUint64(16, BigInt(total), true);
    dv.setUint32(24, dataOffset, true);
    dv.setUint32(28, hashed ? FLAG_NAME_BLOCK : 0, true);
    if (hashed) {
      dv.setUint32(HEADER_SIZE, name.length, true);
      bytes.set(Buffer.from(name, 'latin1'), HEADER_SIZE + 4);
    }
    dv.setUint32(32, self.pid, true);
    dv.setUint32(36, self.threadSlot, true);
    dv.setBigUint64(40, BigInt(self.startTime), true);
    dv.setBigUint64(48, BigInt(Date.now()), true);
    dv.setUint32(56, fnv1a(bytes, CHECKSUM_RANGES), true);
    const seg = new Segment(name, m, true);
    try {
      c.initialize?.(seg);
      if (seg.#closed) throw invalidArg('options.initialize', `closed segment "${name}" while initializing it; nothing was created`);
      Atomics.store(seg.#i32, 3, STATE_READY);
      const r = native.shmPublish(tmp, objectName(name));
      if (isFailure(r)) throw osError(r.errno, r.syscall, `create segment "${name}"`, name);
      debug('created %s (%s, kind %d, %d bytes)', JSON.stringify(name), objectName(name), c.kind, total);
    } catch (err) {
      seg.close();
      native.shmUnlink(tmp);
      throw err;
    }
    return seg;
  }

  /** @internal */
  static openKind(name: string, kind: number, trust: Trust): Segment {
    const m = native.shmOpen(objectName(name));
    if (isFailure(m)) throw osError(m.errno, m.syscall, `open segment "${name}"`, name);
    try {
      checkOwner(`open segment "${name}"`, name, m.uid, m.gid, trust);
    } catch (err) {
      if (m.buffer !== null) native.unmap(m.handle, m.buffer);
      throw err;
    }
    if (m.buffer === null) {
      throw new ShmkitError(ErrorCodes.TOO_SMALL, `open segment "${name}": it is empty (0 bytes), not a shmkit segment`, { segment: name });
    }
    try {
      validateHeader(name, m.buffer, kind);
    } catch (err) {
      native.unmap(m.handle, m.buffer);
      throw err;
    }
    debug('opened %s (%s, kind %d)', JSON.stringify(name), objectName(name), kind);
    return new Segment(name, m, false);
  }

  /** @internal */
  static openOrCreateKind(name: string, c: InternalCreate): Segment {
    // Open first (the common case, and no memory is reserved for nothing); create if absent; if a
    // racer created it meanwhile, open theirs; if it was unlinked in between, go round again.
    let last: unknown;
    for (let attempt = 0; attempt < 16; attempt++) {
      try {
        return Segment.openKind(name, c.kind, c.trust);
      } catch (err) {
        if (!(err instanceof ShmkitError) || err.code !== ErrorCodes.NOT_FOUND) throw err;
        last = err;
      }
      try {
        return Segment.createKind(name, c);
      } catch (err) {
        if (!(err instanceof ShmkitError) || err.code !== ErrorCodes.EXISTS) throw err;
        last = err;
      }
    }
    throw last;
  }

  // Access -------------------------------------------------------------------------------------------

  /** Bytes of user data (excluding the header). */
  get size(): number {
    return this.byteLength - this.dataOffset;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The whole mapping, header included. Empty (detached) after close(). */
  get buffer(): ArrayBuffer {
    return this.#buffer;
  }

  /** The data area. After close() this view (and every view made from it) is empty. */
  get data(): Uint8Array {
    if (this.#closed) throw closedError(`segment "${this.name}"`, this.name);
    return this.#data;
  }

  /** @internal 32-bit words over the whole mapping, for primitives. */
  get int32(): Int32Array {
    return this.#i32;
  }

  /** @internal 64-bit words over the whole mapping, for owner tokens. */
  get bigint64(): BigInt64Array {
    return this.#i64;
  }

  /**
   * Checks that no other process shrank this object or discarded its pages (with ftruncate) since
   * it was mapped, and repairs the object if one did, so that touching it cannot raise SIGBUS:
   * the size is restored and the pages reserved again. Their old contents are lost, so a repair
   * throws ERR_SHMKIT_CORRUPT (or ERR_SHMKIT_NO_SPACE if /dev/shm has no room for the pages).
   * Channels call this before every park; call it yourself before touching a segment that a peer
   * with write access might have truncated. One fstat system call when intact.
   */
  verify(): void {
    if (this.#closed) throw closedError(`segment "${this.name}"`, this.name);
    if (this.#damage === null) this.check();
    if (this.#damage !== null) throw this.#damage;
  }

  /**
   * @internal verify() without throwing, for the liveness tick of async waits: false if the
   * object was found damaged (then verify() throws the error, every time), or closed.
   */
  check(): boolean {
    if (this.#closed) return false;
    if (this.#damage !== null) return false;
    const rc = native.shmCheck(this.#handle);
    if (rc === 0) return true;
    if (rc === 1 || rc === 2) {
      this.#damage = new ShmkitError(
        ErrorCodes.CORRUPT,
        `segment "${this.name}": another process ${rc === 1 ? 'shrank the object' : 'discarded its pages'} under this mapping; ` +
          'its size and pages were restored, its contents are lost',
        { segment: this.name },
      );
      return false;
    }
    // The repair failed (e.g. ENOSPC: /dev/shm is full): some pages are holes, and touching one
    // raises SIGBUS. Unmap at once, without running rollbacks (they would touch it): every view
    // becomes empty and every later use a CLOSED or this error.
    this.#damage = osError(-rc, 'ftruncate/posix_fallocate', `segment "${this.name}" was truncated by another process and cannot be restored`, this.name);
    this.abandon();
    return false;
  }

  /** @internal the error verify() throws once the object was found truncated (null otherwise). */
  get damage(): ShmkitError | null {
    return this.#damage;
  }

  /** Unmaps without touching the memory (no rollbacks): for a mapping that may no longer be backed. */
  private abandon(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.closeHooks.clear();
    for (const cancel of [...this.pendingWaits]) cancel();
    this.pendingWaits.clear();
    native.unmap(this.#handle, this.#buffer);
    process.nextTick(() => this.emit('close'));
  }

  /** @internal the kind-specific parameter area (header bytes 64..127). */
  params(): DataView {
    return new DataView(this.#buffer, PARAMS_OFFSET, HEADER_SIZE - PARAMS_OFFSET);
  }

  /**
   * Unmaps the segment. Views of it become empty (length 0); they never point at unmapped memory.
   * Pending asynchronous waits on it reject with ERR_SHMKIT_CLOSED. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Undo what in-flight async operations advertised in shared memory (sleepers counts, claimed
    // locks, barrier arrivals) while the memory is still mapped, then reject their promises.
    for (const rollback of [...this.closeHooks]) {
      try {
        rollback();
      } catch {
        // A rollback that fails (e.g. a lock already taken over) has nothing left to undo.
      }
    }
    this.closeHooks.clear();
    for (const cancel of [...this.pendingWaits]) cancel();
    this.pendingWaits.clear();
    native.unmap(this.#handle, this.#buffer);
    process.nextTick(() => this.emit('close'));
  }

  /** Removes the segment's name (see Segment.unlink). */
  unlink(): boolean {
    return Segment.unlink(this.name);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #refd = true;
  /** @internal Pending waits on this mapping, told when ref()/unref() changes. */
  readonly refHooks = new Set<(refd: boolean) => void>();

  /**
   * Pending asynchronous waits on this mapping (of every object in it) stop keeping the process
   * alive, like `timeout.unref()` or `socket.unref()`; waits in progress included. Returns this.
   */
  unref(): this {
    return this.setRef(false);
  }

  /** Undoes unref(): pending waits keep the process alive again (the default). Returns this. */
  ref(): this {
    return this.setRef(true);
  }

  /** Whether pending waits on this mapping keep the process alive. */
  hasRef(): boolean {
    return this.#refd;
  }

  private setRef(on: boolean): this {
    if (this.#refd !== on) {
      this.#refd = on;
      for (const hook of [...this.refHooks]) hook(on);
    }
    return this;
  }

  /** What util.inspect shows: the object, not the mapping's internals. */
  [inspect.custom](depth: number, options: object, inspectFn?: typeof inspect): string {
    const fields = { name: this.name, kind: kindName(this.kind), size: this.size, shmName: this.shmName, closed: this.#closed };
    return `Segment ${(inspectFn ?? inspect)(fields, { ...options, depth: depth < 0 ? 0 : 1 })}`;
  }
}

function parseOptions(options: unknown): InternalCreate {
  const o = checkObject('options', options);
  const size = checkInt('options.size', o.size, 0, MAX_SEGMENT_SIZE - HEADER_SIZE);
  const mode = o.mode === undefined ? 0o600 : checkInt('options.mode', o.mode, 0, 0o777);
  const initialize = checkFunction('options.initialize', o.initialize) as SegmentOptions['initialize'];
  return { kind: Kind.SEGMENT, size, mode, initialize, trust: parseTrust(o.trustedOwners) };
}

function validateHeader(name: string, buffer: ArrayBuffer, kind: number): void {
  const fail = (code: (typeof ErrorCodes)[keyof typeof ErrorCodes], why: string): never => {
    throw new ShmkitError(code, `open segment "${name}": ${why}`, { segment: name });
  };
  if (buffer.byteLength < HEADER_SIZE) {
    fail(ErrorCodes.TOO_SMALL, `${buffer.byteLength} bytes is smaller than a shmkit header (${HEADER_SIZE})`);
  }
  const dv = new DataView(buffer);
  if (dv.getUint32(0, true) !== MAGIC) fail(ErrorCodes.NOT_SHMKIT, 'not a shmkit segment (wrong magic)');
  const version = dv.getUint32(4, true);
  if (version !== LAYOUT_VERSION) {
    fail(ErrorCodes.VERSION, `layout version ${version}, this shmkit reads version ${LAYOUT_VERSION}`);
  }
  if (fnv1a(new Uint8Array(buffer, 0, HEADER_SIZE), CHECKSUM_RANGES) !== dv.getUint32(56, true)) {
    fail(ErrorCodes.CORRUPT, 'header checksum mismatch');
  }
  if (Atomics.load(new Int32Array(buffer, 0, 4), 3) !== STATE_READY) fail(ErrorCodes.CORRUPT, 'header state is not "ready"');
  const total = dv.getBigUint64(16, true);
  if (total !== BigInt(buffer.byteLength)) {
    fail(ErrorCodes.CORRUPT, `header says ${total} bytes but the object has ${buffer.byteLength}`);
  }
  const flags = dv.getUint32(28, true);
  const named = (flags & FLAG_NAME_BLOCK) !== 0;
  if ((flags & ~FLAG_NAME_BLOCK) !== 0) fail(ErrorCodes.CORRUPT, `unknown header flags 0x${flags.toString(16)}`);
  if (dv.getUint32(24, true) !== (named ? HEADER_SIZE + NAME_BLOCK_SIZE : HEADER_SIZE)) fail(ErrorCodes.CORRUPT, 'bad data offset');
  if (named !== isHashed(name)) fail(ErrorCodes.CORRUPT, named ? 'it has a name block, but its name is not hashed' : 'it has no name block, but its name is hashed');
  if (named) {
    if (buffer.byteLength < HEADER_SIZE + NAME_BLOCK_SIZE) fail(ErrorCodes.CORRUPT, 'too small for its name block');
    const stored = blockName(new Uint8Array(buffer, HEADER_SIZE, NAME_BLOCK_SIZE));
    if (stored !== name) fail(ErrorCodes.CORRUPT, `its name block holds ${stored === null ? 'no valid name' : `"${stored}"`}, not "${name}" (a hash collision or damage)`);
  }
  const actual = dv.getUint32(8, true);
  const a = (k: number): string => `${/^[aeiou]/.test(kindName(k)) ? 'an' : 'a'} ${kindName(k)}`;
  if (actual !== kind) fail(ErrorCodes.KIND, `it is ${a(actual)}, not ${a(kind)}`);
}

/** The full name in a name block (`block`: its NAME_BLOCK_SIZE bytes), or null if it holds none. */
export function blockName(block: Uint8Array): string | null {
  const dv = new DataView(block.buffer, block.byteOffset, block.byteLength);
  const len = dv.getUint32(0, true);
  if (len === 0 || len > NAME_BLOCK_SIZE - 4) return null;
  const name = Buffer.from(block.buffer, block.byteOffset + 4, len).toString('latin1');
  try {
    return checkName(name);
  } catch {
    return null;
  }
}
