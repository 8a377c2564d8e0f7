/**
 * shmkit/nats: topics, RPC services and maps over NATS, behind the Transport interface that the
 * local (shared-memory) transport also implements, and the bridge between the two. Loaded only by
 * `import ... from 'shmkit/nats'`: `shmkit` itself never loads a NATS package. The NATS client
 * packages are optional peer dependencies: npm install @nats-io/transport-node @nats-io/jetstream @nats-io/kv
 */
export { natsTransport, NatsTransport, type NatsTransportOptions, type NatsTransportStats } from './transport';
export { NatsTopic, NatsSubscription, type NatsTopicOptions, ORIGIN_HEADER } from './topic';
export { NatsRpcServer } from './rpc';
export { NatsMap, NatsMapWatch, type NatsMapStats } from './map';
export { escapeKey, unescapeKey } from './names';
export { local, type Transport, type TopicHandle, type TopicSubscription, type MapHandle, type ServiceHandle } from '../transport';
export { bridge, Bridge, type BridgeOptions, type BridgeTopic, type BridgeService, type BridgeMap, type BridgeStats, type BridgeTopicStats, type BridgeServiceStats, type BridgeMapStats } from './bridge';
