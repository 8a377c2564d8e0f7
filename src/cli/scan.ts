/**
 * What the CLI knows about the machine: the shmkit objects in /dev/shm (read with read(2), never
 * mapped, so inspecting cannot write to an object or die of SIGBUS), and which processes use them,
 * from /proc: each process's memory maps and open descriptors. See docs/cli.md ("How gc decides").
 */
import { closeSync, constants as fsConstants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, statSync, unlinkSync } from 'node:fs';
import { ErrorCodes, ShmkitError } from '../errors';
import { checkName, NAME_PREFIX, TEMP_PREFIX } from '../segment';
import { isHashedEntry, objectName, SHM_DIR } from '../naming';
import { describeSnapshot, HEAD_READ, type ObjectDescription, type ObjectStatus, snapshotSize } from '../kinds';
import { isoTime, octalMode, userName, UsageError } from './output';

export { SHM_DIR };

// Objects -----------------------------------------------------------------------------------------

/** Everything fstat (or lstat) tells about an entry. */
export interface EntryStat {
  size: number;
  mode: number;
  uid: number;
  gid: number;
  dev: number;
  ino: number;
  ctimeMs: number;
  regular: boolean;
}

export type ReportStatus = ObjectStatus | 'unreadable' | 'orphaned' | 'building';

/** One object as `ls --json` prints it (docs/cli.md). */
export interface ObjectReport {
  /** File name in /dev/shm. */
  entry: string;
  /** The shmkit name (entry without "shmkit-"); null for temporaries. */
  name: string | null;
  temporary: boolean;
  kind: string | null;
  status: ReportStatus;
  problem: string | null;
  /** Bytes of the object (fstat). */
  size: number;
  mode: string;
  uid: number;
  user: string | null;
  gid: number;
  /** From the header (pid + start time), or for temporaries from the name (pid only). */
  creator: { pid: number; alive: boolean } | null;
  createdAt: string | null;
  /** Channels: entries of the peer table (alive: attached and its process lives). */
  peers: { alive: number; dead: number; departed: number } | null;
}

/** An object read from /dev/shm: its report plus what the commands decide with. */
export interface ShmObject {
  report: ObjectReport;
  stat: EntryStat;
  /** Header and live state; null if the object could not be read or is a temporary without a header. */
  description: ObjectDescription | null;
}

export function isShmkitEntry(entry: string): boolean {
  return entry.startsWith(NAME_PREFIX) || entry.startsWith(TEMP_PREFIX);
}

/** The entries of /dev/shm that belong to shmkit, sorted. (glibc's `sem.*` named semaphores carry no mark of their maker: they are not listed.) */
export function listEntries(): string[] {
  let all: string[];
  try {
    all = readdirSync(SHM_DIR);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ShmkitError(e.code === 'ENOENT' ? ErrorCodes.NOT_FOUND : ErrorCodes.OS, `cannot list ${SHM_DIR}: ${e.code ?? e.message}`);
  }
  return all.filter(isShmkitEntry).sort();
}

/**
 * The /dev/shm entry an argument means: `NAME` (a shmkit name: /dev/shm/shmkit-NAME), a temporary's
 * entry `shmkit~…`, or an explicit path `/dev/shm/shmkit-…`.
 */
export function resolveEntry(arg: string): string {
  if (arg.startsWith(SHM_DIR + '/')) {
    const entry = arg.slice(SHM_DIR.length + 1);
    if (entry.includes('/') || !isShmkitEntry(entry)) throw new UsageError(`${arg}: not a shmkit object path (${SHM_DIR}/shmkit-… or ${SHM_DIR}/shmkit~…)`);
    return entry;
  }
  if (arg.startsWith(TEMP_PREFIX)) {
    if (arg.includes('/')) throw new UsageError(`${arg}: not a temporary object name`);
    return arg;
  }
  return objectName(checkName(arg, 'NAME'));
}

const TEMP_RE = /^shmkit~([0-9a-z]{1,8})\.[0-9a-f]+$/;

/** The creator pid a temporary's name carries, or null if the name is not of that form. */
export function tempCreator(entry: string): number | null {
  const m = TEMP_RE.exec(entry);
  if (m === null) return null;
  const pid = parseInt(m[1]!, 36);
  return pid > 0 && pid <= 0x3fffff ? pid : null;
}

function toStat(s: { size: number; mode: number; uid: number; gid: number; dev: number; ino: number; ctimeMs: number; isFile(): boolean }): EntryStat {
  return { size: s.size, mode: s.mode, uid: s.uid, gid: s.gid, dev: s.dev, ino: s.ino, ctimeMs: s.ctimeMs, regular: s.isFile() };
}

