/**
 * jsonb encoding (the format is in format.ts): values in, bytes out, with a key-block cache per
 * object shape and, for shapes used often, generated member writers.
 */
import * as format from './format';
import { refuse, encodeFailure, gen, generate, type Utf16Buffer } from './format';
import { bufferView } from '../slab';

// Module-local constants (not property loads of the format module on every use).
const { T_NULL, T_FALSE, T_TRUE, T_I32, T_F64, T_STR1, T_STR2, T_ARRAY, T_OBJECT, T_OBJECT_INLINE, T_ABSENT, MAX_SHAPE_KEYS, MAX_KEY_UNITS, MAX_KEY_BLOCK, MAX_TRIE_NODES, MAX_ENCODER_BYTES, NODE_COST, BLOCK_COST, WRITER_COST, WRITER_MEMBER_COST, COMPILE_AFTER, MAX_RETAINED, SHORT_STRING, f64, f64Bytes, objectProto, arrayProto, isRawJSON, hasTwoByte } = format;

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

export class Encoder {
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
    if (!gen.on) return null;
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
  if (!gen.on) return null;
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


/** Forgets the encoder's shapes (tests). */
export function resetEncoder(): void {
  shared = new Encoder();
}

export function encoderStats(): { nodes: number; bytes: number; evictions: number } {
  return { nodes: shared.nodes, bytes: shared.bytes, evictions: shared.evictions };
}
