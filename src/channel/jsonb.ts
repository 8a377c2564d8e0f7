/**
 * jsonb: JSON values in a binary form that is faster to write and to read than JSON text.
 *
 * The value model is JSON's: what comes out is what `JSON.parse(JSON.stringify(value))` gives
 * (toJSON is called with the right key, undefined/functions/symbols are dropped from objects and
 * become null in arrays, NaN and Infinity become null, -0 becomes 0, boxed primitives are unwrapped,
 * BigInt and cycles throw, getters run once each in the same order, JSON.rawJSON is honoured).
 * Strings are exact, lone surrogates included. Only the bytes differ.
 *
 * Why it is faster: an object's keys are written as one "key block" that the encoder caches per
 * shape (set of keys in order), and the decoder recognises a key block it has seen before by
 * comparing bytes, instead of parsing and interning every key of every message. Once a shape has
 * been used a few times, both sides generate code for it: the encoder reads the members by constant
 * names, and the decoder builds the object as one literal, with its final hidden class at once.
 * Numbers are not printed and re-parsed. Every message is self-describing (no state shared between
 * messages), so any consumer can decode any message, and a crash loses nothing but that message.
 *
 * Format (little-endian), one value per message:
 *   0x00 null | 0x01 false | 0x02 true
 *   0x03 i32                     0x04 f64
 *   0x05 u32 n, n bytes          one-byte string (char codes 0..255)
 *   0x06 u32 n, 2n bytes         two-byte string (UTF-16LE code units, exact)
 *   0x07 u32 n, n values         array
 *   0x08 u16 k, k-byte key block, one value per key   object
 *   0x09 u32 n, n x (string, value)                    object with inline keys (rare shapes)
 *   0x0a                         (object member only) the member is absent: its value was dropped
 *   key block: u16 count, count x (u8 kind 0x05|0x06, u16 length in code units, the units)
 *
 * Decoding treats the bytes as untrusted: every read is bounds-checked against the message end,
 * counts are bounded by the bytes left, the message must be consumed exactly, and any violation is
 * a thrown error (the channel reports it as ERR_SHMKIT_DECODE). It never reads outside the message.
 */

import { encodeError, invalidArg } from '../errors';
import { compileFunction } from 'node:vm';
import { bufferView } from './slab';

const T_NULL = 0x00;
const T_FALSE = 0x01;
const T_TRUE = 0x02;
const T_I32 = 0x03;
const T_F64 = 0x04;
const T_STR1 = 0x05;
const T_STR2 = 0x06;
const T_ARRAY = 0x07;
const T_OBJECT = 0x08;
const T_OBJECT_INLINE = 0x09;
const T_ABSENT = 0x0a;

/**
 * Objects with more keys than this, with a key longer than MAX_KEY_UNITS, or whose key block would
 * not fit its u16 length, use the inline form. The decoder caches no shape with more keys (no
 * encoder of this module makes one).
 */
const MAX_SHAPE_KEYS = 128;
const MAX_KEY_UNITS = 1024;
const MAX_KEY_BLOCK = 0xffff;

/*
 * Shape caches are bounded by count and by bytes, on both sides; when an addition would pass either
 * bound, the whole cache is cleared (see docs/codecs.md for why clearing rather than LRU). The bytes
 * are an estimate of the heap each entry keeps, calibrated against the V8 of Node 20, 22 and 24
 * (measured heap retained per added shape after GC, with short and long keys, few and many): it
 * errs on the high side (measured 0.5-0.9 of the estimate). A single shape always fits the byte
 * budget, so a clear always makes room.
 */
/** Key-trie nodes the encoder remembers (each a key of some shape). */
const MAX_TRIE_NODES = 8192;
/** Bytes the encoder's trie may hold: keys, key blocks, generated member writers. */
const MAX_ENCODER_BYTES = 4 << 20;
/** A trie node: the node object and its entry in the parent's Map (plus 2 bytes per key unit). */
const NODE_COST = 192;
/** A key block, beyond its bytes (the Buffer and its ArrayBuffer). */
const BLOCK_COST = 128;
/** A generated member writer: its source holds each key twice; ~350 bytes of code, feedback per member. */
const WRITER_COST = 1024;
const WRITER_MEMBER_COST = 384;
/** Shapes the decoder remembers. */
const MAX_DECODER_SHAPES = 1024;
/** Bytes the decoder's shapes may hold: key blocks, key strings, generated constructors. */
const MAX_DECODER_BYTES = 4 << 20;
/** A decoder shape: the block's copy and the key strings (2 bytes per block byte), plus per key. */
const SHAPE_COST = 256;
const SHAPE_KEY_COST = 32;
/**
 * A generated constructor: its source holds the keys once more, and its literal's hidden class and
 * constants (2 bytes per block byte, with margin), plus per member.
 */
