/**
 * Names of shmkit objects: what a user may call an object, and the name of its object in /dev/shm.
 */
import { invalidArg } from './errors';
import { describe } from './validate';

/** Every shmkit object in /dev/shm starts with this. */
export const NAME_PREFIX = 'shmkit-';
/** Temporary names of segments being built. */
export const TEMP_PREFIX = 'shmkit~';
/** macOS limits shm names to 31 bytes including the leading slash. */
export const MAX_NAME_LENGTH = 31 - 1 - NAME_PREFIX.length;

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

export function checkName(name: unknown, argument = 'name'): string {
  if (typeof name !== 'string') throw invalidArg(argument, `must be a string, got ${describe(name)}`);
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) {
    throw invalidArg(argument, `must be 1 to ${MAX_NAME_LENGTH} characters (portable limit with the "${NAME_PREFIX}" prefix), got ${name.length}`);
  }
  if (!NAME_RE.test(name)) {
    throw invalidArg(argument, `may contain only A-Z a-z 0-9 _ . - and must not start with . or -, got ${describe(name)}`);
  }
  return name;
}
