// One publisher process and two subscriber processes share a Topic: every subscriber gets every
// message, in the same order. Run: node examples/pubsub.mjs [TOPIC-NAME]
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Topic } from 'shmkit';

if (process.argv[2] === 'subscriber') {
  const [, , , name, label] = process.argv;
  const prices = Topic.open(name, { codec: 'json' }); // the publisher's codec
  const sub = prices.subscribe(); // from now on: every message published after this line
  process.send('subscribed');
  let got = 0;
  for await (const tick of sub) {
    console.log(`subscriber ${label} got #${sub.seq - 1}:`, tick);
    got++;
  }
  console.log(`subscriber ${label}: ${got} messages, then the end of the topic`); // for await ends with topic.end()
  prices.close();
} else {
  const name = process.argv[2] ?? 'pubsub-prices';
  const prices = Topic.create(name, { codec: 'json', capacity: 64 });
  const children = [];
  try {
    for (const label of ['A', 'B']) {
      const child = fork(fileURLToPath(import.meta.url), ['subscriber', name, label]);
      const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
      const subscribed = new Promise((resolve, reject) => {
        child.once('message', resolve);
        exited.then((code) => reject(new Error(`subscriber ${label} exited (${code}) before subscribing`)));
      });
      children.push({ label, child, exited, subscribed });
    }
    await Promise.all(children.map((c) => c.subscribed)); // a subscriber sees what is published after it subscribed

    for (const px of [101.5, 101.7, 101.4]) {
      const seq = await prices.publish({ sym: 'ACME', px }); // written once, read by both
      console.log(`published #${seq}`);
    }
    prices.end(); // the subscribers read everything published, then their loops end

    for (const { label, exited } of children) {
      const code = await exited;
      if (code !== 0) throw new Error(`subscriber ${label} failed (exit ${code})`);
    }
    console.log('both subscribers got every message');
  } finally {
    if (!prices.ended) prices.end(); // on failure too: no subscriber waits forever
    for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill();
    Topic.unlink(name); // names live in /dev/shm until unlinked, like files
    prices.close();
  }
}
