import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Channel, ErrorCodes, ShmkitError, codecs } from 'shmkit';
import * as jsonb from '../dist/codec/jsonb.js';
import { cleanupAll, result, run, uniq, watchdog } from './helpers.mjs';
import { join } from 'node:path';
import { ROOT } from './helpers.mjs';
import { corpus, randomValue, rng, viaJson } from './fixtures/json-values.mjs';

after(cleanupAll);
const code = (c) => (e) => e instanceof ShmkitError && e.code === c;
const JCHILD = join(ROOT, 'test', 'fixtures', 'jsonb-child.mjs');

/** jsonb must give exactly what JSON gives: same values, same prototypes, same key order. */
function assertLikeJson(decoded, value, what) {
  const expected = viaJson(value);
  assert.deepStrictEqual(decoded, expected, what);
  assert.equal(JSON.stringify(decoded), JSON.stringify(expected), `${what}: key order`);
}
const roundTrip = (v) => codecs.jsonb.decode(codecs.jsonb.encode(v));

describe('jsonb codec: same values as JSON', () => {
  for (const [what, value] of Object.entries(corpus())) {
    test(what, () => {
      // Twelve times: shapes get generated code after a few uses (COMPILE_AFTER), on both sides.
      for (let i = 0; i < 12; i++) assertLikeJson(roundTrip(value), value, `${what}, round ${i}`);
    });
  }

  test('the no-code-generation path gives the same values', () => {
    try {
      jsonb.resetShapes(false);
      for (const [what, value] of Object.entries(corpus())) {
        for (let i = 0; i < 12; i++) assertLikeJson(roundTrip(value), value, `${what}, round ${i}`);
      }
    } finally {
      jsonb.resetShapes(true);
    }
  });

  test('"__proto__" decodes as an own property, never as the prototype', () => {
    for (const useCodegen of [true, false]) {
      jsonb.resetShapes(useCodegen);
      const o = roundTrip(JSON.parse('{"__proto__": {"polluted": 1}}'));
      assert.equal(Object.getPrototypeOf(o), Object.prototype);
      assert.deepEqual(Object.keys(o), ['__proto__']);
      assert.equal({}.polluted, undefined);
    }
    jsonb.resetShapes(true);
  });

  test('getters and toJSON run once each, in the order JSON.stringify runs them', () => {
    const make = (log) => ({
      get a() { log.push('a'); return { toJSON(k) { log.push(`toJSON ${k}`); return [1]; } }; },
      b: [{ get c() { log.push('c'); return undefined; } }],
      get d() { log.push('d'); return 4; },
    });
    const viaText = [];
    JSON.stringify(make(viaText));
    const viaB = [];
    const out = codecs.jsonb.decode(codecs.jsonb.encode(make(viaB)));
    assert.deepEqual(viaB, viaText);
    assertLikeJson(out, make([]), 'getter object');
  });

  test('10,000 random values round-trip like JSON', () => {
    const r = rng(12345);
    for (let i = 0; i < 10000; i++) {
      const v = randomValue(r);
      if (viaJsonOrUndefined(v) === undefined) continue;
      assertLikeJson(roundTrip(v), v, `random value ${i}`);
    }
  });

  test('many distinct shapes (past the encoder and decoder caches) stay correct', () => {
    for (let i = 0; i < 12000; i++) {
      const o = { [`k${i}`]: i, [`j${i % 7}`]: [i], n: { [`m${i}`]: true } };
      assertLikeJson(roundTrip(o), o, `shape ${i}`);
    }
  });

  test('objects whose key block passes 64 KiB (the u16 block length) round-trip, inline', () => {
    // 128 keys (the most a cached shape has) of 600 one-byte or 300 two-byte characters: the key
    // block would be ~77 KiB, more than its u16 length can say. It used to be written truncated.
    jsonb.resetShapes(true); // an empty trie: the shape would be cached
    for (const unit of ['x', 'é', '€']) {
      const n = unit === '€' ? 300 : 600;
      const o = {};
      for (let i = 0; i < 128; i++) o[`k${i}_${unit.repeat(n)}`] = i % 2 ? [i] : { i };
      for (let r = 0; r < 10; r++) assertLikeJson(roundTrip(o), o, `${unit} keys, round ${r}`);
      assertLikeJson(roundTrip({ outer: o, n: 1 }), { outer: o, n: 1 }, `${unit} keys, nested`);
    }
  });

  test('a toJSON that itself encodes does not disturb the outer encode', () => {
    const inner = { toJSON: () => codecs.jsonb.decode(codecs.jsonb.encode({ nested: [true, 'x'.repeat(100)] })) };
    const v = { before: 'x'.repeat(10), inner, after: [1, 2, 3] };
    assertLikeJson(roundTrip(v), v, 'reentrant');
  });
});

