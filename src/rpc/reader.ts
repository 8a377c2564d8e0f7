/**
 * The next frame of a connection, for RPC's readers: it spins for up to `spin` µs, letting the
 * microtask queue run between polls, then sleeps (without blocking the event loop) until a frame
 * comes. With both ends of the connection in this thread it does not spin. Spinning is what makes a round trip a few µs instead of two wake-ups; yielding to the
 * microtasks while it spins is what lets the answers of handlers that just finished (and the
 * caller's next call) go out meanwhile, which a plain spinning receive would hold up.
 */
import type { Connection } from '../server/connection';
import { spinEnd, tuning } from '../wait';


/**
 * A stop switch for a reader: checked while it spins; its AbortSignal is made only if the reader
 * has to sleep (most waits end while spinning, and an AbortController costs an allocation).
 */
export class Stop {
  stopped = false;
  private controller: AbortController | null = null;

  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.stopped) this.controller.abort();
    }
    return this.controller.signal;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.controller?.abort();
  }
}

export async function nextFrame(conn: Connection<Buffer>, spin: number, stop: Stop | null): Promise<Buffer> {
  if (conn.closed) return conn.receive();
  let f = conn.tryReceive();
  if (f !== undefined) return f;
  // Spinning polls between microtasks, which holds up the event loop's I/O: with both ends in this
  // thread, the other end's wake-up would wait for the whole spin. Sleep at once then.
  const budget = conn.sameThread ? 0 : spin < 0 ? tuning.spinMicros : spin;
  if (budget > 0) {
    let end = 0;
    for (;;) {
      // A few turns per clock read: the clock costs more than a poll.
      for (let i = 0; i < 8; i++) {
        await null; // one turn of the microtask queue: what is queued before us runs first
        if (conn.closed || stop?.stopped) break;
        f = conn.tryReceive();
        if (f !== undefined) return f;
      }
      if (conn.closed || stop?.stopped) break;
      end = spinEnd(end, budget);
      if (end < 0) break;
    }
  }
  return conn.receive(stop === null ? { spin: 0 } : { spin: 0, signal: stop.signal });
}
