/**
 * Names of shmkit objects: what a user may call an object, names derived from it (a stream's two
 * halves, and later per-client inboxes and per-topic rings), and the name of the object in /dev/shm.
 *
 * Portable scheme (docs/design.md, "Names"): POSIX shared-memory names are portable up to 31 bytes
 * with the leading slash (macOS), so the object name `shmkit-<name>` can hold 23 characters of a
 * name. A longer name (a user's, or a derived one) is stored as
 * `shmkit-<first 10 characters>+<12 characters of hash>`: the hash is FNV-1a 64 over the full
 * name's bytes, its low 60 bits written in base32 (a-z, 2-7), least significant digit first. '+'
 * never occurs in a name, so the two forms cannot collide. The full name is kept in the segment's
 * name block (segment.ts), which every opener compares with the name it asked for, so even a hash
 * collision is detected rather than followed.
 */
import { invalidArg } from './errors';
import { describe } from './validate';

/** Where POSIX shared-memory objects live (Linux). */
export const SHM_DIR = '/dev/shm';
/** Every shmkit object in /dev/shm starts with this. */
export const NAME_PREFIX = 'shmkit-';
/** Temporary names of segments being built. */
export const TEMP_PREFIX = 'shmkit~';
/** Names up to this long are used as they are (`shmkit-<name>`: 30 bytes, 31 with the slash). */
export const SHORT_NAME_LENGTH = 31 - 1 - NAME_PREFIX.length;
/** The longest name of an object (what a segment's name block holds). */
export const MAX_NAME_LENGTH = 250;
/**
 * The longest name of an object made of several named parts (a stream: `<name>.0`, `<name>.1`):
 * derived names add up to 50 characters to it.
 */
export const MAX_BASE_NAME_LENGTH = 200;
/** The separator of a hashed object name; never part of a name. */
export const HASH_MARK = '+';
const HASH_PREFIX = 10;
const HASH_DIGITS = 12;
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** Checks a name given by a user (1 to MAX_NAME_LENGTH characters of A-Z a-z 0-9 _ . -). */
export function checkName(name: unknown, argument = 'name', max = MAX_NAME_LENGTH): string {
  if (typeof name !== 'string') throw invalidArg(argument, `must be a string, got ${describe(name)}`);
  if (name.length === 0 || name.length > max) throw invalidArg(argument, `must be 1 to ${max} characters, got ${name.length}`);
  if (!NAME_RE.test(name)) {
    throw invalidArg(argument, `may contain only A-Z a-z 0-9 _ . - and must not start with . or -, got ${describe(name)}`);
  }
  return name;
}

/**
 * A name derived from `base` for a part of one object: `<base>.<part>` (a stream's halves are
 * `<name>.0` and `<name>.1`). A base of up to MAX_BASE_NAME_LENGTH has room for parts of up to 49
 * characters.
 */
export function derivedName(base: string, part: string): string {
  return checkName(`${base}.${part}`, 'name');
}

/** FNV-1a 64 of the name's bytes (names are ASCII), low 60 bits in base32, least significant first. */
export function nameHash(name: string): string {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < name.length; i++) {
    h ^= BigInt(name.charCodeAt(i) & 0xff);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  let out = '';
  for (let d = 0; d < HASH_DIGITS; d++) {
    out += BASE32[Number(h & 31n)];
    h >>= 5n;
  }
  return out;
}

/** Whether the object of `name` is stored under a hashed name (and keeps its full name in a name block). */
export function isHashed(name: string): boolean {
  return name.length > SHORT_NAME_LENGTH;
}

/** The name of the object in /dev/shm (without the leading slash). */
export function objectName(name: string): string {
  if (!isHashed(name)) return NAME_PREFIX + name;
  return NAME_PREFIX + name.slice(0, HASH_PREFIX) + HASH_MARK + nameHash(name);
}

/** Whether a /dev/shm entry has the form of a hashed object name (its name is in its name block). */
export function isHashedEntry(entry: string): boolean {
  return entry.startsWith(NAME_PREFIX) && entry.length === NAME_PREFIX.length + HASH_PREFIX + 1 + HASH_DIGITS && entry[NAME_PREFIX.length + HASH_PREFIX] === HASH_MARK;
}