const MAKE_COST = 1280;
const MAKE_MEMBER_COST = 128;
/**
 * A shape gets generated code (an encoder's member writer, a decoder's object literal) once it has
 * been used this many times: compiling costs tens of microseconds, so shapes seen once (objects used
 * as dictionaries) keep the generic loops.
 */
const COMPILE_AFTER = 8;
/** The encoding buffer grows as needed; past this size it is dropped before the next encode. */
const MAX_RETAINED = 1 << 20;
/** Strings up to this many code units are written by a charCodeAt loop (no native call). */
const SHORT_STRING = 64;

const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const objectProto = Object.prototype;
const arrayProto = Array.prototype;
const isRawJSON = (JSON as unknown as { isRawJSON?: (v: unknown) => boolean }).isRawJSON;
const hasTwoByte = /[^\x00-\xff]/;

interface Utf16Buffer extends Buffer {
  latin1Write(s: string, offset: number, length?: number): number;
  ucs2Write(s: string, offset: number, length?: number): number;
  latin1Slice(start: number, end: number): string;
  ucs2Slice(start: number, end: number): string;
}

/** Malformed bytes on decode (the channel reports it as ERR_SHMKIT_DECODE). */
export class JsonbError extends TypeError {}

/** A value JSON refuses (the same refusals as JSON.stringify), as ERR_SHMKIT_INVALID_ARGUMENT. */
const refuse = (why: string): Error => invalidArg('message', why);

/**
 * Anything else thrown while encoding (by a toJSON, a getter, a Proxy trap, a revoked Proxy, a
 * stack overflow...) becomes ERR_SHMKIT_INVALID_ARGUMENT too, with the original error as `cause`.
 * Our own refusals (argument 'message', also from a nested encode) pass through.
 */
function encodeFailure(err: unknown): Error {
  return encodeError('jsonb', err);
}

// Encoder -----------------------------------------------------------------------------------------------

type Writer = (e: Encoder, o: object) => void;

interface TrieNode {
  next: Map<string, TrieNode> | null;
  block: Uint8Array | null; // the key block of the shape that ends here
  uses: number;
  writer: Writer | null; // generated member writer (after COMPILE_AFTER uses)
}

interface Memo {
  keys: string[];
  node: TrieNode;
}

/**
 * Whether code may be generated: not under --disallow-code-generation-from-strings (the policy is
 * probed once with `new Function`, and honoured), nor after a generation failed.
 */
const codegenAllowed = ((): boolean => {
  try {
    return new Function('return true')() === true;
  } catch {
    return false;
  }
})();
let codegen = codegenAllowed;

/**
 * The context extension every generated function is compiled with (see generate): an empty object
 * that no code can reach or change. The generated code has no free variables (it uses only its
 * parameters and locals), so nothing is ever looked up in it.
 */
const NO_CACHE_SCOPE: object[] = [Object.freeze(Object.create(null) as object)];

/**
 * Compiles generated code, so that the code is freed with its last reference (the shape that holds
 * it), on every supported Node. What has to be avoided is V8's isolate compilation cache, which keeps
 * a compiled source (source string, script, bytecode, constants: ~130 KiB for a shape of 64 KiB of
 * keys) until V8 clears it (taking a heap snapshot does); forced full GCs do not:
 * - `new Function` goes through the eval cache, on every version;
 * - `vm.compileFunction` did not use a cache in Node 20 (V8 11.3), but from Node 22 (V8 12.4) V8
 *   looks it up in and adds it to the script cache, unless it has a context extension.
 * So: vm.compileFunction with an (empty, unreachable) context extension, which V8 never caches.
 * Measured: 128 distinct 64 KiB sources compiled and dropped keep 16.8 MiB after forced GCs on
 * Node 22 and 24 without the extension (and with `new Function`, `vm.Script`, indirect eval, or
 * the other compileFunction options), 0.0-0.2 MiB with it; the generated code runs as fast.
 */
function generate<F>(params: string[], body: string): F | null {
  if (!codegen) return null;
  try {
    return compileFunction(body, params, { contextExtensions: NO_CACHE_SCOPE }) as unknown as F;
  } catch {
    codegen = false;
    return null;
  }
}

