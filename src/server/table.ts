/**
 * The words of a server segment as both sides use them: the listener slots, the connection slots
 * and their state machine, and the two flag words (OFFERS, which listeners sleep on, and ANSWERS,
 * which connecting clients sleep on). docs/design.md ("Servers and connections") is the protocol;
 * every state change here is one compare-and-swap from an exact generation and state.
 */
import { debug } from '../debug';
import { FlagWord } from '../flag-word';
import { held, SELF_TOKEN, takeSlot } from '../identity';
import type { Segment } from '../segment';
import * as L from './layout';

export class ServerTable {
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  readonly f64: Float64Array;
  readonly offers: FlagWord;
  readonly answers: FlagWord;
  private readonly data: number;
  private readonly conn: number;

  constructor(
    readonly segment: Segment,
    readonly params: L.ServerParams,
    label: string,
  ) {
    this.i32 = segment.int32;
    this.i64 = segment.bigint64;
    this.f64 = new Float64Array(segment.buffer, 0, segment.buffer.byteLength >> 3);
    this.data = segment.dataOffset;
    this.conn = this.data + L.connOffset(params.maxListeners);
    this.offers = new FlagWord(segment, label, (this.data + L.OFFERS) >> 2, (this.data + L.OFFERS_BELLS) >> 2, -1);
    this.answers = new FlagWord(segment, label, (this.data + L.ANSWERS) >> 2, (this.data + L.ANSWERS_BELLS) >> 2, -1);
  }

  // Listener slots -------------------------------------------------------------------------------

  listenerBase(i: number): number {
    return this.data + L.LISTENERS + i * L.LISTENER_SIZE;
  }

  listenerToken(i: number): bigint {
    return Atomics.load(this.i64, (this.listenerBase(i) + L.L_TOKEN) >> 3);
  }

  /** Whether listener `i` is held by a live thread that still accepts connections. */
  listenerAccepting(i: number): boolean {
    if (i < 0 || i >= this.params.maxListeners) return false;
    if ((Atomics.load(this.i32, (this.listenerBase(i) + L.L_FLAGS) >> 2) & L.CLOSING) !== 0) return false;
    return held(this.listenerToken(i));
  }

