/**
 * The value heap of a SharedMap: a boundary-tag allocator over one region of the segment, with
 * segregated free lists (one per power-of-two size class) and immediate coalescing. Every method
 * runs under the heap lock (layout.HEAP_LOCK), taken by the caller.
 *
 * The free lists are derived state. The truth is the map's entries: a block is in use exactly
 * when a live entry's current meta points at it. So a writer that dies at any instruction, inside
 * the heap lock or out of it, can leave the lists inconsistent or a block unreferenced, and
 * rebuild() (run by the recovery, which holds every lock) makes the heap again from the live
 * blocks alone, without trusting a word of the old lists. See docs/design.md ("Shared maps").
 *
 * The heap is untrusted input: a free-list link or block header that is out of range, misaligned or
 * inconsistent makes the method throw HeapDamage, and the map runs the rebuild.
 */
import * as L from './layout';

/** The heap's lists or headers are inconsistent: the map's recovery must rebuild them. */
export class HeapDamage extends Error {}

export interface LiveBlock {
  /** Block offset in the heap. */
  at: number;
  /** The least size the block must keep (its value's blockSize). */
  min: number;
}

export class Heap {
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  /** Byte offset of the heap in the mapping. */
  private readonly base: number;
  /** Byte offset of the data area (the map's header words). */
  private readonly data: number;

  constructor(buffer: ArrayBuffer, data: number, heapAt: number, private readonly size: number) {
    this.u32 = new Uint32Array(buffer, 0, buffer.byteLength >> 2);
    this.f64 = new Float64Array(buffer, 0, buffer.byteLength >> 3);
    this.data = data;
    this.base = data + heapAt;
  }

  /** Heap bytes in live blocks, headers included. */
  get used(): number {
    return this.f64[(this.data + L.HEAP_USED) >> 3]!;
  }
  private set used(v: number) {
    this.f64[(this.data + L.HEAP_USED) >> 3] = v;
  }

  private hdr(at: number): number {
    return this.u32[(this.base + at) >> 2]!;
  }
  private setHdr(at: number, v: number): void {
    this.u32[(this.base + at) >> 2] = v;
  }
  private word(at: number): number {
    return this.u32[(this.base + at) >> 2]!;
  }
  private setWord(at: number, v: number): void {
    this.u32[(this.base + at) >> 2] = v >>> 0;
  }
  private head(c: number): number {
    return this.u32[(this.data + L.FREE_LISTS + 4 * c) >> 2]!;
  }
  private setHead(c: number, v: number): void {
    this.u32[(this.data + L.FREE_LISTS + 4 * c) >> 2] = v;
    const bits = (this.data + L.CLASS_BITS) >> 2;
    if (v === 0) this.u32[bits] = this.u32[bits]! & ~(1 << c);
    else this.u32[bits] = this.u32[bits]! | (1 << c);
  }

  /** A free block's size, checked: throws HeapDamage if `at` is not a sound free block. */
  private freeSize(at: number): number {
    if (at < 0 || at % 8 !== 0 || at + L.MIN_BLOCK > this.size) throw new HeapDamage(`free block at ${at} is out of range`);
    const h = this.hdr(at);
    const s = h & L.SIZE_MASK;
    if ((h & L.USED) !== 0 || s < L.MIN_BLOCK || at + s > this.size || this.word(at + s - 4) !== s) throw new HeapDamage(`block at ${at} is not a sound free block`);
    return s;
  }

  private unlinkFree(at: number, s: number): void {
    const next = this.word(at + 4);
    const prev = this.word(at + 8);
    const c = L.sizeClass(s);
    if (prev === 0) {
      if (this.head(c) !== at + 1) throw new HeapDamage(`free list ${c} does not start at block ${at}`);
      this.setHead(c, next);
    } else {
      const p = prev - 1;
      if (this.freeSize(p) === 0 || this.word(p + 4) !== at + 1) throw new HeapDamage(`free block ${p} does not link to ${at}`);
      this.setWord(p + 4, next);
    }
    if (next !== 0) {
      const n = next - 1;
      this.freeSize(n);
      if (this.word(n + 8) !== at + 1) throw new HeapDamage(`free block ${n} does not link back to ${at}`);
      this.setWord(n + 8, prev);
    }
  }