/**
 * Boxed primitives (new Number(1) ...): JSON unwraps them, by their internal slot. instanceof
 * filters first (cheap, and false for ordinary class instances); the slot is then confirmed by the
 * brand check of valueOf. A boxed primitive from another realm is not recognised (it becomes {}).
 */
function unbox(v: object): unknown {
  if (v instanceof Number) return hasSlot(Number.prototype.valueOf, v) ? Number(v) : v;
  if (v instanceof String) return hasSlot(String.prototype.valueOf, v) ? String(v) : v;
  if (v instanceof Boolean) return hasSlot(Boolean.prototype.valueOf, v) ? Boolean.prototype.valueOf.call(v) : v;
  if (v instanceof BigInt) return hasSlot(BigInt.prototype.valueOf, v) ? BigInt.prototype.valueOf.call(v) : v;
  return v;
}

function hasSlot(valueOf: (this: unknown) => unknown, v: object): boolean {
  try {
    valueOf.call(v);
    return true;
  } catch {
    return false;
  }
}

class Encoder {
  buf: Utf16Buffer = Buffer.allocUnsafe(4096) as Utf16Buffer;
  pos = 0;
  private depth = 0;
  private readonly stack: (object | null)[] = [];
  private readonly memo: (Memo | undefined)[] = [];
  private root: TrieNode = { next: null, block: null, uses: 0, writer: null };
  /** Trie nodes and estimated bytes held by the trie (see MAX_TRIE_NODES, MAX_ENCODER_BYTES). */
  nodes = 0;
  bytes = 0;
  evictions = 0;

