/** Process-wide tuning of waits. */
import { checkInt, checkObject } from './validate';
import { tuning, type WaitTuning } from './wait';

/**
 * Reads and optionally changes the wait tuning for this thread:
 * - `spinMicros`: how long blocking and async waits spin before parking (default 50; 0 = park at once).
 * - `livenessIntervalMs`: how often a parked lock waiter checks whether the owner died (default 100).
 */
export function configure(options?: Partial<WaitTuning>): Readonly<WaitTuning> {
  const o = checkObject('options', options);
  if (o.spinMicros !== undefined) tuning.spinMicros = checkInt('options.spinMicros', o.spinMicros, 0, 10_000_000);
  if (o.livenessIntervalMs !== undefined) tuning.livenessIntervalMs = checkInt('options.livenessIntervalMs', o.livenessIntervalMs, 1, 60_000);
  return { ...tuning };
}
