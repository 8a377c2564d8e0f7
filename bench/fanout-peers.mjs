// The benchmarks' peers from outside Node's core (bench/topics.mjs and bench/rpc.mjs, and their
// fixtures): ZeroMQ, Redis, NATS, gRPC (@grpc/grpc-js) and undici. Which of them this machine has, with an install hint for each that is
// missing; starting a private redis-server or nats-server for one trial and stopping it; and the
// few lines of RESP (the Redis protocol) the Redis trials speak.
//
// The client libraries are devDependencies of shmkit (`zeromq`, `@nats-io/transport-node`); the
// servers are programs of the machine, found on PATH, in the sbin folders (Debian puts nats-server
// in /usr/sbin), or where REDIS_SERVER / NATS_SERVER point. Nothing here is required: a peer that
// is missing is skipped, and its hint says what to install.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export const PEERS = {
  zeromq: { module: 'zeromq' },
  grpc: { module: '@grpc/grpc-js' },
  http: { module: 'undici' },
  redis: { server: 'redis-server', env: 'REDIS_SERVER', apt: 'redis-server' },
  nats: { server: 'nats-server', env: 'NATS_SERVER', apt: 'nats-server', module: '@nats-io/transport-node' },
};

function isExecutable(p) {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The path of a program: `$envVar` if set, else the first match on PATH or in the usual bin/sbin folders. */
export function findProgram(name, envVar) {
  const fromEnv = envVar ? process.env[envVar] : '';
  if (fromEnv) return isExecutable(fromEnv) ? fromEnv : null;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const d of dirs) {
    if (d && isExecutable(join(d, name))) return join(d, name);
  }
  return null;
}

/**
 * Whether the peer `id` (zeromq, redis, nats) can run here: `{ ok: true }`, or `{ ok: false, reason }`
 * where the reason says what is missing and how to install it. Any other id is ok.
 */
export async function peerStatus(id) {
  const p = PEERS[id];
  if (!p) return { ok: true };
  if (p.server && !findProgram(p.server, p.env)) {
    const set = process.env[p.env] ? `${p.env}=${process.env[p.env]} is not an executable file` : `${p.server} not found`;
    return { ok: false, reason: `${set}: apt-get install ${p.apt} (Debian/Ubuntu), or set ${p.env} to the program` };
  }
  if (p.module) {
    try {
      await import(p.module);
    } catch (e) {
      const why = e?.code === 'ERR_MODULE_NOT_FOUND' ? 'not installed' : `does not load (${String(e?.message ?? e).split('\n')[0]})`;
      return { ok: false, reason: `npm package ${p.module} ${why}: \`npm install\` in shmkit's folder installs it (a devDependency), or \`npm install --no-save ${p.module}\`` };
    }
  }
  return { ok: true };
}

/**
 * The transports of `all` ({ id, label }) a benchmark runs: those named by --only (all if null;
 * an unknown id throws), minus those this machine lacks. Returns { transports, skipped } where
 * skipped maps an id to what to install.
 */
export async function selectTransports(all, only) {
  for (const id of only ?? []) if (!all.some((t) => t.id === id)) throw new Error(`--only: unknown transport ${id} (${all.map((t) => t.id).join(', ')})`);
  const skipped = new Map();
  const transports = [];
  for (const t of all) {
    if (only && !only.includes(t.id)) continue;
    const s = await peerStatus(t.id);
    if (s.ok) transports.push(t);
    else skipped.set(t.id, s.reason);
  }
  return { transports, skipped };
}

// Private servers ---------------------------------------------------------------------------------

/**
 * Starts `program args...` under a shell that kills it when this process's end of the shell's stdin
 * closes: on stop(), and also when this process dies, so a trial killed at its timeout leaves no
 * server behind. The shell prints the server's pid first, and removes the server's folder `dir`
 * once the server exited.
 */
function spawnServer(program, args, dir) {
  const script = 'd=$1; shift; "$@" </dev/null & p=$!; echo "$p"; read -r _ || true; kill "$p" 2>/dev/null; wait "$p"; s=$?; rm -rf "$d"; exit $s';
  const sh = spawn('/bin/sh', ['-c', script, 'sh', dir, program, ...args], { stdio: ['pipe', 'pipe', 'pipe'], cwd: tmpdir() });
  let out = '';
  let err = '';
  sh.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  sh.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const exited = once(sh, 'exit');
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    sh.stdin.end();
    const pid = Number(out.split('\n')[0]);
    const t = setTimeout(() => {
      try {
        if (pid > 0) process.kill(pid, 'SIGKILL');
      } catch {}
      sh.kill('SIGKILL');
    }, 5000);
    await exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  };
  // The server exited (the shell itself waits in `read` until stop()): its pid is gone or a zombie.
  const failed = () => {
    const pid = Number(out.split('\n')[0]);
    if (!(pid > 0)) return sh.exitCode !== null;
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] === 'Z';
    } catch {
      return true;
    }
  };
  return { stop, failed, log: () => err.trim(), pid: () => Number(out.split('\n')[0]) };
}