function viaJsonOrUndefined(v) {
  const s = JSON.stringify(v);
  return s === undefined ? undefined : s;
}

describe('jsonb codec: what JSON refuses', () => {
  test('BigInt, cycles and top-level undefined give ERR_SHMKIT_INVALID_ARGUMENT', () => {
    assert.throws(() => codecs.jsonb.encode({ a: 1n }), code(ErrorCodes.INVALID_ARGUMENT));
    const cyc = { a: [] };
    cyc.a.push({ back: cyc });
    assert.throws(() => codecs.jsonb.encode(cyc), code(ErrorCodes.INVALID_ARGUMENT));
    assert.throws(() => codecs.jsonb.encode(undefined), code(ErrorCodes.INVALID_ARGUMENT));
    assert.throws(() => codecs.jsonb.encode(() => 1), code(ErrorCodes.INVALID_ARGUMENT));
    // A shared (not circular) object twice is fine, as in JSON.
    const shared = { s: 1 };
    assertLikeJson(roundTrip([shared, shared]), [shared, shared], 'shared object');
  });

  test('a refused message is not sent and the channel stays usable', () => {
    const name = uniq('jb');
    const ch = Channel.create(name, { capacity: 4096, codec: 'jsonb' });
    assert.throws(() => ch.sendSync({ big: 2n }), code(ErrorCodes.INVALID_ARGUMENT));
    assert.throws(() => ch.trySend(undefined), code(ErrorCodes.INVALID_ARGUMENT));
    assert.equal(ch.stats().sent, 0);
    ch.sendSync({ ok: 1 });
    assert.deepEqual(ch.receiveSync(), { ok: 1 });
    assert.throws(() => ch.sendSync({ s: 'x'.repeat(4000) }), code(ErrorCodes.TOO_LARGE));
    assert.equal(ch.stats().depth, 0);
    ch.close();
    Channel.unlink(name);
  });
});