  /** Makes [at, at+s) a free block (prevFree: the block before it is free) and puts it on its list. */
  private pushFree(at: number, s: number, prevFree: boolean): void {
    const c = L.sizeClass(s);
    const first = this.head(c);
    this.setHdr(at, s | (prevFree ? L.PREV_FREE : 0));
    this.setWord(at + 4, first);
    this.setWord(at + 8, 0);
    this.setWord(at + s - 4, s);
    if (first !== 0) {
      this.freeSize(first - 1);
      this.setWord(first - 1 + 8, at + 1);
    }
    this.setHead(c, at + 1);
  }

  /** Sets or clears PREV_FREE in the header of the block after [at, at+s), if there is one. */
  private markNext(at: number, s: number, prevFree: boolean): void {
    const n = at + s;
    if (n >= this.size) return;
    const h = this.hdr(n);
    this.setHdr(n, prevFree ? h | L.PREV_FREE : h & ~L.PREV_FREE);
  }

  /** Makes the whole heap one free block (a new map, or clear). */
  reset(): void {
    for (let c = 0; c < L.CLASSES; c++) this.setHead(c, 0);
    this.pushFree(0, this.size, false);
    this.used = 0;
  }

  /** A block of at least `size` bytes (a multiple of 8, >= MIN_BLOCK), or -1 if none is free. */
  alloc(size: number): number {
    const bits = this.u32[(this.data + L.CLASS_BITS) >> 2]!;
    const own = L.sizeClass(size);
    // A larger class first: its first block always fits (one step). Only when they are all empty,
    // first fit over the request's own class, where a block may be too small (bounded by the most
    // blocks the heap can hold, against a cycle).
    for (let c = own + 1; c < L.CLASSES; c++) {
      if ((bits & (1 << c)) === 0) continue;
      const at = this.head(c) - 1;
      return this.take(at, this.freeSize(at), size);
    }
    if ((bits & (1 << own)) !== 0) {
      let link = this.head(own);
      for (let n = 0; link !== 0; n++) {
        if (n > this.size / L.MIN_BLOCK) throw new HeapDamage(`free list ${own} has a cycle`);
        const at = link - 1;
        const s = this.freeSize(at);
        if (s >= size) return this.take(at, s, size);
        link = this.word(at + 4);
      }
    }
    return -1;
  }

  private take(at: number, s: number, size: number): number {
    this.unlinkFree(at, s);
    const prevFree = this.hdr(at) & L.PREV_FREE;
    if (s - size >= L.MIN_BLOCK) {
      // The rest first (inside the block being taken, so a crash here changes nothing visible).
      this.pushFree(at + size, s - size, false);
      this.setHdr(at, size | L.USED | prevFree);
      this.used = this.used + size;
    } else {
      this.setHdr(at, s | L.USED | prevFree);
      this.markNext(at, s, false);
      this.used = this.used + s;
    }
    this.setWord(at + 4, 0);
    return at;
  }

  /** The size of the used block at `at` (HeapDamage if it is not one). */
  usedSize(at: number): number {
    if (at < 0 || at % 8 !== 0 || at + L.MIN_BLOCK > this.size) throw new HeapDamage(`block at ${at} is out of range`);
    const h = this.hdr(at);
    const s = h & L.SIZE_MASK;
    if ((h & L.USED) === 0 || s < L.MIN_BLOCK || at + s > this.size) throw new HeapDamage(`block at ${at} is not a used block`);
    return s;
  }

  /** Gives a used block back, merging it with free neighbours. */
  free(at: number): void {
    let s = this.usedSize(at);
    this.used = Math.max(0, this.used - s);
    let start = at;
    const next = at + s;
    if (next < this.size && (this.hdr(next) & L.USED) === 0) {
      const ns = this.freeSize(next);
      this.unlinkFree(next, ns);
      s += ns;
    }
    let prevFree = false;
    if ((this.hdr(at) & L.PREV_FREE) !== 0) {
      if (at < L.MIN_BLOCK) throw new HeapDamage(`block at ${at} says its predecessor is free`);
      const ps = this.word(at - 4);
      const p = at - ps;
      if (ps < L.MIN_BLOCK || ps % 8 !== 0 || p < 0 || this.freeSize(p) !== ps) throw new HeapDamage(`block before ${at} is not a sound free block`);
      this.unlinkFree(p, ps);
      start = p;
      s += ps;
      prevFree = (this.hdr(p) & L.PREV_FREE) !== 0;
    }
    this.pushFree(start, s, prevFree);
    this.markNext(start, s, true);
  }

