/**
 * connect(): the client side of the handshake (docs/design.md, "Servers and connections"). The
 * client claims a connection slot, makes the connection's two channels under names derived from
 * the server's, offers the slot, and waits on the ANSWERS word for a listener to accept it. Once
 * accepted, it removes the channels' names (both sides have them mapped). Any failure withdraws the
 * offer and leaves nothing in /dev/shm.
 */
import { isAborted } from '../abort';
import { Channel } from '../channel/channel';
import type { Codec, CodecName } from '../codec/codec';
import { resolveCodec } from '../codec/codec';
import { abortError, ErrorCodes, ShmkitError, timeoutError } from '../errors';
import { SELF_TOKEN, tokenAlive } from '../identity';
import { checkName, MAX_BASE_NAME_LENGTH } from '../naming';
import { openSegment } from '../open';
import { Kind, type OpenOptions } from '../segment';
import { parseMode, parseWait } from '../sync/primitive';
import { parseTrust } from '../trust';
import { checkObject } from '../validate';
import { Deadline } from '../wait';
import { Connection } from './connection';
import * as L from './layout';
import { ServerTable } from './table';

export interface ConnectOptions<T = Uint8Array> extends OpenOptions {
  /** The codec of this end's messages: 'bytes' (default), 'utf8', 'json', 'jsonb', 'structured', or a Codec. */
  codec?: CodecName | Codec<T>;
  /** Milliseconds to wait for a listener to accept; then ERR_SHMKIT_TIMEOUT. Default: no limit. */
  timeout?: number;
  /** Cancels the wait for a listener (ABORT_ERR). */
  signal?: AbortSignal;
  /** Permission bits of the connection's channels while they are named. Default 0o600. */
  mode?: number;
}

/**
 * Connects to the server `name`. Resolves with the connection once a listener accepted it. Fails
 * with ERR_SHMKIT_NOT_FOUND if there is no such server, ERR_SHMKIT_REFUSED if no live listener
 * accepts connections, its backlog is full, or every connection slot is in use, and
 * ERR_SHMKIT_PEER_GONE if the listener that was accepting it died.
 */
export function connect<T = Uint8Array>(name: string, options?: ConnectOptions<T>): Promise<Connection<T>> {
  return connectTo<T>(name, options, -1);
}

/**
 * @internal connect() to one listener slot (`listener` ≥ 0), or (-1) to the accepting listener
 * with the fewest connections, which spreads a pool's clients over its listeners.
 */
