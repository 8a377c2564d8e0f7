/**
 * Codecs turn values into message bytes and back.
 *
 * `encode` returns either bytes (any ArrayBufferView) or a string; a string is written as UTF-8
 * straight into shared memory, with no intermediate buffer. `decode` receives a Buffer that is a
 * view into shared memory, valid only during the call: it must copy whatever it keeps (JSON.parse,
 * toString and v8.deserialize all do).
 */
import * as v8 from 'node:v8';
import { encodeError, ErrorCodes, invalidArg, ShmkitError } from '../errors';
import * as jsonbFormat from './jsonb';
import { describe as describeValue } from '../validate';

/** describe(), which must not throw (a revoked Proxy throws on any inspection). */
function describe(v: unknown): string {
  try {
    return describeValue(v);
  } catch {
    return 'an unreadable object (a revoked Proxy?)';
  }
}


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
    let s: string | undefined;
    try {
      s = JSON.stringify(value);
    } catch (err) {
      throw encodeError('json', err); // a BigInt, a cycle, a throwing toJSON or getter, a revoked Proxy...
    }
    // undefined, a function or a symbol (or a toJSON returning one): JSON.stringify returns undefined.
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
    try {
      return v8.serialize(value);
    } catch (err) {
      throw encodeError('structured', err); // a function, a symbol, a WeakMap, a revoked Proxy...
    }
  },
  decode(b) {
    return v8.deserialize(b);
  },
};

export const codecs = { bytes, utf8, json, jsonb, structured } as const;
export type CodecName = keyof typeof codecs;

/** The built-in codecs by name: a Map, so 'toString' or '__proto__' are not names. */
const byName = new Map<string, Codec<unknown>>(Object.entries(codecs) as [string, Codec<unknown>][]);

/**
 * The codec for the `codec` option: a built-in by name, the built-in objects themselves, or a custom
 * codec object, checked here (a string `name`, `encode` and `decode` functions, read once) and
 * wrapped so that what its encode throws or returns is reported like the built-ins do.
 */
export function resolveCodec(v: unknown, argument = 'options.codec'): Codec<unknown> {
  if (v === undefined) return bytes as Codec<unknown>;
  if (typeof v === 'string') {
    const c = byName.get(v);
    if (c === undefined) throw invalidArg(argument, `must be one of ${[...byName.keys()].join(', ')} or a codec object, got ${describe(v)}`);
    return c;
  }
  if (typeof v !== 'object' || v === null) throw invalidArg(argument, `must be a codec name or a codec object ({ name, encode, decode }), got ${describe(v)}`);
  for (const c of byName.values()) if (v === c) return c;
  if (wrappers.has(v)) return v as Codec<unknown>; // another handle's `codec`: already checked
  let name: unknown;
  let encode: unknown;
  let decode: unknown;
  try {
    ({ name, encode, decode } = v as Codec<unknown>);
  } catch (err) {
    throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `${argument}: the codec object could not be read (a revoked Proxy?)`, { argument, cause: err });
  }
  const bad = (what: string, got: unknown): ShmkitError => invalidArg(argument, `a codec object needs ${what}, got ${describe(got)}`);
  if (typeof name !== 'string' || name === '') throw bad('a non-empty string name', name);
  if (typeof encode !== 'function') throw bad('an encode function', encode);
  if (typeof decode !== 'function') throw bad('a decode function', decode);
  return wrapCodec(v as Codec<unknown>, name, encode as Codec<unknown>['encode'], decode as Codec<unknown>['decode']);
}

/**
 * A custom codec as the channel uses it: it inherits from the user's object (so its other members
 * stay reachable from `channel.codec`), calls the user's functions with the user's object as `this`,
 * and turns what encode throws, or a result that is neither bytes nor a string, into
 * ERR_SHMKIT_INVALID_ARGUMENT (argument 'message', `cause`: the error). decode's errors are left to
 * the channel, which reports them as ERR_SHMKIT_DECODE.
 */
const wrappers = new WeakSet<object>();

function wrapCodec(user: Codec<unknown>, name: string, encode: Codec<unknown>['encode'], decode: Codec<unknown>['decode']): Codec<unknown> {
  const wrapped: Codec<unknown> = Object.create(user, {
    name: { value: name, enumerable: true },
    encode: {
      value(value: unknown): Uint8Array | string {
        let data: unknown;
        try {
          data = encode.call(user, value);
        } catch (err) {
          throw encodeError(name, err);
        }
        // ArrayBuffer.isView never throws, nor runs user code (a Proxy is not a view).
        if (typeof data !== 'string' && !ArrayBuffer.isView(data)) throw invalidArg('message', `the ${name} codec returned ${describe(data)}, not bytes or a string`);
        return data as Uint8Array | string;
      },
    },
    decode: {
      value(bytes: Buffer): unknown {
        return decode.call(user, bytes);
      },
    },
  });
  wrappers.add(wrapped);
  return Object.freeze(wrapped);
}

/**
 * `value` encoded by `codec` as bytes, for a transport that sends whole messages (NATS): a codec
 * that throws is ERR_SHMKIT_INVALID_ARGUMENT naming `argument` (a ShmkitError passes as it is).
 */
export function encodeBytes<T>(codec: Codec<T>, value: T, argument: string): Uint8Array {
  let e: Uint8Array | string;
  try {
    e = codec.encode(value);
  } catch (err) {
    if (err instanceof ShmkitError) throw err;
    throw invalidArg(argument, `the ${codec.name} codec could not encode it: ${err instanceof Error ? err.message : String(err)}`);
  }
  return typeof e === 'string' ? Buffer.from(e, 'utf8') : e;
}

/** `data` decoded by `codec`; a codec that throws is ERR_SHMKIT_DECODE, `what` saying whose message it was. */
export function decodeBytes<T>(codec: Codec<T>, data: Uint8Array, what: string): T {
  try {
    return codec.decode(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  } catch (err) {
    throw new ShmkitError(ErrorCodes.DECODE, `${what}: the ${codec.name} codec could not decode a ${data.byteLength}-byte message (it was skipped)`, { cause: err });
  }
}