function readFully(fd: number, n: number): Uint8Array {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = readSync(fd, buf, got, n - got, got);
    if (r === 0) break; // the object shrank meanwhile: describe() reports what is missing
    got += r;
  }
  return buf.subarray(0, got);
}

/**
 * Reads an object: lstat, then (a regular file only) open read-only without following links,
 * fstat, and read its header and control area. Throws ERR_SHMKIT_NOT_FOUND if it does not exist.
 */
export function readObject(entry: string): ShmObject {
  const path = `${SHM_DIR}/${entry}`;
  let stat: EntryStat;
  try {
    stat = toStat(lstatSync(path));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new ShmkitError(ErrorCodes.NOT_FOUND, `${path}: no such object`, { segment: entry });
    throw new ShmkitError(e.code === 'EACCES' ? ErrorCodes.PERMISSION : ErrorCodes.OS, `${path}: ${e.code ?? e.message}`, { segment: entry });
  }
  const temporary = entry.startsWith(TEMP_PREFIX);
  const report: ObjectReport = {
    entry,
    name: temporary ? null : entry.slice(NAME_PREFIX.length),
    temporary,
    kind: null,
    status: 'foreign',
    problem: null,
    size: stat.size,
    mode: octalMode(stat.mode),
    uid: stat.uid,
    user: userName(stat.uid),
    gid: stat.gid,
    creator: null,
    createdAt: null,
    peers: null,
  };
  const obj: ShmObject = { report, stat, description: null };
  if (!stat.regular) {
    report.problem = 'not a regular file';
    return finishTemporary(obj);
  }
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new ShmkitError(ErrorCodes.NOT_FOUND, `${path}: no such object`, { segment: entry });
    report.status = 'unreadable';
    report.problem = `cannot open it (${e.code ?? e.message})`;
    return finishTemporary(obj);
  }
  try {
    obj.stat = stat = toStat(fstatSync(fd));
    report.size = stat.size;
    report.mode = octalMode(stat.mode);
    report.uid = stat.uid;
    report.user = userName(stat.uid);
    report.gid = stat.gid;
    const head = readFully(fd, Math.min(stat.size, HEAD_READ));
    const want = snapshotSize(head, stat.size);
    const bytes = want > head.length ? readFully(fd, want) : head;
    const d = describeSnapshot({ bytes, size: stat.size });
    obj.description = d;
    report.status = d.status;
    report.problem = d.problem;
    report.kind = d.kind;
    if (d.header?.name) {
      // A hashed object name: the full name is in the name block, and must hash to this entry.
      // Until it does, the block is untrusted: the name shown stays the entry's.
      const why = !isHashedEntry(entry)
        ? 'a name block on an object whose name is not hashed (every opener refuses it)'
        : objectName(d.header.name) !== entry
          ? `its name block holds "${d.header.name}", whose object name is not ${entry}`
          : null;
      if (why === null) report.name = d.header.name;
      else if (d.status === 'ok') {
        report.status = d.status = 'corrupt';
        report.problem = d.problem = why;
      } else report.problem = d.problem = `${d.problem}; ${why}`;
    } else if (isHashedEntry(entry) && d.status === 'ok') {
      report.status = d.status = 'corrupt';
      report.problem = d.problem = 'a hashed object name without a name block';
    }
    if (d.header !== null && d.creatorAlive !== null) {
      report.creator = { pid: d.header.creator.pid, alive: d.creatorAlive };
      report.createdAt = isoTime(d.header.createdAt);
    }
    if (d.state !== null && 'peers' in d.state) {
      const peers = d.state.peers;
      report.peers = {
        alive: peers.filter((p) => p.alive && !p.departed).length,
        dead: peers.filter((p) => !p.alive && !p.departed).length,
        departed: peers.filter((p) => p.departed).length,
      };
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    report.status = 'unreadable';
    report.problem = `cannot read it (${e.code ?? e.message})`;
  } finally {
    closeSync(fd);
  }
  return finishTemporary(obj);
}

/** A temporary's status is about its creator: 'building' while it lives, 'orphaned' once it died. */
function finishTemporary(obj: ShmObject): ShmObject {
  const r = obj.report;
  if (!r.temporary) return obj;
  const pid = tempCreator(r.entry);
  if (pid === null) {
    r.status = 'corrupt';
    r.problem = 'a temporary name not of the form shmkit~<pid base 36>.<hex>';
    return obj;
  }
  r.creator = { pid, alive: pidAlive(pid, obj.stat.ctimeMs) };
  r.status = r.creator.alive ? 'building' : 'orphaned';
  r.problem = r.creator.alive ? `its creator (pid ${pid}) is still building it, or the pid was reused` : `its creator (pid ${pid}) died before publishing it`;
  return obj;
}

