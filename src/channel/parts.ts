/**
 * What a channel handle is wired from, shared by its sender, its receiver and its at-least-once
 * receiver: the ring, the codec plan, the peer table, the role locks, and the handle's errors.
 */
import { ErrorCodes, type ShmkitError } from '../errors';
import type { CodecPlan } from '../codec/plan';
import type { ErrorContext } from '../handle';
import type { PeerTable } from '../peers';
import type { Ring } from '../ring/ring';
import type { Segment } from '../segment';
import type { Mutex, MutexGuard } from '../sync/mutex';
import { lockWithinAsync } from '../sync/lock-within';
import { Deadline, tuning } from '../wait';
import { ROLE_PRODUCER, type ChannelParams } from './layout';

export interface ChannelParts<T> {
  readonly segment: Segment;
  readonly errors: ErrorContext;
  readonly params: ChannelParams;
  readonly ring: Ring;
  readonly plan: CodecPlan<T>;
  readonly peers: PeerTable;
  readonly producerLock: Mutex;
  readonly consumerLock: Mutex;
  /** What this handle has outstanding: a loan (producer side) and a view (consumer side). */
  readonly held: { loan: boolean; view: boolean };
  /** The handle's `released` flag (Handle.life), for checks on hot paths. */
  readonly life: { readonly released: boolean };
  /** Throws ERR_SHMKIT_CLOSED if the handle was released. */
  assertOpen(): void;
}

/** 'loan' or 'view' if this handle has one outstanding (a new loan or view waits for it), else null. */
export function outstanding(p: ChannelParts<unknown>): 'loan' | 'view' | null {
  return p.held.loan ? 'loan' : p.held.view ? 'view' : null;
}

/** A wait's `failIfGone` check (flag-word.ts): ERR_SHMKIT_PEER_GONE once every peer of `role` is gone. */
export function peerWatch(p: ChannelParts<unknown>, role: number): () => void {
  const who = role === ROLE_PRODUCER ? 'producer' : 'consumer';
  // Checking reads /proc once per live peer (~5 µs each). Waits check before every park, and a
  // busy channel parks and wakes thousands of times a second, so a "someone is alive" answer is
  // kept for a quarter of the liveness interval (at most 50 ms): the death is still seen within
  // the interval and a quarter, and a busy channel pays for one check per period, not per park.
  let aliveAt = -Infinity;
  return () => {
    const now = performance.now();
    if (now - aliveAt < Math.min(50, tuning.livenessIntervalMs / 4)) return;
    if (p.peers.allGone(role)) throw p.errors.error(ErrorCodes.PEER_GONE, `no live ${who} is attached any more`);
    aliveAt = now;
  };
}

/** The value of the record of `len` bytes at `pos`; a codec failure is ERR_SHMKIT_DECODE. */
export function decodeRecord<T>(p: ChannelParts<T>, pos: number, len: number): T {
  const r = p.ring;
  try {
    return p.plan.decode(r.bytes, r.bytesI32, r.payloadIndex(pos), len);
  } catch (err) {
    throw decodeError(p, len, err);
  }
}

/** ERR_SHMKIT_DECODE for a `len`-byte message the codec could not decode. */
export function decodeError(p: ChannelParts<unknown>, len: number, cause: unknown): ShmkitError {
  return p.errors.error(ErrorCodes.DECODE, `the ${p.plan.codec.name} codec could not decode a ${len}-byte message (it was consumed)`, cause);
}

/**
 * Takes an internal lock (producer or consumer) without blocking the event loop, within the
 * caller's deadline and signal. If the handle was released while this waited (close()), the
 * lock went back at close (Mutex.lockAsyncForCaller) and this throws ERR_SHMKIT_CLOSED.
 */
export async function lockForCaller(p: ChannelParts<unknown>, lock: Mutex, deadline: Deadline, signal: AbortSignal | undefined, what: string): Promise<MutexGuard> {
  const g = await lockWithinAsync(lock, deadline, signal, p.errors.op(what), p.errors.name, true);
  lock.settle();
  if (p.life.released || p.ring.i32.length === 0) throw p.errors.released();
  return g;
}

/**
 * Takes the exclusive role of a single-producer (single-consumer) channel for the handle's life:
 * the role's lock without waiting (ERR_SHMKIT_BUSY if a live holder has it), then `setup` (load the
 * cursor, repair after a dead holder); the lock is given back if `setup` throws.
 */
export function takeRole(p: ChannelParts<unknown>, lock: Mutex, role: 'producer' | 'consumer', setup: (guard: MutexGuard) => void): MutexGuard {
  const g = lock.tryLock();
  if (g === null) throw p.errors.busy(`it is single-${role} and another live ${role} holds that role`);
  try {
    setup(g);
  } catch (err) {
    g.unlock();
    throw err;
  }
  return g;
}

/** No deadline: lockWithin waits as long as it takes. */
export const NO_DEADLINE = new Deadline(Infinity);

/** "Nothing was taken." */
export const NONE: unique symbol = Symbol('none');
/** "Closed and drained: nothing will ever come." */
export const END: unique symbol = Symbol('end');
