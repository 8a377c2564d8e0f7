// Pipe peer: length-prefixed frames over the child's stdio (the child writes to its stdout; for
// round trips this process writes to the child's stdin).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { SELF, argv, count, metric, pinChild, role } from './common.mjs';
import { encodeMsg, frame, framer, streamConsumer } from './byte-stream.mjs';

export async function run() {
  if (role === 'child') {
    if (metric === 'rtt') {
      process.stdin.on('data', framer((p) => process.stdout.write(frame(p))));
      return;
    }
    for (let i = 0; i < count; i++) {
      if (!process.stdout.write(frame(encodeMsg(i)))) await once(process.stdout, 'drain');
    }
    return;
  }
  const child = pinChild(spawn(process.execPath, [SELF, ...argv.slice(0, 5), 'child'], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const r = await streamConsumer(child.stdout, child.stdin);
  child.kill();
  return r;
}
