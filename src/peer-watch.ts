/**
 * Watching who is attached to an object: a snapshot of its attachment table (a channel's peers, a
 * topic's subscribers, an event's listeners), compared with the previous one once per liveness
 * interval. The differences are attach, detach (left cleanly) and death (the process or thread is
 * gone without leaving). Used by Event.watch(); the watch runs in the watching process, on an unref'd
 * timer, and costs nothing between ticks.
 */
import { fromToken, tokenAlive } from './identity';

export type PeerChangeType = 'attach' | 'detach' | 'death';

export interface PeerChange {
  type: PeerChangeType;
  pid: number;
  /** 'producer', 'consumer', 'producer+consumer', 'peer' (a channel), 'subscriber', 'listener'. */
  role: string;
}

/** One entry of an attachment table: its owner token, and whether it left cleanly (still listed). */
export interface Attached {
  token: bigint;
  role: string;
  departed: boolean;
}

/** Something whose attachments can be watched: it lists them by slot. */
export interface Watchable {
  /** @internal */
  attachments(): Map<number, Attached>;
}

/** The changes from `prev` to `cur` (both by slot). */
export function diffAttachments(prev: Map<number, Attached>, cur: Map<number, Attached>): PeerChange[] {
  const out: PeerChange[] = [];
  const gone = (a: Attached): void => {
    out.push({ type: a.departed || tokenAlive(a.token) ? 'detach' : 'death', pid: fromToken(a.token).pid, role: a.role });
  };
  for (const [slot, a] of prev) {
    if (a.departed) continue;
    const b = cur.get(slot);
    if (b === undefined || b.token !== a.token) gone(a); // freed, or taken by someone else since
    else if (b.departed) out.push({ type: 'detach', pid: fromToken(a.token).pid, role: a.role });
    else if (!tokenAlive(a.token)) out.push({ type: 'death', pid: fromToken(a.token).pid, role: a.role });
  }
  for (const [slot, b] of cur) {
    if (b.departed) continue;
    const a = prev.get(slot);
    if ((a === undefined || a.token !== b.token) && tokenAlive(b.token)) out.push({ type: 'attach', pid: fromToken(b.token).pid, role: b.role });
  }
  return out;
}

/** Drops what is dead from a snapshot, so a death is reported once. */
export function liveOnly(m: Map<number, Attached>): Map<number, Attached> {
  for (const [slot, a] of m) if (!a.departed && !tokenAlive(a.token)) m.delete(slot);
  return m;
}
