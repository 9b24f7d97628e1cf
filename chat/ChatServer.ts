import type { Server as HttpServer } from 'node:http';
import type { Http2SecureServer } from 'node:http2';
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import { Redis, type RedisOptions } from 'ioredis';
import type { Kysely } from 'kysely';
import { Counter, Gauge, type Registry } from 'prom-client';
import { Server, type Namespace, type Socket } from 'socket.io';
import { TrustedProxies } from '../lib/address.js';
import { randomId } from '../lib/ids.js';
import { ERRORS, OnAirError, type ErrorCode } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import { ChatArchive, LIVE_VIEWER_LAG_MS, type ChatTables, type ReplayComment, type ReplayQuery } from './ChatArchive.js';
import { ReactionCoalescer, type ReactionCounts, type ReactionWindow } from './ReactionCoalescer.js';
import { banActive, SharedState, type ChatBan, type ChatSettings } from './SharedState.js';
import { KeyedBuckets, TokenBucket, type RateLimit } from './TokenBucket.js';
import { addressKey, blockedWordsMatcher, checkBehindMs, checkCommentText, checkName, isRecord, ReactionSet } from './validation.js';

/** The Socket.IO namespace of the chat (SPEC). */
export const CHAT_NAMESPACE = '/chat';
/** Socket.IO's default path: what every client library assumes. */
export const CHAT_PATH = '/socket.io';
/**
 * The largest frame a client may send. A comment is at most 500 characters (≤ 2 KB of UTF-8) and a name 32; anything
 * much larger is not a chat message, and engine.io closes that one connection (nobody else's) when it sees it.
 */
export const MAX_FRAME_BYTES = 16 * 1024;
/** Slow mode, at most (a day). */
export const MAX_SLOW_MODE_SEC = 86_400;

const STREAM_ID = /^[a-z0-9]{12}$/;
const COMMENT_ID_LENGTH = 16;
const BAN_ID_LENGTH = 12;
/** A connection ban outlives its connection by little: the id never comes back. */
const CONNECTION_BAN_MS = 24 * 3600_000;

/** Viewer counts are exchanged through Redis this often; an entry not refreshed for VIEWERS_TTL_MS no longer counts. */
const PRESENCE_INTERVAL_MS = 1000;
const VIEWERS_TTL_MS = 5000;
/** A stream asked about (stats, metrics) keeps its cluster-wide count fresh for this long. */
const WATCH_MS = 30_000;
/** Per-stream settings and bans are re-read from Redis this often (a missed notification heals). */
const ROOM_REFRESH_MS = 10_000;
/** Full address buckets are forgotten this often. */
const SWEEP_MS = 60_000;
/**
 * A connection's entry in its address's count (Redis) lasts this long unless refreshed, which its process does every
 * CONNECTION_REFRESH_MS: the connections of a process that died stop counting within a minute.
 */
const CONNECTION_TTL_MS = 60_000;
const CONNECTION_REFRESH_MS = 20_000;
/** Redis slower than this at a handshake: the connection is let in (fail open), not kept waiting. */
const CONNECTION_COUNT_TIMEOUT_MS = 1000;

const roomOf = (streamId: string): string => `s:${streamId}`;
const streamOf = (room: string): string | undefined => (room.startsWith('s:') ? room.slice(2) : undefined);


/** `comment { id, name, text, at }` as every client in the stream's room receives it. */
export interface ChatComment {
  id: string;
  name: string;
  /** Plain text, never markup: clients must render it as text. */
  text: string;
  /** When the server accepted it, ms since the epoch. */
  at: number;
}

/** `cue { kind, ... }`: sent by the composition root (ad breaks, news flashes). */
export interface ChatCue {
  kind: string;
  [field: string]: unknown;
}

/** `error { code, message }`; rate limits and slow mode add when to try again. */
export interface ChatErrorPayload {
  code: ErrorCode;
  message: string;
  retryAfterMs?: number;
}

export interface ServerToClientEvents {
  comment: (comment: ChatComment) => void;
  reactions: (update: { counts: ReactionCounts; windowMs: number }) => void;
  cue: (cue: ChatCue) => void;
  removed: (removal: { id: string }) => void;
  error: (error: ChatErrorPayload) => void;
}

/** Payloads are whatever a client sent: each handler checks its own. */
interface ClientToServerEvents {
  join: (...args: unknown[]) => void;
  comment: (...args: unknown[]) => void;
  reaction: (...args: unknown[]) => void;
}

type ModerationMessage =
  | { type: 'ban'; streamId: string; ban: ChatBan }
  | { type: 'unban'; streamId: string; banId: string }
  | { type: 'settings'; streamId: string; settings: ChatSettings };

/** Between OnAir processes, through the adapter. */
interface InterServerEvents {
  'onair:reactions': (streamId: string, counts: ReactionCounts) => void;
  'onair:moderation': (message: ModerationMessage) => void;
}

/** Per connection. */
interface ConnectionState {
  /** The rate-limit and ban key of the client's address. */
  address: string;
  /** Authenticated with the admin token: not rate-limited, slow mode and bans do not apply. */
  admin: boolean;
  streamId: string | undefined;
  name: string | undefined;
  lastCommentAt: number | undefined;
  buckets: { comment: TokenBucket | undefined; reaction: TokenBucket | undefined; join: TokenBucket | undefined };
  /** Messages of one connection are handled in order. */
  queue: Promise<void>;
}

type ChatSocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, ConnectionState>;
type ChatNamespace = Namespace<ClientToServerEvents, ServerToClientEvents, InterServerEvents, ConnectionState>;
type Ack = (response: unknown) => void;

export interface ChatLimits {
  /** Comments per connection. */
  comment: RateLimit | undefined;
  /** Comments per client address (all its connections, on this process). */
  addressComment: RateLimit | undefined;
  reaction: RateLimit | undefined;
  addressReaction: RateLimit | undefined;
  /** Joins, and messages that are no chat event at all, per connection. */
  join: RateLimit | undefined;
  /**
   * Connections one client address may hold at once across every OnAir process (counted in Redis; admin connections
   * not counted). Beyond, the handshake is refused: `connect_error` with `data.code` ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS.
   * Without Redis, connections are let in (the chat must keep working) and the failure is logged.
   */
  connectionsPerAddress: number | undefined;
}

export interface ChatServerOptions {
  log: Logger;
  /** ioredis options of the node's Redis: the adapter gets two connections of its own. */
  redis: RedisOptions;
  /** `sharded` needs Redis ≥ 7 (sharded pub/sub: a process receives only its rooms' messages); `auto` picks it when it can. */
  adapter: 'auto' | 'sharded' | 'classic';
  /** The database holding `chat_comments`. */
  db: Kysely<ChatTables>;
  /** The reactions a viewer may send. */
  reactions: readonly string[];
  /** Reactions are coalesced per stream into one update per window this long. */
  reactionWindowMs: number;
  limits: ChatLimits;
  /** Refused in comments and names (case-insensitive, whole words). */
  blockedWords: readonly string[];
  /** Take the client address from the last X-Forwarded-For hop (set when behind one reverse proxy). */
  trustProxy: boolean;
  /** `ONAIR_TRUST_PROXY`: proxies (addresses, CIDR ranges) whose X-Forwarded-For names the client; wins over `trustProxy`. */
  trustedProxies?: readonly string[];
  /** Whether a presented token is the admin token (constant-time). */
  isAdmin(token: string): boolean;
  streamExists(streamId: string): Promise<boolean>;
  /** The stream's live event, if it has one now: comments are kept on its timeline. */
  currentEvent(streamId: string): Promise<{ eventId: string; startedAt: number } | undefined>;
}

/** What a moderator asks for: the author of a comment (by connection or address), or an address. */
export type BanRequest =
  | { commentId: string; scope?: 'connection' | 'address'; durationSec?: number }
  | { address: string; durationSec?: number };

interface RoomState {
  settings: ChatSettings;
  bans: Map<string, ChatBan>;
  loadedAt: number;
  loading: Promise<void> | undefined;
  /** Bumped by every moderation message, so that a load that raced one is done again. */
  version: number;
}

/**
 * The chat: a Socket.IO server on the node's HTTP server, namespace `/chat`, a room per stream, shared between OnAir
 * processes through Redis. Comments are validated, rate-limited, kept in the database with their event's timeline
 * and broadcast; reactions are coalesced per stream and window; moderation (removal, bans, slow mode) is applied on
 * every process.
 */
export class ChatServer {
  readonly nodeId = randomId(12);
  readonly reactions: ReactionSet;
  readonly windowMs: number;
  /** Which Redis adapter carries the rooms between processes. */
  readonly adapterKind: 'sharded' | 'classic';
  readonly #options: ChatServerOptions;
  readonly #log: Logger;
  readonly #pub: Redis;
  readonly #sub: Redis;
  readonly #io: Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, ConnectionState>;
  readonly #nsp: ChatNamespace;
  readonly #archive: ChatArchive;
  readonly #state: SharedState;
  readonly #coalescer: ReactionCoalescer;
  readonly #blocked: (text: string) => boolean;
  readonly #addressBuckets: { comment: KeyedBuckets; reaction: KeyedBuckets };
  readonly #trusted: TrustedProxies;
  readonly #rooms = new Map<string, RoomState>();
  /** Non-admin connections joined per stream, on this process. */
  readonly #local = new Map<string, number>();
  /** The other processes' counts, as of the last exchange. */
  #remote = new Map<string, number>();
  readonly #watched = new Map<string, number>();
  readonly #gone = new Set<string>();
  readonly #admins = new Set<string>();
  /** Connections of this process counted against their address (socket id → address key), refreshed in Redis. */
  readonly #slots = new Map<string, string>();
  #lastSlotRefresh = Date.now();
  /** The connection count in Redis failed last time: logged once per outage. */
  #countFailing = false;
  #metrics: { comments: Counter; reactions: Counter; refused: Counter<'code'> } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;
  #lastSweep = Date.now();
  #closed = false;

