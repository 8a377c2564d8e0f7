#!/usr/bin/env node
// What idle waiting costs: N pending Semaphore.wait() calls (on one semaphore, then on N
// distinct semaphores), then min(N, 1000) pending Channel.receive() calls, while nothing
// happens, measured as this process's CPU use over a quiet period, and the native waiter threads
// they hold. Usage: node bench/idle-waits.mjs [N] [seconds]
import { Channel, Segment, Semaphore, asyncWaitStats } from 'shmkit';

const N = Number(process.argv[2] ?? 5000);
const SECONDS = Number(process.argv[3] ?? 5);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const threads = () => asyncWaitStats().threads;

async function measure(label, sems, start = (s) => s.wait({ spin: 0 }), end = (s) => s.post(N)) {
  const waits = sems.map((s) => start(s).then(() => {}, () => {}));
  await sleep(500); // let the waits settle into their parked state
  const t0 = process.cpuUsage();
  const w0 = performance.now();
  await sleep(SECONDS * 1000);
  const d = process.cpuUsage(t0);
  const wall = performance.now() - w0;
  const cpu = ((d.user + d.system) / 1000 / wall) * 100;
  const held = threads();
  for (const s of sems) end(s);
  await Promise.all(waits);
  await sleep(1500);
  console.log(`${label}: ${sems.length} idle waits, CPU ${cpu.toFixed(1)} % of a core over ${SECONDS} s, waiter threads ${held} while waiting, ${threads()} 1.5 s after they ended`);
  return { label, n: sems.length, cpuPercent: Number(cpu.toFixed(2)), threadsWhileWaiting: held, threadsAfter: threads() };
}

const name = `idle${process.pid.toString(36)}`;
const seg = Segment.create(name, { size: 8 * N });
try {
  const one = Semaphore.init(seg, 0, 0);
  const rows = [await measure('one semaphore', Array(N).fill(one))];
  const many = Array.from({ length: N }, (_, i) => Semaphore.init(seg, 8 * i, 0));
  rows.push(await measure(`${N} semaphores`, many));
  // Channel receivers wait on their thread's doorbell (one segment, and one descriptor, each).
  const C = Math.min(N, 1000);
  const chans = Array.from({ length: C }, (_, i) => Channel.create(`${name}c${i}`, { capacity: 1024 }));
  try {
    rows.push(await measure(`${C} channels (receive)`, chans, (c) => c.receive({ spin: 0 }), (c) => c.close()));
  } finally {
    for (const c of chans) {
      c.close();
      Channel.unlink(c.name);
    }
  }
  if (process.argv.includes('--json')) console.log(JSON.stringify(rows));
} finally {
  seg.close();
  Segment.unlink(name);
}
