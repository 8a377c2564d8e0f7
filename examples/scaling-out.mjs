// Beyond one machine: this process keeps its topic, service and map in shared memory, and a
// bridge forwards them to NATS; a second process, standing for another machine, reaches them
// through NATS alone with the same API (a Transport).
// Run: NATS_URL=nats://127.0.0.1:4222 node examples/scaling-out.mjs [NAME]   (nats-server -js)
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SharedMap, Topic, serve } from 'shmkit';
import { bridge, natsTransport } from 'shmkit/nats';

const url = process.env.NATS_URL;
if (!url) {
  console.error('set NATS_URL to a nats-server started with -js, e.g. NATS_URL=nats://127.0.0.1:4222');
  process.exit(2);
}

if (process.argv[2] === 'remote') {
  // "Another machine": NATS only, the same calls as on shared memory.
  const name = process.argv[3];
  const t = await natsTransport({ servers: url });
  const prices = await t.topic(`${name}.prices`, { codec: 'json' });
  const sub = prices.subscribe();
  const pricing = await t.rpcClient(`${name}.pricing`, { timeout: 5000 });
  console.log(`remote: quote(ACME) = ${await pricing.quote('ACME')}`);
  const settings = await t.map(`${name}.config`);
  await settings.set('mode', 'fast'); // mirrored into the local map by the bridge
  process.send('ready');
  const p = await sub.receive({ timeout: 10_000 });
  console.log(`remote: got ${p.sym} at ${p.px}`);
  await t.close();
  process.exit(0);
}

const name = process.argv[2] ?? 'example-scale';
const prices = Topic.create(`${name}.prices`, { codec: 'json' });
const pricing = serve(`${name}.pricing`, { async quote(sym) { return sym === 'ACME' ? 12.5 : 0; } });
const settings = SharedMap.create(`${name}.config`);
const b = bridge({
  nats: { servers: url },
  name: `${name}.bridge`,
  topics: [{ local: `${name}.prices`, direction: 'out' }],
  services: [{ local: `${name}.pricing`, direction: 'export' }],
  maps: [{ local: `${name}.config`, direction: 'in' }],
});
b.on('error', (err) => console.error(err.message));
await b.ready;
console.log('local: the bridge is connected');

const remote = fork(fileURLToPath(import.meta.url), ['remote', name]);
const exited = new Promise((resolve) => remote.once('exit', resolve));
await Promise.race([new Promise((resolve) => remote.once('message', resolve)), exited.then((code) => Promise.reject(new Error(`the remote process exited (${code})`)))]);
await prices.publish({ sym: 'ACME', px: 12.5 }); // local subscribers get it from shared memory; the bridge sends it on
const until = Date.now() + 10_000;
while (settings.get('mode') === undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
console.log(`local: settings.mode = ${settings.get('mode')} (written on the other side)`);
if ((await exited) !== 0) throw new Error('the remote process failed');
console.log('local: forwarded', JSON.stringify(b.stats().topics[0].out), 'message(s) to NATS');

await b.close();
await pricing.close();
prices.close();
settings.close();
Topic.unlink(`${name}.prices`);
SharedMap.unlink(`${name}.config`);
const t = await natsTransport({ servers: url });
await (await t.map(`${name}.config`)).destroy(); // the example's KV bucket
await t.close();
console.log('done');
