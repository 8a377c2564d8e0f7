/**
 * The registry of kinds: for every kind a segment header can name (src/segment.ts `Kind`), its
 * name, how its parameter block and data size are validated, and `describe()`: its live state as
 * plain JSON-able data, read raw from a snapshot of its first bytes. Tools (the `shmkit` CLI) use it
 * to list, inspect, watch and garbage-collect objects without opening them through the public
 * classes: a Channel handle registers itself in the peer table, and opening may reserve pages, both
 * writes. Nothing here writes to shared memory.
 *
 * A snapshot is the object's first bytes (header plus the kind's control area, `snapshotSize()`),
 * read with read(2) or copied out of a mapping, and its real size. It is untrusted input: every
 * value is checked before it is used as a size, offset or loop bound, and the words are read from a
 * private copy, so a garbage object yields a "corrupt" status, never an exception or an
 * out-of-bounds read. A snapshot is not atomic: fields may come from slightly different moments
 * (counters are statistics anyway; a lock word is read whole).
 *
 * The header checks mirror Segment's validateHeader (same order, same rules; docs/design.md
 * "Opening"), which works on a mapping and throws; here they report a status instead.
 */
import { ShmkitError } from './errors';
import { fromToken, processAlive, tokenAlive } from './identity';
import { blockName, FLAG_NAME_BLOCK, HEADER_SIZE, headerChecksum, Kind, LAYOUT_VERSION, MAGIC, NAME_BLOCK_SIZE, PARAMS_OFFSET, type Segment, STATE_READY } from './segment';
import { Semaphore } from './sync/semaphore';
import { Mutex } from './sync/mutex';
import { RwLock } from './sync/rwlock';
import { Condition } from './sync/condition';
import { Barrier } from './sync/barrier';
import * as L from './channel/layout';
import * as EL from './event/layout';
import * as TL from './topic/layout';
import * as SL from './server/layout';
import * as ML from './map/layout';
import * as BL from './nats/bridge-layout';
import { DEPARTED, storedPeers } from './peers';
import { CLOSED_BIT, POS_MASK } from './ring/format';
import { WAITING } from './flag-word';
import { ACKED, LeaseTable, TAKEN } from './channel/leases';

// Header ------------------------------------------------------------------------------------------

/** How an object in /dev/shm looks to a reader. */
export type ObjectStatus =
  /** A valid shmkit object of a known kind. */
  | 'ok'
  /** shmkit's magic, but the header, parameters or live state are inconsistent. */
  | 'corrupt'
  /** Not a shmkit object (wrong magic, or not a regular file). */
  | 'foreign'
  /** Made by a shmkit with another layout version. */
  | 'version'
  /** A valid header of a kind this shmkit does not know. */
  | 'unknown-kind';

/** The decoded header (docs/design.md "Header"). Present whenever the object has 128 bytes and shmkit's magic. */
export interface HeaderInfo {
  version: number;
  kind: number;
  state: number;
  totalSize: number;
  dataOffset: number;
  flags: number;
  creator: { pid: number; threadSlot: number; startTime: number };
  /** Milliseconds since the epoch. */
  createdAt: number;
  checksum: number;
  checksumOk: boolean;
  /** The full name from the name block (flag bit 0: the object name is hashed), else null. */
  name: string | null;
}

export interface HeaderCheck {
  status: ObjectStatus;
  problem: string | null;
  header: HeaderInfo | null;
}

/** FNV-1a over header bytes 0..11 and 16..55 (docs/design.md "Checksum"). */

