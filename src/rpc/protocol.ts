/**
 * The RPC wire format: one message of a connection (its 'bytes' codec) per frame. docs/design.md
 * ("RPC") is the specification. Little-endian:
 *
 *   0  u8   type (below)       1..3 zero       4  u32 call id (0 for NOTIFY)
 *   CALL    8 f64 deadline (ms since the Unix epoch, 0: none)  16 u32 window  20 u16 method
 *           length m  22 the method's name (UTF-8)  22+m the arguments (payload codec, an array)
 *   NOTIFY  8 u16 method length m  10 the method's name  10+m the arguments
 *   CANCEL  nothing more
 *   CREDIT  8 u32 items the caller may take more of a stream
 *   RESULT  8 the value (payload codec)
 *   ERROR   8 the error as JSON (UTF-8): { name, message, code?, cause?, data? }
 *   STREAM  nothing more: the result is a stream; ITEMs follow, then END or ERROR
 *   ITEM    8 one value of the stream (payload codec)
 *   END     nothing more
 */
import type { Codec } from '../codec/codec';
import { ErrorCodes, ShmkitError } from '../errors';
import { utf8Slice, utf8Write } from '../codec/utf8';

export const CALL = 1;
export const NOTIFY = 2;
export const CANCEL = 3;
export const CREDIT = 4;
export const RESULT = 5;
export const ERROR = 6;
export const STREAM = 7;
export const ITEM = 8;
export const END = 9;

export const HEAD = 8;
export const CALL_HEAD = 22;
export const NOTIFY_HEAD = 10;
/** The longest method name, in UTF-8 bytes. */
export const MAX_METHOD = 1024;

/** A frame without a body: its header, zeros after the type and id. */
function frame(type: number, id: number, head: number): Buffer {
  const b = Buffer.alloc(head);
  b[0] = type;
  b.writeUInt32LE(id >>> 0, 4);
  return b;
}

/** The UTF-8 bytes of recently used method names (a client calls few methods, many times). */
const methodBytes = new Map<string, Buffer>();
function methodName(method: string): Buffer {
  let m = methodBytes.get(method);
  if (m === undefined) {
    m = Buffer.from(method, 'utf8');
    if (m.length > MAX_METHOD) throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `method: a name of ${m.length} bytes is longer than ${MAX_METHOD}`, { argument: 'method' });
    if (methodBytes.size >= 1024) methodBytes.clear();
    methodBytes.set(method, m);
  }
  return m;
}

/** A frame of `head` bytes of header plus `body`, with the header's type and id written. */
function withBody(type: number, id: number, head: number, extra: Buffer | null, body: Uint8Array | string): Buffer {
  const x = extra === null ? 0 : extra.length;
  let b: Buffer;
  let n: number;
  if (typeof body === 'string') {
    // Room for the worst case (3 bytes per UTF-16 unit), then cut to what was written: one pass
    // over the string instead of a byteLength and a write.
    const max = head + x + body.length * 3;
    b = Buffer.allocUnsafe(max);
    n = utf8Write(b, body, head + x, max - head - x);
  } else {
    n = body.byteLength;
    b = Buffer.allocUnsafe(head + x + n);
    b.set(body, head + x);
  }
  b.writeUInt32LE(type, 0); // type, then three zero bytes
  b.writeUInt32LE(id >>> 0, 4);
  if (extra !== null) b.set(extra, head);
  return b.length === head + x + n ? b : b.subarray(0, head + x + n);
}

export function encodeCall(codec: Codec<unknown>, id: number, method: string, args: unknown[], deadline: number, window: number): Buffer {
  return callFrame(id, method, deadline, window, codec.encode(args));
}

/** A CALL frame of arguments already encoded (`body`): a transport that carries them apart (NATS). */
export function callFrame(id: number, method: string, deadline: number, window: number, body: Uint8Array | string): Buffer {
  const m = methodName(method);
  const b = withBody(CALL, id, CALL_HEAD, m, body);
  b.writeDoubleLE(deadline, 8);
  b.writeUInt32LE(window, 16);
  b.writeUInt16LE(m.length, 20);
  return b;
}

export function encodeNotify(codec: Codec<unknown>, method: string, args: unknown[]): Buffer {
  return notifyFrame(method, codec.encode(args));
}

/** A NOTIFY frame of arguments already encoded. */
export function notifyFrame(method: string, body: Uint8Array | string): Buffer {
  const m = methodName(method);
  const b = withBody(NOTIFY, 0, NOTIFY_HEAD, m, body);
  b.writeUInt16LE(m.length, 8);
  return b;
}

/** A RESULT, ERROR, STREAM, ITEM or END frame of a body already encoded (empty for STREAM and END). */
export const answerFrame = (type: number, id: number, body: Uint8Array): Buffer => withBody(type, id, HEAD, null, body);