  /**
   * Makes the heap again from the live blocks alone (the recovery, holding every lock). Space
   * between live blocks becomes free blocks; a live block keeps its recorded size where that is
   * sound, else the least size its value needs. Returns a reason if the live blocks overlap or leave
   * the heap (garbage: the map is corrupt), else null.
   */
  rebuild(live: LiveBlock[]): string | null {
    live.sort((a, b) => a.at - b.at);
    for (let c = 0; c < L.CLASSES; c++) this.setHead(c, 0);
    let used = 0;
    let pos = 0;
    let prevFree = false;
    for (let i = 0; i < live.length; i++) {
      const b = live[i]!;
      if (b.at < pos || b.at % 8 !== 0) return `value block at ${b.at} overlaps the one before it`;
      const limit = i + 1 < live.length ? live[i + 1]!.at : this.size;
      if (b.at + b.min > limit) return `value block at ${b.at} (${b.min} bytes) overlaps the next block or leaves the heap`;
      const gap = b.at - pos;
      if (gap >= L.MIN_BLOCK) {
        this.pushFree(pos, gap, prevFree);
        prevFree = true;
      } else if (gap > 0) {
        return `a gap of ${gap} bytes before the value block at ${b.at}`;
      }
      const recorded = this.hdr(b.at) & L.SIZE_MASK;
      let s = recorded >= b.min && b.at + recorded <= limit ? recorded : b.min;
      // A sliver too small to be a block stays with this one.
      if (limit - (b.at + s) > 0 && limit - (b.at + s) < L.MIN_BLOCK) s = limit - b.at;
      this.setHdr(b.at, s | L.USED | (prevFree ? L.PREV_FREE : 0));
      used += s;
      pos = b.at + s;
      prevFree = false;
    }
    if (this.size - pos >= L.MIN_BLOCK) this.pushFree(pos, this.size - pos, prevFree);
    else if (this.size - pos > 0) return `a gap of ${this.size - pos} bytes at the heap's end`;
    this.used = used;
    return null;
  }

  /**
   * Walks the heap block by block and checks it against the live blocks (verify()): every live
   * block is a used block, every other block is free and on its list, free blocks never touch, and
   * the accounting matches. Returns the problems found.
   */
  check(live: LiveBlock[]): { problems: string[]; free: number; largestFree: number; used: number } {
    const problems: string[] = [];
    const liveAt = new Set(live.map((b) => b.at));
    const onLists = new Set<number>();
    for (let c = 0; c < L.CLASSES; c++) {
      let link = this.head(c);
      for (let n = 0; link !== 0; n++) {
        if (n > this.size / L.MIN_BLOCK) {
          problems.push(`free list ${c} has a cycle`);
          break;
        }
        const at = link - 1;
        if (onLists.has(at)) {
          problems.push(`free block ${at} is on a list twice`);
          break;
        }
        onLists.add(at);
        try {
          const s = this.freeSize(at);
          if (L.sizeClass(s) !== c) problems.push(`free block ${at} (${s} B) is on list ${c}`);
        } catch (err) {
          problems.push((err as Error).message);
          break;
        }
        link = this.word(at + 4);
      }
    }
    let pos = 0;
    let free = 0;
    let used = 0;
    let largestFree = 0;
    let prevFree = false;
    while (pos < this.size) {
      const h = this.hdr(pos);
      const s = h & L.SIZE_MASK;
      if (s < L.MIN_BLOCK || pos + s > this.size) {
        problems.push(`block at ${pos} has a bad size ${s}`);
        break;
      }
      if (((h & L.PREV_FREE) !== 0) !== prevFree) problems.push(`block at ${pos}: PREV_FREE is wrong`);
      if ((h & L.USED) !== 0) {
        if (!liveAt.has(pos)) problems.push(`used block at ${pos} (${s} B) belongs to no entry (leaked)`);
        liveAt.delete(pos);
        used += s;
        prevFree = false;
      } else {
        if (prevFree) problems.push(`free blocks touch at ${pos}`);
        if (!onLists.has(pos)) problems.push(`free block at ${pos} is on no list (leaked)`);
        onLists.delete(pos);
        free += s;
        largestFree = Math.max(largestFree, s);
        prevFree = true;
      }
      pos += s;
    }
    for (const at of liveAt) problems.push(`an entry's value block at ${at} is not a used block`);
    for (const at of onLists) problems.push(`listed free block at ${at} is not in the heap walk`);
    if (used !== this.used) problems.push(`heap accounting says ${this.used} bytes used, the walk finds ${used}`);
    return { problems, free, largestFree, used };
  }
}
