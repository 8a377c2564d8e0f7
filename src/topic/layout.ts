/**
 * Topic memory layout; docs/design.md ("Topics") is the protocol. Offsets are bytes from the start
 * of the segment's data area.
 *
 * Parameters (segment header bytes 64..91, written once at creation, validated at every open):
 *   64 u32 capacity (message slots)   68 u32 max message size   72 u32 subscriber slots
 *   76 u32 history                    80 u32 flags (1: overwrite, 2: single publisher)  84 u32 slots offset
 *   88 u32 slot size
 *
 * Data area:
 *   0    i64 TAIL: the sequence number the next message gets (= messages published), | ENDED_BIT
 *   8    f64 publisher parks (block policy: waits for the slowest subscriber)
 *   48   i32 subscriptions word: every subscribe adds 1 once its cursor is placed; a publisher that
 *        sees it change scans the cursors again before it trusts what it remembered
 *   16   Mutex (16 bytes): the publisher lock, held from claiming a sequence number to committing it
 *   64   i32 published word: a flag word (flag-word.ts) every commit and end() advance by 8; subscribers sleep on it
 *   68   i32 consumed word: a flag word a subscriber advances by 8 when it moves on (or leaves) while a publisher sleeps
 *   128  16 x u32 doorbells of sleeping subscribers;  192  16 x u32 doorbells of sleeping publishers
 *   256  subscriber slots, SUB_SIZE bytes each:
 *        +0 i64 owner token (0: free)   +8 u64 cursor: the next sequence number it reads, written as
 *        two u32 halves, low first, and read high, low, high (it only grows)
 *        +16 f64 received   +24 f64 lost   +32 f64 waits (times it waited for a message)
 *   slots offset (a multiple of 64): capacity message slots, slot size bytes each:
 *        +0 u32 stamp: (2s+1) mod 2^32 while message s is written into the slot, (2s+2) mod 2^32 once
 *        +8 u32 payload length   +16 i64 writer's owner token (for tools)   +32 payload
 */
import { ErrorCodes, ShmkitError } from '../errors';
import type { Segment } from '../segment';

export const TAIL = 0;
export const PUBLISH_WAITS = 8;
export const PUBLISHER_LOCK = 16;
export const SUBSCRIPTIONS = 48;
export const PUBLISHED_WORD = 64;
export const CONSUMED_WORD = 68;
export const SUBSCRIBER_BELLS = 128;
export const PUBLISHER_BELLS = 192;
export const SUBSCRIBERS = 256;
export const SUB_SIZE = 64;
export const SUB_TOKEN = 0;
export const SUB_CURSOR = 8;
export const SUB_RECEIVED = 16;
export const SUB_LOST = 24;
export const SUB_WAITS = 32;
export const SLOT_STAMP = 0;
export const SLOT_LEN = 8;
export const SLOT_WRITER = 16;
export const SLOT_PAYLOAD = 32;
/** TAIL bit 62: the topic was ended; no commit succeeds any more. */
export const ENDED_BIT = 1n << 62n;
export const SEQ_MASK = ENDED_BIT - 1n;
/** What a commit adds to the published word, and a subscriber's move to the consumed word. */
export const STEP = 8;

/** Bit 30 of TAIL's high half: ENDED_BIT. */
const ENDED_HI = 1 << 30;

/**
 * TAIL's sequence number, read as two 32-bit halves, high, low, high (no BigInt on the hot path).
 * TAIL changes only by 64-bit atomics, so a read whose two high halves agree is a value it held.
 */
export function tailSeq(i32: Int32Array, base: number): number {
  const i = (base + TAIL) >> 2;
  for (;;) {
    const hi = Atomics.load(i32, i + 1);
    const lo = Atomics.load(i32, i);
    if (Atomics.load(i32, i + 1) === hi) return (hi & (ENDED_HI - 1)) * 4294967296 + (lo >>> 0);
  }
}

/** Whether TAIL's ended bit is set. */
export function tailEnded(i32: Int32Array, base: number): boolean {
  return (Atomics.load(i32, ((base + TAIL) >> 2) + 1) & ENDED_HI) !== 0;
}