export const encodeCancel = (id: number): Buffer => frame(CANCEL, id, HEAD);
export function encodeCredit(id: number, n: number): Buffer {
  const b = frame(CREDIT, id, HEAD + 4);
  b.writeUInt32LE(n >>> 0, 8);
  return b;
}
export const encodeResult = (codec: Codec<unknown>, id: number, value: unknown): Buffer => withBody(RESULT, id, HEAD, null, codec.encode(value));
export const encodeItem = (codec: Codec<unknown>, id: number, value: unknown): Buffer => withBody(ITEM, id, HEAD, null, codec.encode(value));
export const encodeStream = (id: number): Buffer => frame(STREAM, id, HEAD);
export const encodeEnd = (id: number): Buffer => frame(END, id, HEAD);
export function encodeError(id: number, err: unknown): Buffer {
  let body: string;
  try {
    body = JSON.stringify(serializeError(err));
  } catch {
    // An error object that resists every reading (a revoked Proxy, a throwing getter on name...).
    body = '{"name":"Error","message":"the handler threw a value that cannot be described"}';
  }
  return withBody(ERROR, id, HEAD, null, body);
}

/** A frame's type and call id, checked: a frame shorter than its header is garbage. */
export function head(b: Buffer): { type: number; id: number } {
  if (b.length < HEAD) throw protocolError(`a frame of ${b.length} bytes is shorter than its ${HEAD}-byte header`);
  return { type: b[0]!, id: b.readUInt32LE(4) };
}

export interface CallFrame {
  id: number;
  deadline: number;
  window: number;
  method: string;
  args: unknown[];
}

/** A CALL frame's header, checked, and where its arguments start. */
export function callHead(b: Buffer): { id: number; deadline: number; window: number; method: string; bodyAt: number } {
  if (b.length < CALL_HEAD) throw protocolError(`a CALL frame of ${b.length} bytes is shorter than its header`);
  const m = b.readUInt16LE(20);
  if (m > MAX_METHOD || CALL_HEAD + m > b.length) throw protocolError(`a CALL frame's method name of ${m} bytes does not fit`);
  const deadline = b.readDoubleLE(8);
  return { id: b.readUInt32LE(4), deadline: Number.isFinite(deadline) && deadline > 0 ? deadline : 0, window: b.readUInt32LE(16), method: utf8Slice(b, CALL_HEAD, CALL_HEAD + m), bodyAt: CALL_HEAD + m };
}

export function decodeCall(codec: Codec<unknown>, b: Buffer): CallFrame {
  const h = callHead(b);
  const args = payloadOf(codec, b, h.bodyAt);
  if (!Array.isArray(args)) throw protocolError('a CALL frame\'s arguments are not an array');
  return { id: h.id, deadline: h.deadline, window: h.window, method: h.method, args };
}

/** A NOTIFY frame's method, checked, and where its arguments start. */
export function notifyHead(b: Buffer): { method: string; bodyAt: number } {
  if (b.length < NOTIFY_HEAD) throw protocolError(`a NOTIFY frame of ${b.length} bytes is shorter than its header`);
  const m = b.readUInt16LE(8);
  if (m > MAX_METHOD || NOTIFY_HEAD + m > b.length) throw protocolError(`a NOTIFY frame's method name of ${m} bytes does not fit`);
  return { method: utf8Slice(b, NOTIFY_HEAD, NOTIFY_HEAD + m), bodyAt: NOTIFY_HEAD + m };
}

export function decodeNotify(codec: Codec<unknown>, b: Buffer): { method: string; args: unknown[] } {
  const h = notifyHead(b);
  const args = payloadOf(codec, b, h.bodyAt);
  if (!Array.isArray(args)) throw protocolError('a NOTIFY frame\'s arguments are not an array');
  return { method: h.method, args };
}

export function decodeCredit(b: Buffer): number {
  if (b.length < HEAD + 4) throw protocolError('a CREDIT frame is too short');
  return b.readUInt32LE(8);
}

/** The payload at `at` of a frame, decoded; a payload the codec rejects is ERR_SHMKIT_DECODE. */
function payloadOf(codec: Codec<unknown>, b: Buffer, at: number): unknown {
  try {
    return codec.decode(b.subarray(at));
  } catch (err) {
    if (err instanceof ShmkitError) throw err;
    throw new ShmkitError(ErrorCodes.DECODE, `rpc: a payload of ${b.length - at} bytes could not be decoded by the ${codec.name} codec`, { cause: err });
  }
}

export const decodeValue = (codec: Codec<unknown>, b: Buffer): unknown => payloadOf(codec, b, HEAD);

