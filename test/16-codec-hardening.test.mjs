// Codec hardening: bounded jsonb shape caches under a hostile stream, codec names and objects
// validated, and every codec's encode failure reported as ERR_SHMKIT_INVALID_ARGUMENT.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Channel, ErrorCodes, ShmkitError, codecs } from 'shmkit';
import * as jsonb from '../dist/codec/jsonb.js';
import { ROOT, cleanupAll, result, run, uniq, watchdog } from './helpers.mjs';
import { craftedObject } from './fixtures/codec-craft.mjs';
import { viaJson } from './fixtures/json-values.mjs';

after(cleanupAll);

const ATTACK = join(ROOT, 'test', 'fixtures', 'codec-shape-attack.mjs');
const MiB = 1 << 20;
const invalid = (argument, cause) => (e) => {
  assert.ok(e instanceof ShmkitError, `not a ShmkitError: ${e && e.stack}`);
  assert.equal(e.code, ErrorCodes.INVALID_ARGUMENT, e.message);
  assert.equal(e.argument, argument, e.message);
  if (cause !== undefined) assert.ok(e.cause instanceof cause, `cause ${e.cause} is not a ${cause.name}`);
  return true;
};
const revokedProxy = () => {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
};

describe('jsonb shape caches stay bounded under a hostile stream', () => {
  // 1,024 distinct ~64 KiB key blocks, 9 times each (so every shape also gets generated code):
  // before the byte bound (and before generated code stopped going through V8's eval cache), the
  // receiver kept ~140 MiB after a full GC, the encoder ~230 MiB. On Node 22 and 24, generated code
  // compiled by vm.compileFunction without a context extension stays in V8's compilation cache:
  // 135 MiB (decode) and 85-160 MiB (encode) kept. Now ~1-2 MiB on Node 20, 22 and 24.
  for (const mode of ['decode', 'encode']) {
    test(`${mode}: 1,024 hostile shapes x 9 leave the heap under 64 MiB after GC`, async () => {
      const name = uniq('cshp');
      const r = await result(run(mode, { name, shapes: 1024, reps: 9 }, { script: ATTACK }), 120000, `shape attack (${mode})`);
      const msg = `${mode}: retained ${(r.retained / MiB).toFixed(1)} MiB after GC, peak RSS +${(r.peakRssGrowth / MiB).toFixed(0)} MiB, ${r.messageBytes}-byte messages`;
      console.log(`# ${msg}`);
      assert.ok(r.checked > 0);
      assert.ok(r.messageBytes > 60000, msg);
      assert.ok(r.retained < 64 * MiB, msg);
    });
  }

  const assertLikeJson = (decoded, value, what) => {
    const expected = viaJson(value);
    assert.deepStrictEqual(decoded, expected, what);
    assert.equal(JSON.stringify(decoded), JSON.stringify(expected), `${what}: key order`);
  };

  function assertWithinLimits(what) {
    const s = jsonb.shapeCacheStats();
    const l = jsonb.shapeCacheLimits;
    assert.ok(s.decoder.bytes <= l.decoderBytes && s.decoder.shapes <= l.decoderShapes, `${what}: decoder ${JSON.stringify(s.decoder)}`);
    assert.ok(s.encoder.bytes <= l.encoderBytes && s.encoder.nodes <= l.encoderNodes, `${what}: encoder ${JSON.stringify(s.encoder)}`);
  }

  for (const useCodegen of [true, false]) {
    test(`values stay equal to their JSON form across evictions (code generation ${useCodegen ? 'on' : 'off'})`, () => {
      jsonb.resetShapes(useCodegen);
      try {
        const hot = { id: 1, name: 'hot', tags: ['a', 'b'], nested: { x: 1.5, y: null, z: 'é€😀' }, gone: undefined };
        const prefix = [];
        for (let j = 0; j < 127; j++) prefix.push(`p${j}_` + 'w'.repeat(496));
        for (let s = 0; s < 72; s++) {
          // Decoder: a new ~64 KiB key block, 9 times, between hot objects.
          const { b, expected } = craftedObject(s, 128, 500);
          for (let r = 0; r < 9; r++) {
            assert.deepStrictEqual(jsonb.decode(b), expected, `crafted shape ${s}`);
            assertLikeJson(codecs.jsonb.decode(codecs.jsonb.encode(hot)), hot, `hot object, shape ${s}`);
          }
          // Encoder: a long shared prefix and a new last key, nested in a hot shape.
          const big = {};
          for (let j = 0; j < prefix.length; j++) big[prefix[j]] = j % 3 === 0 ? `v${j}` : j;
          big[`last${s}_` + 'z'.repeat(480)] = [s, { s }];
          for (let r = 0; r < 9; r++) {
            const v = { hot, big, r };
            assertLikeJson(codecs.jsonb.decode(codecs.jsonb.encode(v)), v, `encoded shape ${s}`);
          }
          assertWithinLimits(`shape ${s}`);
        }
        const s = jsonb.shapeCacheStats();
        assert.ok(s.decoder.evictions > 0, `the decoder cache was never cleared: ${JSON.stringify(s)}`);
        assert.ok(s.encoder.evictions > 0, `the encoder trie was never cleared: ${JSON.stringify(s)}`);
      } finally {
        jsonb.resetShapes(true);
      }
    });
  }

  test('normal traffic (a handful of shapes) is never evicted', () => {
    jsonb.resetShapes(true);
    const values = [
      { id: 1, name: 'a', tags: ['x'] },
      { type: 'order', items: [{ sku: 'A1', qty: 2 }, { sku: 'B2', qty: 1 }], total: 12.5 },
      { event: 'click', at: 1700000000000, target: { id: 'btn', classes: ['primary'] } },
      [{ k: 1 }, { k: 2, v: 'two' }],
    ];
    for (let i = 0; i < 2000; i++) {
      const v = values[i % values.length];
      assert.deepStrictEqual(codecs.jsonb.decode(codecs.jsonb.encode(v)), viaJson(v));
    }
    const s = jsonb.shapeCacheStats();
    assert.equal(s.decoder.evictions, 0, JSON.stringify(s));
    assert.equal(s.encoder.evictions, 0, JSON.stringify(s));
    assert.ok(s.decoder.shapes >= 5 && s.encoder.nodes >= 5, JSON.stringify(s));
  });

  test('key blocks with more keys than any encoder writes decode, uncached', () => {
    jsonb.resetShapes(true);
    const { b, expected } = craftedObject(7, 1000, 30);
    for (let r = 0; r < 12; r++) assert.deepStrictEqual(jsonb.decode(b), expected);
    assert.equal(jsonb.shapeCacheStats().decoder.shapes, 0);
  });
});

