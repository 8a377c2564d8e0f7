// TCP peer: length-prefixed frames over a loopback connection (127.0.0.1, noDelay).
import { connect } from 'node:net';
import { socketTrial } from './byte-stream.mjs';

export function run() {
  return socketTrial({
    connect: (addr) => connect(Number(addr), '127.0.0.1'),
    listen: (server) => server.listen(0, '127.0.0.1'),
    address: (server) => String(server.address().port),
  });
}
