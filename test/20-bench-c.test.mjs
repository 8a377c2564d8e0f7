// The C references of `npm run bench` (bench/c/): they build with `cc -O2` and print the JSON
// shape of the Node trials. Tiny counts; no duration is asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { buildC, trial } from '../bench/lib.mjs';
import { watchdog } from './helpers.mjs';

const noCc = (() => {
  const r = spawnSync('cc', ['--version']);
  return r.error || r.status !== 0 ? 'no C compiler (cc) on this machine' : false;
})();

test('bench/c/pingpong.c and ring.c build with cc -O2 and print the Node trials\' JSON shape', { skip: noCc }, async () => {
  const built = buildC();
  assert.equal(built.error, undefined, built.error);
  const { pingpong, ring } = built.bins;

  const rtt = (await watchdog(trial('c/pingpong.c', [300], { exec: pingpong }), 60000, 'pingpong')).result;
  assert.deepEqual(Object.keys(rtt).sort(), ['median_us', 'p99_us']);
  assert.ok(Number.isFinite(rtt.median_us) && rtt.median_us > 0, JSON.stringify(rtt));
  assert.ok(Number.isFinite(rtt.p99_us) && rtt.p99_us >= rtt.median_us, JSON.stringify(rtt));

  const tp = (await watchdog(trial('c/ring.c', [20000, 64], { exec: ring }), 60000, 'ring')).result;
  assert.deepEqual(Object.keys(tp).sort(), ['count', 'unit', 'value']);
  assert.equal(tp.unit, 'msg/s');
  assert.equal(tp.count, 20000);
  assert.ok(Number.isFinite(tp.value) && tp.value > 0, JSON.stringify(tp));

  // Large records wrap the 4 MiB ring with padding records many times; rates above 64 B are MB/s.
  const big = (await watchdog(trial('c/ring.c', [3000, 40000], { exec: ring }), 60000, 'ring 40000')).result;
  assert.equal(big.unit, 'MB/s');
  assert.equal(big.count, 3000);
  assert.ok(Number.isFinite(big.value) && big.value > 0, JSON.stringify(big));
});

test('the C references refuse bad arguments with a usage message', { skip: noCc }, async () => {
  const { bins } = buildC();
  for (const bin of [bins.pingpong, bins.ring]) {
    const r = spawnSync(bin, [], { encoding: 'utf8', timeout: 10000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /usage/);
  }
});