async function waitFor(what, server, probe, ms = 10_000) {
  const until = Date.now() + ms;
  for (;;) {
    if (server.failed()) {
      await server.stop();
      throw new Error(`${what} exited at start: ${server.log() || '(no output)'}`);
    }
    const r = await probe().catch(() => null);
    if (r) return r;
    if (Date.now() > until) {
      await server.stop();
      throw new Error(`${what} did not answer within ${ms / 1000} s: ${server.log() || '(no output)'}`);
    }
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** Connects to `path` (a Unix socket) or `{ host, port }`, sends `send`, and resolves true once `expect` came back. */
function ask(where, send, expect) {
  return new Promise((resolve, reject) => {
    const s = net.connect(where);
    let got = '';
    const t = setTimeout(() => { s.destroy(); reject(new Error('no answer')); }, 1000);
    s.on('error', (e) => { clearTimeout(t); reject(e); });
    s.on('connect', () => s.write(send));
    s.on('data', (d) => {
      got += d;
      if (got.includes(expect)) {
        clearTimeout(t);
        s.destroy();
        resolve(true);
      }
    });
  });
}

/**
 * A redis-server of this trial's own: listening only on a Unix socket in a private temporary folder
 * (no TCP port), no persistence (no RDB snapshots, no AOF), and no output buffer limit for pub/sub
 * clients (Redis would otherwise disconnect a subscriber that falls 32 MB behind, which the
 * throughput trials reach at 4 KiB). Resolves `{ address, stop }`, address being the socket's path.
 */
export async function startRedis() {
  const program = findProgram('redis-server', 'REDIS_SERVER');
  if (!program) throw new Error((await peerStatus('redis')).reason);
  const dir = mkdtempSync(join(tmpdir(), 'shmkit-redis-'));
  const address = join(dir, 'redis.sock');
  const server = spawnServer(program, [
    '--port', '0', '--unixsocket', address, '--unixsocketperm', '700',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no',
    '--client-output-buffer-limit', 'pubsub 0 0 0', '--loglevel', 'warning', '--logfile', '',
  ], dir);
  await waitFor('redis-server', server, () => ask(address, 'PING\r\n', '+PONG'));
  return { address, stop: server.stop };
}

/**
 * A nats-server of its own, on loopback: on a port the system picks (the server writes it to a
 * ports file) or `port`, with a pending-bytes limit per connection of 1 GiB and a write deadline
 * of 60 s (nats-server would otherwise cut a subscriber off as a slow consumer 64 MB behind).
 * Options: `jetstream` (with its store in `storeDir`, kept after stop, or in the server's own
 * folder), `cluster: { name, port, routes: [port, ...] }` (the cluster ports of every server,
 * its own included: a JetStream server needs its routes configured, so pick them with
 * freePort()) and `name`. Resolves `{ address, url, port, clusterPort, pid, stop }`, address being
 * "127.0.0.1:port"; pid is the server's own.
 */
export async function startNats(options = {}) {
  const program = findProgram('nats-server', 'NATS_SERVER');
  if (!program) throw new Error((await peerStatus('nats')).reason);
  const dir = mkdtempSync(join(tmpdir(), 'shmkit-nats-'));
  const conf = join(dir, 'nats.conf');
  const lines = [
    `listen: "127.0.0.1:${options.port ?? -1}"`,
    `ports_file_dir: ${JSON.stringify(dir)}`,
    'max_pending: 1073741824',
    'write_deadline: "60s"',
  ];
  // Without a cluster, no system account (less to start); a JetStream cluster needs one.
  if (!options.cluster) lines.push('no_sys_acc: true');
  if (options.name) lines.push(`server_name: ${JSON.stringify(options.name)}`);
  if (options.jetstream) lines.push(`jetstream { store_dir: ${JSON.stringify(options.storeDir ?? join(dir, 'js'))} }`);
  if (options.cluster) {
    const c = options.cluster;
    lines.push(`cluster { name: ${JSON.stringify(c.name ?? 'shmkit')}, listen: "127.0.0.1:${c.port ?? -1}", routes: [${(c.routes ?? []).map((r) => JSON.stringify(`nats-route://127.0.0.1:${r}`)).join(', ')}] }`);
  }
  writeFileSync(conf, [...lines, ''].join('\n'));
  const server = spawnServer(program, ['-c', conf], dir);
  const ports = await waitFor('nats-server', server, async () => {
    const f = readdirSync(dir).find((n) => n.endsWith('.ports'));
    if (!f) return null;
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    const m = /^nats:\/\/(127\.0\.0\.1):(\d+)$/.exec(p.nats?.[0] ?? '');
    if (!m) throw new Error(`unexpected ports file: ${readFileSync(join(dir, f), 'utf8')}`);
    await ask({ host: m[1], port: Number(m[2]) }, 'PING\r\n', 'PONG');
    const cm = /:(\d+)$/.exec(p.cluster?.[0] ?? '');
    return { host: m[1], port: Number(m[2]), clusterPort: cm ? Number(cm[1]) : 0 };
  });
  const address = `${ports.host}:${ports.port}`;
  return { address, url: `nats://${address}`, port: ports.port, clusterPort: ports.clusterPort, pid: server.pid(), stop: server.stop };
}

/** A loopback TCP port free now (the system picks it; a server started next may take it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// RESP --------------------------------------------------------------------------------------------

/** One command as a RESP array of bulk strings. */
export function respCommand(...parts) {
  const bufs = parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(String(p))));
  return Buffer.concat([Buffer.from(`*${bufs.length}\r\n`), ...bufs.flatMap((b) => [Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n')])]);
}

/**
 * The header of `*3 $7 PUBLISH $len channel $size`: a PUBLISH frame is this, then the payload, then
 * CRLF.
 */
export function respPublishHead(channel, size) {
  return Buffer.from(`*3\r\n$7\r\nPUBLISH\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n$${size}\r\n`);
}

const INCOMPLETE = Symbol('incomplete');
let at = 0;

function readInt(buf, from, to) {
  let k = from;
  const neg = buf[k] === 45;
  if (neg) k++;
  let n = 0;
  for (; k < to; k++) {
    const c = buf[k] - 48;
    if (c < 0 || c > 9) throw new Error(`RESP: bad integer ${buf.toString('latin1', from, to)}`);
    n = n * 10 + c;
  }
  return neg ? -n : n;
}

function parseValue(buf) {
  if (at >= buf.length) return INCOMPLETE;
  const type = buf[at];
  const eol = buf.indexOf(13, at + 1);
  if (eol < 0 || eol + 1 >= buf.length) return INCOMPLETE;
  if (buf[eol + 1] !== 10) throw new Error('RESP: CR without LF');
  const from = at + 1;
  switch (type) {
    case 43: // +simple
      at = eol + 2;
      return buf.toString('latin1', from, eol);
    case 45: // -error
      at = eol + 2;
      return new Error(`redis: ${buf.toString('utf8', from, eol)}`);
    case 58: // :integer
      at = eol + 2;
      return readInt(buf, from, eol);
    case 36: { // $bulk: a view of the chunk, no copy
      const len = readInt(buf, from, eol);
      if (len < 0) {
        at = eol + 2;
        return null;
      }
      const start = eol + 2;
      if (buf.length < start + len + 2) return INCOMPLETE;
      if (buf[start + len] !== 13 || buf[start + len + 1] !== 10) throw new Error('RESP: bulk string without CRLF');
      at = start + len + 2;
      return buf.subarray(start, start + len);
    }
    case 42: { // *array
      const n = readInt(buf, from, eol);
      at = eol + 2;
      if (n < 0) return null;
      const arr = new Array(n);
      for (let i = 0; i < n; i++) {
        const v = parseValue(buf);
        if (v === INCOMPLETE) return INCOMPLETE;
        arr[i] = v;
      }
      return arr;
    }
    default:
      throw new Error(`RESP: unexpected type byte ${type}`);
  }
}

/**
 * A streaming RESP2 reader: feed() it the chunks of a socket, and it calls onReply(value) for each
 * whole reply: a string (+), an Error (-), a number (:), a Buffer (a view of the chunk; $), null, or
 * an array of these (*). Keeps a reply cut between two chunks until the rest comes.
 */
export class RespReader {
  #rest = null;
  constructor(onReply) {
    this.onReply = onReply;
  }

  feed(chunk) {
    const buf = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    let done = 0;
    for (;;) {
      at = done;
      const v = parseValue(buf);
      if (v === INCOMPLETE) break;
      done = at;
      this.onReply(v);
    }
    this.#rest = done < buf.length ? buf.subarray(done) : null;
  }
}
