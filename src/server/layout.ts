/**
 * Server memory layout; docs/design.md ("Servers and connections") is the protocol. Offsets are
 * bytes from the start of the segment's data area.
 *
 * Parameters (segment header bytes 64..95, written once at creation, validated at every open):
 *   64 u32 connection slots N   68 u32 backlog B   72 u32 ring capacity C   76 u32 listener slots L
 *   80 u32 offset of connection slot 0   88 8 bytes: random instance id
 *
 * Data area:
 *   0    i32 OFFERS flag word (counter += 8 per offer; bits 1, 2 waiter flags)
 *   8    16 x u32 doorbell table of OFFERS
 *   72   i32 ANSWERS flag word (counter += 8 per accept or refusal)
 *   80   16 x u32 doorbell table of ANSWERS
 *   144  reserved to 191
 *   192  listener slots, L x 64 bytes
 *   CONN connection slots, N x 64 bytes (CONN = 192 + L x 64)
 */
import { randomBytes } from 'node:crypto';
import { ErrorCodes, ShmkitError } from '../errors';
import { BELL_SLOTS } from '../flag-word';
import { derivedName } from '../naming';
import type { Segment } from '../segment';

export const OFFERS = 0;
export const OFFERS_BELLS = 8;
export const ANSWERS = OFFERS_BELLS + BELL_SLOTS * 4; // 72
export const ANSWERS_BELLS = ANSWERS + 8; // 80
export const LISTENERS = 192;
/** What an offer or an answer adds to its flag word (above the waiter flag bits). */
export const STEP = 8;

// A listener slot.
export const LISTENER_SIZE = 64;
export const L_TOKEN = 0; // i64 owner token (0: free)
export const L_FLAGS = 8; // u32 bit 0 CLOSING: accepts no more connections
export const L_INFLIGHT = 12; // i32 calls being served (statistic)
export const L_CALLS = 16; // f64 calls completed
export const L_ERRORS = 24; // f64 calls that ended in an error
export const L_LATENCY = 32; // f64 sum of the calls' durations, µs
export const L_ACCEPTED = 40; // f64 connections accepted
export const L_CONNECTIONS = 48; // i32 connections open now
export const CLOSING = 1;

// A connection slot.
export const CONN_SIZE = 64;
export const C_CLIENT = 0; // i64 client token: the slot's owner (0: free)
export const C_SERVER = 8; // i64 token of the server accepting or serving it (0: none)
export const C_STATE = 16; // u32 generation << 4 | state
export const C_TARGET = 20; // i32 listener slot the offer is for, -1: any
export const C_DONE = 24; // u32 bit 0 client done, bit 1 server done
export const C_LISTENER = 28; // i32 listener slot of the accepting server

export const FREE = 0;
export const CLAIMED = 1;
export const OFFERED = 2;
export const ACCEPTING = 3;
export const ACCEPTED = 4;
export const REFUSED = 5;
export const STATE_NAMES = ['free', 'claimed', 'offered', 'accepting', 'accepted', 'refused'] as const;
export const CLIENT_DONE = 1;
export const SERVER_DONE = 2;

export const stateOf = (w: number): number => w & 15;
export const genOf = (w: number): number => w >>> 4;
export const word = (gen: number, state: number): number => ((gen << 4) | state) | 0;
/** The generation after `gen`, mod 2^28. */
export const nextGen = (gen: number): number => (gen + 1) & 0x0fffffff;

export const MAX_CONNECTIONS = 4096;
export const MAX_LISTENERS = 64;
export const DEFAULT_CONNECTIONS = 256;
export const DEFAULT_BACKLOG = 64;
export const DEFAULT_LISTENERS = 16;
export const DEFAULT_CAPACITY = 64 * 1024;
export const MIN_CAPACITY = 1024;
export const MAX_CAPACITY = 2 ** 30;

export interface ServerParams {
  maxConnections: number;
  backlog: number;
  capacity: number;
  maxListeners: number;
}

export const connOffset = (maxListeners: number): number => LISTENERS + maxListeners * LISTENER_SIZE;

export function dataSize(p: ServerParams): number {
  return connOffset(p.maxListeners) + p.maxConnections * CONN_SIZE;
}

/** Header bytes 88..95: a random instance id, which tells this object from others that had its name. */
export const INSTANCE = 88;

export function writeParams(seg: Segment, p: ServerParams): void {
  const dv = seg.params();
  dv.setUint32(0, p.maxConnections, true);
  dv.setUint32(4, p.backlog, true);
  dv.setUint32(8, p.capacity, true);
  dv.setUint32(12, p.maxListeners, true);
  dv.setUint32(16, connOffset(p.maxListeners), true);
  new Uint8Array(seg.buffer, INSTANCE, 8).set(randomBytes(8));
}

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** The parameters of an existing server, checked as untrusted input; a string says why they are bad. */
export function checkParams(dv: DataView, size: number): ServerParams | string {
  const maxConnections = dv.getUint32(0, true);
  const backlog = dv.getUint32(4, true);
  const capacity = dv.getUint32(8, true);
  const maxListeners = dv.getUint32(12, true);
  if (maxConnections < 1 || maxConnections > MAX_CONNECTIONS) return `bad connection slot count ${maxConnections}`;
  if (backlog < 1 || backlog > maxConnections) return `bad backlog ${backlog}`;
  if (!isPow2(capacity) || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY) return `bad ring capacity ${capacity}`;
  if (maxListeners < 1 || maxListeners > MAX_LISTENERS) return `bad listener slot count ${maxListeners}`;
  if (dv.getUint32(16, true) !== connOffset(maxListeners)) return 'bad offset of the connection slots';
  const want = dataSize({ maxConnections, backlog, capacity, maxListeners });
  if (size !== want) return `data area is ${size} bytes, expected ${want}`;
  return { maxConnections, backlog, capacity, maxListeners };
}

export function readParams(seg: Segment): ServerParams {
  const r = checkParams(seg.params(), seg.size);
  if (typeof r === 'string') throw new ShmkitError(ErrorCodes.CORRUPT, `open server "${seg.name}": ${r}`, { segment: seg.name });
  return r;
}

/** The names of a connection's two channels: client to server, and server to client. */
export function ringNames(server: string, slot: number, gen: number): [string, string] {
  return [derivedName(server, `${slot}.${gen}.c`), derivedName(server, `${slot}.${gen}.s`)];
}
