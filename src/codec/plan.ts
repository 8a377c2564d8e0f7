/**
 * A codec plan: how a handle moves values of its codec in and out of a ring, chosen once when the
 * handle is made. The built-in codecs get direct paths (bytes are copied into a slab, strings and
 * JSON text are written as UTF-8 straight into the ring, jsonb encodes into a reused buffer); any
 * other codec goes through its own encode and decode. `fastSend` tells the producer which values
 * can take the ring's flat write path (RingProducer.putFast).
 */
import { invalidArg } from '../errors';
import { describe } from '../validate';
import { bytes, type Codec, json, jsonb, utf8 } from './codec';
import { decodeRange as jsonbDecode, encodeShared as jsonbEncodeShared } from './jsonb';
import { Slab } from './slab';
import { utf8Slice } from './utf8';

/** What an encode yields: bytes, or a string to be written as UTF-8. */
export type Encoded = Uint8Array | string;

export interface CodecPlan<T> {
  readonly codec: Codec<T>;
  /**
   * 'value': the value itself is the bytes to send (the bytes codec); 'encoded': encode() yields
   * bytes (jsonb); null: strings or a custom codec, which take the general path.
   */
  readonly fastSend: 'value' | 'encoded' | null;
  /**
   * The message bytes (or a string, written as UTF-8 by the producer). jsonb encodes into a buffer
   * that the next jsonb encode on this thread reuses: a caller that may yield before the bytes are
   * in the ring uses encodeStable().
   */
  encode(value: T): Encoded;
  encodeStable(value: T): Encoded;
  /** The value of the `len` bytes at `start` of `ring` (shared memory: a decoder copies what it keeps). */
  decode(ring: Buffer, ringI32: Int32Array, start: number, len: number): T;
  /**
   * A private copy of the `len` bytes at `start` (a string for text codecs), taken before the
   * bytes are known to be whole: a seqlock reader (SharedMap) copies, validates, then decodes the
   * copy with decodeCopy(). Nothing is decoded from memory another process may be writing.
   */
  copy(ring: Buffer, ringI32: Int32Array, start: number, len: number): unknown;
  decodeCopy(raw: unknown): T;
}

/** Any codec: its own encode (bytes or a string; other views are taken as bytes) and decode. */
class GenericPlan<T> implements CodecPlan<T> {
  readonly fastSend: CodecPlan<T>['fastSend'] = null;
  constructor(readonly codec: Codec<T>) {}
  encode(value: T): Encoded {
    const data = this.codec.encode(value);
    if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
      if (ArrayBuffer.isView(data)) return new Uint8Array((data as ArrayBufferView).buffer, (data as ArrayBufferView).byteOffset, (data as ArrayBufferView).byteLength);
      throw invalidArg('message', `codec ${this.codec.name} returned ${describe(data)}, not bytes or a string`);
    }
    return data;
  }
  encodeStable(value: T): Encoded {
    return this.encode(value);
  }
  decode(ring: Buffer, _i32: Int32Array, start: number, len: number): T {
    return this.codec.decode(ring.subarray(start, start + len));
  }
  copy(ring: Buffer, _i32: Int32Array, start: number, len: number): unknown {
    const out = Buffer.allocUnsafe(len);
    ring.copy(out, 0, start, start + len);
    return out;
  }
  decodeCopy(raw: unknown): T {
    return this.codec.decode(raw as Buffer);
  }
}

/** bytes: the value is sent as is; received copies go into a slab (see slab.ts). */
class BytesPlan<T> extends GenericPlan<T> {
  override readonly fastSend = 'value' as const;
  private slab: Slab | null = null;
  override decode(ring: Buffer, ringI32: Int32Array, start: number, len: number): T {
    return (this.slab ??= new Slab()).copy(ring, ringI32, start, len) as unknown as T;
  }
  override copy(ring: Buffer, ringI32: Int32Array, start: number, len: number): unknown {
    return (this.slab ??= new Slab()).copy(ring, ringI32, start, len);
  }
  override decodeCopy(raw: unknown): T {
    return raw as T;
  }
}

class Utf8Plan<T> extends GenericPlan<T> {
  override decode(ring: Buffer, _i32: Int32Array, start: number, len: number): T {
    return utf8Slice(ring, start, start + len) as unknown as T;
  }
  override copy(ring: Buffer, _i32: Int32Array, start: number, len: number): unknown {
    return utf8Slice(ring, start, start + len);
  }
  override decodeCopy(raw: unknown): T {
    return raw as T;
  }
}

class JsonPlan<T> extends GenericPlan<T> {
  override decode(ring: Buffer, _i32: Int32Array, start: number, len: number): T {
    return JSON.parse(utf8Slice(ring, start, start + len)) as T;
  }
  override copy(ring: Buffer, _i32: Int32Array, start: number, len: number): unknown {
    return utf8Slice(ring, start, start + len);
  }
  override decodeCopy(raw: unknown): T {
    return JSON.parse(raw as string) as T;
  }
}

class JsonbPlan<T> extends GenericPlan<T> {
  override readonly fastSend = 'encoded' as const;
  override encode(value: T): Encoded {
    return jsonbEncodeShared(value);
  }
  override encodeStable(value: T): Encoded {
    return Buffer.from(jsonbEncodeShared(value));
  }
  override decode(ring: Buffer, _i32: Int32Array, start: number, len: number): T {
    return jsonbDecode(ring, start, start + len) as T;
  }
  override decodeCopy(raw: unknown): T {
    return jsonbDecode(raw as Buffer, 0, (raw as Buffer).length) as T;
  }
}

/** The plan for a resolved codec (see resolveCodec). One per handle: a bytes plan owns its slab. */
export function planFor<T>(codec: Codec<T>): CodecPlan<T> {
  const c = codec as Codec<unknown>;
  if (c === bytes) return new BytesPlan(codec);
  if (c === utf8) return new Utf8Plan(codec);
  if (c === json) return new JsonPlan(codec);
  if (c === jsonb) return new JsonbPlan(codec);
  return new GenericPlan(codec);
}
