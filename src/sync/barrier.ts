/**
 * Barrier: `parties` participants wait until all have arrived, then all go on. Reusable.
 *
 * Layout (16 bytes):
 *   +0  i32 state     generation (bits 16..30) and arrivals (bits 0..15); also the futex word
 *   +4  i32 parties   fixed at creation (1..65535)
 *   +8  i32 sleepers
 *   +12 i32 reserved
 *
 * Arrivals and the generation live in one word, so the last arrival resets the count and starts a
 * new generation with a single CAS, and a participant that times out can withdraw its arrival with
 * a CAS that succeeds only if the generation has not moved on. Waiters park while the word is
 * unchanged and return once the generation differs from the one they arrived in.
 *
 * A participant that dies after arriving stays counted; the others then need a timeout.
 */
import { abortError, ErrorCodes, ShmkitError, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { Kind, type Segment } from '../segment';
import { checkInt, checkObject } from '../validate';
import { Deadline, parkAsync, parkSync, spin, tuning, wake } from '../wait';
import { type AsyncWaitOptions, checkPlacement, namedPrimitive, onClose, type NamedOptions, type OpenOptions, parseWait, Primitive, type WaitOptions } from './primitive';

export interface BarrierOptions extends NamedOptions {
  /** How many participants each round waits for (1..65535). */
  parties: number;
}

const GEN = (w: number): number => (w >>> 16) & 0x7fff;

export class Barrier extends Primitive {
  static readonly SIZE = 16;
  static readonly MAX_PARTIES = 0xffff;
  private readonly stateWord: number;
  private readonly partiesWord: number;
  private readonly sleepersWord: number;

  private constructor(segment: Segment, offset: number, owns: boolean) {
    super(segment, offset, owns);
    this.stateWord = this.firstWord;
    this.partiesWord = this.firstWord + 1;
    this.sleepersWord = this.firstWord + 2;
  }

  private static named(how: 'create' | 'openOrCreate', name: string, options: unknown): Barrier {
    const o = checkObject('options', options);
    const parties = checkInt('options.parties', o.parties, 1, Barrier.MAX_PARTIES);
    return namedPrimitive(how, name, Kind.BARRIER, Barrier.SIZE, o, (s) => {
      Atomics.store(s.int32, (s.dataOffset >> 2) + 1, parties);
    }, (s) => new Barrier(s, 0, true));
  }

  static create(name: string, options: BarrierOptions): Barrier {
    return Barrier.named('create', name, options);
  }
  static open(name: string, options?: OpenOptions): Barrier {
    return namedPrimitive('open', name, Kind.BARRIER, Barrier.SIZE, checkObject('options', options), undefined, (s) => new Barrier(s, 0, true));
  }
  static openOrCreate(name: string, options: BarrierOptions): Barrier {
    return Barrier.named('openOrCreate', name, options);
  }
  static at(segment: Segment, offset: number): Barrier {
    const p = checkPlacement(segment, offset, Barrier.SIZE);
    return new Barrier(p.segment, p.offset, false);
  }
  static init(segment: Segment, offset: number, parties: number): Barrier {
    const b = Barrier.at(segment, offset);
    Atomics.store(b.i32, b.partiesWord, checkInt('parties', parties, 1, Barrier.MAX_PARTIES));
    Atomics.store(b.i32, b.stateWord, 0);
    Atomics.store(b.i32, b.sleepersWord, 0);
    return b;
  }

  get parties(): number {
    this.assertOpen();
    return Atomics.load(this.i32, this.partiesWord);
  }

  /** Arrives; returns the generation to wait for, or -1 if this arrival completed the round. */
  private arrive(): number {
    const i32 = this.i32;
    const parties = Atomics.load(i32, this.partiesWord);
    for (;;) {
      const w = Atomics.load(i32, this.stateWord);
      const arrived = w & 0xffff;
      if (parties < 1 || parties > Barrier.MAX_PARTIES || arrived >= parties || w < 0) {
        throw new ShmkitError(ErrorCodes.CORRUPT, `Barrier in segment "${this.segment.name}": inconsistent state (arrived ${arrived}, parties ${parties})`, { segment: this.segment.name });
      }
      const gen = GEN(w);
      if (arrived + 1 === parties) {
        if (Atomics.compareExchange(i32, this.stateWord, w, ((gen + 1) & 0x7fff) << 16) === w) {
          if (Atomics.load(i32, this.sleepersWord) > 0) wake(i32, this.stateWord, 0);
          return -1;
        }
      } else if (Atomics.compareExchange(i32, this.stateWord, w, w + 1) === w) {
        return gen;
      }
    }
  }

  /** Withdraws after a timeout/abort. Returns true if the round completed meanwhile (we passed). */
  private withdraw(gen: number): boolean {
    const i32 = this.i32;
    for (;;) {
      const w = Atomics.load(i32, this.stateWord);
      if (GEN(w) !== gen) return true;
      if (Atomics.compareExchange(i32, this.stateWord, w, w - 1) === w) return false;
    }
  }

  /**
   * Waits until all parties arrived. Returns true in exactly one participant per round (the last
   * to arrive), false in the others. On timeout the arrival is withdrawn and ERR_SHMKIT_TIMEOUT
   * thrown (unless the round completed in that instant, which counts as passing).
   */
  waitSync(options?: WaitOptions): boolean {
    this.assertOpen();
    const o = parseWait(options, false);
    const gen = this.arrive();
    if (gen < 0) return true;
    const i32 = this.i32;
    if (spin(() => GEN(Atomics.load(i32, this.stateWord)) !== gen, o.spin)) return false;
    const deadline = new Deadline(o.timeout);
    Atomics.add(i32, this.sleepersWord, 1);
    try {
      for (;;) {
        const w = Atomics.load(i32, this.stateWord);
        if (GEN(w) !== gen) return false;
        const left = deadline.remaining();
        if (left === 0) break;
        parkSync(i32, this.stateWord, w, Math.min(left, tuning.livenessIntervalMs));
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } finally {
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1); // unmapped if a truncation could not be repaired
    }
    if (this.withdraw(gen)) return false;
    throw timeoutError('Barrier.waitSync', o.timeout, this.segment.name);
  }

  async wait(options?: AsyncWaitOptions): Promise<boolean> {
    this.assertOpen();
    const o = parseWait(options, true);
    if (isAborted(o.signal)) throw abortError(o.signal, 'Barrier.wait');
    const gen = this.arrive();
    if (gen < 0) return true;
    const i32 = this.i32;
    if (spin(() => GEN(Atomics.load(i32, this.stateWord)) !== gen, o.spin)) return false;
    const deadline = new Deadline(o.timeout);
    Atomics.add(i32, this.sleepersWord, 1);
    const undo = onClose(this.segment, () => {
      Atomics.sub(i32, this.sleepersWord, 1);
      this.withdraw(gen);
    });
    try {
      for (;;) {
        const w = Atomics.load(i32, this.stateWord);
        if (GEN(w) !== gen) return false;
        const left = deadline.remaining();
        if (left === 0) break;
        await parkAsync(i32, this.stateWord, w, left, o.signal, this.segment, 'Barrier.wait');
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } catch (err) {
      if (i32.length > 0 && this.withdraw(gen)) return false;
      throw err;
    } finally {
      undo();
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1);
    }
    if (this.withdraw(gen)) return false;
    throw timeoutError('Barrier.wait', o.timeout, this.segment.name);
  }
}
