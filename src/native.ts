/**
 * The one door to native code. The addon is small and does only what JavaScript cannot: map
 * memory, sleep and wake across processes, identify processes, and call sem_open. It returns
 * status codes (negative errno) or `{ errno, syscall }` failure records; TypeScript turns those into
 * ShmkitErrors. Loading goes through node-gyp-build: build/Release (a local build) first, then prebuilds/.
 */
import * as path from 'node:path';
import { ErrorCodes, ShmkitError } from './errors';

/** A native failure record; errno is positive. */
export interface NativeFailure {
  errno: number;
  syscall: string;
}

export interface NativeMapping {
  buffer: ArrayBuffer;
  handle: object;
  size: number;
}

export interface NativeEmptyMapping {
  buffer: null;
  size: number;
}

/** Owner and permission bits of an opened object (from fstat). */
export interface NativeStat {
  uid: number;
  gid: number;
  mode: number;
}

export interface NativeAddon {
  shmCreate(name: string, size: number, mode: number): NativeMapping | NativeFailure;
  shmOpen(name: string): ((NativeMapping | NativeEmptyMapping) & NativeStat) | NativeFailure;
  shmCheck(handle: object): number;
  shmPublish(tmp: string, name: string): 0 | NativeFailure;
  shmUnlink(name: string): number;
  unmap(handle: object, buffer: ArrayBuffer): number;

  futexWait(words: Int32Array, index: number, expected: number, timeoutMs: number): number;
  futexWake(words: Int32Array, index: number, count: number): number;

  asyncInit(callback: (id: number, status: number) => void): number;
  asyncWait(words: Int32Array, index: number, expected: number, timeoutMs: number, ref: boolean): number;
  asyncRef(id: number, on: boolean): number;
  futexWaitMany(words: Int32Array[], indices: number[], expected: number[], timeoutMs: number): number;
  asyncCancel(id: number): number;
  asyncStats(): [threads: number, pending: number];

  bellOpen(callback: () => void): number;
  bellRing(id: number): number;
  bellRef(on: boolean): number;
  bellStats(): [id: number, rings: number];

  selfIdentity(): [pid: number, start: number, threadSlot: number] | NativeFailure;
  processAlive(pid: number, start: number, startBits: number): number;
  slotLive(slot: number): number;

  semOpen(name: string, create: boolean, exclusive: boolean, mode: number, value: number): object | NativeFailure;
  semPost(handle: object): number;
  semTryWait(handle: object): number;
  semTimedWait(handle: object, timeoutMs: number): number;
  semGetValue(handle: object): number;
  semClose(handle: object): number;
  semUnlink(name: string): number;
}

function load(): NativeAddon {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gypBuild = require('node-gyp-build') as (dir: string) => NativeAddon;
    return gypBuild(path.join(__dirname, '..'));
  } catch (err) {
    // Prebuilt binaries cover linux-x64 and linux-arm64 (glibc 2.28+, musl); a local build in
    // build/Release takes precedence over them. Anything else needs `shmkit build`.
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ShmkitError(
      ErrorCodes.UNSUPPORTED,
      `shmkit: the native addon could not be loaded on ${process.platform}-${process.arch} (node ${process.version}): ${reason}. ` +
        'Prebuilt binaries cover linux-x64 and linux-arm64 with glibc 2.28+ or musl; elsewhere, build it: "npx shmkit build" ' +
        '(needs a C compiler, make and python3)',
      { cause: err },
    );
  }
}

/**
 * The addon's functions, each wrapped so that what the addon throws (only `ERR_SHMKIT_NATIVE`: a
 * Node-API call failed) reaches callers as a ShmkitError. Expected failures never throw: they come
 * back as status codes or failure records.
 */
function wrap(addon: NativeAddon): NativeAddon {
  const out: Record<string, unknown> = {};
  for (const [key, fn] of Object.entries(addon)) {
    if (typeof fn !== 'function') {
      out[key] = fn;
      continue;
    }
    out[key] = function (this: unknown) {
      try {
        // eslint-disable-next-line prefer-rest-params
        return (fn as (...a: unknown[]) => unknown).apply(undefined, arguments as unknown as unknown[]);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        throw new ShmkitError(ErrorCodes.NATIVE, `shmkit addon: ${key}: ${message}`, { cause: err });
      }
    };
  }
  return out as unknown as NativeAddon;
}

export const native: NativeAddon = wrap(load());

export function isFailure(v: unknown): v is NativeFailure {
  return typeof v === 'object' && v !== null && typeof (v as NativeFailure).errno === 'number' && 'syscall' in v;
}

/** Negative errno status codes returned by hot-path calls. */
export const Status = {
  EAGAIN: -11,
  EINTR: -4,
  ETIMEDOUT: -110,
  EINVAL: -22,
  EFAULT: -14,
} as const;
