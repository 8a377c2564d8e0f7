/**
 * Names over NATS: subjects for topics and services, bucket names and keys for maps.
 *
 * Map keys are any strings; NATS KV keys allow a few characters only. A key is escaped byte by
 * byte: A-Z a-z 0-9 and '-' stay as they are, every other byte of its UTF-8 form becomes `_XX`
 * (two upper-case hex digits). The escape of a prefix is a prefix of the escape of every key that
 * starts with it, and the escape is one token (no '.'), so keys never collide with NATS wildcards.
 */
import { invalidArg } from '../errors';
import { describe } from '../validate';

const PLAIN = /^[A-Za-z0-9-]*$/;
const HEX = '0123456789ABCDEF';

/** The KV key for a map key. */
export function escapeKey(key: string): string {
  if (PLAIN.test(key)) return key;
  let out = '';
  for (const b of Buffer.from(key, 'utf8')) {
    const plain = (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b === 45;
    out += plain ? String.fromCharCode(b) : `_${HEX[b >> 4]}${HEX[b & 15]}`;
  }
  return out;
}

/** The map key of a KV key, or null if it is not an escape made by escapeKey (another writer's key). */
export function unescapeKey(k: string): string | null {
  if (PLAIN.test(k)) return k;
  const bytes: number[] = [];
  for (let i = 0; i < k.length; i++) {
    const c = k.charCodeAt(i);
    if (c === 95) {
      const h = k.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(h)) return null;
      bytes.push(parseInt(h, 16));
      i += 2;
    } else if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45) bytes.push(c);
    else return null;
  }
  const s = Buffer.from(bytes).toString('utf8');
  return escapeKey(s) === k ? s : null; // one escape per key: anything else is not ours
}

/** A KV bucket name for a map name (bucket names allow A-Z a-z 0-9 _ -). */
export function bucketName(prefix: string, name: string): string {
  return `${prefix}_${escapeKey(name)}`;
}

const TOKEN = /^[^\s.*>]+$/;

/** Checks a subject to publish on (no wildcards, no empty token, no whitespace). */
export function checkSubject(subject: unknown, argument: string): string {
  if (typeof subject !== 'string' || subject.length === 0 || subject.length > 4096 || !subject.split('.').every((t) => TOKEN.test(t))) {
    throw invalidArg(argument, `must be a NATS subject: tokens separated by '.', none empty, without spaces, '*' or '>', got ${describe(subject)}`);
  }
  return subject;
}

/** Checks a subject to subscribe to (wildcards allowed: '*' for one token, '>' as the last). */
export function checkFilter(subject: unknown, argument: string): string {
  const ok = typeof subject === 'string' && subject.length > 0 && subject.length <= 4096 && subject.split('.').every((t, i, all) => TOKEN.test(t) || t === '*' || (t === '>' && i === all.length - 1));
  if (!ok) throw invalidArg(argument, `must be a NATS subject (wildcards '*' and a final '>' allowed), got ${describe(subject)}`);
  return subject as string;
}
