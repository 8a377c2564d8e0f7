/**
 * A bridge's statistics object in shared memory (kind BRIDGE, named as the bridge), so that
 * `shmkit ls` and `top` show the bridge and its rates. Created when the bridge starts (a leftover
 * of a dead bridge of the same name is replaced), removed when it closes.
 */
import { ErrorCodes, ShmkitError } from '../errors';
import { SELF_TOKEN, tokenAlive } from '../identity';
import { Kind, Segment } from '../segment';
import * as B from './bridge-layout';
import type { BridgeStats } from './bridge';

const FIELDS = { out: B.OUT, in: B.IN, dropped: B.DROPPED, mapWrites: B.MAP_WRITES } as const;

export class BridgeStatsSegment {
  private constructor(
    private readonly seg: Segment,
    readonly name: string,
  ) {}

  static create(name: string): BridgeStatsSegment {
    const make = (): Segment => Segment.createKind(name, { kind: Kind.BRIDGE, size: B.DATA_SIZE, mode: 0o644, trust: null, initialize: (s) => {
      const i64 = new BigInt64Array(s.buffer, s.dataOffset, B.DATA_SIZE >> 3);
      Atomics.store(i64, B.OWNER >> 3, SELF_TOKEN);
    } });
    try {
      return new BridgeStatsSegment(make(), name);
    } catch (err) {
      if (!(err instanceof ShmkitError) || err.code !== ErrorCodes.EXISTS) throw err;
    }
    // A bridge of this name runs, or one died and left its object.
    let owner = 0n;
    try {
      const old = Segment.openKind(name, Kind.BRIDGE, null);
      owner = Atomics.load(new BigInt64Array(old.buffer, old.dataOffset, B.DATA_SIZE >> 3), B.OWNER >> 3);
      old.close();
    } catch (err) {
      throw new ShmkitError(ErrorCodes.EXISTS, `bridge "${name}": the name is taken by another object`, { cause: err, segment: name });
    }
    if (owner !== 0n && tokenAlive(owner)) throw new ShmkitError(ErrorCodes.EXISTS, `bridge "${name}" runs already (another process); give this one another name`, { segment: name });
    Segment.unlink(name);
    return new BridgeStatsSegment(make(), name);
  }

  private f64(): Float64Array {
    return new Float64Array(this.seg.buffer, this.seg.dataOffset, B.DATA_SIZE >> 3);
  }

  add(what: keyof typeof FIELDS, n: number): void {
    if (this.seg.closed) return;
    this.f64()[FIELDS[what] >> 3]! += n;
  }

  update(s: BridgeStats): void {
    if (this.seg.closed) return;
    const f = this.f64();
    const u32 = new Uint32Array(this.seg.buffer, this.seg.dataOffset, B.DATA_SIZE >> 2);
    Atomics.store(u32, B.CONNECTED >> 2, s.connected ? 1 : 0);
    u32[B.ROUTES >> 2] = Math.min(255, s.topics.length) | (Math.min(255, s.services.length) << 8) | (Math.min(255, s.maps.length) << 16);
    let buffered = 0;
    let echoes = 0;
    for (const t of s.topics) {
      buffered += t.buffered;
      echoes += t.echoes;
    }
    let calls = 0;
    let errors = 0;
    for (const x of s.services) {
      calls += x.calls;
      errors += x.errors;
    }
    for (const m of s.maps) errors += m.errors;
    f[B.BUFFERED >> 3] = buffered;
    f[B.ECHOES >> 3] = echoes;
    f[B.CALLS >> 3] = calls;
    f[B.ERRORS >> 3] = errors;
    f[B.DISCONNECTS >> 3] = s.disconnects;
    f[B.RECONNECTS >> 3] = s.reconnects;
  }

  close(): void {
    if (this.seg.closed) return;
    this.seg.close();
    try {
      Segment.unlink(this.name);
    } catch {
      // removed already
    }
  }
}
