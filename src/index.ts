/**
 * shmkit: POSIX shared memory IPC for Node.js.
 *
 * segment -> primitive: a Segment is a named, mapped object; synchronization primitives live in
 * segments, either one per named primitive or at offsets inside a user segment.
 */
export { ErrorCodes, ShmkitError, type ErrorCode, type ErrorDetails } from './errors';
export { Segment, Kind, NAME_PREFIX, MAX_NAME_LENGTH, HEADER_SIZE, type SegmentOptions, type OpenOptions } from './segment';
export type { TrustedOwners } from './trust';
export { Semaphore, type SemaphoreOptions } from './sync/semaphore';
export { Mutex, MutexGuard } from './sync/mutex';
export { RwLock, RwLockGuard } from './sync/rwlock';
export { Condition } from './sync/condition';
export { Barrier, type BarrierOptions } from './sync/barrier';
export type { WaitOptions, AsyncWaitOptions, NamedOptions } from './sync/primitive';
export { NamedSemaphore, type NamedSemaphoreOptions } from './named-semaphore';
export { configure } from './config';
export { asyncWaitStats, type WaitTuning } from './wait';
export { self as processIdentity, processAlive, type ProcessIdentity } from './identity';
export { Channel, type ChannelOptions, type OpenChannelOptions, type ChannelWaitOptions, type ChannelAsyncOptions, type ChannelStats, type ReceivedView, type Loan, type Delivery, type TryReceiveResult } from './channel/channel';
export { Event, type EventOptions, type EventStats } from './event/event';
export { Topic, type TopicOptions, type OpenTopicOptions, type TopicStats, type TopicSubscriberStats, type TopicLoan } from './topic/topic';
export { Subscription, type SubscribeOptions, type TopicView } from './topic/subscription';
export { SharedMap, type SharedMapOptions, type OpenSharedMapOptions, type SetOptions, type DeleteOptions, type IncrementOptions, type MapEntry, type SharedMapStats, type VerifyReport, type MapRecovery, type MapChange, type WatchOptions } from './map/map';
export { WaitSet, WaitSetEntry, type WaitSetKind, type WaitSetSource } from './waitset/waitset';
export { codecs, type Codec, type CodecName } from './codec/codec';
export type { PeerInfo } from './channel/types';
export { ShmStream, type ShmStreamOptions } from './channel/stream';
export { Server, type ServerOptions, type ServerStats } from './server/server';
export { Connection } from './server/connection';
export { connect, type ConnectOptions } from './server/connect';
export { serve, RpcServer, type CallContext, type Handlers, type ServeOptions, type RpcServerStats } from './rpc/serve';
export { rpcClient, type RpcClient, type RpcClientOptions, type RpcClientMethods, type RpcClientStats, type CallOptions, type RpcResult, type ReservedName } from './rpc/client';
export { RemoteError } from './rpc/protocol';
export { local, type Transport, type TopicHandle, type TopicSubscription, type MapHandle, type ServiceHandle, type TransportTopicOptions, type TransportClientOptions } from './transport';
export type { HandlingOptions } from './rpc/handling';