/** Every shmkit object in /dev/shm; entries that vanish while being read are left out. */
export function readAll(filter: (entry: string) => boolean = () => true): ShmObject[] {
  const out: ShmObject[] = [];
  for (const entry of listEntries()) {
    if (!filter(entry)) continue;
    try {
      out.push(readObject(entry));
    } catch (err) {
      if (err instanceof ShmkitError && err.code === ErrorCodes.NOT_FOUND) continue;
      throw err;
    }
  }
  return out;
}

/**
 * Unlinks an object if it is still the one examined (same inode): a name removed and created again
 * since is left alone. Returns false if it is gone or was replaced.
 */
export function unlinkExamined(obj: ShmObject): boolean {
  const path = `${SHM_DIR}/${obj.report.entry}`;
  try {
    const now = lstatSync(path);
    if (now.ino !== obj.stat.ino || now.dev !== obj.stat.dev) return false;
    unlinkSync(path);
    return true;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return false;
    throw new ShmkitError(e.code === 'EACCES' || e.code === 'EPERM' ? ErrorCodes.PERMISSION : ErrorCodes.OS, `remove ${path}: ${e.code ?? e.message}`, {
      segment: obj.report.entry,
    });
  }
}

// Processes ---------------------------------------------------------------------------------------

/** A process whose maps or descriptors could not be read, with what /proc/<pid>/status tells. */
export interface UnreadableProcess {
  pid: number;
  /** Real, effective, saved and filesystem uids; empty if unknown. */
  uids: number[];
  gids: number[];
  /** The process may bypass file permissions (uid 0, CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH), or it is unknown. */
  privileged: boolean;
}

export interface ProcScan {
  /** Inode (on /dev/shm's device) -> pids that map it or hold a descriptor to it. */
  users: Map<number, Set<number>>;
  /** Processes examined. */
  scanned: number;
  unreadable: UnreadableProcess[];
  /** /proc hides other users' processes from this one (hidepid), or cannot be listed: they cannot be examined at all. */
  hidden: boolean;
}

function devString(dev: number): string {
  // glibc's encoding of dev_t, as /proc/<pid>/maps prints it (hex major:minor).
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

function hidepidActive(): boolean {
  // The last proc mount on /proc is the one in effect (a later mount hides the earlier ones).
  let opts: string[] | null = null;
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [pre, post] = line.split(' - ');
      if (pre !== undefined && post !== undefined && pre.split(' ')[4] === '/proc' && post.startsWith('proc ')) opts = (post.split(' ')[2] ?? '').split(',');
    }
  } catch {
    // No mountinfo: nothing to say.
  }
  if (opts === null) return false;
  const hide = opts.find((o) => o.startsWith('hidepid='))?.slice(8);
  if (hide === undefined || hide === '0' || hide === 'off') return false;
  if (process.geteuid?.() === 0) return false;
  const gid = opts.find((o) => o.startsWith('gid='))?.slice(4);
  return !(gid !== undefined && (process.getegid?.() === Number(gid) || (process.getgroups?.() ?? []).includes(Number(gid))));
}

function statusOf(pid: number): UnreadableProcess {
  const p: UnreadableProcess = { pid, uids: [], gids: [], privileged: true };
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (k: string): string[] => (new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)?.[1] ?? '').trim().split(/\s+/).filter(Boolean);
    p.uids = field('Uid').map(Number);
    p.gids = [...field('Gid').map(Number), ...field('Groups').map(Number)];
    const cap = BigInt('0x' + (field('CapEff')[0] ?? 'ffffffff'));
    p.privileged = p.uids.length === 0 || p.uids.includes(0) || (cap & 0b110n) !== 0n;
  } catch {
    // status unreadable too: assume the worst.
  }
  return p;
}

/**
 * Which processes map or hold open which objects of /dev/shm: every /proc/<pid>/maps line on
 * /dev/shm's device (a mapping stays listed after unlink, as "(deleted)"), and every
 * /proc/<pid>/fd link to a file there. Objects are matched by inode, not by path.
 */