  /** Encodes `value` at the start of this.buf; returns the byte length. */
  encode(value: unknown): number {
    this.pos = 0;
    this.depth = 0;
    if (this.buf.length > MAX_RETAINED) this.buf = Buffer.allocUnsafe(4096) as Utf16Buffer; // after one huge message
    if (!this.value(value, '')) throw refuse(`cannot be represented as JSON, got ${typeof value}`);
    return this.pos;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n)) as Utf16Buffer;
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  private u32(at: number, v: number): void {
    const b = this.buf;
    b[at] = v;
    b[at + 1] = v >>> 8;
    b[at + 2] = v >>> 16;
    b[at + 3] = v >>> 24;
  }

  /**
   * Writes one value (SerializeJSONProperty). Returns false, writing nothing, for a value JSON
   * leaves out (undefined, a function, a symbol): the caller drops the member or writes null.
   * `key` is the member name, or the array index (made a string only if a toJSON needs it).
   */
  value(v: unknown, key: string | number): boolean {
    if ((typeof v === 'object' && v !== null) || typeof v === 'bigint') {
      const toJSON = (v as { toJSON?: unknown }).toJSON;
      if (typeof toJSON === 'function') v = toJSON.call(v, typeof key === 'number' ? String(key) : key);
    }
    switch (typeof v) {
      case 'string':
        this.string(v);
        return true;
      case 'number':
        this.number(v);
        return true;
      case 'boolean':
        this.ensure(1);
        this.buf[this.pos++] = v ? T_TRUE : T_FALSE;
        return true;
      case 'object': {
        if (v === null) {
          this.ensure(1);
          this.buf[this.pos++] = T_NULL;
          return true;
        }
        if (Array.isArray(v)) {
          this.enter(v);
          this.array(v);
          this.leave();
          return true;
        }
        const p = Object.getPrototypeOf(v);
        if (p !== objectProto) {
          if (p === null && isRawJSON !== undefined && isRawJSON(v)) return this.value(JSON.parse((v as { rawJSON: string }).rawJSON), key);
          if (p !== null && p !== arrayProto) {
            const u = unbox(v);
            if (u !== v) {
              // Unboxed after the toJSON step, as in JSON (a BigInt then throws without a toJSON).
              if (typeof u === 'bigint') throw refuse('a BigInt cannot be represented as JSON');
              return this.value(u, key);
            }
          }
        }
        this.enter(v);
        this.object(v);
        this.leave();
        return true;
      }
      case 'bigint':
        throw refuse('a BigInt cannot be represented as JSON');
      default:
        return false; // undefined, function, symbol
    }
  }

  /** Cycles: JSON throws. A cycle makes the nesting unbounded, so look for one only when deep. */
  private enter(v: object): void {
    const d = this.depth;
    if (d >= 64) {
      for (let i = 0; i < d; i++) if (this.stack[i] === v) throw refuse('cannot encode a circular structure as JSON');
    }
    this.stack[d] = v;
    this.depth = d + 1;
  }

  private leave(): void {
    this.stack[--this.depth] = null;
  }

  number(v: number): void {
    this.ensure(9);
    const b = this.buf;
    if ((v | 0) === v) {
      b[this.pos] = T_I32;
      this.u32(this.pos + 1, v);
      this.pos += 5;
    } else if (v - v === 0) {
      b[this.pos] = T_F64;
      f64[0] = v;
      const p = this.pos + 1;
      for (let i = 0; i < 8; i++) b[p + i] = f64Bytes[i]!;
      this.pos += 9;
    } else b[this.pos++] = T_NULL; // NaN, Infinity
  }

  string(s: string): void {
    const n = s.length;
    this.ensure(5 + 2 * n);
    const b = this.buf;
    const start = this.pos;
    const p = start + 5;
    let oneByte = true;
    if (n <= SHORT_STRING) {
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0xff) {
          oneByte = false;
          break;
        }
        b[p + i] = c;
      }
    } else if (hasTwoByte.test(s)) oneByte = false;
    else b.latin1Write(s, p, n);
    if (oneByte) {
      b[start] = T_STR1;
      this.u32(start + 1, n);
      this.pos = p + n;
    } else {
      b[start] = T_STR2;
      this.u32(start + 1, n);
      b.ucs2Write(s, p, 2 * n);
      this.pos = p + 2 * n;
    }
  }

  private array(a: unknown[]): void {
    const n = a.length;
    this.ensure(5);
    this.buf[this.pos] = T_ARRAY;
    this.u32(this.pos + 1, n);
    this.pos += 5;
    for (let i = 0; i < n; i++) {
      const v = a[i];
      if (typeof v === 'string') this.string(v);
      else if (typeof v === 'number') this.number(v);
      else if (!this.value(v, i)) {
        this.ensure(1);
        this.buf[this.pos++] = T_NULL;
      }
    }
  }

  private object(o: object): void {
    const keys = Object.keys(o);
    const node = this.shape(keys);
    if (node === null) return this.objectInline(o, keys);
    const block = node.block!;
    const k = block.length;
    this.ensure(3 + k);
    const b = this.buf;
    b[this.pos] = T_OBJECT;
    b[this.pos + 1] = k;
    b[this.pos + 2] = k >>> 8;
    b.set(block, this.pos + 3);
    this.pos += 3 + k;
    if (node.writer !== null) return node.writer(this, o);
    if (++node.uses === COMPILE_AFTER) node.writer = this.writerFor(keys, k);
    // Reading o[key] with a different key each time is a megamorphic lookup (~10 ns per member);
    // the generated writer reads each member by its constant name.
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (!this.value((o as Record<string, unknown>)[key], key)) this.absent();
    }
  }

  /** Marks a shaped object's member as dropped (its value was undefined, a function, a symbol). */
  absent(): void {
    this.ensure(1);
    this.buf[this.pos++] = T_ABSENT;
  }

  private objectInline(o: object, keys: string[]): void {
    this.ensure(5);
    const at = this.pos;
    this.buf[at] = T_OBJECT_INLINE;
    this.pos += 5;
    let n = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const mark = this.pos;
      this.string(key);
      if (this.value((o as Record<string, unknown>)[key], key)) n++;
      else this.pos = mark; // dropped member: take its key back
    }
    this.u32(at + 1, n);
  }

  /** The trie node of `keys` (its key block set), via the memo of this depth; null: inline form. */
  private shape(keys: string[]): TrieNode | null {
    const n = keys.length;
    if (n > MAX_SHAPE_KEYS) return null;
    const d = this.depth;
    const m = d < 32 ? this.memo[d] : undefined;
    if (m !== undefined && m.keys.length === n) {
      let i = 0;
      while (i < n && m.keys[i] === keys[i]) i++;
      if (i === n) return m.node;
    }
    let node = this.find(keys);
    if (node === undefined) {
      // Over budget: start afresh. One shape alone always fits (at most MAX_SHAPE_KEYS nodes of
      // MAX_KEY_UNITS units and a MAX_KEY_BLOCK block, far below both bounds).
      this.clearShapes();
      node = this.find(keys);
    }
    if (node === null || node === undefined) return null;
    if (d < 32) this.memo[d] = { keys, node };
    return node;
  }

  /**
   * Walks the trie along `keys`, adding the missing nodes and the key block. null: the inline form
   * (a key too long, a block too large); undefined: no room within the bounds.
   */
  private find(keys: string[]): TrieNode | null | undefined {
    let node = this.root;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      let next = node.next?.get(key);
      if (next === undefined) {
        if (key.length > MAX_KEY_UNITS) return null; // never in the trie
        const cost = NODE_COST + 2 * key.length;
        if (this.nodes >= MAX_TRIE_NODES || this.bytes + cost > MAX_ENCODER_BYTES) return undefined;
        this.nodes++;
        this.bytes += cost;
        next = { next: null, block: null, uses: 0, writer: null };
        (node.next ??= new Map()).set(key, next);
      }
      node = next;
    }
    if (node.block === null) {
      const size = keyBlockSize(keys);
      if (size > MAX_KEY_BLOCK) {
        node.block = TOO_LARGE; // remembered, so the size is not measured again
        return null;
      }
      if (this.bytes + BLOCK_COST + size > MAX_ENCODER_BYTES) return undefined;
      this.bytes += BLOCK_COST + size;
      node.block = keyBlock(keys, size);
    } else if (node.block === TOO_LARGE) return null;
    return node;
  }

  /** The generated writer of a shape, if it fits the budget; else the trie starts afresh. */
  private writerFor(keys: string[], blockBytes: number): Writer | null {
    if (!codegen) return null;
    const cost = WRITER_COST + 2 * blockBytes + WRITER_MEMBER_COST * keys.length;
    if (this.bytes + cost > MAX_ENCODER_BYTES) {
      this.clearShapes(); // the node in use is no longer in the trie: no point compiling for it
      return null;
    }
    this.bytes += cost;
    return compileWriter(keys);
  }

  /** Forgets every shape (the trie and the memo). */
  private clearShapes(): void {
    this.root = { next: null, block: null, uses: 0, writer: null };
    this.nodes = 0;
    this.bytes = 0;
    this.memo.length = 0;
    this.evictions++;
  }

  /** After a failed encode: drop the references to the value's objects. */
  abandon(): void {
    this.stack.fill(null);
    this.depth = 0;
  }
}