export function protocolError(why: string): ShmkitError {
  return new ShmkitError(ErrorCodes.CORRUPT, `rpc: ${why}`);
}

// Errors across the wire --------------------------------------------------------------------------

export interface WireError {
  name: string;
  message: string;
  code?: string | number;
  cause?: WireError | unknown;
  /** Other own enumerable fields that JSON can carry (a ShmkitError's `segment`, an errno...). */
  data?: Record<string, unknown>;
}

const OWN_SKIP = new Set(['name', 'message', 'code', 'cause', 'stack']);

/** What of an error the caller gets: name, message, code, JSON-safe fields, and the cause chain (8 deep). */
export function serializeError(err: unknown, depth = 0): WireError | unknown {
  try {
    return describeError(err, depth);
  } catch {
    return { name: 'Error', message: 'the handler threw a value that cannot be described' };
  }
}

function describeError(err: unknown, depth: number): WireError | unknown {
  if (!(err instanceof Error)) {
    // A thrown non-Error: its JSON, if it has one.
    try {
      return { name: 'Error', message: typeof err === 'string' ? err : JSON.stringify(err) ?? String(err) };
    } catch {
      try {
        return { name: 'Error', message: String(err) };
      } catch {
        return { name: 'Error', message: 'the handler threw a value that cannot be described' };
      }
    }
  }
  const out: WireError = { name: String(err.name), message: String(err.message) };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') out.code = code;
  const data: Record<string, unknown> = {};
  let any = false;
  for (const k of Object.keys(err)) {
    if (OWN_SKIP.has(k)) continue;
    const v = (err as unknown as Record<string, unknown>)[k];
    try {
      if (v === undefined || typeof v === 'function' || typeof v === 'symbol' || typeof v === 'bigint') continue;
      JSON.stringify(v);
      data[k] = v;
      any = true;
    } catch {
      // Not serializable: left out.
    }
  }
  if (any) out.data = data;
  if (err.cause !== undefined && depth < 8) out.cause = err.cause instanceof Error ? serializeError(err.cause, depth + 1) : jsonSafe(err.cause);
  return out;
}

function jsonSafe(v: unknown): unknown {
  try {
    return JSON.parse(JSON.stringify(v) ?? 'null');
  } catch {
    return String(v);
  }
}

/** An error raised by a remote handler, rebuilt on the caller's side with its name, message and code. */
export class RemoteError extends Error {
  /** The handler's error code, if it had one. */
  declare code?: string | number;
  /** Always true: the error happened in the server's handler. */
  readonly remote = true;
  /** @internal */
  constructor(w: WireError, method: string, depth = 0) {
    super(typeof w.message === 'string' ? w.message : String(w.message), w.cause === undefined ? undefined : { cause: rebuildCause(w.cause, method, depth + 1) });
    Object.defineProperty(this, 'name', { value: typeof w.name === 'string' ? w.name : 'Error', enumerable: false, configurable: true, writable: true });
    if (typeof w.code === 'string' || typeof w.code === 'number') this.code = w.code;
    if (w.data && typeof w.data === 'object') {
      for (const [k, v] of Object.entries(w.data)) if (!(k in this)) (this as unknown as Record<string, unknown>)[k] = v;
    }
    Object.defineProperty(this, 'method', { value: method, enumerable: false });
  }
}

function rebuildCause(c: unknown, method: string, depth: number): unknown {
  if (c !== null && typeof c === 'object' && typeof (c as WireError).name === 'string' && typeof (c as WireError).message === 'string' && depth < 8) {
    return new RemoteError(c as WireError, method, depth);
  }
  return c;
}

/** Parses an ERROR frame's body; a malformed one still gives an error, never a crash. */
export function decodeError(b: Buffer, method: string): Error {
  let w: unknown;
  try {
    w = JSON.parse(b.toString('utf8', HEAD));
  } catch {
    return protocolError(`an ERROR frame for ${method} is not JSON`);
  }
  if (w === null || typeof w !== 'object') return protocolError(`an ERROR frame for ${method} is not an object`);
  const e = w as WireError;
  // Our own typed errors keep their class: code ERR_SHMKIT_* and ABORT_ERR.
  if (typeof e.code === 'string' && (e.code.startsWith('ERR_SHMKIT_') || e.code === 'ABORT_ERR')) {
    const err = new ShmkitError(e.code as never, String(e.message), e.cause === undefined ? {} : { cause: rebuildCause(e.cause, method, 1) });
    Object.defineProperty(err, 'remote', { value: true, enumerable: false });
    if (e.data && typeof e.data === 'object') {
      for (const [k, v] of Object.entries(e.data)) if (!(k in err)) (err as unknown as Record<string, unknown>)[k] = v;
    }
    return err;
  }
  return new RemoteError(e, method);
}