  /** The listener slots whose holders live and accept. */
  acceptingListeners(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.params.maxListeners; i++) if (this.listenerAccepting(i)) out.push(i);
    return out;
  }

  /**
   * Takes a free listener slot, or one whose holder died, and clears its statistics. Two listening
   * handles of one thread hold two slots (a slot with our own token is held). -1 if none is left.
   */
  claimListener(): number {
    const taken = takeSlot(this.i64, this.params.maxListeners, (i) => (this.listenerBase(i) + L.L_TOKEN) >> 3);
    if (taken === null) return -1;
    const b = this.listenerBase(taken.slot);
    Atomics.store(this.i32, (b + L.L_FLAGS) >> 2, 0);
    Atomics.store(this.i32, (b + L.L_INFLIGHT) >> 2, 0);
    Atomics.store(this.i32, (b + L.L_CONNECTIONS) >> 2, 0);
    for (const f of [L.L_CALLS, L.L_ERRORS, L.L_LATENCY, L.L_ACCEPTED]) this.f64[(b + f) >> 3] = 0;
    if (taken.previous !== 0n) debug('server %s: listener slot %d taken over from a dead listener', JSON.stringify(this.segment.name), taken.slot);
    return taken.slot;
  }

  /** Stops listener `i` accepting (its connections go on). */
  markClosing(i: number): void {
    Atomics.or(this.i32, (this.listenerBase(i) + L.L_FLAGS) >> 2, L.CLOSING);
  }

  /** Gives listener slot `i` back. */
  releaseListener(i: number): void {
    Atomics.compareExchange(this.i64, (this.listenerBase(i) + L.L_TOKEN) >> 3, SELF_TOKEN, 0n);
  }

  // Connection slots -----------------------------------------------------------------------------

  connBase(i: number): number {
    return this.conn + i * L.CONN_SIZE;
  }
  state(i: number): number {
    return Atomics.load(this.i32, (this.connBase(i) + L.C_STATE) >> 2);
  }
  casState(i: number, from: number, to: number): boolean {
    return Atomics.compareExchange(this.i32, (this.connBase(i) + L.C_STATE) >> 2, from, to) === from;
  }
  client(i: number): bigint {
    return Atomics.load(this.i64, (this.connBase(i) + L.C_CLIENT) >> 3);
  }
  server(i: number): bigint {
    return Atomics.load(this.i64, (this.connBase(i) + L.C_SERVER) >> 3);
  }
  casServer(i: number, from: bigint, to: bigint): boolean {
    return Atomics.compareExchange(this.i64, (this.connBase(i) + L.C_SERVER) >> 3, from, to) === from;
  }
  target(i: number): number {
    return Atomics.load(this.i32, (this.connBase(i) + L.C_TARGET) >> 2);
  }
  done(i: number): number {
    return Atomics.load(this.i32, (this.connBase(i) + L.C_DONE) >> 2);
  }
  listenerOf(i: number): number {
    return Atomics.load(this.i32, (this.connBase(i) + L.C_LISTENER) >> 2);
  }

  /**
   * A client takes a free connection slot (client token 0 → ours), starts the next generation in
   * state CLAIMED, and returns [slot, generation]; null if every slot is taken.
   */
  claimConnection(target: number): [number, number] | null {
    for (let i = 0; i < this.params.maxConnections; i++) {
      const at = (this.connBase(i) + L.C_CLIENT) >> 3;
      if (Atomics.load(this.i64, at) !== 0n) continue;
      if (Atomics.compareExchange(this.i64, at, 0n, SELF_TOKEN) !== 0n) continue;
      const b = this.connBase(i);
      const gen = L.nextGen(L.genOf(this.state(i)));
      Atomics.store(this.i64, (b + L.C_SERVER) >> 3, 0n);
      Atomics.store(this.i32, (b + L.C_TARGET) >> 2, target);
      Atomics.store(this.i32, (b + L.C_DONE) >> 2, 0);
      Atomics.store(this.i32, (b + L.C_LISTENER) >> 2, -1);
      Atomics.store(this.i32, (b + L.C_STATE) >> 2, L.word(gen, L.CLAIMED));
      return [i, gen];
    }
    return null;
  }

  /** Slots that hold an offer not yet answered, of a live client: what the backlog counts. */
  pendingOffers(): number {
    let n = 0;
    for (let i = 0; i < this.params.maxConnections; i++) {
      const st = L.stateOf(this.state(i));
      if (st !== L.CLAIMED && st !== L.OFFERED && st !== L.ACCEPTING) continue;
      if (held(this.client(i))) n++;
    }
    return n;
  }

  /** Announces a change to the listeners (an offer), waking those that sleep. */
  announceOffer(): void {
    Atomics.add(this.i32, this.offers.word, L.STEP);
    this.offers.wakeWaiters();
  }

  /** Announces an answer (accepted or refused) to the connecting clients, waking those that sleep. */
  announceAnswer(): void {
    Atomics.add(this.i32, this.answers.word, L.STEP);
    this.answers.wakeWaiters();
  }

  /**
   * Frees slot `i`: one CAS of its state word from `seen` (a generation and a state other than
   * FREE) to FREE of that generation, which only one party can win, then the client token (seen as
   * `client`) back to 0, which makes the slot claimable again (a claimer initializes every other
   * field). Returns whether this call freed it.
   */
  free(i: number, seen: number, client: bigint): boolean {
    if (L.stateOf(seen) === L.FREE) return false;
    if (!this.casState(i, seen, L.word(L.genOf(seen), L.FREE))) return false;
    Atomics.compareExchange(this.i64, (this.connBase(i) + L.C_CLIENT) >> 3, client, 0n);
    return true;
  }

  /**
   * One side is done with slot `i` of generation `gen` (it closed the connection, or gave up an
   * offer a server holds): sets its done bit. The side that finds the other's bit already set, or
   * the other side dead (or absent), frees the slot. Returns whether it freed it.
   */
  finish(i: number, gen: number, side: 'client' | 'server'): boolean {
    const b = this.connBase(i);
    const w = this.state(i);
    if (L.genOf(w) !== gen || L.stateOf(w) === L.FREE) return false; // not ours any more
    const mine = side === 'client' ? L.CLIENT_DONE : L.SERVER_DONE;
    const other = side === 'client' ? L.SERVER_DONE : L.CLIENT_DONE;
    const old = Atomics.or(this.i32, (b + L.C_DONE) >> 2, mine);
    if ((old & mine) !== 0) return false; // already finished
    const client = this.client(i);
    const otherToken = side === 'client' ? this.server(i) : client;
    if ((old & other) !== 0 || !held(otherToken)) {
      // The other side finished before us, or is dead: it will not free the slot. (A live one
      // that had not finished sees our bit when it does.) The state may still move (a listener
      // refusing: ACCEPTING to REFUSED), hence the loop.
      return this.freeGeneration(i, gen, client);
    }
    return false;
  }

  /** free() from whatever state generation `gen` of slot `i` is in; false if it is not in one any more. */
  freeGeneration(i: number, gen: number, client: bigint): boolean {
    for (;;) {
      const now = this.state(i);
      if (L.genOf(now) !== gen || L.stateOf(now) === L.FREE) return false;
      if (this.free(i, now, client)) return true;
    }
  }

  /**
   * Whether slot `i` is abandoned: each side has finished or is dead (or absent), so nobody will
   * free it but a sweep. A FREE slot whose client token was not yet cleared counts too.
   */
  abandoned(i: number, alive: (token: bigint) => boolean = held): boolean {
    const client = this.client(i);
    if (client === 0n) return false;
    const w = this.state(i);
    const done = this.done(i);
    if (L.stateOf(w) === L.FREE) return !alive(client);
    const clientGone = (done & L.CLIENT_DONE) !== 0 || !alive(client);
    if (!clientGone) return false;
    const st = L.stateOf(w);
    // Before ACCEPTING no server holds the slot; from ACCEPTING on, the one in its token does.
    if (st === L.CLAIMED || st === L.OFFERED) return true;
    return (done & L.SERVER_DONE) !== 0 || !alive(this.server(i));
  }
}