/** The block of a shape whose key block would exceed MAX_KEY_BLOCK bytes: always written inline. */
const TOO_LARGE = new Uint8Array(0);

/**
 * The member writer of a shape: reads each member by its constant name (keys are embedded as JSON
 * string literals, which escape anything), in key order, writing each before reading the next, as
 * JSON.stringify does. null without code generation.
 */
function compileWriter(keys: string[]): Writer | null {
  if (!codegen) return null;
  const body = keys.map((key) => {
    const lit = JSON.stringify(key);
    // Strings and numbers (no toJSON to consider) skip value()'s dispatch.
    return `v = o[${lit}]; if (typeof v === "string") e.string(v); else if (typeof v === "number") e.number(v); else if (!e.value(v, ${lit})) e.absent();`;
  });
  return generate<Writer>(['e', 'o'], `"use strict";\nlet v;\n${body.join('\n')}`);
}

function keyBlockSize(keys: string[]): number {
  let size = 2;
  for (const k of keys) size += 3 + (hasTwoByte.test(k) ? 2 : 1) * k.length;
  return size;
}

function keyBlock(keys: string[], size: number): Uint8Array {
  const b = Buffer.alloc(size) as Utf16Buffer;
  b.writeUInt16LE(keys.length, 0);
  let p = 2;
  for (const k of keys) {
    const two = hasTwoByte.test(k);
    b[p] = two ? T_STR2 : T_STR1;
    b.writeUInt16LE(k.length, p + 1);
    p += 3;
    p += two ? b.ucs2Write(k, p) : b.latin1Write(k, p);
  }
  return new Uint8Array(b.buffer, b.byteOffset, size);
}

let shared = new Encoder();
let sharedBusy = false;

/**
 * Encodes into a buffer that is reused by the next call: returns [buffer, length]. Valid only until
 * the next encode on this thread, so copy it before anything else can run. (A toJSON or getter that
 * itself encodes gets an encoder of its own.)
 */
export function encodeShared(value: unknown): Buffer {
  if (sharedBusy) {
    const e = new Encoder();
    try {
      const n = e.encode(value);
      return bufferView(e.buf.buffer, e.buf.byteOffset, n);
    } catch (err) {
      throw encodeFailure(err);
    }
  }
  sharedBusy = true;
  try {
    const n = shared.encode(value);
    return bufferView(shared.buf.buffer, shared.buf.byteOffset, n);
  } catch (err) {
    shared.abandon();
    throw encodeFailure(err);
  } finally {
    sharedBusy = false;
  }
}

