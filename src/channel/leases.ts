/**
 * The lease table of an at-least-once channel: which consumer holds which taken, unacknowledged
 * message. See docs/design.md ("At-least-once channels").
 *
 * Records between HEAD and READ are in flight: handed out, not yet acknowledged. Each has one
 * lease: { i64 token, u32 position, u32 state }. A consumer takes a record under the consumer lock
 * (position and state first, then its token by CAS into a free slot, then READ moves past the
 * record), acknowledges it by setting its lease's state to ACKED, and whoever holds the consumer
 * lock next moves HEAD past the acknowledged records at its front (HEAD first, then the leases are
 * freed). A lease whose token is dead (its taker was killed, or gave the message back) is taken
 * over with one CAS by another consumer, which gets the message again. Every crash between two of
 * these steps leaves either a lease outside HEAD..READ (stale: freed by repair()) or a state the
 * next step completes; never a record in flight without a lease.
 */
import { SELF_TOKEN } from '../identity';
import { LEASE_SLOTS, LEASES } from './layout';

export const TAKEN = 1;
export const ACKED = 2;
/** The token of a lease given back on purpose (nack) or found without a live taker: never alive. */
export const NO_TAKER = -1n;

export class LeaseTable {
  constructor(
    private readonly i32: Int32Array,
    private readonly i64: BigInt64Array,
    private readonly base: number, // byte offset of the data area
  ) {}

  token(i: number): bigint {
    return Atomics.load(this.i64, (this.base + LEASES + i * 16) >> 3);
  }
  pos(i: number): number {
    return Atomics.load(this.i32, (this.base + LEASES + i * 16 + 8) >> 2) >>> 0;
  }
  state(i: number): number {
    return Atomics.load(this.i32, (this.base + LEASES + i * 16 + 12) >> 2);
  }
  private setToken(i: number, t: bigint): void {
    Atomics.store(this.i64, (this.base + LEASES + i * 16) >> 3, t);
  }
  private setPos(i: number, p: number): void {
    Atomics.store(this.i32, (this.base + LEASES + i * 16 + 8) >> 2, p | 0);
  }
  private setState(i: number, s: number): void {
    Atomics.store(this.i32, (this.base + LEASES + i * 16 + 12) >> 2, s);
  }

  /** Under the consumer lock: a free slot, leased to this thread for the record at `pos`; -1 if none is free. */
  lease(pos: number): number {
    for (let i = 0; i < LEASE_SLOTS; i++) {
      if (this.token(i) !== 0n) continue;
      this.setPos(i, pos);
      this.setState(i, TAKEN);
      if (Atomics.compareExchange(this.i64, (this.base + LEASES + i * 16) >> 3, 0n, SELF_TOKEN) === 0n) return i;
    }
    return -1;
  }

  /** The slot leasing the record at `pos` (any state), or -1. */
  find(pos: number): number {
    for (let i = 0; i < LEASE_SLOTS; i++) if (this.token(i) !== 0n && this.pos(i) === pos) return i;
    return -1;
  }

  /** Acknowledges our lease `i` of the record at `pos`; false if it is not ours any more. */
  ack(i: number, pos: number): boolean {
    if (this.token(i) !== SELF_TOKEN || this.pos(i) !== pos || this.state(i) !== TAKEN) return false;
    this.setState(i, ACKED);
    return true;
  }

  /** Gives our lease back without acknowledging: the message is delivered again. */
  giveBack(i: number, pos: number): boolean {
    if (this.pos(i) !== pos || this.state(i) !== TAKEN) return false;
    return Atomics.compareExchange(this.i64, (this.base + LEASES + i * 16) >> 3, SELF_TOKEN, NO_TAKER) === SELF_TOKEN;
  }

  /** Frees slot `i` (under the consumer lock, after HEAD has moved past its record). */
  free(i: number): void {
    this.setState(i, 0);
    this.setPos(i, 0);
    this.setToken(i, 0n);
  }

  /**
   * Under the consumer lock: takes over a lease given back (nack, token -1) or, with `alive`, one
   * whose taker is dead, for a record in HEAD..READ; its slot index, or -1. `alive` reads /proc
   * (callers cache it): pass it when there is nothing new to take, and now and then.
   */
  takeOverDead(inFlight: (pos: number) => boolean, alive: ((token: bigint) => boolean) | null): number {
    for (let i = 0; i < LEASE_SLOTS; i++) {
      const t = this.token(i);
      if (t === 0n || t === SELF_TOKEN || this.state(i) !== TAKEN || !inFlight(this.pos(i))) continue;
      if (t > 0n && (alive === null || alive(t))) continue;
      if (Atomics.compareExchange(this.i64, (this.base + LEASES + i * 16) >> 3, t, SELF_TOKEN) === t) return i;
    }
    return -1;
  }

  /** Whether a message in flight was given back (no /proc read: cheap enough for every poll). */
  anyGivenBack(inFlight: (pos: number) => boolean): boolean {
    for (let i = 0; i < LEASE_SLOTS; i++) {
      if (this.token(i) < 0n && this.state(i) === TAKEN && inFlight(this.pos(i))) return true;
    }
    return false;
  }

  /** Whether every slot is leased to this thread (a blocking take would wait for itself). */
  allMine(): boolean {
    for (let i = 0; i < LEASE_SLOTS; i++) if (this.token(i) !== SELF_TOKEN || this.state(i) !== TAKEN) return false;
    return true;
  }

  /** Whether a slot is free for a new lease. */
  hasFree(): boolean {
    for (let i = 0; i < LEASE_SLOTS; i++) if (this.token(i) === 0n) return true;
    return false;
  }

  /** Whether any slot is in use (a message in flight, or a stale lease). */
  busy(): boolean {
    for (let i = 0; i < LEASE_SLOTS; i++) if (this.token(i) !== 0n) return true;
    return false;
  }

  /** Under the consumer lock: frees every lease outside HEAD..READ (left by a crash mid-step). */
  repair(inFlight: (pos: number) => boolean): void {
    for (let i = 0; i < LEASE_SLOTS; i++) {
      if (this.token(i) !== 0n && !inFlight(this.pos(i))) this.free(i);
    }
  }
}
