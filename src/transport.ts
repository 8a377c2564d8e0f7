/**
 * Transports: one API for the patterns that make sense across a network (topics, RPC services and
 * maps), whatever carries them. `local` carries them in shared memory on this machine; the NATS
 * transport of `shmkit/nats` (natsTransport()) over a NATS cluster. Code written against a
 * Transport runs on either, unchanged: the application picks one at start-up.
 *
 * The handles a transport gives are the local classes themselves (Topic, Subscription, SharedMap,
 * RpcServer, the RPC client) or their NATS counterparts, which share these interfaces. Where the
 * two differ (a NATS map's writes return promises, a local one's return values at once), the
 * interface allows both: `await` the result and the code runs on either. docs/scaling-out.md
 * states every difference.
 */
import type { RpcClient } from './rpc/calls';
import type { Handlers, HandlingOptions } from './rpc/handling';
import { Topic, type TopicOptions } from './topic/topic';
import { SharedMap, type DeleteOptions, type IncrementOptions, type MapChange, type MapEntry, type SetOptions, type SharedMapOptions, type WatchOptions } from './map/map';
import { serve } from './rpc/serve';
import { rpcClient, type RpcClientOptions } from './rpc/client';

/** A subscription to a topic, on any transport. */
export interface TopicSubscription<T> extends AsyncIterable<T> {
  /** The next message; rejects with ERR_SHMKIT_TIMEOUT, ABORT_ERR, or ERR_SHMKIT_CLOSED once closed. */
  receive(options?: { timeout?: number; signal?: AbortSignal }): Promise<T>;
  /** The next message if one is there, else undefined. */
  tryReceive(): T | undefined;
  /** Messages this subscription missed (overwritten, or dropped by its transport). */
  readonly lost: number;
  readonly closed: boolean;
  close(): void;
}

/** A topic, on any transport. */
export interface TopicHandle<T> {
  readonly name: string;
  /** Publishes to every subscriber; resolves with the message's sequence number. */
  publish(value: T, options?: { timeout?: number; signal?: AbortSignal }): Promise<number>;
  subscribe(options?: { from?: 'now' }): TopicSubscription<T>;
  close(): void;
}

/** A key-value map, on any transport. Writes may return a promise (NATS) or a value (local): await them. */
export interface MapHandle<T> {
  readonly name: string;
  get(key: string): T | undefined;
  getEntry(key: string): MapEntry<T> | undefined;
  has(key: string): boolean;
  readonly size: number;
  keys(prefix?: string): IterableIterator<string>;
  entries(prefix?: string): IterableIterator<[string, T]>;
  set(key: string, value: T, options?: SetOptions): number | Promise<number>;
  delete(key: string, options?: DeleteOptions): boolean | Promise<boolean>;
  increment(key: string, by?: number, options?: IncrementOptions): number | Promise<number>;
  clear(): number | Promise<number>;
  watch(key?: string, options?: WatchOptions): AsyncIterableIterator<MapChange<T>>;
  close(): void;
}

/** A running RPC service, on any transport. */
export interface ServiceHandle {
  readonly name: string;
  /** Stops taking calls; running calls finish. */
  close(): Promise<void>;
}

/** Options of a topic on any transport (over NATS, `codec` and `maxMessageSize` are used; see NatsTopicOptions). */
export type TransportTopicOptions<T = unknown> = TopicOptions<T>;

/** Options of a client (the NATS transport uses codec, timeout and window; the others are local). */
export type TransportClientOptions = RpcClientOptions;

/** What carries topics, RPC and maps: `local` or a NATS transport (shmkit/nats). */
export interface Transport {
  /** 'local' or 'nats'. */
  readonly kind: 'local' | 'nats';
  /** Opens the topic, creating it if needed. */
  topic<T = Buffer>(name: string, options?: TransportTopicOptions<T>): Promise<TopicHandle<T>>;
  /** Opens the map, creating it if needed. */
  map<T = unknown>(name: string, options?: SharedMapOptions<T>): Promise<MapHandle<T>>;
  /** Serves `handlers` under `name` (several servers of one name share its calls). */
  serve<I extends object = Record<string, (...args: any[]) => any>>(name: string, handlers: Handlers<I>, options?: HandlingOptions): Promise<ServiceHandle>;
  /** A client of the service `name`. */
  rpcClient<I extends object = Record<string, (...args: any[]) => any>>(name: string, options?: TransportClientOptions): Promise<RpcClient<I>>;
  /** Closes what the transport holds (a NATS connection); the local transport holds nothing. */
  close(): Promise<void>;
}

/** The shared-memory transport: the local classes (Topic, SharedMap, serve, rpcClient) behind the Transport interface. */
export const local: Transport = Object.freeze({
  kind: 'local' as const,
  topic: async <T>(name: string, options?: TransportTopicOptions<T>): Promise<TopicHandle<T>> => Topic.openOrCreate<T>(name, options),
  map: async <T>(name: string, options?: SharedMapOptions<T>): Promise<MapHandle<T>> => SharedMap.openOrCreate<T>(name, options),
  serve: async <I extends object>(name: string, handlers: Handlers<I>, options?: HandlingOptions): Promise<ServiceHandle> => serve<I>(name, handlers, options),
  rpcClient: <I extends object>(name: string, options?: TransportClientOptions): Promise<RpcClient<I>> => rpcClient<I>(name, options),
  close: async (): Promise<void> => {},
});
