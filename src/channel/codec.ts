/**
 * Codecs turn values into message bytes and back.
 *
 * `encode` returns either bytes (any ArrayBufferView) or a string; a string is written as UTF-8
 * straight into shared memory, with no intermediate buffer. `decode` receives a Buffer that is a
 * view into shared memory, valid only during the call: it must copy whatever it keeps (JSON.parse,
 * toString and v8.deserialize all do).
 */
import * as v8 from 'node:v8';
import { invalidArg } from '../errors';
import * as jsonbFormat from './jsonb';
import { describe } from '../validate';

export interface Codec<T = unknown> {
  readonly name: string;
  encode(value: T): Uint8Array | string;
  decode(bytes: Buffer): T;
}

/** Raw bytes: send any ArrayBufferView; receive a Buffer (a copy). */
export const bytes: Codec<ArrayBufferView> = {
  name: 'bytes',
  encode(value) {
    if (!ArrayBuffer.isView(value)) throw invalidArg('message', `must be a Buffer, TypedArray or DataView for the bytes codec, got ${describe(value)}`);
    return value instanceof Uint8Array ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  },
  decode(b) {
    return Buffer.from(b);
  },
};

/** Strings, encoded as UTF-8 directly into the ring. */
export const utf8: Codec<string> = {
  name: 'utf8',
  encode(value) {
    if (typeof value !== 'string') throw invalidArg('message', `must be a string for the utf8 codec, got ${describe(value)}`);
    return value;
  },
  decode(b) {
    return b.toString('utf8');
  },
};

/** JSON values (JSON.stringify / JSON.parse), written as UTF-8 directly into the ring. */
export const json: Codec<unknown> = {
  name: 'json',
  encode(value) {
    const s = JSON.stringify(value);
    if (s === undefined) throw invalidArg('message', `cannot be represented as JSON, got ${describe(value)}`);
    return s;
  },
  decode(b) {
    return JSON.parse(b.toString('utf8'));
  },
};

/**
 * JSON values in a binary form (see jsonb.ts): the same values out as JSON.parse(JSON.stringify(v)),
 * about twice as fast to encode and decode as JSON text, because object keys are cached per shape
 * and numbers are not printed and parsed. Peers in other languages would need this format; use
 * `json` for them.
 */
export const jsonb: Codec<unknown> = {
  name: 'jsonb',
  encode(value) {
    return jsonbFormat.encode(value);
  },
  decode(b) {
    return jsonbFormat.decode(b);
  },
};

/** Structured clone (node:v8 serialize / deserialize): Maps, Sets, Dates, typed arrays, cycles... */
export const structured: Codec<unknown> = {
  name: 'structured',
  encode(value) {
    return v8.serialize(value);
  },
  decode(b) {
    return v8.deserialize(b);
  },
};

export const codecs = { bytes, utf8, json, jsonb, structured } as const;
export type CodecName = keyof typeof codecs;

export function resolveCodec(v: unknown, argument = 'options.codec'): Codec<unknown> {
  if (v === undefined) return bytes as Codec<unknown>;
  if (typeof v === 'string') {
    const c = (codecs as Record<string, Codec<unknown>>)[v];
    if (!c) throw invalidArg(argument, `must be one of ${Object.keys(codecs).join(', ')} or a codec object, got ${describe(v)}`);
    return c;
  }
  if (typeof v === 'object' && v !== null && typeof (v as Codec).encode === 'function' && typeof (v as Codec).decode === 'function') {
    return v as Codec<unknown>;
  }
  throw invalidArg(argument, `must be a codec name or an object with encode() and decode(), got ${describe(v)}`);
}
