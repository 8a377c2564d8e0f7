/**
 * A full memory barrier: a sequentially consistent read-modify-write on a word nobody else uses.
 * A seqlock reader calls it between its plain reads of shared data and the load that validates
 * them (a topic's slot stamp, a map entry's seq): on arm64 a load-acquire alone would not keep the
 * earlier plain reads before it; the release half of this read-modify-write does
 * (docs/design.md, "Memory ordering, summarized"). On x86-64 loads stay in order anyway.
 */
const fenceWord = new Int32Array(new SharedArrayBuffer(4));

export function fullFence(): void {
  Atomics.add(fenceWord, 0, 0);
}
