/** Argument checks: every public function names the argument it rejects. */
import { invalidArg } from './errors';

export function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalidArg(name, `must be an integer, got ${describe(v)}`);
  if (v < min || v > max) throw invalidArg(name, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

/** A timeout in milliseconds: undefined or Infinity means none; 0 means do not wait. */
export function checkTimeout(name: string, v: unknown): number {
  if (v === undefined || v === Infinity) return Infinity;
  if (typeof v !== 'number' || Number.isNaN(v) || v < 0) throw invalidArg(name, `must be a number of milliseconds >= 0, got ${describe(v)}`);
  return v;
}

export function checkObject(name: string, v: unknown): Record<string, unknown> {
  if (v === undefined) return {};
  let isArray: boolean;
  try {
    isArray = Array.isArray(v); // throws for a revoked Proxy
  } catch {
    throw invalidArg(name, 'must be an object, got a revoked Proxy');
  }
  if (typeof v !== 'object' || v === null || isArray) throw invalidArg(name, `must be an object, got ${describe(v)}`);
  return v as Record<string, unknown>;
}

export function checkFunction(name: string, v: unknown): ((...a: never[]) => unknown) | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'function') throw invalidArg(name, `must be a function, got ${describe(v)}`);
  return v as (...a: never[]) => unknown;
}

export function describe(v: unknown): string {
  try {
    return describeUnsafe(v);
  } catch {
    return 'an unreadable object'; // e.g. a revoked Proxy
  }
}

function describeUnsafe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? `an object (${v.constructor?.name ?? 'Object'})` : typeof v;
}
