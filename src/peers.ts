/**
 * A peer table: who is attached to an object, in which roles, and whether they still live. Any
 * kind can hold one (a channel's roles are producer and consumer). A slot is 16 bytes: i64 owner
 * token, i32 roles, i32 reserved. Each handle takes one slot (a CAS of its owner token into a free
 * or dead slot) and sets role bits when it takes a role (a channel: when it first sends or
 * receives). Bit 2 of the roles word is DEPARTED in every table; a kind's roles use other bits. Liveness is the owner token's (pid + start time), so a peer
 * that was SIGKILLed is seen as gone without any timeout. A full table is not an error: the
 * handle works, it is just not listed.
 */
import { SELF_TOKEN, tokenAlive, fromToken } from './identity';

export const PEER_SLOT_SIZE = 16;
/** Set by a handle that detached cleanly: it is gone, like a dead one, and its slot is reusable. */
export const DEPARTED = 4;

export interface PeerSlot {
  pid: number;
  /** Role bits (DEPARTED excluded). */
  roles: number;
  /** False once it died or detached. */
  alive: boolean;
  /** True for this handle's own slot. */
  self: boolean;
}

/** An occupied slot as stored: the owner token and the roles word (DEPARTED included). */
export interface StoredPeer {
  slot: number;
  token: bigint;
  roles: number;
}

/**
 * The occupied slots of the table of `slots` slots at byte `offset` of the words (a live mapping,
 * or a tool's private copy of one). Values are returned as stored: callers judge liveness.
 */
export function storedPeers(i32: Int32Array, i64: BigInt64Array, offset: number, slots: number): StoredPeer[] {
  const out: StoredPeer[] = [];
  for (let i = 0; i < slots; i++) {
    const token = Atomics.load(i64, (offset + i * PEER_SLOT_SIZE) >> 3);
    if (token !== 0n) out.push({ slot: i, token, roles: Atomics.load(i32, (offset + i * PEER_SLOT_SIZE + 8) >> 2) });
  }
  return out;
}

export class PeerTable {
  private slot = -1;
  private roles = 0;

  constructor(
    private readonly i32: Int32Array,
    private readonly i64: BigInt64Array,
    /** Byte offset of the table in the mapping. */
    private readonly offset: number,
    private readonly slots: number,
  ) {}

  private tokenIndex(i: number): number {
    return (this.offset + i * PEER_SLOT_SIZE) >> 3;
  }
  private roleIndex(i: number): number {
    return (this.offset + i * PEER_SLOT_SIZE + 8) >> 2;
  }

  register(): void {
    // Empty slots first: a dead peer's slot is evidence that the peer existed and died (what
    // failIfPeerGone looks for), so it is reused only when no empty slot is left.
    for (const reuseDead of [false, true]) {
      for (let i = 0; i < this.slots; i++) {
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

  list(): PeerSlot[] {
    return storedPeers(this.i32, this.i64, this.offset, this.slots).map((p) => ({
      pid: fromToken(p.token).pid,
      roles: p.roles & ~DEPARTED,
      alive: (p.roles & DEPARTED) === 0 && tokenAlive(p.token),
      self: p.slot === this.slot,
    }));
  }

  /** Live peers other than this handle that have taken `role`. */
  liveOthers(role: number): number {
    let n = 0;
    for (let i = 0; i < this.slots; i++) {
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
    for (let i = 0; i < this.slots; i++) {
      if (i === this.slot) continue;
      if (Atomics.load(this.i64, this.tokenIndex(i)) !== 0n && (Atomics.load(this.i32, this.roleIndex(i)) & role) !== 0) return true;
    }
    return false;
  }

  /** Every live peer of `role` other than this handle is gone, and at least one had taken it. */
  allGone(role: number): boolean {
    // Scanned again after anyOthers: a peer that took the role between the two scans is live.
    return this.liveOthers(role) === 0 && this.anyOthers(role) && this.liveOthers(role) === 0;
  }
}
