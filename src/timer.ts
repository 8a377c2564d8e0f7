/**
 * A timer of any length. setTimeout fires at once (with a warning) past 2^31 - 1 ms, about 24.8
 * days; a timeout a caller gave, or a deadline that arrived from another process, may be longer.
 * Longer delays are a chain of maximal timers. Unref'd: a timer never keeps the process alive by
 * itself (the wait it bounds does).
 */
const MAX = 2 ** 31 - 1;

export interface Timer {
  clear(): void;
}

export function timer(fn: () => void, ms: number): Timer {
  let t: ReturnType<typeof setTimeout>;
  const end = Date.now() + ms;
  const arm = (left: number): void => {
    t = setTimeout(() => {
      const rest = end - Date.now();
      if (rest > 0) arm(rest);
      else fn();
    }, Math.min(Math.max(0, left), MAX));
    t.unref();
  };
  arm(ms);
  return { clear: () => clearTimeout(t) };
}