/** A subscriber's cursor (at byte `at` of the mapping), read high, low, high. */
export function readCursor(i32: Int32Array, at: number): number {
  const i = at >> 2;
  for (;;) {
    const hi = Atomics.load(i32, i + 1);
    const lo = Atomics.load(i32, i);
    if (Atomics.load(i32, i + 1) === hi) return (hi >>> 0) * 4294967296 + (lo >>> 0);
  }
}

/** Writes a whole cursor: the low half first (a reader between sees a smaller value, never a larger one). */
export function writeCursor(i32: Int32Array, at: number, v: number): void {
  const i = at >> 2;
  Atomics.store(i32, i, v | 0);
  Atomics.store(i32, i + 1, Math.floor(v / 4294967296));
}

/** The stamp of message s once written (2s+2), and while being written (2s+1), mod 2^32. */
export const stampDone = (s: number): number => (2 * s + 2) | 0;
export const stampWriting = (s: number): number => (2 * s + 1) | 0;

export const FLAG_OVERWRITE = 1;
export const FLAG_SINGLE_PUBLISHER = 2;
export const MIN_CAPACITY = 2;
export const MAX_CAPACITY = 1 << 20;
export const MAX_MESSAGE = 64 << 20;
export const MAX_SUBSCRIBERS = 1024;
export const MAX_BYTES = 2 ** 40;

export interface TopicParams {
  capacity: number;
  maxMessageSize: number;
  maxSubscribers: number;
  history: number;
  overwrite: boolean;
  singlePublisher: boolean;
}

export function slotsOffset(p: TopicParams): number {
  return (SUBSCRIBERS + p.maxSubscribers * SUB_SIZE + 63) & ~63;
}

export function slotSize(p: TopicParams): number {
  return SLOT_PAYLOAD + ((p.maxMessageSize + 7) & ~7);
}

export function dataSize(p: TopicParams): number {
  return slotsOffset(p) + p.capacity * slotSize(p);
}

export function writeParams(seg: Segment, p: TopicParams): void {
  const dv = seg.params();
  dv.setUint32(0, p.capacity, true);
  dv.setUint32(4, p.maxMessageSize, true);
  dv.setUint32(8, p.maxSubscribers, true);
  dv.setUint32(12, p.history, true);
  dv.setUint32(16, (p.overwrite ? FLAG_OVERWRITE : 0) | (p.singlePublisher ? FLAG_SINGLE_PUBLISHER : 0), true);
  dv.setUint32(20, slotsOffset(p), true);
  dv.setUint32(24, slotSize(p), true);
}

/** The parameters of an existing topic, checked as untrusted input; a string says what is wrong. */
export function checkParams(dv: DataView, size: number): TopicParams | string {
  const p: TopicParams = {
    capacity: dv.getUint32(0, true),
    maxMessageSize: dv.getUint32(4, true),
    maxSubscribers: dv.getUint32(8, true),
    history: dv.getUint32(12, true),
    overwrite: (dv.getUint32(16, true) & FLAG_OVERWRITE) !== 0,
    singlePublisher: (dv.getUint32(16, true) & FLAG_SINGLE_PUBLISHER) !== 0,
  };
  if (p.capacity < MIN_CAPACITY || p.capacity > MAX_CAPACITY) return `bad capacity ${p.capacity}`;
  if (p.maxMessageSize < 1 || p.maxMessageSize > MAX_MESSAGE) return `bad max message size ${p.maxMessageSize}`;
  if (p.maxSubscribers < 1 || p.maxSubscribers > MAX_SUBSCRIBERS) return `bad subscriber slot count ${p.maxSubscribers}`;
  if (p.history >= p.capacity) return `history ${p.history} must be below the capacity ${p.capacity}`;
  if ((dv.getUint32(16, true) & ~(FLAG_OVERWRITE | FLAG_SINGLE_PUBLISHER)) !== 0) return 'bad flags';
  if (dv.getUint32(20, true) !== slotsOffset(p) || dv.getUint32(24, true) !== slotSize(p)) return 'bad slots offset or slot size';
  if (size !== dataSize(p)) return `data area is ${size} bytes, expected ${dataSize(p)}`;
  return p;
}

export function readParams(seg: Segment): TopicParams {
  const r = checkParams(seg.params(), seg.size);
  if (typeof r === 'string') throw new ShmkitError(ErrorCodes.CORRUPT, `open topic "${seg.name}": ${r}`, { segment: seg.name });
  return r;
}
