/**
 * jsonb decoding (the format is in format.ts): untrusted bytes in, values out; every read is
 * bounds-checked, and shapes seen often get a generated object literal.
 */
import * as format from './format';
import { JsonbError, gen, generate, type Utf16Buffer } from './format';

// Module-local constants (not property loads of the format module on every use).
const { T_NULL, T_FALSE, T_TRUE, T_I32, T_F64, T_STR1, T_STR2, T_ARRAY, T_OBJECT, T_OBJECT_INLINE, T_ABSENT, MAX_SHAPE_KEYS, MAX_DECODER_SHAPES, MAX_DECODER_BYTES, SHAPE_COST, SHAPE_KEY_COST, MAKE_COST, MAKE_MEMBER_COST, COMPILE_AFTER, f64, f64Bytes, objectProto } = format;

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
  if (!gen.on) return;
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
  if (gen.on) {
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


/** Forgets the decoder's shapes (tests). */
export function resetDecoder(): void {
  clearShapes();
  shapeEvictions = 0;
}

export function decoderStats(): { shapes: number; bytes: number; evictions: number } {
  return { shapes: shapes.size, bytes: shapeBytes, evictions: shapeEvictions };
}
