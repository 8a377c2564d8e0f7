/**
 * The peer table of a channel: who is attached, in which roles, and whether they still live.
 * Each handle takes one slot (a CAS of its owner token into a free or dead slot) and sets role bits
 * when it first sends or receives. Liveness is the owner token's (pid + start time), so a peer
 * that was SIGKILLed is seen as gone without any timeout. A full table is not an error: the
 * handle works, it is just not listed.
 */
import { SELF_TOKEN, tokenAlive, fromToken } from '../identity';
import { PEER_SLOTS, PEERS } from './layout';

export const ROLE_PRODUCER = 1;
export const ROLE_CONSUMER = 2;
/** Set by a handle that detached cleanly: it is gone, like a dead one, and its slot is reusable. */
export const DEPARTED = 4;

export interface PeerInfo {
  pid: number;
  producer: boolean;
  consumer: boolean;
  /** False once it died or detached. */
  alive: boolean;
  /** True for this handle's own slot. */
  self: boolean;
}

export class PeerTable {
  private slot = -1;
  private roles = 0;

  constructor(
    private readonly i32: Int32Array,
    private readonly i64: BigInt64Array,
    private readonly base: number, // byte offset of the data area
  ) {}

  private tokenIndex(i: number): number {
    return (this.base + PEERS + i * 16) >> 3;
  }
  private roleIndex(i: number): number {
    return (this.base + PEERS + i * 16 + 8) >> 2;
  }

  register(): void {
    // Empty slots first: a dead peer's slot is evidence that the peer existed and died (what
    // failIfPeerGone looks for), so it is reused only when no empty slot is left.
    for (const reuseDead of [false, true]) {
      for (let i = 0; i < PEER_SLOTS; i++) {
        const t = Atomics.load(this.i64, this.tokenIndex(i));
        const departed = (Atomics.load(this.i32, this.roleIndex(i)) & DEPARTED) !== 0;
        if (t !== 0n && (!reuseDead || (!departed && (t === SELF_TOKEN || tokenAlive(t))))) continue;
        if (Atomics.compareExchange(this.i64, this.tokenIndex(i), t, SELF_TOKEN) === t) {
          Atomics.store(this.i32, this.roleIndex(i), 0); // clear a dead owner's role bits
          this.slot = i;
          return;
        }
      }
    }
  }

  addRole(role: number): void {
    if ((this.roles & role) !== 0) return;
    this.roles |= role;
    if (this.slot >= 0) Atomics.or(this.i32, this.roleIndex(this.slot), role);
  }

  /**
   * Leaves the table. The slot keeps its role bits plus DEPARTED, so that peers of the other role
   * can still tell "it was here and is gone" (failIfPeerGone), as for a peer that died.
   */
  unregister(): void {
    if (this.slot < 0 || this.i32.length === 0) return;
    Atomics.or(this.i32, this.roleIndex(this.slot), DEPARTED);
    this.slot = -1;
  }

  list(): PeerInfo[] {
    const out: PeerInfo[] = [];
    for (let i = 0; i < PEER_SLOTS; i++) {
      const t = Atomics.load(this.i64, this.tokenIndex(i));
      if (t === 0n) continue;
      const r = Atomics.load(this.i32, this.roleIndex(i));
      out.push({ pid: fromToken(t).pid, producer: (r & ROLE_PRODUCER) !== 0, consumer: (r & ROLE_CONSUMER) !== 0, alive: (r & DEPARTED) === 0 && tokenAlive(t), self: i === this.slot });
    }
    return out;
  }

  /** Live peers other than this handle that have taken `role`. */
  liveOthers(role: number): number {
    let n = 0;
    for (let i = 0; i < PEER_SLOTS; i++) {
      if (i === this.slot) continue;
      const t = Atomics.load(this.i64, this.tokenIndex(i));
      const r = Atomics.load(this.i32, this.roleIndex(i));
      if (t === 0n || (r & role) === 0 || (r & DEPARTED) !== 0) continue;
      if (tokenAlive(t)) n++;
    }
    return n;
  }

  /** Whether any peer other than this handle has held `role` (alive, dead or departed). */
  anyOthers(role: number): boolean {
    for (let i = 0; i < PEER_SLOTS; i++) {
      if (i === this.slot) continue;
      if (Atomics.load(this.i64, this.tokenIndex(i)) !== 0n && (Atomics.load(this.i32, this.roleIndex(i)) & role) !== 0) return true;
    }
    return false;
  }
}
