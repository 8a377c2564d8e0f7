/**
 * Parsing of a channel's options: creation parameters, and the wait options of its calls.
 */
import { invalidArg, ShmkitError } from '../errors';
import { type Codec, resolveCodec } from '../codec/codec';
import { maxMessageFor, MAX_CAPACITY, ringCapacity } from '../ring/format';
import { DEFAULT, parseWait, type ParsedWait } from '../sync/primitive';
import { parseTrust, type Trust } from '../trust';
import { checkInt, checkObject, describe } from '../validate';
import type { ChannelParams } from './layout';
import type { ChannelWaitOptions } from './types';

export interface ParsedCreate {
  params: ChannelParams;
  mode: number;
  codec: Codec<unknown>;
  trust: Trust;
}

/** The options of create() and openOrCreate(). */
export function parseCreate(options: unknown): ParsedCreate {
  const o = checkObject('options', options);
  const capRaw = o.capacity === undefined ? 1 << 20 : checkInt('options.capacity', o.capacity, 1, MAX_CAPACITY);
  const capacity = ringCapacity(capRaw);
  const maxAllowed = maxMessageFor(capacity);
  const maxMessageSize = o.maxMessageSize === undefined ? maxAllowed : checkInt('options.maxMessageSize', o.maxMessageSize, 0, 2 ** 31);
  if (maxMessageSize > maxAllowed) {
    throw invalidArg('options.maxMessageSize', `must be at most capacity / 2 - 8 = ${maxAllowed} for a capacity of ${capacity} bytes, got ${maxMessageSize}`);
  }
  const side = (name: string, v: unknown): boolean => {
    if (v === undefined || v === 'multi') return true;
    if (v === 'single') return false;
    throw invalidArg(name, `must be 'single' or 'multi', got ${describe(v)}`);
  };
  const multiProducer = side('options.producers', o.producers);
  const multiConsumer = side('options.consumers', o.consumers);
  if (o.delivery !== undefined && o.delivery !== 'at-most-once' && o.delivery !== 'at-least-once') {
    throw invalidArg('options.delivery', `must be 'at-most-once' or 'at-least-once', got ${describe(o.delivery)}`);
  }
  const atLeastOnce = o.delivery === 'at-least-once';
  const mode = o.mode === undefined ? 0o600 : checkInt('options.mode', o.mode, 0, 0o777);
  return { params: { capacity, maxMessageSize, multiProducer, multiConsumer, atLeastOnce }, mode, codec: resolveCodec(o.codec), trust: parseTrust(o.trustedOwners) };
}

export interface ParsedChannelWait extends ParsedWait {
  failIfPeerGone: boolean;
}

export const DEFAULT_CHANNEL: ParsedChannelWait = Object.freeze({ ...DEFAULT, failIfPeerGone: true });

export function parseChannelWait(options: unknown, allowSignal: boolean): ParsedChannelWait {
  if (options === undefined) return DEFAULT_CHANNEL;
  const p = parseWait(options, allowSignal) as ParsedChannelWait;
  const f = (options as ChannelWaitOptions).failIfPeerGone;
  if (f !== undefined && typeof f !== 'boolean') throw invalidArg('options.failIfPeerGone', `must be a boolean, got ${describe(f)}`);
  return { ...p, failIfPeerGone: f !== false };
}

export function checkTarget(target: unknown): void {
  if (!(target instanceof Uint8Array)) throw invalidArg('target', `must be a Uint8Array or Buffer, got ${describe(target)}`);
}

/** Marks an error from a send as "the message was not published" (every send error means that). */
export function notPublished(err: unknown): unknown {
  if (err instanceof ShmkitError && err.published === undefined) (err as { published?: boolean }).published = false;
  return err;
}