/** Decodes and checks a header; `size` is the object's real size. Never throws. */
export function checkHeader(bytes: Uint8Array, size: number): HeaderCheck {
  if (size === 0) return { status: 'corrupt', problem: 'empty (0 bytes)', header: null };
  if (size < HEADER_SIZE || bytes.length < HEADER_SIZE) {
    return { status: 'corrupt', problem: `${size} bytes is smaller than a shmkit header (${HEADER_SIZE})`, header: null };
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  if (dv.getUint32(0, true) !== MAGIC) return { status: 'foreign', problem: 'not a shmkit object (wrong magic)', header: null };
  const checksum = dv.getUint32(56, true);
  const header: HeaderInfo = {
    version: dv.getUint32(4, true),
    kind: dv.getUint32(8, true),
    state: dv.getInt32(12, true),
    totalSize: Number(dv.getBigUint64(16, true)),
    dataOffset: dv.getUint32(24, true),
    flags: dv.getUint32(28, true),
    creator: { pid: dv.getUint32(32, true), threadSlot: dv.getUint32(36, true), startTime: Number(dv.getBigUint64(40, true)) },
    createdAt: Number(dv.getBigUint64(48, true)),
    checksum,
    checksumOk: headerChecksum(bytes) === checksum,
    name: null,
  };
  const bad = (problem: string, status: ObjectStatus = 'corrupt'): HeaderCheck => ({ status, problem, header });
  if (header.version !== LAYOUT_VERSION) return bad(`layout version ${header.version}, this shmkit reads version ${LAYOUT_VERSION}`, 'version');
  if (!header.checksumOk) return bad('header checksum mismatch');
  if (header.state !== STATE_READY) return bad(`header state is ${header.state}, not 1 (ready)`);
  if (header.totalSize !== size) return bad(`header says ${header.totalSize} bytes but the object has ${size}`);
  if ((header.flags & ~FLAG_NAME_BLOCK) !== 0) return bad(`unknown header flags 0x${header.flags.toString(16)}`);
  const named = (header.flags & FLAG_NAME_BLOCK) !== 0;
  if (header.dataOffset !== (named ? HEADER_SIZE + NAME_BLOCK_SIZE : HEADER_SIZE)) return bad(`bad data offset ${header.dataOffset}`);
  if (named) {
    if (size < header.dataOffset || bytes.length < header.dataOffset) return bad('too small for its name block');
    header.name = blockName(bytes.subarray(HEADER_SIZE, HEADER_SIZE + NAME_BLOCK_SIZE));
    if (header.name === null) return bad('its name block holds no valid name');
  }
  const kind = kinds.get(header.kind);
  if (kind === undefined) return bad(`kind ${header.kind} is not known to this shmkit`, 'unknown-kind');
  const problem = kind.check(new DataView(bytes.buffer, bytes.byteOffset + PARAMS_OFFSET, HEADER_SIZE - PARAMS_OFFSET), size - header.dataOffset);
  return problem === null ? { status: 'ok', problem: null, header } : bad(problem);
}

// Kinds -------------------------------------------------------------------------------------------

/** A process an object's own state names: a peer, a lock holder, a lease taker. */
export interface ProcessRef {
  pid: number;
  /** The process lives (pid and start time match; docs/design.md "Liveness"). */
  alive: boolean;
  /** e.g. 'owner', 'writer', 'reader', 'producer', 'consumer', 'producer+consumer', 'taker'. */
  role: string;
}

/** Raw, read-only view of a snapshot: a private, 8-aligned copy. `data` is the data area's byte offset. */
interface RawView {
  dv: DataView;
  i32: Int32Array;
  i64: BigInt64Array;
  data: number;
  params: DataView;
}

export interface SegmentState {
  /** Bytes of user data (header excluded). */
  dataSize: number;
}
export interface SemaphoreState {
  value: number;
  sleepers: number;
}
export interface MutexState {
  owner: (ProcessRef & { threadSlot: number }) | null;
  sleepers: number;
  seq: number;
}
export interface RwLockState {
  /** The writer that claims or holds the write side; `dirty`: it died holding it and no writer has recovered yet. */
  writer: { pid: number; threadSlot: number; alive: boolean; dirty: boolean } | null;
  readers: { count: number; holders: Array<{ pid: number; threadSlot: number; alive: boolean }> };
  sleepers: number;
  seq: number;
}
export interface ConditionState {
  sequence: number;
  sleepers: number;
}
export interface BarrierState {
  parties: number;
  arrived: number;
  generation: number;
  sleepers: number;
}
export interface ChannelPeer {
  pid: number;
  threadSlot: number;
  producer: boolean;
  consumer: boolean;
  /** It detached cleanly (close()); its entry stays as evidence. */
  departed: boolean;
  /** Its process lives. An attached peer is one that is alive and not departed. */
  alive: boolean;
}
export interface ChannelLease {
  slot: number;
  /** The taker's pid; null when the message was given back (nack) or found without a taker. */
  pid: number | null;
  alive: boolean;
  state: 'taken' | 'acked' | 'unknown';
  position: number;
  /** Outside head..read: left by a crash between two steps, freed by the next consumer. */
  stale: boolean;
}
export interface ChannelState {
  capacity: number;
  maxMessageSize: number;
  producers: 'single' | 'multi';
  consumers: 'single' | 'multi';
  delivery: 'at-most-once' | 'at-least-once';
  ended: boolean;
  depth: {
    /** sent - received (from the counters; 0 if they are not kept by some peer). */
    messages: number;
    /** Ring bytes in use (tail - head), record headers and padding included. */
    bytes: number;
    /** At-least-once: ring bytes taken but not acknowledged (read - head). */
    inFlightBytes?: number;
  };
  /** Statistics counters; null where a counter holds garbage (NaN, negative). */
  counters: {
    sent: number | null;
    sentBytes: number | null;
    received: number | null;
    receivedBytes: number | null;
    sendWaits: number | null;
    receiveWaits: number | null;
  };
  /** A waiting bit is set on the word (a waiter parked; a bit may outlive a waiter that left). */
  waiting: { senders: boolean; receivers: boolean };
  peers: ChannelPeer[];
  /** At-least-once only: leases in use. */
  leases?: ChannelLease[];
}

export interface EventListenerState {
  slot: number;
  pid: number;
  threadSlot: number;
  alive: boolean;
  /** Ids notified and not yet taken by this listener. */
  pending: number[];
  /** The listener sleeps (a waiter flag is set on its word). */
  sleeping: boolean;
}
export interface EventState {
  maxId: number;
  maxListeners: number;
  notified: number | null;
  wakeUps: number | null;
  listeners: EventListenerState[];
}

export interface TopicSubscriberState {
  slot: number;
  pid: number;
  alive: boolean;
  seq: number;
  lag: number;
  received: number | null;
  lost: number | null;
  /** Times it parked waiting for a message. */
  waits: number | null;
}
export interface TopicState {
  capacity: number;
  maxMessageSize: number;
  overflow: 'block' | 'overwrite';
  publishers: 'single' | 'multi';
  history: number;
  published: number;
  ended: boolean;
  publishWaits: number | null;
  subscribers: TopicSubscriberState[];
}

export interface ServerListenerState {
  slot: number;
  pid: number;
  alive: boolean;
  /** It stopped accepting (close() was called); its connections go on. */
  closing: boolean;
  /** Connections it has open now, and accepted in all. */
  connections: number;
  accepted: number | null;
  /** RPC calls answered, failed, running now, and the sum of their durations (µs). */
  calls: number | null;
  errors: number | null;
  inFlight: number;
  latencyMicros: number | null;
}
export interface ServerConnectionState {
  slot: number;
  state: (typeof SL.STATE_NAMES)[number];
  generation: number;
  client: { pid: number; alive: boolean };
  /** The server process accepting or serving it; null before one took it. */
  server: { pid: number; alive: boolean } | null;
  /** The listener slot that accepted it, -1 before. */
  listener: number;
  clientDone: boolean;
  serverDone: boolean;
}
export interface ServerState {
  maxConnections: number;
  backlog: number;
  capacity: number;
  maxListeners: number;
  listeners: ServerListenerState[];
  connections: ServerConnectionState[];
}

export interface MapHandleState {
  slot: number;
  pid: number;
  alive: boolean;
  gets: number | null;
  hits: number | null;
  misses: number | null;
  writes: number | null;
  watchers: number;
}
export interface MapState {
  maxEntries: number;
  maxKeyBytes: number;
  maxValueSize: number;
  valueBytes: number;
  eviction: 'none' | 'lru';
  stripes: number;
  /** Entries stored (expired ones until removed). */
  entries: number;
  /** Value heap bytes in live blocks. */
  bytesUsed: number | null;
  /** Over every handle, live, closed or dead (a dead one's until its slot is reused). */
  gets: number;
  hits: number;
  misses: number;
  writes: number;
  evictions: number | null;
  expirations: number | null;
  recoveries: number | null;
  /** A writer died holding a lock and the rebuild has not run yet. */
  recoveryOwed: boolean;
  watchers: number;
  handles: MapHandleState[];
}

export interface BridgeState {
  owner: { pid: number; alive: boolean } | null;
  connected: boolean;
  topics: number;
  services: number;
  maps: number;
  out: number | null;
  in: number | null;
  dropped: number | null;
  buffered: number | null;
  echoes: number | null;
  mapWrites: number | null;
  calls: number | null;
  errors: number | null;
  disconnects: number | null;
  reconnects: number | null;
}

export type KindState = SegmentState | SemaphoreState | MutexState | RwLockState | ConditionState | BarrierState | ChannelState | EventState | TopicState | ServerState | MapState | BridgeState;

export interface KindEntry<S extends KindState = KindState> {
  readonly id: number;
  readonly name: string;
  /**
   * Problem with the parameter block (header bytes 64..127) and the data size, by the rules an
   * opener applies; null if valid.
   */
  check(params: DataView, dataSize: number): string | null;
  /** Data-area bytes describe() reads; called only on a block check() accepted. */
  controlSize(params: DataView): number;
  /** The live state; throws a ShmkitError (CORRUPT) on inconsistent state. */
  describe(raw: RawView): S;
  /** The processes the state names, for "is it in use" decisions. */
  users(state: S): ProcessRef[];
  /** One line for tables. */
  summary(state: S): string;
}

const corrupt = (why: string): never => {
  throw new ShmkitError('ERR_SHMKIT_CORRUPT', why);
};

const holder = (token: bigint): { pid: number; threadSlot: number; alive: boolean } => {
  const id = fromToken(BigInt.asIntN(64, token) & 0x7fffffffffffffffn);
  return { pid: id.pid, threadSlot: id.threadSlot, alive: tokenAlive(token) };
};
const pidOf = (p: { pid: number; alive: boolean }): string => `${p.pid}${p.alive ? '' : ' (dead)'}`;

/** A primitive of kinds 2..6: it lives at data+0 and needs `size` data bytes (docs/design.md "Data area per kind"). */
function primitive<S extends KindState>(id: number, name: string, size: number, rest: Pick<KindEntry<S>, 'describe' | 'users' | 'summary'>): KindEntry<S> {
  return {
    id,
    name,
    check: (_params, dataSize) => (dataSize < size ? `${dataSize} data bytes cannot hold a ${name} (${size})` : null),
    controlSize: () => size,
    ...rest,
  };
}

const segment: KindEntry<SegmentState> = {
  id: Kind.SEGMENT,
  name: 'segment',
  check: () => null,
  controlSize: () => 0,
  describe: (r) => ({ dataSize: Number(r.dv.getBigUint64(16, true)) - r.data }),
  users: () => [],
  summary: (s) => `${s.dataSize} data bytes`,
};

const semaphore = primitive<SemaphoreState>(Kind.SEMAPHORE, 'semaphore', Semaphore.SIZE, {
  describe: (r) => ({ value: r.i32[r.data >> 2]!, sleepers: r.i32[(r.data >> 2) + 1]! }),
  users: () => [],
  summary: (s) => `value ${s.value}, ${s.sleepers} sleeping`,
});

const mutex = primitive<MutexState>(Kind.MUTEX, 'mutex', Mutex.SIZE, {
  describe: (r) => {
    const t = r.i64[r.data >> 3]!;
    return { owner: t === 0n ? null : { ...holder(t), role: 'owner' }, seq: r.i32[(r.data >> 2) + 2]!, sleepers: r.i32[(r.data >> 2) + 3]! };
  },
  users: (s) => (s.owner === null ? [] : [s.owner]),
  summary: (s) => `${s.owner === null ? 'free' : `held by ${pidOf(s.owner)}`}, ${s.sleepers} sleeping`,
});

const RW_READERS = (RwLock.SIZE - 16) / 8;
const rwlock = primitive<RwLockState>(Kind.RWLOCK, 'rwlock', RwLock.SIZE, {
  describe: (r) => {
    const w = r.i64[r.data >> 3]!;
    const holders: RwLockState['readers']['holders'] = [];
    for (let k = 0; k < RW_READERS; k++) {
      const t = r.i64[(r.data >> 3) + 2 + k]!;
      if (t !== 0n) holders.push(holder(t));
    }
    // A negative writer word is "dirty": the token of a writer that died holding it (bit 63 set).
    const writer = w === 0n ? null : w < 0n ? { ...holder(w), alive: false, dirty: true } : { ...holder(w), dirty: false };
    return { writer, readers: { count: holders.length, holders }, seq: r.i32[(r.data >> 2) + 2]!, sleepers: r.i32[(r.data >> 2) + 3]! };
  },
  users: (s) => [
    ...(s.writer !== null && !s.writer.dirty ? [{ pid: s.writer.pid, alive: s.writer.alive, role: 'writer' }] : []),
    ...s.readers.holders.map((h) => ({ pid: h.pid, alive: h.alive, role: 'reader' })),
  ],
  summary: (s) =>
    `${s.writer === null ? 'no writer' : s.writer.dirty ? `dirty (writer ${s.writer.pid} died)` : `writer ${pidOf(s.writer)}`}, ` +
    `${s.readers.count} reader${s.readers.count === 1 ? '' : 's'}, ${s.sleepers} sleeping`,
});

const condition = primitive<ConditionState>(Kind.CONDITION, 'condition', Condition.SIZE, {
  describe: (r) => ({ sequence: r.i32[r.data >> 2]! >>> 0, sleepers: r.i32[(r.data >> 2) + 1]! }),
  users: () => [],
  summary: (s) => `sequence ${s.sequence}, ${s.sleepers} sleeping`,
});

const barrier = primitive<BarrierState>(Kind.BARRIER, 'barrier', Barrier.SIZE, {
  describe: (r) => {
    const w = r.i32[r.data >> 2]!;
    const parties = r.i32[(r.data >> 2) + 1]!;
    const arrived = w & 0xffff;
    // The same consistency rules as arrive() (docs/design.md "Barrier").
    if (parties < 1 || parties > Barrier.MAX_PARTIES) corrupt(`barrier parties ${parties} out of range`);
    if (w < 0 || arrived >= parties) corrupt(`barrier state word 0x${(w >>> 0).toString(16)} is inconsistent with ${parties} parties`);
    return { parties, arrived, generation: (w >>> 16) & 0x7fff, sleepers: r.i32[(r.data >> 2) + 2]! };
  },
  users: () => [],
  summary: (s) => `${s.arrived}/${s.parties} arrived, generation ${s.generation}`,
});

/** Channel parameters through the channel's own validation (readParams), which reads only these. */
function channelParams(params: DataView, dataSize: number): L.ChannelParams {
  const source = { name: '', size: dataSize, params: () => params };
  return L.readParams(source as unknown as Segment);
}

const counter = (v: number): number | null => (Number.isFinite(v) && v >= 0 ? v : null);

const channel: KindEntry<ChannelState> = {
  id: Kind.CHANNEL,
  name: 'channel',
  check(params, dataSize) {
    try {
      channelParams(params, dataSize);
      return null;
    } catch (err) {
      return err instanceof ShmkitError ? err.message.replace(/^open channel "": /, '') : String(err);
    }
  },
  controlSize: () => L.RING,
  describe(r) {
    const p = channelParams(r.params, Number(r.dv.getBigUint64(16, true)) - r.data);
    const d = r.data;
    const word = (off: number): number => r.i32[(d + off) >> 2]!;
    const f64 = (off: number): number => r.dv.getFloat64(d + off, true);
    const tail = word(L.TAIL);
    const head = word(L.HEAD);
    const tailPos = (tail & POS_MASK) >>> 0;
    const headPos = (head & POS_MASK) >>> 0;
    const used = (tailPos - headPos) >>> 0;
    if (used > p.capacity) corrupt(`tail - head = ${used} exceeds the capacity ${p.capacity}`);
    const sent = counter(f64(L.SENT));
    const received = counter(f64(L.RECEIVED));
    const state: ChannelState = {
      capacity: p.capacity,
      maxMessageSize: p.maxMessageSize,
      producers: p.multiProducer ? 'multi' : 'single',
      consumers: p.multiConsumer ? 'multi' : 'single',
      delivery: p.atLeastOnce ? 'at-least-once' : 'at-most-once',
      ended: word(L.CLOSED) !== 0 || (tail & CLOSED_BIT) !== 0,
      depth: { messages: sent !== null && received !== null ? Math.max(0, sent - received) : 0, bytes: used },
      counters: {
        sent,
        sentBytes: counter(f64(L.SENT_BYTES)),
        received,
        receivedBytes: counter(f64(L.RECEIVED_BYTES)),
        sendWaits: counter(f64(L.SEND_WAITS)),
        receiveWaits: counter(f64(L.RECEIVE_WAITS)),
      },
      waiting: {
        senders: (head & WAITING) !== 0,
        receivers: (tail & WAITING) !== 0,
      },
      peers: [],
    };
    for (const { token, roles } of storedPeers(r.i32, r.i64, d + L.PEERS, L.PEER_SLOTS)) {
      const h = holder(token);
      state.peers.push({
        pid: h.pid,
        threadSlot: h.threadSlot,
        producer: (roles & L.ROLE_PRODUCER) !== 0,
        consumer: (roles & L.ROLE_CONSUMER) !== 0,
        departed: (roles & DEPARTED) !== 0,
        alive: h.alive,
      });
    }
    if (p.atLeastOnce) {
      const readPos = (word(L.READ) & POS_MASK) >>> 0;
      const inFlight = (readPos - headPos) >>> 0;
      if (inFlight > used) corrupt(`read - head = ${inFlight} exceeds tail - head = ${used}`);
      state.depth.inFlightBytes = inFlight;
      const leases = new LeaseTable(r.i32, r.i64, d);
      state.leases = [];
      for (let i = 0; i < L.LEASE_SLOTS; i++) {
        const t = leases.token(i);
        if (t === 0n) continue;
        const position = leases.pos(i);
        const st = leases.state(i);
        state.leases.push({
          slot: i,
          pid: t > 0n ? fromToken(t).pid : null,
          alive: t > 0n && tokenAlive(t),
          state: st === TAKEN ? 'taken' : st === ACKED ? 'acked' : 'unknown',
          position,
          stale: ((position - headPos) >>> 0) >= inFlight,
        });
      }
    }
    return state;
  },
  users: (s) => [
    ...s.peers.filter((p) => !p.departed).map((p) => ({ pid: p.pid, alive: p.alive, role: [p.producer && 'producer', p.consumer && 'consumer'].filter(Boolean).join('+') || 'peer' })),
    ...(s.leases ?? []).filter((l) => l.pid !== null && !l.stale).map((l) => ({ pid: l.pid!, alive: l.alive, role: 'taker' })),
  ],
  summary: (s) => {
    const live = s.peers.filter((p) => p.alive && !p.departed).length;
    return `${s.depth.messages} queued, ${live} peer${live === 1 ? '' : 's'}${s.ended ? ', ended' : ''}`;
  },
};

const event: KindEntry<EventState> = {
  id: Kind.EVENT,
  name: 'event',
  check(params, dataSize) {
    const r = EL.checkParams(params, dataSize);
    return typeof r === 'string' ? r : null;
  },
  controlSize: (params) => EL.dataSize({ maxId: params.getUint32(0, true), maxListeners: params.getUint32(4, true) }),
  describe(r) {
    const p = EL.checkParams(r.params, Number(r.dv.getBigUint64(16, true)) - r.data);
    if (typeof p === 'string') return corrupt(p);
    const slot = EL.slotSize(p.maxId);
    const listeners: EventListenerState[] = [];
    for (let i = 0; i < p.maxListeners; i++) {
      const base = r.data + EL.SLOTS + i * slot;
      const token = r.i64[(base + EL.SLOT_TOKEN) >> 3]!;
      if (token === 0n) continue;
      const pending: number[] = [];
      for (let id = 0; id <= p.maxId; id++) if ((r.i32[((base + EL.SLOT_BITMAP) >> 2) + (id >> 5)]! >>> (id & 31)) & 1) pending.push(id);
      const h = holder(token);
      listeners.push({ slot: i, pid: h.pid, threadSlot: h.threadSlot, alive: h.alive, pending, sleeping: (r.i32[(base + EL.SLOT_FLAG) >> 2]! & WAITING) !== 0 });
    }
    const f64 = (off: number): number | null => counter(r.dv.getFloat64(r.data + off, true));
    return { maxId: p.maxId, maxListeners: p.maxListeners, notified: f64(EL.NOTIFIED), wakeUps: f64(EL.WOKEN), listeners };
  },
  users: (s) => s.listeners.map((l) => ({ pid: l.pid, alive: l.alive, role: 'listener' })),
  summary: (s) => {
    const live = s.listeners.filter((l) => l.alive).length;
    const pending = s.listeners.reduce((n, l) => n + l.pending.length, 0);
    return `${live} listener${live === 1 ? '' : 's'}, ${pending} pending, ids 0..${s.maxId}`;
  },
};

const topic: KindEntry<TopicState> = {
  id: Kind.TOPIC,
  name: 'topic',
  check(params, dataSize) {
    const r = TL.checkParams(params, dataSize);
    return typeof r === 'string' ? r : null;
  },
  // The control part only: the message slots are not read.
  controlSize: (params) => TL.SUBSCRIBERS + Math.min(params.getUint32(8, true), TL.MAX_SUBSCRIBERS) * TL.SUB_SIZE,
  describe(r) {
    const p = TL.checkParams(r.params, Number(r.dv.getBigUint64(16, true)) - r.data);
    if (typeof p === 'string') return corrupt(p);
    const tailWord = r.i64[(r.data + TL.TAIL) >> 3]!;
    const published = Number(tailWord & TL.SEQ_MASK);
    const subscribers: TopicSubscriberState[] = [];
    for (let i = 0; i < p.maxSubscribers; i++) {
      const base = r.data + TL.SUBSCRIBERS + i * TL.SUB_SIZE;
      const token = r.i64[(base + TL.SUB_TOKEN) >> 3]!;
      if (token === 0n) continue;
      const seq = Number(r.i64[(base + TL.SUB_CURSOR) >> 3]!);
      const h = holder(token);
      subscribers.push({
        slot: i, pid: h.pid, alive: h.alive, seq, lag: Math.max(0, published - seq),
        received: counter(r.dv.getFloat64(base + TL.SUB_RECEIVED, true)), lost: counter(r.dv.getFloat64(base + TL.SUB_LOST, true)),
        waits: counter(r.dv.getFloat64(base + TL.SUB_WAITS, true)),
      });
    }
    return {
      capacity: p.capacity, maxMessageSize: p.maxMessageSize, overflow: p.overwrite ? 'overwrite' : 'block', publishers: p.singlePublisher ? 'single' : 'multi', history: p.history,
      published, ended: (tailWord & TL.ENDED_BIT) !== 0n, publishWaits: counter(r.dv.getFloat64(r.data + TL.PUBLISH_WAITS, true)), subscribers,
    };
  },
  users: (s) => s.subscribers.map((x) => ({ pid: x.pid, alive: x.alive, role: 'subscriber' })),
  summary: (s) => {
    const live = s.subscribers.filter((x) => x.alive);
    const lag = live.reduce((m, x) => Math.max(m, x.lag), 0);
    return `${s.published} published, ${live.length} subscriber${live.length === 1 ? '' : 's'}, max lag ${lag}${s.ended ? ', ended' : ''}`;
  },
};

const round = (v: number | null): number | null => (v === null ? null : Math.round(v));

const server: KindEntry<ServerState> = {
  id: Kind.SERVER,
  name: 'server',
  check(params, dataSize) {
    const r = SL.checkParams(params, dataSize);
    return typeof r === 'string' ? r : null;
  },
  controlSize: (params) => Math.min(SL.dataSize({ maxConnections: Math.min(params.getUint32(0, true), SL.MAX_CONNECTIONS), backlog: 1, capacity: 1024, maxListeners: Math.min(params.getUint32(12, true), SL.MAX_LISTENERS) }), 1 << 20),
  describe(r) {
    const p = SL.checkParams(r.params, Number(r.dv.getBigUint64(16, true)) - r.data);
    if (typeof p === 'string') return corrupt(p);
    const listeners: ServerListenerState[] = [];
    for (let i = 0; i < p.maxListeners; i++) {
      const b = r.data + SL.LISTENERS + i * SL.LISTENER_SIZE;
      const token = r.i64[(b + SL.L_TOKEN) >> 3]!;
      if (token === 0n) continue;
      const h = holder(token);
      listeners.push({
        slot: i, pid: h.pid, alive: h.alive, closing: (r.i32[(b + SL.L_FLAGS) >> 2]! & SL.CLOSING) !== 0,
        connections: r.i32[(b + SL.L_CONNECTIONS) >> 2]!, accepted: counter(r.dv.getFloat64(b + SL.L_ACCEPTED, true)),
        calls: counter(r.dv.getFloat64(b + SL.L_CALLS, true)), errors: counter(r.dv.getFloat64(b + SL.L_ERRORS, true)),
        inFlight: r.i32[(b + SL.L_INFLIGHT) >> 2]!, latencyMicros: round(counter(r.dv.getFloat64(b + SL.L_LATENCY, true))),
      });
    }
    const connections: ServerConnectionState[] = [];
    const c0 = r.data + SL.connOffset(p.maxListeners);
    for (let i = 0; i < p.maxConnections; i++) {
      const b = c0 + i * SL.CONN_SIZE;
      const client = r.i64[(b + SL.C_CLIENT) >> 3]!;
      if (client === 0n) continue;
      const w = r.i32[(b + SL.C_STATE) >> 2]!;
      const st = SL.stateOf(w);
      const srv = r.i64[(b + SL.C_SERVER) >> 3]!;
      const done = r.i32[(b + SL.C_DONE) >> 2]!;
      const c = holder(client);
      const s = srv === 0n ? null : holder(srv);
      connections.push({
        slot: i, state: SL.STATE_NAMES[st] ?? corrupt(`connection slot ${i}: bad state ${st}`), generation: SL.genOf(w),
        client: { pid: c.pid, alive: c.alive }, server: s === null ? null : { pid: s.pid, alive: s.alive },
        listener: r.i32[(b + SL.C_LISTENER) >> 2]!, clientDone: (done & SL.CLIENT_DONE) !== 0, serverDone: (done & SL.SERVER_DONE) !== 0,
      });
    }
    return { maxConnections: p.maxConnections, backlog: p.backlog, capacity: p.capacity, maxListeners: p.maxListeners, listeners, connections };
  },
  users: (s) => [
    ...s.listeners.map((l) => ({ pid: l.pid, alive: l.alive, role: 'listener' })),
    ...s.connections.map((c) => ({ pid: c.client.pid, alive: c.client.alive, role: 'client' })),
  ],
  summary: (s) => {
    const live = s.listeners.filter((l) => l.alive && !l.closing).length;
    const open = s.connections.filter((c) => c.state === 'accepted' && c.client.alive).length;
    const calls = s.listeners.reduce((n, l) => n + (l.calls ?? 0), 0);
    return `${live} listener${live === 1 ? '' : 's'}, ${open} connection${open === 1 ? '' : 's'}${calls > 0 ? `, ${calls} calls` : ''}`;
  },
};

const map: KindEntry<MapState> = {
  id: Kind.MAP,
  name: 'map',
  check(params, dataSize) {
    const r = ML.checkParams(params, dataSize);
    return typeof r === 'string' ? r : null;
  },
  // The header words and the handle slots: not the entries or the heap.
  controlSize: () => ML.STAT_SLOTS_AT + ML.STAT_SLOTS * ML.STAT_SIZE,
  describe(r) {
    const p = ML.checkParams(r.params, Number(r.dv.getBigUint64(16, true)) - r.data);
    if (typeof p === 'string') return corrupt(p);
    const f = (at: number): number | null => counter(r.dv.getFloat64(r.data + at, true));
    const u = (at: number): number => r.dv.getUint32(r.data + at, true);
    const totals = [0, 0, 0, 0];
    for (let k = 0; k < 4; k++) totals[k] = f(ML.RETIRED + 8 * k) ?? 0;
    const handles: MapHandleState[] = [];
    for (let i = 0; i < ML.STAT_SLOTS; i++) {
      const b = ML.STAT_SLOTS_AT + i * ML.STAT_SIZE;
      const token = r.i64[(r.data + b) >> 3]!;
      if (token === 0n) continue;
      const h = holder(token);
      const c = [f(b + ML.S_GETS), f(b + ML.S_HITS), f(b + ML.S_MISSES), f(b + ML.S_WRITES)];
      for (let k = 0; k < 4; k++) totals[k]! += c[k] ?? 0;
      handles.push({ slot: i, pid: h.pid, alive: h.alive, gets: c[0]!, hits: c[1]!, misses: c[2]!, writes: c[3]!, watchers: u(b + ML.S_WATCHERS) });
    }
    return {
      maxEntries: p.maxEntries, maxKeyBytes: p.maxKeyBytes, maxValueSize: p.maxValueSize, valueBytes: p.heapBytes, eviction: p.lru ? 'lru' : 'none', stripes: p.stripes,
      entries: u(ML.LIVE), bytesUsed: f(ML.HEAP_USED), gets: totals[0]!, hits: totals[1]!, misses: totals[2]!, writes: totals[3]!,
      evictions: f(ML.EVICTIONS), expirations: f(ML.EXPIRATIONS), recoveries: f(ML.RECOVERIES), recoveryOwed: u(ML.RECOVERY) !== 0, watchers: u(ML.WATCHERS), handles,
    };
  },
  users: (s) => s.handles.map((h) => ({ pid: h.pid, alive: h.alive, role: 'handle' })),
  summary: (s) => {
    const used = s.bytesUsed === null ? '?' : `${Math.round((100 * s.bytesUsed) / s.valueBytes)}%`;
    const ratio = s.gets > 0 ? `, ${Math.round((100 * s.hits) / s.gets)}% hits` : '';
    return `${s.entries}/${s.maxEntries} entries, ${used} of value bytes${ratio}${(s.evictions ?? 0) > 0 ? `, ${s.evictions} evicted` : ''}${s.recoveryOwed ? ', recovery owed' : ''}`;
  },
};

const bridge: KindEntry<BridgeState> = {
  id: Kind.BRIDGE,
  name: 'bridge',
  check: (_params, dataSize) => (dataSize < BL.DATA_SIZE ? `a data area of ${dataSize} bytes (a bridge needs ${BL.DATA_SIZE})` : null),
  controlSize: () => BL.DATA_SIZE,
  describe(r) {
    const token = r.i64[(r.data + BL.OWNER) >> 3]!;
    const f = (at: number): number | null => counter(r.dv.getFloat64(r.data + at, true));
    const routes = r.dv.getUint32(r.data + BL.ROUTES, true);
    return {
      owner: token === 0n ? null : holder(token),
      connected: r.dv.getUint32(r.data + BL.CONNECTED, true) === 1 && (token === 0n || holder(token).alive), // a dead bridge is connected to nothing
      topics: routes & 255, services: (routes >>> 8) & 255, maps: (routes >>> 16) & 255,
      out: f(BL.OUT), in: f(BL.IN), dropped: f(BL.DROPPED), buffered: f(BL.BUFFERED), echoes: f(BL.ECHOES), mapWrites: f(BL.MAP_WRITES),
      calls: f(BL.CALLS), errors: f(BL.ERRORS), disconnects: f(BL.DISCONNECTS), reconnects: f(BL.RECONNECTS),
    };
  },
  users: (s) => (s.owner === null ? [] : [{ pid: s.owner.pid, alive: s.owner.alive, role: 'bridge' }]),
  summary: (s) => `${s.owner === null ? 'no owner' : s.owner.alive ? `pid ${s.owner.pid}` : `pid ${s.owner.pid} (dead)`}, NATS ${s.connected ? 'connected' : 'away'}; ${s.topics} topics, ${s.services} services, ${s.maps} maps; ${s.out ?? '?'} out, ${s.in ?? '?'} in${s.dropped ? `, ${s.dropped} dropped` : ''}${s.buffered ? `, ${s.buffered} buffered` : ''}`,
};

/** Every kind this shmkit knows, by the id stored in the header. */
export const kinds: ReadonlyMap<number, KindEntry> = new Map(
  [segment, semaphore, mutex, rwlock, condition, barrier, channel, event, topic, server, map, bridge].map((k) => [k.id, k as unknown as KindEntry]),
);

// Describing an object ----------------------------------------------------------------------------

/** The object's first bytes and its real size (fstat, or the mapping's length). */
export interface Snapshot {
  bytes: Uint8Array;
  size: number;
}

export interface ObjectDescription extends HeaderCheck {
  /** The kind's name; null when the header is unreadable or the kind unknown. */
  kind: string | null;
  /** Whether the creator process (header pid + start time) lives; null without a valid header. */
  creatorAlive: boolean | null;
  /** The kind's live state; null unless status is 'ok'. */
  state: KindState | null;
  /** One line for tables; null unless status is 'ok'. */
  summary: string | null;
  /** The processes the state names (peers, holders, lease takers). */
  users: ProcessRef[];
}

/** Bytes to read first: the header and, if there is one, the name block. */
export const HEAD_READ = HEADER_SIZE + NAME_BLOCK_SIZE;

/**
 * How many bytes of an object describe() needs, from its first bytes (HEAD_READ, or all if
 * fewer): the header (and name block) plus the kind's control area, never more than `size`.
 */
export function snapshotSize(header: Uint8Array, size: number): number {
  const c = checkHeader(header, size);
  if (c.status !== 'ok') return Math.min(size, header.length);
  const kind = kinds.get(c.header!.kind)!;
  return Math.min(size, c.header!.dataOffset + kind.controlSize(new DataView(header.buffer, header.byteOffset + PARAMS_OFFSET, HEADER_SIZE - PARAMS_OFFSET)));
}

/** Decodes header and live state of a snapshot. Never throws: garbage is a 'corrupt' status. */
export function describeSnapshot(s: Snapshot): ObjectDescription {
  const c = checkHeader(s.bytes, s.size);
  const out: ObjectDescription = { ...c, kind: null, creatorAlive: null, state: null, summary: null, users: [] };
  if (c.header === null || c.status === 'version') return out; // another layout: its fields mean nothing here
  try {
    out.creatorAlive = processAlive(c.header.creator.pid, c.header.creator.startTime % 2 ** 31);
  } catch {
    out.creatorAlive = true; // a pid out of range: not proof of death
  }
  if (c.status !== 'ok') return out;
  const kind = kinds.get(c.header.kind)!;
  out.kind = kind.name;
  const need = c.header.dataOffset + kind.controlSize(new DataView(s.bytes.buffer, s.bytes.byteOffset + PARAMS_OFFSET, HEADER_SIZE - PARAMS_OFFSET));
  if (s.bytes.length < need) {
    out.status = 'corrupt';
    out.problem = `only ${s.bytes.length} of the ${need} bytes to describe it could be read`;
    return out;
  }
  // A private, 8-aligned copy: the words are read from it, never from shared memory directly.
  const copy = new ArrayBuffer((need + 7) & ~7);
  new Uint8Array(copy).set(s.bytes.subarray(0, need));
  const raw: RawView = {
    dv: new DataView(copy),
    i32: new Int32Array(copy),
    i64: new BigInt64Array(copy),
    data: c.header.dataOffset,
    params: new DataView(copy, PARAMS_OFFSET, HEADER_SIZE - PARAMS_OFFSET),
  };
  try {
    out.state = kind.describe(raw);
    out.summary = kind.summary(out.state);
    out.users = kind.users(out.state);
  } catch (err) {
    out.status = 'corrupt';
    out.problem = err instanceof Error ? err.message : String(err);
    out.state = null;
    out.summary = null;
    out.users = [];
  }
  return out;
}
