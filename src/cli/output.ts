/**
 * What every command prints and how it exits: exit codes, one-line errors carrying the ShmkitError
 * code, JSON, aligned tables, and the small formatters (sizes, modes, users, times).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ErrorCodes, ShmkitError } from '../errors';

/** Exit codes, the same for every command (docs/cli.md "Exit codes"). */
export const Exit = {
  OK: 0,
  /** The command failed (not found, permission, I/O, ...); the error is on stderr. */
  ERROR: 1,
  /** Bad command line: unknown command or option, missing or invalid argument. */
  USAGE: 2,
  /** rm: an object is in use and --force was not given; nothing else failed. */
  REFUSED: 3,
} as const;

/** A bad command line: printed as an error line plus a hint, exits with Exit.USAGE. */
export class UsageError extends ShmkitError {
  constructor(message: string) {
    super(ErrorCodes.INVALID_ARGUMENT, message);
  }
}

/** Prints `shmkit: CODE: message` on stderr and returns the exit code for it. */
export function reportError(err: unknown, command?: string): number {
  if (err instanceof UsageError || (err instanceof ShmkitError && err.code === ErrorCodes.INVALID_ARGUMENT)) {
    process.stderr.write(`shmkit: ${err.code}: ${oneLine(err.message)}\n`);
    process.stderr.write(`Run "shmkit ${command === undefined ? '' : command + ' '}--help" for usage.\n`);
    return Exit.USAGE;
  }
  if (err instanceof ShmkitError) {
    process.stderr.write(`shmkit: ${err.code}: ${oneLine(err.message)}\n`);
  } else {
    const e = err as NodeJS.ErrnoException;
    process.stderr.write(`shmkit: ${ErrorCodes.OS}: ${oneLine(e instanceof Error ? e.message : String(err))}\n`);
  }
  return Exit.ERROR;
}

const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, ' ');

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Left-aligned columns (numbers right-aligned), two spaces apart, cut to `width` if given. */
export function table(header: string[], rows: string[][], width?: number): string[] {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.some((r) => /\d/.test(r[i] ?? '')) && rows.every((r) => /^-?[\d.,]+\s?[kMGT]?i?B?(\/s)?$|^-$/.test(r[i] ?? '')));
  const line = (cells: string[]): string => {
    const s = cells
      .map((c, i) => (i === cells.length - 1 ? c : numeric[i] ? c.padStart(w[i]!) : c.padEnd(w[i]!)))
      .join('  ')
      .trimEnd();
    return width !== undefined && s.length > width ? s.slice(0, Math.max(0, width - 1)) + '…' : s;
  };
  return [line(header), ...rows.map(line)];
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

export function octalMode(mode: number): string {
  return '0' + (mode & 0o777).toString(8).padStart(3, '0');
}

let users: Map<number, string> | null = null;

/** The user name for a uid from /etc/passwd, or null. */
export function userName(uid: number): string | null {
  if (users === null) {
    users = new Map();
    try {
      for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
        const f = line.split(':');
        if (f.length >= 3 && !users.has(Number(f[2]))) users.set(Number(f[2]), f[0]!);
      }
    } catch {
      // No passwd file: numeric ids only.
    }
  }
  return users.get(uid) ?? null;
}

/** "2024-05-01 12:34:56" in local time, or "-". */
export function time(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms) || ms <= 0) return '-';
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '-';
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** An ISO time for JSON, or null. */
export function isoTime(ms: number | null): string | null {
  if (ms === null || !Number.isFinite(ms) || ms <= 0 || ms > 8.64e15) return null;
  return new Date(ms).toISOString();
}

/**
 * Prints plain data as indented "key  value" lines: objects nest, arrays of objects become
 * tables, other arrays are joined.
 */
export function printTree(value: unknown, indent = ''): string[] {
  const out: string[] = [];
  if (value === null || typeof value !== 'object') return [indent + String(value)];
  const entries = Object.entries(value as Record<string, unknown>);
  const w = Math.max(0, ...entries.map(([k]) => k.length));
  for (const [k, v] of entries) {
    if (Array.isArray(v) && v.length > 0 && v.every((x) => x !== null && typeof x === 'object' && !Array.isArray(x))) {
      out.push(`${indent}${k}:`);
      const cols = [...new Set(v.flatMap((x) => Object.keys(x as object)))];
      const rows = v.map((x) => cols.map((c) => cell((x as Record<string, unknown>)[c])));
      for (const l of table(cols, rows)) out.push(indent + '  ' + l);
    } else if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      out.push(`${indent}${k}:`);
      out.push(...printTree(v, indent + '  '));
    } else {
      out.push(`${indent}${k.padEnd(w)}  ${Array.isArray(v) ? (v.length === 0 ? '(none)' : v.map(cell).join(', ')) : cell(v)}`);
    }
  }
  return out;
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// Commands ----------------------------------------------------------------------------------------

export type OptionSpec = Record<string, { type: 'boolean' | 'string'; short?: string; multiple?: boolean }>;

/** One command: src/cli/commands/<name>.ts exports one. */
export interface Command {
  name: string;
  /** One line for `shmkit --help`. */
  summary: string;
  /** The full `shmkit <name> --help` text. */
  help: string;
  run(argv: string[]): Promise<number> | number;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/** util.parseArgs, strict, with `--help`/`-h` added; its errors become usage errors. */
export function parse(argv: string[], options: OptionSpec, positionals: boolean): Parsed {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: positionals, strict: true }) as Parsed;
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message.replace(/\. To specify a positional argument.*$/s, '') : String(err));
  }
}

/** A whole number option within [min, max]. */
export function intOption(v: unknown, name: string, min: number, max: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || n < min || n > max) throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}
