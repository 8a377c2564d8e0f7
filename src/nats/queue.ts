/**
 * A bounded queue of messages that came from NATS, with receivers that wait for the next one
 * within a timeout and a signal. When it is full the oldest message is dropped and counted: a
 * subscriber that falls behind loses messages, as a local 'overwrite' topic's does, instead of
 * growing without bound.
 */
import { isAborted, onAbort } from '../abort';
import { abortError, closedError, timeoutError } from '../errors';
import { type Timer, timer } from '../timer';

interface Waiter<T> {
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

export class MessageQueue<T> {
  private items: T[] = [];
  private head = 0;
  private readonly waiters: Waiter<T>[] = [];
  private ended: unknown = null;
  /** Messages dropped because the queue was full. */
  lost = 0;

  constructor(
    private readonly max: number,
    private readonly what: string,
  ) {}

  get length(): number {
    return this.items.length - this.head;
  }

  get closed(): boolean {
    return this.ended !== null;
  }

  push(v: T): void {
    if (this.ended !== null) return;
    const w = this.waiters.shift();
    if (w !== undefined) {
      w.resolve(v);
      return;
    }
    if (this.length >= this.max) {
      this.head++;
      this.lost++;
    }
    this.items.push(v);
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /** The next message if one is there. */
  tryShift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const v = this.items[this.head]!;
    this.items[this.head++] = undefined as T;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
    return v;
  }

  /** The next message, waiting for it within `timeout` ms and `signal`; ERR_SHMKIT_CLOSED once ended and empty. */
  shift(timeout: number, signal: AbortSignal | undefined): Promise<T> {
    if (this.length > 0) return Promise.resolve(this.tryShift()!);
    if (this.ended !== null) return Promise.reject(this.ended);
    if (isAborted(signal)) return Promise.reject(abortError(signal, this.what));
    if (timeout === 0) return Promise.reject(timeoutError(this.what, 0));
    return new Promise<T>((resolve, reject) => {
      let t: Timer | null = null;
      let unlisten: (() => void) | null = null;
      const w: Waiter<T> = {
        resolve: (v) => {
          t?.clear();
          unlisten?.();
          resolve(v);
        },
        reject: (e) => {
          t?.clear();
          unlisten?.();
          reject(e);
        },
      };
      const drop = (err: unknown): void => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        w.reject(err);
      };
      if (timeout !== Infinity) t = timer(() => drop(timeoutError(this.what, timeout)), timeout);
      if (signal) unlisten = onAbort(signal, () => drop(abortError(signal, this.what)));
      this.waiters.push(w);
    });
  }

  /** Ends the queue: waiting receivers get `err` (ERR_SHMKIT_CLOSED by default); what is queued can still be taken. */
  end(err: unknown = closedError(this.what)): void {
    if (this.ended !== null) return;
    this.ended = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  /** Ends the queue and drops what it holds. */
  close(err?: unknown): void {
    this.end(err);
    this.items = [];
    this.head = 0;
  }
}
