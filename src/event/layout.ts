/**
 * Event memory layout; docs/design.md ("Events") is the protocol. Offsets are bytes from the start
 * of the segment's data area.
 *
 * Parameters (segment header bytes 64..79, written once at creation, validated at every open):
 *   64 u32 max id   68 u32 listener slots   72 u32 slot size   76 u32 offset of the first slot
 *
 * Data area:
 *   0   f64 notifications (a statistic: racy increments between processes may be lost)
 *   8   f64 wake-ups (notifications that found a sleeping listener)
 *   64  listener slots, each SLOT bytes:
 *       +0   i64 owner token of the listening thread (0: free)
 *       +8   i32 flag word: bits 1 and 2 waiter flags (flag-word.ts), the rest a counter every
 *            notification advances by 8
 *       +16  16 x u32 doorbell ids of the listener's sleeping thread (flag-word.ts)
 *       +80  pending bitmap: bit i of word i >> 5 is set while id i is notified and not taken
 */
import { ErrorCodes, ShmkitError } from '../errors';
import { BELL_SLOTS } from '../flag-word';
import type { Segment } from '../segment';

export const NOTIFIED = 0;
export const WOKEN = 8;
export const SLOTS = 64;
export const SLOT_TOKEN = 0;
export const SLOT_FLAG = 8;
export const SLOT_BELLS = 16;
export const SLOT_BITMAP = SLOT_BELLS + BELL_SLOTS * 4;
/** What a notification adds to a listener's flag word (above the waiter flag bits). */
export const NOTIFY_STEP = 8;

export const MAX_ID = 4095;
export const MAX_LISTENERS = 1024;
export const DEFAULT_MAX_ID = 63;
export const DEFAULT_LISTENERS = 16;

export interface EventParams {
  maxId: number;
  maxListeners: number;
}

/** Bytes of one listener slot: the fixed part and a bitmap of maxId + 1 bits, rounded up to 8. */
export function slotSize(maxId: number): number {
  const words = (maxId >> 5) + 1;
  return (SLOT_BITMAP + words * 4 + 7) & ~7;
}

export function dataSize(p: EventParams): number {
  return SLOTS + p.maxListeners * slotSize(p.maxId);
}

export function writeParams(seg: Segment, p: EventParams): void {
  const dv = seg.params();
  dv.setUint32(0, p.maxId, true);
  dv.setUint32(4, p.maxListeners, true);
  dv.setUint32(8, slotSize(p.maxId), true);
  dv.setUint32(12, SLOTS, true);
}

/** The parameters of an existing event, checked as untrusted input; null and why if invalid. */
export function checkParams(dv: DataView, size: number): EventParams | string {
  const maxId = dv.getUint32(0, true);
  const maxListeners = dv.getUint32(4, true);
  if (maxId > MAX_ID) return `bad max id ${maxId}`;
  if (maxListeners < 1 || maxListeners > MAX_LISTENERS) return `bad listener slot count ${maxListeners}`;
  if (dv.getUint32(8, true) !== slotSize(maxId) || dv.getUint32(12, true) !== SLOTS) return 'bad slot size or offset';
  const want = dataSize({ maxId, maxListeners });
  if (size !== want) return `data area is ${size} bytes, expected ${want}`;
  return { maxId, maxListeners };
}

export function readParams(seg: Segment): EventParams {
  const r = checkParams(seg.params(), seg.size);
  if (typeof r === 'string') throw new ShmkitError(ErrorCodes.CORRUPT, `open event "${seg.name}": ${r}`, { segment: seg.name });
  return r;
}