describe('jsonb codec: untrusted bytes', () => {
  test('truncated, mutated and random input throws a decode error or decodes; never anything else', () => {
    const r = rng(99);
    const samples = [];
    for (let i = 0; i < 200; i++) samples.push(codecs.jsonb.encode([randomValue(r)]));
    samples.push(codecs.jsonb.encode(corpus()['plain object']));
    let decoded = 0;
    let refused = 0;
    const attempt = (b) => {
      try {
        jsonb.decode(b);
        decoded++;
      } catch (err) {
        assert.ok(err instanceof jsonb.JsonbError, `unexpected ${err && err.stack}`);
        refused++;
      }
    };
    for (const s of samples) {
      for (let cut = 0; cut < s.length; cut += Math.max(1, s.length >> 4)) attempt(s.subarray(0, cut));
      for (let k = 0; k < 40; k++) {
        const m = Buffer.from(s);
        const n = 1 + Math.floor(r() * 3);
        for (let j = 0; j < n; j++) m[Math.floor(r() * m.length)] = r() < 0.5 ? Math.floor(r() * 256) : [0xff, 0x7f, 0x80, 0x0a, 0x08][Math.floor(r() * 5)];
        attempt(m);
      }
    }
    for (let k = 0; k < 5000; k++) {
      const m = Buffer.alloc(1 + Math.floor(r() * 64));
      for (let j = 0; j < m.length; j++) m[j] = Math.floor(r() * 12);
      attempt(m);
    }
    assert.ok(refused > 1000, `refused ${refused}`);
    assert.ok(decoded > 0);
  });

  test('huge counts and lengths are refused before anything is allocated', () => {
    const cases = [
      [0x07, 0xff, 0xff, 0xff, 0x7f], // array of 2^31 values in 0 bytes
      [0x05, 0xff, 0xff, 0xff, 0xff], // 4 GiB string
      [0x06, 0xff, 0xff, 0xff, 0x7f],
      [0x09, 0xff, 0xff, 0xff, 0xff],
      [0x08, 0x05, 0x00, 0xff, 0xff, 0x05, 0x00, 0x00], // key block claims 65535 keys
      [0x0a], // absent marker at the top
      [0x07, 0x01, 0x00, 0x00, 0x00, 0x0a], // absent marker in an array
      [0x02, 0x02], // trailing bytes
    ];
    for (const c of cases) assert.throws(() => jsonb.decode(Buffer.from(c)), jsonb.JsonbError, Buffer.from(c).toString('hex'));
    const deep = Buffer.alloc(20000);
    for (let i = 0; i < 4000; i++) Buffer.from([0x07, 1, 0, 0, 0]).copy(deep, i * 5);
    deep[20000 - 1] = 0;
    assert.throws(() => jsonb.decode(deep), jsonb.JsonbError);
  });

  test('a channel hands a malformed jsonb message to the receiver as ERR_SHMKIT_DECODE, then goes on', () => {
    const name = uniq('jb');
    const bytesSide = Channel.create(name, { capacity: 4096 });
    const ch = Channel.open(name, { codec: 'jsonb' });
    bytesSide.sendSync(Buffer.from([0x07, 0xff, 0xff, 0xff, 0x7f]));
    bytesSide.sendSync(codecs.jsonb.encode({ fine: [1, 'two'] }));
    assert.throws(() => ch.receiveSync(), code(ErrorCodes.DECODE));
    assert.deepEqual(ch.receiveSync(), { fine: [1, 'two'] });
    bytesSide.close();
    ch.close();
    Channel.unlink(name);
  });
});

describe('jsonb over a channel between processes', () => {
  test('objects from two producer processes (send and send) arrive equal to their JSON form', async () => {
    const name = uniq('jbx');
    const ch = Channel.create(name, { capacity: 1 << 14, producers: 'multi', codec: 'jsonb' });
    const count = 3000;
    const kids = [0, 1].map((id) => run('', {}, { script: JCHILD, spawn: { argv0: 'node' }, env: { JB_ARGS: JSON.stringify({ name, id, count, async: id === 1 }) } }));
    const expected = [0, 1].map((id) => {
      const r = rng(1000 + id);
      const list = [];
      for (let i = 0; i < count; i++) list.push(viaJson({ id, i, v: randomValue(r) ?? null }));
      return list;
    });
    const next = [0, 0];
    const receiveAll = async () => {
      for (let n = 0; n < 2 * count; n++) {
        const m = await ch.receive({ timeout: 60000 });
        const want = expected[m.id][next[m.id]++];
        assert.equal(JSON.stringify(m), JSON.stringify(want), `producer ${m.id} message ${m.i}`);
        assert.deepStrictEqual(m, want);
      }
    };
    await watchdog(receiveAll(), 90000, 'receiving jsonb messages');
    for (const k of kids) assert.equal((await watchdog(k.exited, 30000, 'jsonb child exit')).code, 0);
    assert.deepEqual(next, [count, count]);
    ch.close();
    Channel.unlink(name);
  });
});

describe('jsonb codec: boxed values and class instances', () => {
  test('class instances are serialized by their own enumerable members, boxed primitives unwrapped', () => {
    class Money {
      constructor(amount, currency) {
        this.amount = amount;
        this.currency = currency;
      }
      get label() {
        return `${this.amount} ${this.currency}`;
      }
    }
    const fakeNumber = Object.create(Number.prototype); // instanceof Number, but no [[NumberData]]
    fakeNumber.x = 1;
    const values = [new Money(5, 'EUR'), [new Money(1, 'USD'), new Number(2), new String('s'), new Boolean(true)], { fakeNumber }];
    for (const v of values) for (let i = 0; i < 10; i++) assertLikeJson(roundTrip(v), v, 'instances');
    assert.throws(() => codecs.jsonb.encode({ b: Object(1n) }), code(ErrorCodes.INVALID_ARGUMENT));
  });
});
