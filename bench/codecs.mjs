#!/usr/bin/env node
// Codec benchmark: the cost per message of encoding+sending and receiving+decoding the transport
// benchmark's ~200-byte object, in one process (no cross-core traffic), for each codec, next to
// the bare serializers as peers.
//   npm run bench:codecs [-- --reps N] [-- --quick]
// Every trial runs in a fresh process; repetitions are interleaved; medians (min-max).
import { benchArgs, fmt, machine, median, ratio, table, trial } from './lib.mjs';

const { quick, reps } = benchArgs();
const count = quick ? 100_000 : 500_000;
const rows = [
  ['jsonb', 'shmkit channel, jsonb codec'],
  ['json', 'shmkit channel, json codec'],
  ['structured', 'shmkit channel, structured codec'],
  ['JSON.stringify+parse', 'peer: JSON.stringify / JSON.parse alone (no transport)'],
  ['v8.serialize', 'peer: v8.serialize / v8.deserialize alone (no transport)'],
];
const res = Object.fromEntries(rows.map(([k]) => [k, { send: [], receive: [] }]));
for (let r = 0; r < reps; r++) {
  for (const [k] of rows) {
    const { result } = await trial('codec.mjs', [k, count]);
    res[k].send.push(result.send_ns);
    res[k].receive.push(result.receive_ns);
  }
}
const base = res['JSON.stringify+parse'];
console.log(`# shmkit codec benchmark\n\n${machine()}, ${reps} repetition(s), ${count} messages per trial, one process.\n`);
console.log(table(['codec', 'send ns/msg', 'receive ns/msg', 'JSON.stringify / send', 'JSON.parse / receive'], rows.map(([k, label]) => [label, fmt(res[k].send, 0), fmt(res[k].receive, 0), ratio(median(base.send), median(res[k].send)), ratio(median(base.receive), median(res[k].receive))])));
