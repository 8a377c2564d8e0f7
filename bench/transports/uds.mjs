// Unix domain socket peer: length-prefixed frames over a socket in the temporary folder.
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { socketTrial } from './byte-stream.mjs';

export function run() {
  const path = join(tmpdir(), `shmkit-bench-${process.pid}.sock`);
  return socketTrial({
    connect: (addr) => connect(addr),
    listen: (server) => server.listen(path),
    address: () => path,
  });
}
