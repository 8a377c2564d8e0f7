// An API process and two worker processes: the workers serve one RPC service name, the API calls it.
// Calls spread over both workers; a streamed result; an error from a handler; a deadline that the
// handler sees. Run: node examples/rpc.mjs [SERVICE-NAME]
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { rpcClient, serve } from 'shmkit';

if (process.argv[2] === 'worker') {
  const name = process.argv[3];
  const service = serve(name, {
    async resize(file, width) {
      return { file, width, by: process.pid };
    },
    async *progress(steps) {
      for (let i = 1; i <= steps; i++) yield `${i}/${steps}`;
    },
    async fail(file) {
      throw Object.assign(new Error(`cannot read ${file}`), { code: 'E_UNREADABLE' });
    },
    // Works until the caller's deadline passes: ctx.signal aborts then.
    async slow(ctx) {
      await new Promise((resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
    },
  });
  process.send('serving');
  process.on('message', async () => {
    await service.closeNow();
    process.exit(0);
  });
} else {
  const name = process.argv[2] ?? 'rpc-images';
  const workers = [];
  try {
    for (let i = 0; i < 2; i++) {
      const child = fork(fileURLToPath(import.meta.url), ['worker', name]);
      const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
      const serving = new Promise((resolve, reject) => {
        child.once('message', resolve);
        exited.then((code) => reject(new Error(`worker exited (${code}) before serving`)));
      });
      workers.push({ child, exited, serving });
    }
    await Promise.all(workers.map((w) => w.serving));

    const images = await rpcClient(name, { timeout: 10_000 }); // a connection to each worker
    const done = await Promise.all(['a.png', 'b.png', 'c.png', 'd.png'].map((f) => images.resize(f, 640)));
    for (const r of done) console.log('resized', r.file, 'to', r.width, 'by worker', r.by);
    console.log('workers used:', new Set(done.map((r) => r.by)).size);

    for await (const step of await images.progress(3)) console.log('progress', step);

    try {
      await images.fail('broken.png');
    } catch (err) {
      console.log('error from the worker:', err.code, err.message);
    }
    try {
      await images.with({ timeout: 50 }).slow();
    } catch (err) {
      console.log('deadline:', err.code);
    }
    images.close();
  } finally {
    for (const w of workers) w.child.send('stop');
    for (const w of workers) await w.exited;
  }
  console.log('done');
}
