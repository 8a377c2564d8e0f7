/**
 * NODE_DEBUG=shmkit: what the library does with shared memory (objects created, opened, removed;
 * locks recovered from dead owners; channels closed), one line each on stderr, as Node's own
 * modules do. Costs nothing when off (util.debuglog's check is one call).
 */
import { debuglog } from 'node:util';

export const debug = debuglog('shmkit');
