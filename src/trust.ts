/**
 * Who may own an object that open() and openOrCreate() accept.
 *
 * Any local user can create `/dev/shm/shmkit-<name>` (or `sem.<name>`) before the intended
 * creator does, with mode 0666, and a process that then "opens or creates" it would silently use
 * the squatter's object: read its planted state, and leak what it writes. So by default an object
 * must be owned by this process's effective uid; anything else is refused with
 * ERR_SHMKIT_UNTRUSTED_OWNER. `trustedOwners` widens that, for objects shared between users on
 * purpose; each uid or gid listed is trusted with this process's data.
 */
import { ErrorCodes, invalidArg, ShmkitError } from './errors';
import { checkInt, describe } from './validate';

export interface TrustedOwners {
  /** Users (besides this process's effective uid) whose objects are accepted. */
  uids?: number[];
  /** Groups whose objects are accepted (the object's group, not the owner's memberships). */
  gids?: number[];
}

/** Parsed form: null means "only our own effective uid". */
export type Trust = { uids: Set<number>; gids: Set<number> } | 'any' | null;

export function parseTrust(v: unknown, argument = 'options.trustedOwners'): Trust {
  if (v === undefined) return null;
  if (v === 'any') return 'any';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw invalidArg(argument, `must be { uids?: number[], gids?: number[] } or 'any', got ${describe(v)}`);
  }
  const o = v as Record<string, unknown>;
  const ids = (key: 'uids' | 'gids'): Set<number> => {
    const list = o[key];
    if (list === undefined) return new Set();
    if (!Array.isArray(list)) throw invalidArg(`${argument}.${key}`, `must be an array of ids, got ${describe(list)}`);
    return new Set(list.map((id, i) => checkInt(`${argument}.${key}[${i}]`, id, 0, 0xffffffff)));
  };
  return { uids: ids('uids'), gids: ids('gids') };
}

const euid = (): number => (typeof process.geteuid === 'function' ? process.geteuid() : -1);

/** Throws ERR_SHMKIT_UNTRUSTED_OWNER unless an object owned by uid:gid may be used. */
export function checkOwner(what: string, name: string, uid: number, gid: number, trust: Trust): void {
  if (trust === 'any' || uid === euid()) return;
  if (trust !== null && (trust.uids.has(uid) || trust.gids.has(gid))) return;
  throw new ShmkitError(
    ErrorCodes.UNTRUSTED_OWNER,
    `${what}: it is owned by uid ${uid} (gid ${gid}), not by this process's user (uid ${euid()}); ` +
      `another user may have created it first. Pass options.trustedOwners to accept it`,
    { segment: name },
  );
}