export async function connectTo<T>(name: string, options: ConnectOptions<T> | undefined, listener: number): Promise<Connection<T>> {
  checkName(name, 'name', MAX_BASE_NAME_LENGTH);
  const o = checkObject('options', options);
  const trust = parseTrust(o.trustedOwners);
  const wait = parseWait({ timeout: o.timeout, signal: o.signal }, true);
  if (o.codec !== undefined) resolveCodec(o.codec);
  const mode = parseMode(o);
  const label = `server "${name}"`;
  if (isAborted(wait.signal)) throw abortError(wait.signal, `${label} connect`);
  const deadline = new Deadline(wait.timeout);
  const seg = openSegment('open', name, { kind: Kind.SERVER, size: 0, minSize: 0, mode: 0o600, trust });
  let table: ServerTable;
  try {
    table = new ServerTable(seg, L.readParams(seg), label);
  } catch (err) {
    seg.close();
    throw err;
  }
  const refused = (why: string): ShmkitError => new ShmkitError(ErrorCodes.REFUSED, `${label}: connection refused: ${why}`, { segment: name });
  let slot = -1;
  let gen = 0;
  let out: Channel<T> | null = null;
  let inbound: Channel<T> | null = null;
  try {
    const accepting = table.acceptingListeners();
    if (accepting.length === 0) throw refused('no server is listening');
    if (table.pendingOffers() >= table.params.backlog) throw refused(`its backlog of ${table.params.backlog} connections waiting to be accepted is full`);
    const target = listener >= 0 ? listener : leastLoaded(table, accepting);
    const claimed = table.claimConnection(target);
    if (claimed === null) throw refused(`all ${table.params.maxConnections} connection slots are in use (maxConnections)`);
    [slot, gen] = claimed;
    const [cName, sName] = L.ringNames(name, slot, gen);
    const ring = { capacity: table.params.capacity, producers: 'single' as const, consumers: 'single' as const, mode, ...(o.codec === undefined ? {} : { codec: o.codec as CodecName | Codec<T> }) };
    // Names of a dead client's earlier attempt in this slot and generation would be in the way.
    Channel.unlink(cName);
    Channel.unlink(sName);
    out = Channel.create<T>(cName, ring);
    inbound = Channel.create<T>(sName, ring);
    out.claim('producer');
    inbound.claim('consumer');
    if (!table.casState(slot, L.word(gen, L.CLAIMED), L.word(gen, L.OFFERED))) throw new ShmkitError(ErrorCodes.CORRUPT, `${label}: connection slot ${slot} changed under its owner`, { segment: name });
    table.announceOffer();
    const s = slot;
    const g = gen;
    const answered = (): boolean => {
      const w = table.state(s);
      const st = L.stateOf(w);
      return L.genOf(w) !== g || st === L.ACCEPTED || st === L.REFUSED;
    };
    const failIfGone = (): void => {
      const w = table.state(s);
      const st = L.stateOf(w);
      if (st === L.OFFERED && table.acceptingListeners().length === 0) throw refused('no server is listening any more');
      if (st === L.ACCEPTING) {
        const srv = table.server(s);
        if (srv !== SELF_TOKEN && !tokenAlive(srv)) throw new ShmkitError(ErrorCodes.PEER_GONE, `${label}: the server accepting the connection died`, { segment: name });
      }
    };
    if (!(await table.answers.wait(wait, deadline, answered, failIfGone, 'connect'))) throw timeoutError(`${label} connect`, wait.timeout, name);
    const w = table.state(slot);
    if (L.genOf(w) !== gen) throw new ShmkitError(ErrorCodes.CORRUPT, `${label}: connection slot ${slot} changed under its owner`, { segment: name });
    if (L.stateOf(w) === L.REFUSED) throw refused('the server could not open the connection');
    // Accepted: the server has both channels mapped; their names can go.
    Channel.unlink(cName);
    Channel.unlink(sName);
    const conn = new Connection<T>({ server: name, table, slot, gen, side: 'client', out, in: inbound, onClose: () => seg.close() });
    return conn;
  } catch (err) {
    if (slot >= 0) withdraw(table, name, slot, gen, out, inbound);
    else {
      out?.close();
      inbound?.close();
    }
    seg.close();
    throw err;
  }
}

/** The accepting listener with the fewest open connections. */
function leastLoaded(table: ServerTable, accepting: number[]): number {
  let best = accepting[0]!;
  let least = Infinity;
  for (const i of accepting) {
    const n = Atomics.load(table.i32, (table.listenerBase(i) + L.L_CONNECTIONS) >> 2);
    if (n < least) {
      least = n;
      best = i;
    }
  }
  return best;
}

/** Takes back an offer that failed (timeout, abort, refusal, a dead or absent server). */
function withdraw(table: ServerTable, name: string, slot: number, gen: number, out: Channel<unknown> | null, inbound: Channel<unknown> | null): void {
  for (;;) {
    const w = table.state(slot);
    const st = L.stateOf(w);
    if (L.genOf(w) !== gen) break; // not ours any more (damage): touch nothing
    if (st === L.CLAIMED || st === L.OFFERED || st === L.REFUSED) {
      // No server holds it (an accepting one moves it to ACCEPTING first): ours alone.
      if (!table.casState(slot, w, L.word(gen, L.CLAIMED))) continue;
      out?.close();
      inbound?.close();
      for (const n of L.ringNames(name, slot, gen)) Channel.unlink(n);
      table.free(slot, L.word(gen, L.CLAIMED), SELF_TOKEN);
      return;
    }
    // ACCEPTING or ACCEPTED: a server holds it. End our direction so that it sees the end, close,
    // and mark our side done; the server (or we, if it is dead) frees the slot.
    try {
      if (out && !out.ended) out.end();
    } catch {
      // Damaged: closing goes on.
    }
    break;
  }
  out?.close();
  inbound?.close();
  for (const n of L.ringNames(name, slot, gen)) Channel.unlink(n);
  table.finish(slot, gen, 'client');
}