export function scanProcesses(): ProcScan {
  const self = process.pid;
  const shmDev = statSync(SHM_DIR).dev;
  const dev = devString(shmDev);
  const scan: ProcScan = { users: new Map(), scanned: 0, unreadable: [], hidden: hidepidActive() };
  const use = (ino: number, pid: number): void => {
    let s = scan.users.get(ino);
    if (s === undefined) scan.users.set(ino, (s = new Set()));
    s.add(pid);
  };
  let pids: string[];
  try {
    pids = readdirSync('/proc');
  } catch {
    scan.hidden = true; // no /proc: nothing can be ruled out
    return scan;
  }
  for (const d of pids) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === self) continue;
    let readable = true;
    let exists = true;
    try {
      for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
        const f = line.split(/\s+/, 5);
        if (f[3] === dev && f[4] !== undefined && f[4] !== '0') use(Number(f[4]), pid);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') exists = false;
      else readable = false;
    }
    if (!exists) continue;
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (!readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('/')) continue; // sockets, pipes, anon inodes
          const st = statSync(`/proc/${pid}/fd/${fd}`);
          if (st.dev === shmDev) use(st.ino, pid);
        } catch {
          // closed meanwhile
        }
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') continue;
      readable = false;
    }
    scan.scanned++;
    if (!readable) scan.unreadable.push(statusOf(pid));
  }
  return scan;
}

/** Whether an unreadable process could have opened an object with this owner and mode. */
function couldOpen(p: UnreadableProcess, st: EntryStat): boolean {
  if (p.privileged) return true;
  if (p.uids.includes(st.uid)) return (st.mode & 0o600) !== 0;
  if (p.gids.includes(st.gid)) return (st.mode & 0o060) !== 0;
  return (st.mode & 0o006) !== 0;
}

export interface Usage {
  /** Live processes that map the object or hold a descriptor to it. */
  mappedBy: number[];
  /** Why the scan cannot rule out a mapping (null when it can). */
  unknown: string | null;
}

export function usageOf(obj: ShmObject, scan: ProcScan): Usage {
  const mappedBy = [...(scan.users.get(obj.stat.ino) ?? [])].sort((a, b) => a - b);
  let unknown: string | null = null;
  if (scan.hidden) {
    unknown = '/proc does not show every process (mounted with hidepid, or not readable)';
  } else {
    const could = scan.unreadable.filter((p) => couldOpen(p, obj.stat));
    if (could.length > 0) {
      const pids = could.slice(0, 5).map((p) => p.pid).join(', ') + (could.length > 5 ? ', …' : '');
      unknown = `the memory maps of ${could.length} process${could.length === 1 ? '' : 'es'} that could open it cannot be read (pid ${pids})`;
    }
  }
  return { mappedBy, unknown };
}

// Liveness by pid alone (temporaries) -------------------------------------------------------------

let clock: { bootMs: number; ticksPerSecond: number } | null | undefined;

/** Boot time and the /proc/<pid>/stat clock, if they can be established (USER_HZ is 100 on Linux; checked against this process's own start). */
function procClock(): { bootMs: number; ticksPerSecond: number } | null {
  if (clock !== undefined) return clock;
  clock = null;
  try {
    const btime = Number(/^btime\s+(\d+)/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
    const ticks = startTicks(readFileSync('/proc/self/stat', 'utf8'));
    const startedMs = performance.timeOrigin;
    if (Number.isFinite(btime) && ticks !== null) {
      const expected = btime * 1000 + (ticks * 1000) / 100;
      if (Math.abs(expected - startedMs) < 5000) clock = { bootMs: btime * 1000, ticksPerSecond: 100 };
    }
  } catch {
    // unknown
  }
  return clock;
}

function startTicks(stat: string): number | null {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = Number(f[19]);
  return Number.isFinite(v) ? v : null;
}

/**
 * Whether a process with this pid lives (not a zombie). With `createdMs` (the object's ctime), a
 * process that started clearly after the object was made is another process that reused the pid.
 */
export function pidAlive(pid: number, createdMs?: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ESRCH' && code !== 'EACCES') return true;
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z' || state === 'X' || state === 'x') return false;
  const c = procClock();
  const ticks = startTicks(stat);
  if (createdMs !== undefined && c !== null && ticks !== null) {
    const startedMs = c.bootMs + (ticks * 1000) / c.ticksPerSecond;
    if (startedMs > createdMs + 5000) return false;
  }
  return true;
}

/**
 * Positive evidence that an object is in use, or null: a temporary's creator that lives, a live
 * process its own state names (an attached channel peer, a lock holder, a lease taker), or a live
 * process that maps it or holds it open.
 */
export function inUseBy(obj: ShmObject, usage: Usage): string | null {
  const r = obj.report;
  if (r.temporary && r.creator?.alive === true) return `its creator (pid ${r.creator.pid}) lives and may still be building it`;
  const live = (obj.description?.users ?? []).filter((u) => u.alive);
  if (live.length > 0) return live.map((u) => `pid ${u.pid} (${u.role}) is alive`).join(', ');
  if (usage.mappedBy.length > 0) return `mapped or held open by pid ${usage.mappedBy.join(', ')}`;
  return null;
}
