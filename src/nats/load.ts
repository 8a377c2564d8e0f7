/**
 * The NATS client packages, loaded when shmkit/nats first needs them (and never by `shmkit`
 * itself). They are optional peer dependencies: a missing one is ERR_SHMKIT_UNSUPPORTED with the
 * command that installs them.
 */
import type * as Core from '@nats-io/transport-node';
import type * as JetStream from '@nats-io/jetstream';
import type * as Kv from '@nats-io/kv';
import { ErrorCodes, ShmkitError } from '../errors';

export interface NatsModules {
  core: typeof Core;
  jetstream: typeof JetStream;
  kv: typeof Kv;
}

let loaded: NatsModules | null = null;

const PACKAGES = ['@nats-io/transport-node', '@nats-io/jetstream', '@nats-io/kv'];

export function nats(): NatsModules {
  if (loaded !== null) return loaded;
  try {
    loaded = {
      core: require('@nats-io/transport-node') as typeof Core,
      jetstream: require('@nats-io/jetstream') as typeof JetStream,
      kv: require('@nats-io/kv') as typeof Kv,
    };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    throw new ShmkitError(ErrorCodes.UNSUPPORTED, `shmkit/nats needs the NATS client packages: npm install ${PACKAGES.join(' ')}`, { cause: err });
  }
  return loaded;
}
