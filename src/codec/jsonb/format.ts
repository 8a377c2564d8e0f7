/**
 * jsonb format: JSON values in a binary form that is faster to write and to read than JSON text.
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
import { compileFunction } from 'node:vm';
import { encodeError, invalidArg } from '../../errors';

export const T_NULL = 0x00;
export const T_FALSE = 0x01;
export const T_TRUE = 0x02;
export const T_I32 = 0x03;
export const T_F64 = 0x04;
export const T_STR1 = 0x05;
export const T_STR2 = 0x06;
export const T_ARRAY = 0x07;
export const T_OBJECT = 0x08;
export const T_OBJECT_INLINE = 0x09;
export const T_ABSENT = 0x0a;

/**
 * Objects with more keys than this, with a key longer than MAX_KEY_UNITS, or whose key block would
 * not fit its u16 length, use the inline form. The decoder caches no shape with more keys (no
 * encoder of this module makes one).
 */
export const MAX_SHAPE_KEYS = 128;
export const MAX_KEY_UNITS = 1024;
export const MAX_KEY_BLOCK = 0xffff;

/*
 * Shape caches are bounded by count and by bytes, on both sides; when an addition would pass either
 * bound, the whole cache is cleared (see docs/codecs.md for why clearing rather than LRU). The bytes
 * are an estimate of the heap each entry keeps, calibrated against the V8 of Node 20, 22 and 24
 * (measured heap retained per added shape after GC, with short and long keys, few and many): it
 * errs on the high side (measured 0.5-0.9 of the estimate). A single shape always fits the byte
 * budget, so a clear always makes room.
 */
/** Key-trie nodes the encoder remembers (each a key of some shape). */
export const MAX_TRIE_NODES = 8192;
/** Bytes the encoder's trie may hold: keys, key blocks, generated member writers. */
export const MAX_ENCODER_BYTES = 4 << 20;
/** A trie node: the node object and its entry in the parent's Map (plus 2 bytes per key unit). */
export const NODE_COST = 192;
/** A key block, beyond its bytes (the Buffer and its ArrayBuffer). */
export const BLOCK_COST = 128;
/** A generated member writer: its source holds each key twice; ~350 bytes of code, feedback per member. */
export const WRITER_COST = 1024;
export const WRITER_MEMBER_COST = 384;
/** Shapes the decoder remembers. */
export const MAX_DECODER_SHAPES = 1024;
/** Bytes the decoder's shapes may hold: key blocks, key strings, generated constructors. */
export const MAX_DECODER_BYTES = 4 << 20;
/** A decoder shape: the block's copy and the key strings (2 bytes per block byte), plus per key. */
export const SHAPE_COST = 256;
export const SHAPE_KEY_COST = 32;
/**
 * A generated constructor: its source holds the keys once more, and its literal's hidden class and
 * constants (2 bytes per block byte, with margin), plus per member.
 */
export const MAKE_COST = 1280;
export const MAKE_MEMBER_COST = 128;
/**
 * A shape gets generated code (an encoder's member writer, a decoder's object literal) once it has
 * been used this many times: compiling costs tens of microseconds, so shapes seen once (objects used
 * as dictionaries) keep the generic loops.
 */
export const COMPILE_AFTER = 8;
/** The encoding buffer grows as needed; past this size it is dropped before the next encode. */
export const MAX_RETAINED = 1 << 20;
/** Strings up to this many code units are written by a charCodeAt loop (no native call). */
export const SHORT_STRING = 64;

export const f64 = new Float64Array(1);
export const f64Bytes = new Uint8Array(f64.buffer);
export const objectProto = Object.prototype;
export const arrayProto = Array.prototype;
export const isRawJSON = (JSON as unknown as { isRawJSON?: (v: unknown) => boolean }).isRawJSON;
export const hasTwoByte = /[^\x00-\xff]/;

export interface Utf16Buffer extends Buffer {
  latin1Write(s: string, offset: number, length?: number): number;
  ucs2Write(s: string, offset: number, length?: number): number;
  latin1Slice(start: number, end: number): string;
  ucs2Slice(start: number, end: number): string;
}

/** Malformed bytes on decode (the channel reports it as ERR_SHMKIT_DECODE). */
export class JsonbError extends TypeError {}

/** A value JSON refuses (the same refusals as JSON.stringify), as ERR_SHMKIT_INVALID_ARGUMENT. */
export const refuse = (why: string): Error => invalidArg('message', why);

/**
 * Anything else thrown while encoding (by a toJSON, a getter, a Proxy trap, a revoked Proxy, a
 * stack overflow...) becomes ERR_SHMKIT_INVALID_ARGUMENT too, with the original error as `cause`.
 * Our own refusals (argument 'message', also from a nested encode) pass through.
 */
export function encodeFailure(err: unknown): Error {
  return encodeError('jsonb', err);
}

/**
 * Whether code may be generated: not under --disallow-code-generation-from-strings (the policy is
 * probed once with `new Function`, and honoured), nor after a generation failed.
 */
export const codegenAllowed = ((): boolean => {
  try {
    return new Function('return true')() === true;
  } catch {
    return false;
  }
})();
/** Whether code generation is on now (see resetShapes). */
export const gen = { on: codegenAllowed };

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
export function generate<F>(params: string[], body: string): F | null {
  if (!gen.on) return null;
  try {
    return compileFunction(body, params, { contextExtensions: NO_CACHE_SCOPE }) as unknown as F;
  } catch {
    gen.on = false;
    return null;
  }
}

