/**
 * What a WaitSet needs from a source: a flag word (flag-word.ts) whose changes signal that the
 * source may have become ready, the readiness condition itself, and the segment the word lives in
 * (closing it ends the wait). Channels, subscriptions and events provide one (`waitTarget`).
 */
import type { FlagWord } from '../flag-word';
import type { Segment } from '../segment';

export interface WaitTarget {
  readonly flag: FlagWord;
  /** True when an operation on the source would not wait (or the source ended). Must not throw. */
  ready(): boolean;
  readonly segment: Segment;
}