/** Encodes into a new Buffer of its own. */
export function encode(value: unknown): Buffer {
  return Buffer.from(encodeShared(value));
}

// Decoder -----------------------------------------------------------------------------------------------

type Make = (r: () => unknown) => Record<string, unknown>;
interface Shape {
  bytes: Uint8Array;
  keys: string[];
  make: Make;
  uses: number;
  hash: number;
  /** Estimated bytes held (SHAPE_COST..., plus MAKE_COST... once compiled). */
  cost: number;
}

const ABSENT: unique symbol = Symbol('absent');
const NO_BYTES = Buffer.alloc(0) as Utf16Buffer;
let src: Utf16Buffer = NO_BYTES;
let rp = 0;
let end = 0;
let depth = 0;
let sawAbsent = false;
/** The shapes seen, by hash of the key block; every shape in shapeMemo is also in shapes. */
const shapes = new Map<number, Shape>();
const shapeMemo: (Shape | undefined)[] = [];
let shapeBytes = 0;
let shapeEvictions = 0;

function fail(why: string): never {
  throw new JsonbError(`malformed jsonb at byte ${rp}: ${why}`);
}

function need(n: number): void {
  if (n > end - rp) fail(`needs ${n} more bytes, ${end - rp} left`);
}

function readU32(): number {
  need(4);
  const b = src;
  const v = (b[rp]! | (b[rp + 1]! << 8) | (b[rp + 2]! << 16) | (b[rp + 3]! << 24)) >>> 0;
  rp += 4;
  return v;
}

/**
 * Reads a string of `n` one-byte units at rp. Up to 24 units, String.fromCharCode with the units as
 * arguments (~30 ns at 15) beats the native latin1Slice call (~70 ns).
 */
function str1(n: number): string {
  need(n);
  const c = src;
  const s = rp;
  rp += n;
  switch (n) {
    case 0: return '';
    case 1: return String.fromCharCode(c[s]!);
    case 2: return String.fromCharCode(c[s]!, c[s + 1]!);
    case 3: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!);
    case 4: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!);
    case 5: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!);
    case 6: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!);
    case 7: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!);
    case 8: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!);
    case 9: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!);
    case 10: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!);
    case 11: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!);
    case 12: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!);
    case 13: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!);
    case 14: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!);
    case 15: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!);
    case 16: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!);
    case 17: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!);
    case 18: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!, c[s + 17]!);
    case 19: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!, c[s + 17]!, c[s + 18]!);
    case 20: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!, c[s + 17]!, c[s + 18]!, c[s + 19]!);
    case 21: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!, c[s + 17]!, c[s + 18]!, c[s + 19]!, c[s + 20]!);
    case 22: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!, c[s + 17]!, c[s + 18]!, c[s + 19]!, c[s + 20]!, c[s + 21]!);
    case 23: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!, c[s + 17]!, c[s + 18]!, c[s + 19]!, c[s + 20]!, c[s + 21]!, c[s + 22]!);
    case 24: return String.fromCharCode(c[s]!, c[s + 1]!, c[s + 2]!, c[s + 3]!, c[s + 4]!, c[s + 5]!, c[s + 6]!, c[s + 7]!, c[s + 8]!, c[s + 9]!, c[s + 10]!, c[s + 11]!, c[s + 12]!, c[s + 13]!, c[s + 14]!, c[s + 15]!, c[s + 16]!, c[s + 17]!, c[s + 18]!, c[s + 19]!, c[s + 20]!, c[s + 21]!, c[s + 22]!, c[s + 23]!);
    default: return c.latin1Slice(s, rp);
  }
}

/** Reads a string of `n` two-byte units at rp. */
function str2(n: number): string {
  if (n > (end - rp) / 2) fail(`a ${n}-unit string needs ${2 * n} bytes, ${end - rp} left`);
  const s = rp;
  rp += 2 * n;
  return src.ucs2Slice(s, rp);
}

/** Reads one value; ABSENT only where `member` allows it. */
function read(): unknown {
  need(1);
  const t = src[rp++]!;
  switch (t) {
    case T_NULL:
      return null;
    case T_FALSE:
      return false;
    case T_TRUE:
      return true;
    case T_I32:
      return readU32() | 0;
    case T_F64: {
      need(8);
      for (let i = 0; i < 8; i++) f64Bytes[i] = src[rp + i]!;
      rp += 8;
      return f64[0];
    }
    case T_STR1:
      return str1(readU32());
    case T_STR2:
      return str2(readU32());
    case T_ARRAY: {
      const n = readU32();
      if (n > end - rp) fail(`an array of ${n} values cannot fit in ${end - rp} bytes`);
      enter();
      const a: unknown[] = [];
      for (let i = 0; i < n; i++) a.push(read());
      depth--;
      return a;
    }
    case T_OBJECT:
      return object();
    case T_OBJECT_INLINE:
      return objectInline();
    case T_ABSENT:
      if (member) {
        sawAbsent = true;
        return ABSENT;
      }
      return fail('an absent marker outside an object');
    default:
      return fail(`unknown tag 0x${t.toString(16)}`);
  }
}