describe('codec names and codec objects', () => {
  const inherited = ['toString', 'constructor', '__proto__', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', 'propertyIsEnumerable', 'toLocaleString', '__defineGetter__', '__lookupSetter__'];

  test('names inherited from Object.prototype are not codec names (create, open, openOrCreate)', () => {
    const name = uniq('cnm');
    for (const codec of inherited) {
      assert.throws(() => Channel.create(name, { capacity: 4096, codec }), invalid('options.codec'), codec);
      assert.throws(() => Channel.openOrCreate(name, { capacity: 4096, codec }), invalid('options.codec'), codec);
    }
    const ch = Channel.create(name, { capacity: 4096 }); // nothing was created by the refusals
    for (const codec of inherited) assert.throws(() => Channel.open(name, { codec }), invalid('options.codec'), codec);
    ch.close();
    Channel.unlink(name);
  });

  test('the five names and the built-in objects still resolve to the built-ins', () => {
    const name = uniq('cnm');
    const base = Channel.create(name, { capacity: 4096 });
    for (const [n, c] of Object.entries(codecs)) {
      for (const codec of [n, c]) {
        const h = Channel.open(name, { codec });
        assert.equal(h.codec, c, n);
        h.close();
      }
    }
    base.close();
    Channel.unlink(name);
  });

  test('codec objects need a non-empty string name, encode and decode functions', () => {
    const name = uniq('cob');
    const enc = (v) => Buffer.from(String(v));
    const dec = (b) => b.toString();
    const bad = [
      null,
      42,
      enc,
      {},
      { encode: enc, decode: dec }, // no name
      { name: '', encode: enc, decode: dec },
      { name: 7, encode: enc, decode: dec },
      { name: Symbol('s'), encode: enc, decode: dec },
      { name: 'x', encode: 'enc', decode: dec },
      { name: 'x', encode: enc },
      { name: 'x', encode: enc, decode: {} },
      { name: 'x', get encode() { throw new Error('getter'); }, decode: dec },
      revokedProxy(),
    ];
    for (const [i, codec] of bad.entries()) {
      assert.throws(() => Channel.create(name, { capacity: 4096, codec }), invalid('options.codec'), `bad codec #${i}`);
    }
    const ch = Channel.create(name, { capacity: 4096 });
    for (const [i, codec] of bad.entries()) assert.throws(() => Channel.open(name, { codec }), invalid('options.codec'), `bad codec #${i}`);
    ch.close();
    Channel.unlink(name);
  });

  test('a custom codec keeps its name, its `this` and its other members', () => {
    const name = uniq('cob');
    class Prefixed {
      name = 'prefixed';
      prefix = '>';
      encode(v) {
        return this.prefix + v;
      }
      decode(b) {
        return b.toString().slice(this.prefix.length);
      }
    }
    const codec = new Prefixed();
    const ch = Channel.create(name, { capacity: 4096, codec });
    ch.sendSync('hello');
    assert.equal(ch.receiveSync(), 'hello');
    assert.equal(ch.codec.name, 'prefixed');
    assert.equal(ch.codec.prefix, '>');
    assert.ok(ch.codec instanceof Prefixed);
    const again = Channel.open(name, { codec: ch.codec }); // a handle's codec is accepted as it is
    assert.equal(again.codec, ch.codec);
    again.sendSync('again');
    assert.equal(ch.receiveSync(), 'again');
    again.close();
    ch.close();
    Channel.unlink(name);
  });
});

describe('encode failures are ERR_SHMKIT_INVALID_ARGUMENT (message), with the cause', () => {
  const cyclic = () => {
    const o = { a: [] };
    o.a.push({ back: o });
    return o;
  };
  const throwingToJSON = () => ({ toJSON() { throw new RangeError('toJSON says no'); } });
  const throwingGetter = () => ({ get x() { throw new SyntaxError('getter says no'); } });

  // [codec, value, expected cause class (undefined: refused without a cause)]
  const cases = [
    ['json', () => ({ big: 1n }), TypeError],
    ['json', cyclic, TypeError],
    ['json', throwingToJSON, RangeError],
    ['json', throwingGetter, SyntaxError],
    ['json', revokedProxy, TypeError],
    ['json', () => undefined, undefined],
    ['json', () => () => 1, undefined],
    ['json', () => Symbol('s'), undefined],
    ['json', () => ({ toJSON: () => undefined }), undefined],
    ['jsonb', () => ({ big: 1n }), undefined],
    ['jsonb', cyclic, undefined],
    ['jsonb', throwingToJSON, RangeError],
    ['jsonb', throwingGetter, SyntaxError],
    ['jsonb', revokedProxy, TypeError],
    ['jsonb', () => [revokedProxy()], TypeError],
    ['jsonb', () => ({ deep: { deeper: revokedProxy() } }), TypeError],
    ['jsonb', () => undefined, undefined],
    ['structured', () => () => 1, Error],
    ['structured', () => ({ s: Symbol('s') }), Error],
    ['structured', () => new WeakMap(), Error],
    ['structured', revokedProxy, Error],
    ['utf8', revokedProxy, undefined],
    ['bytes', revokedProxy, undefined],
  ];

  test('calling the codec directly', () => {
    for (const [codec, make, cause] of cases) {
      assert.throws(() => codecs[codec].encode(make()), invalid('message', cause), `${codec}: ${make}`);
    }
  });

  for (const how of ['sendSync', 'trySend', 'send', 'send after a first send']) {
    test(`through a channel: ${how}; nothing is sent and the channel stays usable`, async () => {
      const name = uniq('cenc');
      const chans = {};
      for (const codec of Object.keys(codecs)) {
        chans[codec] = codec === 'bytes' ? Channel.create(name, { capacity: 1 << 14 }) : Channel.open(name, { codec });
      }
      const ok = { bytes: Buffer.from('ok'), utf8: 'ok', json: { ok: 1 }, jsonb: { ok: 1 }, structured: { ok: 1n } };
      try {
        for (const [codec, make, cause] of cases) {
          const ch = chans[codec];
          if (how === 'send after a first send') {
            ch.sendSync(ok[codec]);
            assert.deepEqual(ch.receiveSync(), ok[codec]);
          }
          const sent = ch.stats().sent;
          const attempt = how === 'send' ? () => watchdog(ch.send(make()), 10000, 'send') : () => ch[how === 'trySend' ? 'trySend' : 'sendSync'](make());
          await assert.rejects(async () => attempt(), invalid('message', cause), `${codec}: ${make}`);
          assert.equal(ch.stats().sent, sent, `${codec}: nothing sent`);
          ch.sendSync(ok[codec]);
          assert.deepEqual(ch.receiveSync(), ok[codec], `${codec}: usable after the refusal`);
        }
      } finally {
        for (const ch of Object.values(chans)) ch.close();
        Channel.unlink(name);
      }
    });
  }

  test(
    'a revoked Proxy sent with the bytes codec after a first send (single-producer fast path)',
    () => {
      const name = uniq('cenc');
      const ch = Channel.create(name, { capacity: 4096, producers: 'single' });
      try {
        ch.sendSync(Buffer.from('a'));
        ch.receiveSync();
        assert.throws(() => ch.sendSync(revokedProxy()), invalid('message'));
        assert.throws(() => ch.trySend(revokedProxy()), invalid('message'));
      } finally {
        ch.close();
        Channel.unlink(name);
      }
    },
  );

  test('a custom codec: what encode throws (cause kept), or a result that is not bytes nor a string', async () => {
    const name = uniq('cenc');
    const boom = new Error('encode says no');
    const make = (encode) => ({ name: 'custom', encode, decode: (b) => b.toString() });
    const ch = Channel.create(name, { capacity: 4096 });
    try {
      for (const [encode, cause, what] of [
        [() => { throw boom; }, Error, 'throws an Error'],
        [() => { throw 'a string'; }, undefined, 'throws a non-Error'],
        [() => { throw revokedProxy(); }, undefined, 'throws a revoked Proxy'],
        [() => revokedProxy(), undefined, 'returns a revoked Proxy'],
        [() => 42, undefined, 'returns a number'],
        [() => ({ length: 3 }), undefined, 'returns an array-like'],
      ]) {
        const h = Channel.open(name, { codec: make(encode) });
        try {
          for (const send of [(v) => h.sendSync(v), (v) => h.trySend(v), (v) => watchdog(h.send(v), 10000, 'send')]) {
            await assert.rejects(async () => send('x'), invalid('message', cause), what);
          }
          let err;
          try {
            h.sendSync('x');
          } catch (e) {
            err = e;
          }
          if (what === 'throws an Error') assert.equal(err.cause, boom);
          if (what === 'throws a non-Error') assert.equal(err.cause, 'a string');
        } finally {
          h.close();
        }
      }
      assert.equal(ch.stats().sent, 0);
      // A DataView or another typed array is still accepted, sent as its bytes.
      const dv = Channel.open(name, { codec: make((v) => new DataView(new Uint16Array([v.length, 0]).buffer, 0, 2)) });
      dv.sendSync('ab');
      assert.equal(dv.stats().sent, 1);
      dv.close();
    } finally {
      ch.close();
      Channel.unlink(name);
    }
  });

  test('the jsonb encoder works normally after a failure inside a nested value', () => {
    const v = { a: [1, { b: 'x'.repeat(100) }], c: { d: true } };
    for (let i = 0; i < 20; i++) {
      assert.throws(() => codecs.jsonb.encode({ ...v, bad: { deep: [throwingGetter()] } }), invalid('message', SyntaxError));
      assert.deepStrictEqual(codecs.jsonb.decode(codecs.jsonb.encode(v)), viaJson(v));
    }
  });
});

describe('decode failures are ERR_SHMKIT_DECODE for every codec that can fail', () => {
  test('json, jsonb, structured and a custom codec; the message is consumed', () => {
    const name = uniq('cdec');
    const raw = Channel.create(name, { capacity: 1 << 14 });
    const custom = { name: 'strict', encode: (v) => v, decode: (b) => { if (b.length !== 3) throw new RangeError(`3 bytes, not ${b.length}`); return b.toString(); } };
    try {
      for (const codec of ['json', 'jsonb', 'structured', custom]) {
        const h = Channel.open(name, { codec });
        try {
          raw.sendSync(Buffer.from([0xff, 0x07, 0xff, 0xff, 0xff, 0x7f, 0x00]));
          assert.throws(() => h.receiveSync(), (e) => e instanceof ShmkitError && e.code === ErrorCodes.DECODE && e.cause !== undefined, String(codec.name ?? codec));
          assert.equal(h.tryReceive(), undefined, 'consumed');
        } finally {
          h.close();
        }
      }
      for (const codec of ['bytes', 'utf8']) {
        const h = Channel.open(name, { codec });
        raw.sendSync(Buffer.from([0xff, 0xfe, 0x00]));
        assert.notEqual(h.receiveSync(), undefined, `${codec} never fails to decode`);
        h.close();
      }
    } finally {
      raw.close();
      Channel.unlink(name);
    }
  });
});