  private constructor(options: ChatServerOptions, pub: Redis, sub: Redis, adapterKind: 'sharded' | 'classic') {
    this.#options = options;
    this.#log = options.log;
    this.#pub = pub;
    this.#sub = sub;
    this.adapterKind = adapterKind;
    this.reactions = new ReactionSet(options.reactions);
    this.windowMs = options.reactionWindowMs;
    this.#archive = new ChatArchive(options.db);
    this.#state = new SharedState(pub);
    this.#blocked = blockedWordsMatcher(options.blockedWords);
    this.#trusted = new TrustedProxies(options.trustedProxies ?? []);
    this.#addressBuckets = {
      comment: new KeyedBuckets(options.limits.addressComment),
      reaction: new KeyedBuckets(options.limits.addressReaction),
    };
    this.#coalescer = new ReactionCoalescer(options.reactionWindowMs, (window) => this.#flushReactions(window));
    const adapter = adapterKind === 'sharded'
      ? createShardedAdapter(pub, sub, { channelPrefix: 'onair-chat', subscriptionMode: 'dynamic' })
      : createAdapter(pub, sub, { key: 'onair-chat' });
    this.#io = new Server({
      path: CHAT_PATH,
      serveClient: false,
      maxHttpBufferSize: MAX_FRAME_BYTES,
      adapter,
    });
    // Only /chat exists: the default namespace refuses every connection.
    this.#io.use((_socket, next) => next(connectError('ONAIR_ERR_NOT_FOUND', `no namespace here: connect to ${CHAT_NAMESPACE}`)));
    this.#nsp = this.#io.of(CHAT_NAMESPACE);
    this.#nsp.use((socket, next) => this.#handshake(socket as ChatSocket, next));
    this.#nsp.on('connection', (socket) => this.#onConnection(socket as ChatSocket));
    this.#nsp.on('onair:reactions', (streamId, counts) => this.#onRemoteReactions(streamId, counts));
    this.#nsp.on('onair:moderation', (message) => this.#applyModeration(message));
    this.#nsp.adapter.on('join-room', (room: string, id: string) => this.#presence(room, id, +1));
    this.#nsp.adapter.on('leave-room', (room: string, id: string) => this.#presence(room, id, -1));
  }

  /** Connects to Redis (two connections: publish and subscribe) and builds the server; `attach` puts it on HTTP. */
  static async create(options: ChatServerOptions): Promise<ChatServer> {
    // Publishing while Redis is away fails at once (the message would be stale when it came back); local viewers
    // still get it. Subscriptions queue and are restored on reconnection.
    const pub = new Redis({ ...options.redis, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    const sub = new Redis({ ...options.redis, lazyConnect: true, maxRetriesPerRequest: null });
    // The adapters do not wait on these commands; a rejection (Redis away, connection closed) must not go unhandled.
    quiet(pub, ['publish', 'spublish']);
    quiet(sub, ['subscribe', 'psubscribe', 'ssubscribe', 'unsubscribe', 'punsubscribe', 'sunsubscribe']);
    for (const [client, role] of [[pub, 'publish'], [sub, 'subscribe']] as const) {
      client.on('error', (error: Error) => options.log.debug({ err: error.message, role }, 'chat redis connection error'));
      client.on('ready', () => options.log.debug({ role }, 'chat redis connection ready'));
    }
    try {
      await Promise.all([pub.connect(), sub.connect()]);
      let kind: 'sharded' | 'classic' = options.adapter === 'auto' ? 'classic' : options.adapter;
      if (options.adapter !== 'classic') {
        const major = Number(/redis_version:(\d+)/.exec(await pub.info('server'))?.[1] ?? 0);
        if (major >= 7) kind = 'sharded';
        else if (options.adapter === 'sharded') throw new Error(`the sharded Socket.IO adapter needs Redis ≥ 7; this one is ${major}`);
      }
      options.log.debug({ adapter: kind }, 'chat adapter chosen');
      return new ChatServer(options, pub, sub, kind);
    } catch (error) {
      pub.disconnect();
      sub.disconnect();
      throw error;
    }
  }

  /** Registers the chat's metrics (`onair_chat_*`) on the node's Prometheus registry. */
  registerMetrics(registry: Registry): void {
    const registers = [registry];
    const self = this;
    this.#metrics = {
      comments: new Counter({ name: 'onair_chat_comments_total', help: 'Chat comments accepted by this process.', registers }),
      reactions: new Counter({ name: 'onair_chat_reactions_total', help: 'Chat reactions accepted by this process.', registers }),
      refused: new Counter({ name: 'onair_chat_refused_total', help: 'Chat messages refused by this process, by error code.', labelNames: ['code'], registers }),
    };
    new Gauge({
      name: 'onair_chat_viewers',
      help: 'Chat viewers per stream across every OnAir process (the same figure on each: do not sum over instances).',
      labelNames: ['stream'],
      registers,
      collect() {
        this.reset();
        for (const streamId of new Set([...self.#local.keys(), ...self.#watched.keys()])) this.set({ stream: streamId }, self.#total(streamId));
      },
    });
    new Gauge({
      name: 'onair_chat_connections',
      help: 'Chat connections held by this process.',
      registers,
      collect() {
        this.set(self.#nsp.sockets.size);
      },
    });
  }

  /** Serves Socket.IO (`/socket.io/`) on the node's HTTP server; other requests go on to it. */
  attach(server: HttpServer | Http2SecureServer): void {
    this.#io.attach(server as HttpServer);
    this.#io.engine.on('connection_error', (error: { code: number; message: string }) => {
      this.#log.debug({ code: error.code, err: error.message }, 'chat connection refused by engine.io');
    });
    this.#timer = setInterval(() => void this.#tick(), PRESENCE_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Chat viewers of a stream across all processes (admin connections not counted); fresh within about a second. */
  viewers(streamId: string): number {
    this.#watched.set(streamId, Date.now() + WATCH_MS);
    return this.#total(streamId);
  }

  /** Sends a cue to every viewer of the stream, on every process. */
  sendCue(streamId: string, cue: ChatCue): void {
    this.#nsp.to(roomOf(streamId)).emit('cue', cue);
  }

  async settings(streamId: string): Promise<ChatSettings> {
    return { ...(await this.#room(streamId)).settings };
  }

  async setSettings(streamId: string, settings: ChatSettings): Promise<ChatSettings> {
    const value = { slowModeSec: settings.slowModeSec };
    await unavailableOnError(this.#state.saveSettings(streamId, value));
    this.#moderate({ type: 'settings', streamId, settings: value });
    return { ...value };
  }

  /** Marks the comment removed (it is not replayed) and tells every viewer; false when the stream has no such comment. */
  async removeComment(streamId: string, commentId: string): Promise<boolean> {
    const found = await unavailableOnError(this.#archive.remove(streamId, commentId));
    if (!found) return false;
    this.#nsp.to(roomOf(streamId)).emit('removed', { id: commentId });
    return true;
  }

  /** Bans, on every process; the banned connections get `error { ONAIR_ERR_CHAT_BANNED }` and are disconnected. */
  async ban(streamId: string, request: BanRequest): Promise<ChatBan> {
    const now = Date.now();
    let kind: ChatBan['kind'];
    let target: string;
    if ('commentId' in request) {
      const author = await unavailableOnError(this.#state.author(request.commentId));
      if (!author || author.streamId !== streamId) {
        const exists = await unavailableOnError(this.#archive.exists(streamId, request.commentId));
        throw new OnAirError('ONAIR_ERR_CHAT_COMMENT_NOT_FOUND', exists
          ? 'The author of this comment is no longer known (authors are kept 24 hours)'
          : undefined);
      }
      kind = request.scope ?? 'address';
      target = kind === 'address' ? author.address : author.connectionId;
    } else {
      const key = addressKey(request.address);
      if (key === undefined) throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/address must be an IPv4 or IPv6 address');
      kind = 'address';
      target = key;
    }
    const expiresAt = request.durationSec !== undefined
      ? now + request.durationSec * 1000
      : kind === 'connection' ? now + CONNECTION_BAN_MS : null;
    const ban: ChatBan = { id: randomId(BAN_ID_LENGTH), kind, target, createdAt: now, expiresAt };
    await unavailableOnError(this.#state.addBan(streamId, ban));
    this.#moderate({ type: 'ban', streamId, ban });
    return ban;
  }

  /** The stream's active bans, newest first. */
  async bans(streamId: string): Promise<ChatBan[]> {
    const { bans } = await unavailableOnError(this.#state.load(streamId));
    return bans.sort((a, b) => b.createdAt - a.createdAt);
  }

  async unban(streamId: string, banId: string): Promise<boolean> {
    const removed = await unavailableOnError(this.#state.removeBan(streamId, banId));
    if (removed) this.#moderate({ type: 'unban', streamId, banId });
    return removed;
  }

  /** The kept comments of a live event (a replay), in order, one page. */
  replay(eventId: string, query: ReplayQuery): Promise<{ comments: ReplayComment[]; next: { offsetMs: number; id: string } | undefined }> {
    return this.#archive.replay(eventId, query);
  }

  /** The event became a video: its comments move onto the video's timeline (ChatArchive.placeOnTimeline). */
  placeOnTimeline(eventId: string, spans: readonly { wallMs: number; videoMs: number; durationMs: number }[]): Promise<void> {
    return this.#archive.placeOnTimeline(eventId, spans, LIVE_VIEWER_LAG_MS);
  }

  /** A deleted stream: its viewers are told and leave the room, its comments and chat state are forgotten. */
  async streamDeleted(streamId: string): Promise<void> {
    const room = roomOf(streamId);
    this.#nsp.to(room).emit('error', { code: 'ONAIR_ERR_CHAT_STREAM_NOT_FOUND', message: 'The stream was deleted' });
    this.#nsp.in(room).socketsLeave(room);
    this.#rooms.delete(streamId);
    await this.#archive.deleteStream(streamId);
    await this.#state.deleteStream(streamId).catch((error: unknown) => this.#log.debug({ err: error, streamId }, 'could not forget chat state'));
  }

  /** Disconnects this process's clients and leaves Redis. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#coalescer.close();
    // Freed before the sockets go, in one round trip (their disconnect handlers then find nothing to free).
    const slots = [...this.#slots].map(([id, address]) => [address, this.#slotMember(id)] as const);
    this.#slots.clear();
    if (slots.length > 0) await this.#state.releaseConnections(slots).catch(() => {});
    const namespaces = [...this.#io._nsps.values()];
    for (const nsp of namespaces) nsp.local.disconnectSockets(true);
    await Promise.allSettled(namespaces.map((nsp) => nsp.adapter.close()));
    this.#io.engine?.close();
    const mine = [...this.#local.keys(), ...this.#gone];
    if (mine.length > 0) await this.#state.forgetViewers(this.nodeId, mine).catch(() => {});
    this.#pub.disconnect();
    this.#sub.disconnect();
  }

  #handshake(socket: ChatSocket, next: (error?: Error) => void): void {
    const token = (socket.handshake.auth as Record<string, unknown> | undefined)?.['token'];
    let admin = false;
    if (token !== undefined) {
      if (typeof token !== 'string' || !this.#options.isAdmin(token)) return next(connectError('ONAIR_ERR_FORBIDDEN'));
      admin = true;
    }
    const limits = this.#options.limits;
    socket.data = {
      address: this.#clientAddress(socket),
      admin,
      streamId: undefined,
      name: undefined,
      lastCommentAt: undefined,
      buckets: {
        comment: limits.comment && new TokenBucket(limits.comment),
        reaction: limits.reaction && new TokenBucket(limits.reaction),
        join: limits.join && new TokenBucket(limits.join),
      },
      queue: Promise.resolve(),
    };
    if (admin) this.#admins.add(socket.id);
    const cap = limits.connectionsPerAddress;
    if (admin || cap === undefined) return next();
    void this.#takeSlot(socket.data.address, socket.id, cap).then((taken) => {
      if (!taken) {
        this.#metrics?.refused.inc({ code: 'ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS' });
        this.#log.debug({ address: socket.data.address, cap }, 'chat: connection refused, the address holds its allowance');
        next(connectError('ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS', `${ERRORS.ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS.message} (at most ${cap})`));
        // Its transport goes too, once the refusal is written (engine.io drains before closing): a client that ignores
        // the refusal would otherwise hold it until Socket.IO's connect timeout. A Socket.IO client carries one /chat
        // socket per transport, and /chat is the only namespace, so nothing else rides on it.
        setImmediate(() => socket.conn.close());
        return;
      }
      next();
      // Socket.IO connects (or, if the client left meanwhile, drops) the socket on the next tick: a slot taken for a
      // socket that never connected is freed here, one that did is freed on its disconnect.
      setImmediate(() => {
        if (socket.connected || this.#slots.has(socket.id)) return;
        this.#releaseSlot(socket.data.address, socket.id);
      });
    }).catch((error: unknown) => this.#log.error({ err: error }, 'chat: handshake failed'));
  }

  /** Whether a connection from `address` may take one of its `cap` slots; true (fail open) when Redis cannot say. */
  async #takeSlot(address: string, socketId: string, cap: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const taken = await Promise.race([
        this.#state.acquireConnection(address, this.#slotMember(socketId), cap, CONNECTION_TTL_MS),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${CONNECTION_COUNT_TIMEOUT_MS} ms`)), CONNECTION_COUNT_TIMEOUT_MS);
        }),
      ]);
      if (this.#countFailing) this.#log.info('chat: connections per address are counted again');
      this.#countFailing = false;
      return taken;
    } catch (error) {
      // Redis away or slow: let the viewer in (it is counted once Redis answers again: the refresh writes every
      // connection of this process), and say so once per outage.
      if (!this.#countFailing) {
        this.#log.warn({ err: (error as Error).message }, 'chat: cannot count connections per address in Redis; letting connections in');
      }
      this.#countFailing = true;
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The address's comment bucket across every process (the in-process one, taken first in `#take`, stops a flood
   * cheaply; this one makes N processes allow what one would). Redis away or slow: the in-process bucket alone holds.
   */
  async #takeSharedComment(address: string): Promise<number> {
    const limit = this.#options.limits.addressComment;
    if (limit === undefined) return 0;
    let timer: NodeJS.Timeout | undefined;
    try {
      const wait = await Promise.race([
        this.#state.takeToken('comment', address, limit),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${CONNECTION_COUNT_TIMEOUT_MS} ms`)), CONNECTION_COUNT_TIMEOUT_MS);
        }),
      ]);
      return Number.isFinite(wait) && wait > 0 ? wait : 0;
    } catch (error) {
      this.#log.debug({ err: (error as Error).message }, 'chat: the shared comment limit is not available; the process limit holds');
      return 0;
    } finally {
      clearTimeout(timer);
    }
  }

  #releaseSlot(address: string, socketId: string): void {
    void this.#state.releaseConnections([[address, this.#slotMember(socketId)]])
      .catch((error: unknown) => this.#log.debug({ err: error }, 'chat: could not free a connection slot (it expires)'));
  }

  /** A connection's member in its address's count: unique across processes. */
  #slotMember(socketId: string): string {
    return `${this.nodeId}:${socketId}`;
  }

  #clientAddress(socket: ChatSocket): string {
    if (!this.#trusted.empty) {
      const client = this.#trusted.clientAddress(socket.handshake.address, socket.handshake.headers['x-forwarded-for']);
      return addressKey(client) ?? client;
    }
    if (this.#options.trustProxy) {
      const header = socket.handshake.headers['x-forwarded-for'];
      const hops = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map((hop) => hop.trim()).filter((hop) => hop !== '');
      const last = hops.length > 0 ? addressKey(hops[hops.length - 1]!) : undefined;
      if (last !== undefined) return last;
    }
    return addressKey(socket.handshake.address) ?? socket.handshake.address;
  }

  #onConnection(socket: ChatSocket): void {
    socket.on('join', (...args) => this.#arrive(socket, 'join', args));
    socket.on('comment', (...args) => this.#arrive(socket, 'comment', args));
    socket.on('reaction', (...args) => this.#arrive(socket, 'reaction', args));
    socket.onAny((event: unknown, ...args: unknown[]) => {
      if (event === 'join' || event === 'comment' || event === 'reaction') return;
      this.#arrive(socket, 'unknown', args, String(event).slice(0, 40));
    });
    if (!socket.data.admin && this.#options.limits.connectionsPerAddress !== undefined) this.#slots.set(socket.id, socket.data.address);
    socket.on('disconnect', () => {
      this.#admins.delete(socket.id);
      if (this.#slots.delete(socket.id)) this.#releaseSlot(socket.data.address, socket.id);
    });
  }

  /** Rate limits first (cheap, synchronous: a flood costs almost nothing), then the handler, in order per connection. */
  #arrive(socket: ChatSocket, kind: 'join' | 'comment' | 'reaction' | 'unknown', args: unknown[], event?: string): void {
    const ack = typeof args[args.length - 1] === 'function' ? (args.pop() as Ack) : undefined;
    const payload = args[0];
    const state = socket.data;
    if (!state.admin) {
      const wait = this.#take(kind, state);
      if (wait > 0) {
        this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_RATE_LIMITED', undefined, wait);
        return;
      }
    }
    state.queue = state.queue.then(async () => {
      switch (kind) {
        case 'join': return this.#join(socket, payload, ack);
        case 'comment': return this.#comment(socket, payload, ack);
        case 'reaction': return this.#reaction(socket, payload, ack);
        case 'unknown': return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BAD_PAYLOAD', `unknown event "${event}": the chat takes join, comment and reaction`);
      }
    }).catch((error: unknown) => {
      this.#log.error({ err: error, event: kind }, 'chat handler failed');
      this.#refuse(socket, ack, 'ONAIR_ERR_INTERNAL');
    });
  }

  /** 0 when the message may go on; otherwise the milliseconds until it could. */
  #take(kind: 'join' | 'comment' | 'reaction' | 'unknown', state: ConnectionState): number {
    switch (kind) {
      case 'comment':
        // The connection's bucket first: a flooding connection does not drain its address's bucket for its neighbours.
        return state.buckets.comment?.take() || this.#addressBuckets.comment.take(state.address);
      case 'reaction':
        return state.buckets.reaction?.take() || this.#addressBuckets.reaction.take(state.address);
      default:
        return state.buckets.join?.take() ?? 0;
    }
  }

  #refuse(socket: ChatSocket, ack: Ack | undefined, code: ErrorCode, message?: string, retryAfterMs?: number): void {
    const error: ChatErrorPayload = { code, message: message ?? ERRORS[code].message };
    if (retryAfterMs !== undefined) error.retryAfterMs = retryAfterMs;
    this.#metrics?.refused.inc({ code });
    socket.emit('error', error);
    respond(ack, { ok: false, error });
  }

  async #join(socket: ChatSocket, payload: unknown, ack: Ack | undefined): Promise<void> {
    const state = socket.data;
    if (!isRecord(payload)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BAD_PAYLOAD', 'join takes { streamId, name }');
    const streamId = payload['streamId'];
    if (typeof streamId !== 'string') return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BAD_PAYLOAD', 'join takes { streamId, name } with streamId a string');
    if (!STREAM_ID.test(streamId)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_STREAM_NOT_FOUND');
    const name = checkName(payload['name']);
    if (!name.ok) return this.#refuse(socket, ack, name.code, name.message);
    if (this.#blocked(name.value)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BLOCKED_WORD', 'The name contains a blocked word');
    let exists: boolean;
    try {
      exists = await this.#options.streamExists(streamId);
    } catch (error) {
      this.#log.warn({ err: error, streamId }, 'chat: could not look the stream up');
      return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_UNAVAILABLE');
    }
    if (!exists) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_STREAM_NOT_FOUND');
    const room = await this.#room(streamId);
    if (!state.admin && this.#banned(room, state, socket.id)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BANNED');
    if (!socket.connected) return;
    if (state.streamId !== streamId) {
      if (state.streamId !== undefined) await socket.leave(roomOf(state.streamId));
      await socket.join(roomOf(streamId));
    }
    state.streamId = streamId;
    state.name = name.value;
    respond(ack, {
      ok: true,
      streamId,
      name: name.value,
      slowModeSec: room.settings.slowModeSec,
      reactions: this.reactions.list,
      windowMs: this.windowMs,
    });
  }

  async #comment(socket: ChatSocket, payload: unknown, ack: Ack | undefined): Promise<void> {
    const state = socket.data;
    const streamId = state.streamId;
    const name = state.name;
    if (streamId === undefined || name === undefined) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_NOT_JOINED');
    const room = await this.#room(streamId);
    if (!state.admin && this.#banned(room, state, socket.id)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BANNED');
    if (!isRecord(payload)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BAD_PAYLOAD', 'comment takes { text, behindMs? }');
    const checked = checkCommentText(payload['text']);
    if (!checked.ok) return this.#refuse(socket, ack, checked.code, checked.message);
    const text = checked.value;
    const behind = checkBehindMs(payload['behindMs']);
    if (!behind.ok) return this.#refuse(socket, ack, behind.code, behind.message);
    if (this.#blocked(text)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BLOCKED_WORD');
    const slowMs = room.settings.slowModeSec * 1000;
    if (!state.admin && slowMs > 0 && state.lastCommentAt !== undefined) {
      const wait = state.lastCommentAt + slowMs - Date.now();
      if (wait > 0) {
        return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_SLOW_MODE', `Slow mode is on: one comment per ${room.settings.slowModeSec} s`, wait);
      }
    }
    if (!state.admin) {
      const wait = await this.#takeSharedComment(state.address);
      if (wait > 0) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_RATE_LIMITED', undefined, wait);
    }

    const id = randomId(COMMENT_ID_LENGTH);
    const at = Date.now();
    try {
      const event = await this.#options.currentEvent(streamId);
      await this.#archive.insert({
        id,
        stream_id: streamId,
        event_id: event?.eventId ?? null,
        name,
        text,
        at,
        offset_ms: event ? Math.max(0, at - event.startedAt) : null,
        behind_ms: behind.value ?? null,
        removed: 0,
      });
    } catch (error) {
      this.#log.error({ err: error, streamId }, 'chat: could not keep a comment');
      return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_UNAVAILABLE');
    }
    state.lastCommentAt = at;
    void this.#state.rememberAuthor(id, { streamId, connectionId: socket.id, address: state.address })
      .catch((error: unknown) => this.#log.debug({ err: error }, 'chat: could not remember a comment author'));
    const comment: ChatComment = { id, name, text, at };
    this.#nsp.to(roomOf(streamId)).emit('comment', comment);
    this.#metrics?.comments.inc();
    respond(ack, { ok: true, id, at });
  }

  async #reaction(socket: ChatSocket, payload: unknown, ack: Ack | undefined): Promise<void> {
    const state = socket.data;
    const streamId = state.streamId;
    if (streamId === undefined) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_NOT_JOINED');
    const room = this.#rooms.get(streamId) ?? await this.#room(streamId);
    if (!state.admin && this.#banned(room, state, socket.id)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BANNED');
    if (!isRecord(payload)) return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_BAD_PAYLOAD', 'reaction takes { emoji }');
    const emoji = this.reactions.resolve(payload['emoji']);
    if (emoji === undefined) {
      return this.#refuse(socket, ack, 'ONAIR_ERR_CHAT_REACTION_INVALID', `Not one of this server's reactions: ${this.reactions.list.join(' ')}`);
    }
    this.#coalescer.add(streamId, emoji, 1, true);
    this.#metrics?.reactions.inc();
    respond(ack, { ok: true });
  }

  /** One window of a stream closed: forward this process's own reactions to the others, show everything locally. */
  #flushReactions(window: ReactionWindow): void {
    if (this.#closed) return;
    if (Object.keys(window.own).length > 0) this.#nsp.serverSideEmit('onair:reactions', window.streamId, window.own);
    const room = roomOf(window.streamId);
    if (this.#nsp.adapter.rooms.has(room)) this.#nsp.local.to(room).emit('reactions', { counts: window.counts, windowMs: this.windowMs });
  }

  #onRemoteReactions(streamId: unknown, counts: unknown): void {
    if (typeof streamId !== 'string' || !isRecord(counts) || !this.#nsp.adapter.rooms.has(roomOf(streamId))) return;
    for (const [emoji, count] of Object.entries(counts)) {
      if (Number.isSafeInteger(count) && (count as number) > 0 && this.reactions.resolve(emoji) === emoji) {
        this.#coalescer.add(streamId, emoji, count as number, false);
      }
    }
  }

  /** Settings and bans of a stream, from the cache; loaded from Redis the first time (defaults when it is away). */
  async #room(streamId: string): Promise<RoomState> {
    let room = this.#rooms.get(streamId);
    if (!room) {
      room = { settings: { slowModeSec: 0 }, bans: new Map(), loadedAt: 0, loading: undefined, version: 0 };
      this.#rooms.set(streamId, room);
    }
    if (room.loadedAt === 0 || Date.now() - room.loadedAt > ROOM_REFRESH_MS) {
      const loading = this.#load(streamId, room);
      if (room.loadedAt === 0) await loading;
    }
    return room;
  }

  #load(streamId: string, room: RoomState): Promise<void> {
    room.loading ??= (async () => {
      try {
        for (let attempt = 0; attempt < 3; attempt++) {
          const version = room.version;
          const { settings, bans } = await this.#state.load(streamId);
          if (room.version !== version) continue;
          room.settings = settings;
          room.bans = new Map(bans.map((ban) => [ban.id, ban]));
          break;
        }
        room.loadedAt = Date.now();
      } catch (error) {
        // Redis away: keep what we have, try again soon.
        this.#log.debug({ err: error, streamId }, 'chat: could not load the stream\'s chat state');
        room.loadedAt = Date.now() - ROOM_REFRESH_MS + PRESENCE_INTERVAL_MS;
      } finally {
        room.loading = undefined;
      }
    })();
    return room.loading;
  }

  #banned(room: RoomState, state: ConnectionState, connectionId: string): boolean {
    const now = Date.now();
    for (const ban of room.bans.values()) {
      if (!banActive(ban, now)) continue;
      if (ban.kind === 'address' ? ban.target === state.address : ban.target === connectionId) return true;
    }
    return false;
  }

  /** Applies a moderation change here and sends it to the other processes. */
  #moderate(message: ModerationMessage): void {
    this.#nsp.serverSideEmit('onair:moderation', message);
    this.#applyModeration(message);
  }

  #applyModeration(message: ModerationMessage): void {
    if (!isRecord(message) || typeof message.streamId !== 'string') return;
    const room = this.#rooms.get(message.streamId);
    if (room) room.version++;
    switch (message.type) {
      case 'ban':
        room?.bans.set(message.ban.id, message.ban);
        this.#enforce(message.streamId, message.ban);
        break;
      case 'unban':
        room?.bans.delete(message.banId);
        break;
      case 'settings':
        if (room) room.settings = { slowModeSec: message.settings.slowModeSec };
        break;
    }
  }

  /** Disconnects this process's connections that a new ban covers. */
  #enforce(streamId: string, ban: ChatBan): void {
    const ids = ban.kind === 'connection' ? [ban.target] : [...(this.#nsp.adapter.rooms.get(roomOf(streamId)) ?? [])];
    for (const id of ids) {
      const socket = this.#nsp.sockets.get(id);
      if (!socket || socket.data.admin || socket.data.streamId !== streamId) continue;
      if (ban.kind === 'address' && socket.data.address !== ban.target) continue;
      this.#refuse(socket, undefined, 'ONAIR_ERR_CHAT_BANNED');
      socket.disconnect(true);
    }
  }

  #presence(room: string, id: string, delta: 1 | -1): void {
    const streamId = streamOf(room);
    if (streamId === undefined) return;
    if (delta < 0) {
      const socket = this.#nsp.sockets.get(id);
      if (socket && socket.data.streamId === streamId) socket.data.streamId = undefined;
    }
    if (this.#admins.has(id)) return;
    const count = (this.#local.get(streamId) ?? 0) + delta;
    if (count > 0) {
      this.#local.set(streamId, count);
      this.#gone.delete(streamId);
    } else {
      this.#local.delete(streamId);
      this.#gone.add(streamId);
    }
  }

  #total(streamId: string): number {
    return (this.#local.get(streamId) ?? 0) + (this.#remote.get(streamId) ?? 0);
  }

  /** Once a second: exchange viewer counts; now and then refresh room state and forget idle buckets and rooms. */
  async #tick(): Promise<void> {
    if (this.#ticking || this.#closed) return;
    this.#ticking = true;
    try {
      const now = Date.now();
      for (const [streamId, until] of this.#watched) if (until < now) this.#watched.delete(streamId);
      const gone = [...this.#gone];
      const watched = new Set([...this.#local.keys(), ...this.#watched.keys()]);
      try {
        this.#remote = await this.#state.exchangeViewers(this.nodeId, this.#local, gone, watched, VIEWERS_TTL_MS);
        for (const streamId of gone) if (!this.#local.has(streamId)) this.#gone.delete(streamId);
      } catch (error) {
        this.#log.debug({ err: error }, 'chat: could not exchange viewer counts');
      }
      for (const [streamId, room] of this.#rooms) {
        if (!this.#local.has(streamId) && !this.#nsp.adapter.rooms.has(roomOf(streamId))) {
          if (now - room.loadedAt > ROOM_REFRESH_MS) this.#rooms.delete(streamId);
        } else if (now - room.loadedAt > ROOM_REFRESH_MS) {
          void this.#load(streamId, room);
        }
      }
      if (now - this.#lastSlotRefresh > CONNECTION_REFRESH_MS) {
        this.#lastSlotRefresh = now;
        const byAddress = new Map<string, string[]>();
        for (const [id, address] of this.#slots) {
          const members = byAddress.get(address) ?? [];
          if (members.length === 0) byAddress.set(address, members);
          members.push(this.#slotMember(id));
        }
        await this.#state.refreshConnections(byAddress, CONNECTION_TTL_MS)
          .catch((error: unknown) => this.#log.debug({ err: error }, 'chat: could not refresh the connection counts'));
      }
      if (now - this.#lastSweep > SWEEP_MS) {
        this.#lastSweep = now;
        this.#addressBuckets.comment.sweep();
        this.#addressBuckets.reaction.sweep();
      }
    } finally {
      this.#ticking = false;
    }
  }
}

/** A refused Socket.IO connection: the client's `connect_error` carries `data: { code, message }`. */
function connectError(code: ErrorCode, message: string = ERRORS[code].message): Error {
  return Object.assign(new Error(message), { data: { code, message } });
}

function respond(ack: Ack | undefined, response: unknown): void {
  if (!ack) return;
  try {
    ack(response);
  } catch {
    // The client's acknowledgement is its own business.
  }
}

/** Redis or the database failed under a moderation call: a 503 the caller can retry. */
async function unavailableOnError<T>(promise: Promise<T>): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof OnAirError) throw error;
    throw new OnAirError('ONAIR_ERR_CHAT_UNAVAILABLE', `${ERRORS.ONAIR_ERR_CHAT_UNAVAILABLE.message} (${(error as Error).message})`);
  }
}

/** Wraps the named commands so that their promises always have a handler (callers that await still see errors). */
function quiet(client: Redis, commands: string[]): void {
  const target = client as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const command of commands) {
    const original = target[command];
    if (typeof original !== 'function') continue;
    target[command] = function (this: unknown, ...args: unknown[]) {
      const result = original.apply(client, args);
      if (result instanceof Promise) result.catch(() => {});
      return result;
    };
  }
}