/** True while reading the values of a shaped object (where T_ABSENT may appear). */
let member = false;

/** The reader that shaped-object constructors call: one member value. */
const readMember = (): unknown => {
  member = true;
  return read();
};

function enter(): void {
  member = false;
  if (++depth > 4096) fail('nested more than 4096 levels deep');
}

function object(): Record<string, unknown> {
  need(2);
  const k = src[rp]! | (src[rp + 1]! << 8);
  rp += 2;
  need(k);
  const s = rp;
  rp += k;
  const d = depth;
  let shape = d < 32 ? shapeMemo[d] : undefined;
  if (shape === undefined || !sameBytes(shape.bytes, s, k)) {
    let h = k | 0;
    for (let i = s; i < s + k; i++) h = Math.imul(h ^ src[i]!, 16777619);
    shape = shapes.get(h);
    if (shape === undefined || !sameBytes(shape.bytes, s, k)) {
      shape = compileShape(s, k, h);
      if (shape.keys.length <= MAX_SHAPE_KEYS) remember(shape);
      else shape.uses = UNCACHED; // no encoder makes such shapes: neither cached nor compiled
    }
    if (d < 32 && shape.uses !== UNCACHED) shapeMemo[d] = shape;
  }
  if (shape.keys.length > end - rp) fail(`an object of ${shape.keys.length} members cannot fit in ${end - rp} bytes`);
  enter();
  const outerAbsent = sawAbsent;
  sawAbsent = false;
  if (shape.uses < COMPILE_AFTER && ++shape.uses === COMPILE_AFTER) compileConstructor(shape);
  let o = shape.make(readMember);
  if (sawAbsent) o = withoutAbsent(o, shape.keys);
  sawAbsent = outerAbsent;
  member = false;
  depth--;
  return o;
}

function objectInline(): Record<string, unknown> {
  const n = readU32();
  if (n > (end - rp) / 6) fail(`an object of ${n} members cannot fit in ${end - rp} bytes`);
  enter();
  const o: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    need(1);
    const t = src[rp++]!;
    let key: string;
    if (t === T_STR1) key = str1(readU32());
    else if (t === T_STR2) key = str2(readU32());
    else fail(`an object key with tag 0x${t.toString(16)}`);
    member = false;
    define(o, key, read());
  }
  depth--;
  return o;
}

/** Like JSON.parse's CreateDataProperty: "__proto__" becomes an own property, no setter runs. */
function define(o: Record<string, unknown>, key: string, v: unknown): void {
  if (key === '__proto__' || key in objectProto) Object.defineProperty(o, key, { value: v, writable: true, enumerable: true, configurable: true });
  else o[key] = v;
}

function withoutAbsent(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const v = o[key];
    if (v !== ABSENT && Object.prototype.hasOwnProperty.call(o, key)) define(out, key, v);
  }
  return out;
}

/** `uses` of a shape that is not cached (too many keys): past COMPILE_AFTER, so never compiled. */
const UNCACHED = COMPILE_AFTER + 1;

/** Adds a new shape to the cache, clearing the cache first if it would pass a bound. */
function remember(shape: Shape): void {
  const old = shapes.get(shape.hash);
  if (old !== undefined) {
    // Another block with the same hash: replaced, and out of the memo too.
    shapeBytes -= old.cost;
    for (let i = 0; i < shapeMemo.length; i++) if (shapeMemo[i] === old) shapeMemo[i] = undefined;
  } else if (shapes.size >= MAX_DECODER_SHAPES) clearShapes();
  if (shapeBytes + shape.cost > MAX_DECODER_BYTES) clearShapes();
  shapes.set(shape.hash, shape);
  shapeBytes += shape.cost;
}

