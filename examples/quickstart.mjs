// Quick start (quoted in the README): two processes share a counter under a robust Mutex, and
// send each other messages through a Channel.
import { fork } from 'node:child_process';
import { Channel, Mutex, Segment } from 'shmkit';

if (process.argv[2] === 'worker') {
  const seg = Segment.open('quickstart');
  const mutex = Mutex.at(seg, 0);
  const counter = new DataView(seg.data.buffer, seg.data.byteOffset + 16, 8);
  for (let i = 0; i < 100_000; i++) {
    const guard = mutex.lock(); // no system call unless another process holds it
    counter.setFloat64(0, counter.getFloat64(0) + 1);
    guard.unlock();
  }
  const jobs = Channel.open('quickstart-jobs', { codec: 'json' });
  for await (const job of jobs) console.log('worker got', job); // ends when the channel is closed
  jobs.disconnect();
  seg.close();
} else {
  const seg = Segment.create('quickstart', { size: 64, initialize: (s) => Mutex.init(s, 0) });
  const jobs = Channel.create('quickstart-jobs', { codec: 'json' });
  const worker = fork(new URL(import.meta.url).pathname, ['worker']);
  const mutex = Mutex.at(seg, 0);
  const counter = new DataView(seg.data.buffer, seg.data.byteOffset + 16, 8);
  for (let i = 0; i < 100_000; i++) {
    const guard = mutex.lock();
    counter.setFloat64(0, counter.getFloat64(0) + 1);
    guard.unlock();
  }
  jobs.send({ id: 1, task: 'resize', file: 'cat.png' });
  jobs.send({ id: 2, task: 'upload', file: 'cat-small.png' });
  jobs.close();
  await new Promise((resolve) => worker.on('exit', resolve));
  console.log('counter =', counter.getFloat64(0)); // 200000: no increment lost
  // Names live in /dev/shm until unlinked, like files.
  Segment.unlink('quickstart');
  Channel.unlink('quickstart-jobs');
  jobs.disconnect();
  seg.close();
}
