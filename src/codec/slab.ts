/**
 * Where received copies live. Allocating an ArrayBuffer per message costs ~50 ns at 64 bytes and
 * ~1.4 µs at 4 KiB on this machine, more than the copy itself. So, like Node's own Buffer pool,
 * messages up to SLAB_MAX bytes are copied into a shared 256 KiB slab and returned as Buffers that
 * view it; a slab is replaced when full and freed by the GC once no message from it is referenced.
 * (A small message kept alive keeps its slab alive: the same trade-off Node's pool makes.)
 */
type BufferCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => Buffer;
const species = (Buffer as unknown as { [Symbol.species]?: BufferCtor })[Symbol.species];
/**
 * A Buffer viewing `length` bytes of `buffer` at `byteOffset`. Node's own Buffer class (FastBuffer,
 * which `Buffer[Symbol.species]` returns) constructed directly costs about half of Buffer.from(),
 * which validates its arguments first; ours are computed, not user input.
 */
export const bufferView: (buffer: ArrayBufferLike, byteOffset: number, length: number) => Buffer =
  typeof species === 'function' && species.prototype === Buffer.prototype
    ? (b, o, l) => new species(b, o, l)
    : (b, o, l) => Buffer.from(b, o, l);

export const SLAB_SIZE = 256 * 1024;
/**
 * A slab's memory is not zeroed (Buffer.allocUnsafeSlow: its own ArrayBuffer, outside Node's pool):
 * zeroing 256 KiB cost ~7 ns per 64-byte message. Only bytes that a message was copied into are
 * ever visible through a returned Buffer.
 */
const newSlab = (): ArrayBuffer => Buffer.allocUnsafeSlow(SLAB_SIZE).buffer as ArrayBuffer;
export const SLAB_MAX = 16 * 1024;
const WORD_COPY_MAX = 96;

export class Slab {
  private buf = newSlab();
  private u8 = new Uint8Array(this.buf);
  private i32 = new Int32Array(this.buf);
  private off = 0;

  /**
   * Copies `len` bytes at byte `start` of `src` into a new Buffer. `srcWords` is an Int32 view of
   * the same bytes as `src` (same start); `start` is 8-aligned and the source is readable up to the
   * next multiple of 8. (Reading `byteOffset` of a view over external memory is not free, so the
   * word index is computed from `start` alone.)
   */
  copy(src: Uint8Array, srcWords: Int32Array, start: number, len: number): Buffer {
    if (len > SLAB_MAX) {
      const out = Buffer.allocUnsafe(len);
      out.set(new Uint8Array(src.buffer, src.byteOffset + start, len));
      return out;
    }
    const size = (len + 7) & ~7;
    if (this.off + size > SLAB_SIZE) {
      this.buf = newSlab();
      this.u8 = new Uint8Array(this.buf);
      this.i32 = new Int32Array(this.buf);
      this.off = 0;
    }
    const at = this.off;
    if (len <= WORD_COPY_MAX) {
      // Small: a word loop unrolled by four (measured 2x faster than a plain loop, and faster than
      // constructing a source view for set() up to ~100 bytes). `size` is a multiple of 8.
      const dst = this.i32;
      let d = at >> 2;
      let s = start >> 2;
      const end = d + (size >> 2);
      while (d + 4 <= end) {
        dst[d] = srcWords[s]!;
        dst[d + 1] = srcWords[s + 1]!;
        dst[d + 2] = srcWords[s + 2]!;
        dst[d + 3] = srcWords[s + 3]!;
        d += 4;
        s += 4;
      }
      if (d < end) {
        dst[d] = srcWords[s]!;
        dst[d + 1] = srcWords[s + 1]!;
      }
    } else {
      this.u8.set(new Uint8Array(src.buffer, src.byteOffset + start, len), at);
    }
    this.off = at + size;
    // A real Buffer (same prototype as Buffer.from's), viewing the slab.
    return bufferView(this.buf, at, len);
  }
}