/** Generates a cached shape's constructor, within the byte budget (clearing the cache if need be). */
function compileConstructor(shape: Shape): void {
  if (!codegen) return;
  const cost = MAKE_COST + 2 * shape.bytes.length + MAKE_MEMBER_COST * shape.keys.length;
  if (shapeBytes + cost > MAX_DECODER_BYTES) {
    clearShapes();
    shapes.set(shape.hash, shape); // the shape in use stays, alone: it always fits
    shapeBytes = shape.cost;
  }
  shape.make = makeConstructor(shape.keys);
  shape.cost += cost;
  shapeBytes += cost;
}

function clearShapes(): void {
  shapes.clear();
  shapeMemo.length = 0;
  shapeBytes = 0;
  shapeEvictions++;
}

function sameBytes(b: Uint8Array, s: number, k: number): boolean {
  if (b.length !== k) return false;
  const c = src;
  for (let i = 0; i < k; i++) if (b[i] !== c[s + i]) return false;
  return true;
}

/** Parses a key block (untrusted) and builds the constructor of its shape. */
function compileShape(s: number, k: number, hash: number): Shape {
  const bytes = new Uint8Array(k);
  for (let i = 0; i < k; i++) bytes[i] = src[s + i]!;
  const outerRp = rp;
  const outerEnd = end;
  rp = s;
  end = s + k;
  const keys: string[] = [];
  try {
    need(2);
    const n = src[rp]! | (src[rp + 1]! << 8);
    rp += 2;
    if (n > k / 3) fail(`a key block of ${k} bytes cannot hold ${n} keys`);
    for (let i = 0; i < n; i++) {
      need(3);
      const t = src[rp]!;
      const len = src[rp + 1]! | (src[rp + 2]! << 8);
      rp += 3;
      if (t === T_STR1) keys.push(str1(len));
      else if (t === T_STR2) keys.push(str2(len));
      else fail(`a key with tag 0x${t.toString(16)}`);
    }
    if (rp !== end) fail('trailing bytes in a key block');
  } finally {
    rp = outerRp;
    end = outerEnd;
  }
  return { bytes, keys, make: genericConstructor(keys), uses: 0, hash, cost: SHAPE_COST + 2 * k + SHAPE_KEY_COST * keys.length };
}

/**
 * The constructor of a shape: one object literal, so the engine creates the object with its final
 * hidden class at once. The keys are embedded as JSON string literals (JSON.stringify escapes
 * everything a peer could put in a key). Without code generation (--disallow-code-generation-from-
 * strings), a loop defines the members one by one.
 */
function makeConstructor(keys: string[]): Make {
  if (codegen) {
    const body = keys.map((key) => `${key === '__proto__' ? '["__proto__"]' : JSON.stringify(key)}: r()`).join(', ');
    const make = generate<Make>(['r'], `"use strict"; return { ${body} };`);
    if (make !== null) return make;
  }
  return genericConstructor(keys);
}

function genericConstructor(keys: string[]): Make {
  return (r) => {
    const o: Record<string, unknown> = {};
    for (const key of keys) define(o, key, r());
    return o;
  };
}

/** Decodes the message in `bytes` [from, to). Throws JsonbError on malformed input. */
export function decodeRange(bytes: Buffer, from: number, to: number): unknown {
  src = bytes as Utf16Buffer;
  rp = from;
  end = to;
  depth = 0;
  member = false;
  sawAbsent = false;
  try {
    const v = read();
    if (rp !== end) fail(`${end - rp} bytes left after the value`);
    return v;
  } finally {
    src = NO_BYTES; // do not keep the channel's memory reachable from here
  }
}

export function decode(bytes: Buffer): unknown {
  return decodeRange(bytes, 0, bytes.length);
}

/** For tests: forget every shape (encoder and decoder), and force or allow code generation. */
export function resetShapes(useCodegen = true): void {
  shared = new Encoder();
  clearShapes();
  shapeEvictions = 0;
  codegen = useCodegen && codegenAllowed;
}

/** For tests and diagnostics: what the shape caches of this thread hold (bytes are estimates). */
export function shapeCacheStats(): { encoder: { nodes: number; bytes: number; evictions: number }; decoder: { shapes: number; bytes: number; evictions: number } } {
  return {
    encoder: { nodes: shared.nodes, bytes: shared.bytes, evictions: shared.evictions },
    decoder: { shapes: shapes.size, bytes: shapeBytes, evictions: shapeEvictions },
  };
}

/** The bounds of the shape caches (per thread), as documented in docs/codecs.md. */
export const shapeCacheLimits = {
  encoderNodes: MAX_TRIE_NODES,
  encoderBytes: MAX_ENCODER_BYTES,
  decoderShapes: MAX_DECODER_SHAPES,
  decoderBytes: MAX_DECODER_BYTES,
} as const;
