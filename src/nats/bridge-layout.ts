/**
 * The statistics object of a running bridge (kind BRIDGE), read by `shmkit ls`, `inspect` and
 * `top`: the bridge process's owner token, whether NATS is connected, and counters. One writer
 * (the bridge); tools read it raw. No NATS package is loaded by this file (the CLI imports it).
 * See docs/design.md ("Bridge statistics").
 */

/** Data area bytes. */
export const DATA_SIZE = 256;
/** i64 A: the owner token of the bridge process. */
export const OWNER = 0;
/** u32 A: 1 while NATS is connected. */
export const CONNECTED = 8;
/** u32: routes: topics, services, maps (8 bits each). */
export const ROUTES = 12;
/** f64 P counters. */
export const OUT = 16;
export const IN = 24;
export const DROPPED = 32;
export const BUFFERED = 40;
export const ECHOES = 48;
export const MAP_WRITES = 56;
export const CALLS = 64;
export const DISCONNECTS = 72;
export const RECONNECTS = 80;
export const ERRORS = 88;
