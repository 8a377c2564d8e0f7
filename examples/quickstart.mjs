// Two processes share a counter under a robust Mutex and pass jobs through a Channel.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Channel, Mutex, Segment } from 'shmkit';

/** 100,000 increments of a plain (non-atomic) number, each under the shared Mutex. */
function count(seg) {
  const mutex = Mutex.at(seg, 0);
  const counter = new DataView(seg.data.buffer, seg.data.byteOffset + 16, 8);
  for (let i = 0; i < 100_000; i++) {
    const guard = mutex.lockSync(); // no system call unless another process holds it
    counter.setFloat64(0, counter.getFloat64(0) + 1);
    guard.unlock();
  }
  return counter;
}

if (process.argv[2] === 'worker') {
  const seg = Segment.open('quickstart');
  count(seg);
  const jobs = Channel.open('quickstart-jobs', { codec: 'json' });
  for await (const job of jobs) console.log('worker got', job); // ends when the channel is ended
  jobs.close();
  seg.close();
} else {
  const seg = Segment.create('quickstart', { size: 64, initialize: (s) => Mutex.init(s, 0) });
  const jobs = Channel.create('quickstart-jobs', { codec: 'json' });
  try {
    const worker = fork(fileURLToPath(import.meta.url), ['worker']);
    const exited = new Promise((resolve) => worker.on('exit', resolve));
    const counter = count(seg);
    await jobs.send({ id: 1, task: 'resize', file: 'cat.png' });
    await jobs.send({ id: 2, task: 'upload', file: 'cat-small.png' });
    jobs.end();
    const code = await exited;
    if (code !== 0) throw new Error(`the worker failed (exit code ${code})`);
    console.log('counter =', counter.getFloat64(0)); // 200000: no increment lost
  } finally {
    // Names live in /dev/shm until unlinked, like files.
    Segment.unlink('quickstart');
    Channel.unlink('quickstart-jobs');
    jobs.close();
    seg.close();
  }
}
