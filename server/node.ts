import { mkdir, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TypedEmitter } from '../lib/emitter.js';
import type { Logger } from '../lib/log.js';
import { registerWhipRoutes, RtmpIngest, RTMP_APP, SrtIngest, srtPassphrase, WhipIngest } from '../ingest/index.js';
import { chooseEncoder, LoadGovernor, type EncoderChoice, type LiveTranscoder } from '../live-transcoder/index.js';
import { EdgeRelay, registerEdgeLiveRoutes, registerLiveRoutes, type StreamPackager } from '../ll-hls-packager/index.js';
import { signPlaybackToken } from '../lib/signing.js';
import { registerWhepRoutes, type WebRtcEdge } from '../webrtc-edge/index.js';
import { registerChatRoutes, type ChatServer } from '../chat/index.js';
import { registerUploadRoutes, registerVodRoutes, type VodArchive } from '../vod-archive/index.js';
import { loadAdminToken } from './adminToken.js';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db.js';
import { TrustedProxies } from '../lib/address.js';
import { buildHttpServer, inFlightRoutes } from './http.js';
import { Metrics } from './metrics.js';
import { registerWebRoutes } from './web.js';
import { registerCueRoutes } from '../cues/index.js';
import { redisOptionsFromUrl, startEmbeddedRedis, type EmbeddedRedis } from './redis.js';
import { StreamStore } from './streams.js';
import { LiveCues } from '../cues/index.js';
import { LiveEvents, type LiveEventsEvents } from './LiveEvents.js';
import { Audience } from './Audience.js';
import { CloseSteps } from './closeSteps.js';
import { QualityReports, registerQoeRoutes } from './Qoe.js';
import { registerWebhookRoutes, type Webhooks } from './Webhooks.js';
import { checkReady } from './ready.js';
import { startChat, startEdge, startVodArchive, startWebhooks, videoFinished, type EdgeWiring } from './rooms.js';
import { liveSamples, streamsApi, type ViewSources } from './views.js';
import { StreamDirectory } from './discovery.js';
import { RemoteStats } from './remoteStats.js';
import { EventHandovers } from './handover.js';

/**
 * close() ends within this, whatever state children and dependencies are in: each step has its own deadline (below)
 * and a step that runs out is logged and left behind. main.ts force-exits shortly after, in case even that hangs.
 */
export const CLOSE_TIMEOUT_MS = 10_000;
/** Kept at the end of close() for the embedded redis-server to flush its append-only file (then it is killed). */
const CLOSE_REDIS_RESERVE_MS = 2_000;
/** The longest any one step of close() may take (within what is left of CLOSE_TIMEOUT_MS). */
/** How long requests in flight get to finish at close before their connections are cut (within the `http` step). */
const HTTP_DRAIN_MS = 1_000;
const CLOSE_STEP_MS = { chat: 2_000, http: 2_000, audience: 1_000, webhooks: 2_000, ingest: 1_000, endings: 8_000, transcoders: 3_000, vod: 2_000, discovery: 1_000, edge: 2_000, database: 2_000 } as const;

/** A hand-over record outlives its last write by this plus the reconnect grace (the discovery lease, and a margin). */
const HANDOVER_LEASE_MS = 15_000;

/** The node's events: those of its live events (server/LiveEvents.ts). */
export type OnAirNodeEvents = LiveEventsEvents;

/** Parts of a node given as code, not configuration (issue #17: where a WebRTC edge finds a stream's origin). */
export type NodeWiring = EdgeWiring;

/**
 * The composition root: reads config, builds the rooms, wires their events and listens. Only this file knows all of
 * them; rooms talk to each other through the events wired here. The live events (one per stream on air) are
 * LiveEvents' (server/LiveEvents.ts), their cues LiveCues' (server/liveCues.ts).
 */
export class OnAirNode extends TypedEmitter<OnAirNodeEvents> {
  readonly config: Config;
  readonly log: Logger;
  readonly adminToken: string;
  readonly encoder: EncoderChoice;
  readonly streams: StreamStore;
  readonly #database: Database;
  readonly #redis: Redis;
  readonly #embeddedRedis: EmbeddedRedis | undefined;
  readonly #ingest: RtmpIngest;
  /** WHIP publishers (issue #20), into the same ingest; needs the WebRTC edge. */
  readonly #whip: WhipIngest;
  /** SRT publishers (issue #20, ONAIR_SRT_PORT), into the same ingest; undefined while off and on edges. */
  readonly #srt: SrtIngest | undefined;
  readonly #governor: LoadGovernor;
  readonly #http: FastifyInstance;
  readonly #metrics: Metrics;
  readonly #chat: ChatServer;
  readonly #audience: Audience;
  readonly #webhooks: Webhooks;
  readonly #vod: VodArchive;
  readonly #events: LiveEvents;
  readonly #cues: LiveCues;
  /** The WebRTC edge; undefined when WebRTC is off (ONAIR_WEBRTC_LAYERS=off) or mediasoup could not start. */
  readonly #edge: WebRtcEdge | undefined;
  /** Discovery (server/discovery.ts): origins register their live streams here, edges look them up. */
  readonly discovery: StreamDirectory;
  /** The LL-HLS relay of an edge (ONAIR_ROLE=edge); undefined on other roles. */
  readonly #relay: EdgeRelay | undefined;
  #httpPort = 0;
  #rtmpPort = 0;
  #rtmpsPort = 0;
  #srtPort = 0;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(parts: {
    config: Config; log: Logger; adminToken: string; encoder: EncoderChoice; database: Database;
    redis: Redis; embeddedRedis: EmbeddedRedis | undefined; tls: { cert: Buffer; key: Buffer } | undefined;
    edge: WebRtcEdge | undefined; chat: ChatServer; vod: VodArchive; webhooks: Webhooks;
  }) {
    super();
    const { config, log } = parts;
    this.config = config;
    this.log = log;
    this.adminToken = parts.adminToken;
    this.encoder = parts.encoder;
    this.#database = parts.database;
    this.streams = new StreamStore(parts.database);
    this.#redis = parts.redis;
    this.#embeddedRedis = parts.embeddedRedis;
    this.#edge = parts.edge;
    this.#chat = parts.chat;
    this.#vod = parts.vod;
    this.#webhooks = parts.webhooks;
    const edge = this.#edge;
    this.#cues = new LiveCues({
      config,
      encoder: this.encoder.kind,
      vod: this.#vod,
      log,
      live: (id) => this.#events.get(id),
      lives: () => this.#events.values(),
      streamExists: async (id) => (await this.streams.get(id)) !== undefined,
      sendCue: (id, cue) => this.#chat.sendCue(id, cue),
    });
    this.#metrics = new Metrics(() => liveSamples(this.#events.values()), edge ? () => edge.sentBytes() : undefined);
    this.#governor = new LoadGovernor({
      policy: config.ladderPolicy,
      recoverAfterMs: config.ladderRecoverMs,
      log: log.child({ component: 'load' }),
    });
    this.#events = new LiveEvents({
      config,
      encoder: this.encoder.kind,
      log,
      streams: this.streams,
      vod: this.#vod,
      edge,
      governor: this.#governor,
      transcoderRestarted: (streamId) => this.#metrics.transcoderRestarts.inc({ stream: streamId }),
      partPublished: (delayMs) => this.#metrics.partDelay.observe(delayMs / 1000),
      placeComments: (eventId, timeline) => this.#chat.placeOnTimeline(eventId, timeline),
      planChanged: (event, plan) => this.#cues.planChanged(event, plan),
      // Another origin holds it (its registration names another internal URL): its `live` is not ours to end. Only
      // on a shared Redis: an embedded one is this node's alone (what it holds after a crash is this node's own).
      ...(config.redisUrl === undefined ? {} : {
        heldElsewhere: async (streamId: string) => {
          const at = await this.discovery.lookup(streamId, { fresh: true });
          return at !== undefined && at.internalUrl !== this.#ownInternalUrl();
        },
      }),
      // A publisher that moves to another origin continues the event there (#17): only on a shared Redis, on origins.
      ...(config.redisUrl === undefined || config.role === 'edge' ? {} : {
        handover: {
          records: new EventHandovers({ redis: parts.redis, log: log.child({ component: 'handover' }), ttlMs: HANDOVER_LEASE_MS + config.reconnectGraceMs }),
          origin: () => this.internalUrl,
        },
      }),
    });
    this.#events.on('live', (live) => this.safeEmit('live', live));
    this.#events.on('ended', (ended) => this.safeEmit('ended', ended));
    // Who watches (#19): every protocol, counted on every node and summed in Redis; kept with the event at its end.
    this.#audience = new Audience({
      redis: this.#redis,
      nodeId: this.#chat.nodeId,
      log: log.child({ component: 'audience' }),
      webrtcViewers: (id) => edge?.viewers(id) ?? 0,
      addViews: (views) => this.#vod.catalog.addViews(views),
    });
    const audience = this.#audience;
    this.#events.on('live', ({ streamId, eventId, continued }) => {
      // A new event (not one continued from another origin): the outside world is told.
      if (!continued) void this.#webhooks.emit('stream.live', { streamId, eventId, startedAt: new Date().toISOString(), watchPage: `${this.publicUrl}/watch/${streamId}` });
      if (continued) audience.own(streamId);
      else void audience.begin(streamId).catch((error: unknown) => log.warn({ err: error, streamId }, 'audience: the new event\'s counts could not be reset (Redis)'));
    });
    this.#events.on('takenBack', ({ streamId }) => audience.own(streamId));
    this.#events.on('handedOver', ({ streamId }) => void audience.end(streamId));
    this.#events.on('ended', ({ streamId, eventId }) => void this.#keepAudience(streamId, eventId));
    if (config.audience) edge?.on('viewer', (streamId, sessionId) => audience.webrtcJoined(streamId, sessionId));
    // Scale-out (#17): an origin registers the streams it holds; an edge relays them from there.
    this.discovery = new StreamDirectory({ redis: this.#redis, log: log.child({ component: 'discovery' }) });
    if (config.role !== 'edge') {
      this.#events.on('live', ({ streamId, eventId }) => void this.discovery.register(streamId, { internalUrl: this.internalUrl, eventId, since: Date.now() }));
      this.#events.on('ended', ({ streamId }) => void this.discovery.unregister(streamId));
      this.#events.on('handedOver', ({ streamId }) => void this.discovery.unregister(streamId));
      this.#events.on('takenBack', ({ streamId, eventId }) => void this.discovery.register(streamId, { internalUrl: this.internalUrl, eventId, since: Date.now() }));
    }
    this.#relay = config.role === 'edge'
      ? new EdgeRelay({ locate: (id) => this.discovery.lookup(id), playbackSigningKey: config.playbackSigningKey, log: log.child({ component: 'edge-relay' }) })
      : undefined;
    const relay = this.#relay;
    this.#events.on('archived', (archived) => this.safeEmit('archived', archived));
    this.#governor.on('change', ({ direction }) => this.#metrics.ladderChanges.inc({ direction }));
    if (this.#embeddedRedis) {
      const restarts = this.#metrics.childRestarts;
      restarts.inc({ child: 'redis' }, 0);
      this.#embeddedRedis.supervisor.on('restart', () => restarts.inc({ child: 'redis' }));
    }
    this.#chat.registerMetrics(this.#metrics.registry);
    this.#vod.registerMetrics(this.#metrics.registry);
    this.#cues.ads.registerMetrics(this.#metrics.registry);
    this.#metrics.gauge('onair_recordings_disk_full', 'Live recordings waiting for disk space (their segments are left out until a write succeeds).', () => this.#events.recordingsDiskFull());
    this.#metrics.gauge('onair_capacity_spare_streams', 'More full-ladder streams this node can take, measured (NaN until a full ladder has run here 5 s; 0 while a stream is behind or degraded).', () => this.#governor.capacity().spareStreams ?? NaN);
    this.#metrics.gauge('onair_capacity_stream_cores', 'CPU cores one full-ladder stream takes on this node, measured from the running streams (NaN until known).', () => this.#governor.capacity().streamCores ?? NaN);
    this.#metrics.gauge('onair_llhls_sessions', 'LL-HLS playback sessions watching through this node (asked for a media playlist within 15 s).', () => audience.localLlhlsSessions);
    this.#metrics.gauge('onair_event_endings_waiting', 'Ended live events whose end (database update, replay, archive job) waits for a dependency to come back.', () => this.#events.endingsWaiting);
    if (edge) {
      this.#metrics.childRestarts.inc({ child: 'mediasoup' }, 0); // the series exists from the start, for alerts on its rate
      edge.on('restart', () => this.#metrics.childRestarts.inc({ child: 'mediasoup' }));
      this.#metrics.gauge('onair_webrtc_sessions', 'WHEP viewer sessions on this node, every stream (sum over nodes for all WebRTC viewers).', () => edge.sessionCount);
      this.#metrics.gauge('onair_webrtc_pipes', 'Pipes this node feeds to WebRTC edges (one per stream per edge; issue #17).', () => edge.pipeCount);
      this.#metrics.gauge('onair_webrtc_pulled_streams', 'Streams this WebRTC edge pulls from their origins over a pipe.', () => edge.pulledCount);
    }
    this.#ingest = new RtmpIngest({
      host: config.host,
      port: config.rtmpPort,
      reconnectGraceMs: config.reconnectGraceMs,
      limits: config.limits.rtmp,
      ...(config.rtmpsPort !== undefined && config.tls ? { tls: { port: config.rtmpsPort, ...config.tls } } : {}),
      log: log.child({ component: 'ingest' }),
      authorize: async (streamKey) => {
        const stream = await this.streams.verifyKey(streamKey);
        return stream ? { ok: true, streamId: stream.id } : { ok: false, reason: 'bad-key' };
      },
      admit: ({ live }) => {
        const max = config.maxStreams;
        if (max > 0 && live >= max) return `${live} live streams, ONAIR_MAX_STREAMS=${max}`;
        return this.#governor.refusal();
      },
    });
    this.#wireIngest();
    this.#whip = new WhipIngest({
      ingest: this.#ingest,
      place: () => this.#edge,
      ffmpegPath: config.ffmpegPath,
      log: log.child({ component: 'whip' }),
      onBridgeRestart: () => this.#metrics.childRestarts.inc({ child: 'whip-bridge' }),
      passthrough: config.whipPassthrough,
    });
    this.#srt = config.srt && config.role !== 'edge' ? new SrtIngest({
      ingest: this.#ingest,
      host: config.host,
      port: config.srt.port,
      latencyMs: config.srt.latencyMs,
      maxConnections: config.limits.srt.maxConnections,
      ffmpegPath: config.ffmpegPath,
      credentials: () => this.streams.keyHashes(65_536),
      secret: this.adminToken,
      log: log.child({ component: 'srt' }),
    }) : undefined;
    for (const [name, key, help] of [
      ['onair_srt_packets_received', 'received', 'SRT packets received'],
      ['onair_srt_packets_lost', 'lost', 'SRT packets lost on the way (and asked for again)'],
      ['onair_srt_packets_dropped', 'dropped', 'SRT packets that came too late to play (a glitch a viewer sees)'],
    ] as const) {
      this.#metrics.gauge(name, `${help}: counts since start, the open connections' as of the last second included (issue #20).`, () => this.#srt?.totals[key] ?? 0);
    }
    this.#metrics.gauge('onair_srt_connections', 'SRT publishers connected to this node (issue #20; 0 while ONAIR_SRT_PORT is unset).', () => this.#srt?.connections ?? 0);
    this.#metrics.gauge('onair_whip_publishers', 'WHIP publishers connected to this node (issue #20); RTMP ones are not counted here.', () => this.#whip.count);
    const remoteStats = new RemoteStats({ locate: (id) => this.discovery.lookup(id), self: () => this.#ownInternalUrl(), log: log.child({ component: 'remote-stats' }) });
    const views: ViewSources = {
      publicUrl: () => this.publicUrl,
      rtmpUrl: () => this.rtmpUrl,
      rtmpsUrl: () => this.rtmpsUrl,
      whip: () => this.#edge !== undefined && config.role !== 'edge',
      srtUrl: (id: string) => this.srtUrl(id),
      srtPassphrase: async (id: string) => {
        if (!this.#srt) return undefined;
        const [row] = await this.streams.keyHashes(1, id);
        return row && srtPassphrase(this.adminToken, row.id, row.keyHash);
      },
      playbackSigningKey: config.playbackSigningKey,
      playbackTokenTtlSec: config.playbackTokenTtlSec,
      live: (id) => this.#events.get(id),
      endWaiting: (id) => this.#events.endWaiting(id),
      latestVideo: (id) => this.#vod.catalog.latestOfStream(id),
      edge,
      chatViewers: (id) => this.#chat.viewers(id),
      ...(config.audience ? { audience: (id: string) => audience.counts(id) } : {}),
      lastEndedEvent: (id) => this.streams.lastEndedEvent(id),
      // A stream live on another node: its stats come from that origin (shared Redis only: discovery).
      ...(config.redisUrl === undefined ? {} : {
        remoteStats: (id: string) => remoteStats.get(id),
      }),
    };
    this.#http = buildHttpServer({
      log,
      tls: parts.tls,
      adminToken: this.adminToken,
      metrics: this.#metrics,
      redis: this.#redis,
      limits: config.limits.http,
      trustProxy: new TrustedProxies(config.trustProxy),
      plugins: [
        registerWebRoutes,
        (app) => (relay
          ? registerEdgeLiveRoutes(app, {
            relay, playbackSigningKey: config.playbackSigningKey, limits: config.limits.llhls, registry: this.#metrics.registry,
            ...(config.audience ? { onPlaylist: (id: string, request: FastifyRequest) => { if (!app.isAdmin(request)) audience.llhls(id, request.headers, request.ip); } } : {}),
          })
          : registerLiveRoutes(app, {
            packager: (id) => this.#events.packager(id),
            playbackSigningKey: config.playbackSigningKey,
            limits: config.limits.llhls,
            registry: this.#metrics.registry,
            // The studio's preview (the admin token) is the broadcaster, not a viewer.
            ...(config.audience ? { onPlaylist: (id: string, request: FastifyRequest) => { if (!app.isAdmin(request)) audience.llhls(id, request.headers, request.ip); } } : {}),
          })),
        (app) => registerCueRoutes(app, { addCue: (id, input) => this.#cues.addCue(id, input) }),
        (app) => registerWebhookRoutes(app, this.#webhooks),
        (app) => registerQoeRoutes(app, {
          reports: new QualityReports({ redis: this.#redis, registry: this.#metrics.registry, log: log.child({ component: 'qoe' }) }),
          exists: async (id) => (id.length === 12 ? (await this.streams.get(id)) !== undefined : (await this.#vod.catalog.get(id)) !== undefined),
        }),
        // WHIP publishes into this node's ingest: an edge takes no publishers.
        ...(config.role === 'edge' ? [] : [(app: FastifyInstance) => registerWhipRoutes(app, { whip: this.#whip, verifyKey: (key) => this.streams.verifyKey(key) })]),
        (app) => registerWhepRoutes(app, { edge: () => this.#edge, playbackSigningKey: config.playbackSigningKey, clusterSecret: config.clusterSecret }),
        (app) => registerChatRoutes(app, {
          chat: this.#chat,
          streamExists: async (id) => (await this.streams.get(id)) !== undefined,
          // An archived event's video keeps the event's id, and its chat is kept under it; an upload has no chat.
          video: async (id) => {
            const video = await this.#vod.catalog.get(id);
            if (video) return video.source === 'upload' ? { eventId: `upload-${video.id}` } : { eventId: video.id };
            const event = await this.streams.event(id);
            return event && { eventId: event.id };
          },
        }),
        (app) => registerVodRoutes(app, {
          ...(config.audience ? { viewed: (id: string, request: FastifyRequest) => audience.video(id, request.headers, request.ip) } : {}),
          catalog: this.#vod.catalog,
          storage: this.#vod.storage,
          deleteVideo: (id) => this.#vod.deleteVideo(id),
          retryVideo: (id) => this.#vod.retryVideo(id),
          adsChanged: (videoId, ad) => this.#cues.adsChanged(videoId, ad),
          publicUrl: () => this.publicUrl,
          playbackSigningKey: config.playbackSigningKey,
          playbackTokenTtlSec: config.playbackTokenTtlSec,
          signToken: (id, expiresAtSec) => signPlaybackToken(config.playbackSigningKey!, id, expiresAtSec),
        }),
        (app) => registerUploadRoutes(app, {
          dir: this.#vod.uploadDir,
          maxBytes: config.vod.uploadMaxBytes,
          expiryMs: config.vod.uploadExpiryMs,
          expired: (id) => this.#vod.uploadExpired(id, config.vod.uploadExpiryMs),
          created: (id, metadata) => this.#vod.uploadCreated(id, metadata),
          finished: (id, file) => this.#vod.uploadFinished(id, file),
          onError: (error, id) => log.error({ err: error, videoId: id }, 'could not hand a finished upload over (retried at the next start) or sweep expired uploads'),
        }),
      ],
      ready: () => checkReady({
        redisPing: async () => (await this.#redis.ping()) === 'PONG',
        embeddedRedisUp: () => this.#embeddedRedis?.up,
        database: () => this.streams.list(),
        encoder: this.encoder.kind,
        recordingsDiskFull: () => this.#events.recordingsDiskFull(),
        edge,
        closed: () => this.#closed,
        capacity: () => this.#governor.capacity(),
      }),
      streams: streamsApi(views, this.streams, {
        end: (id) => this.#ingest.end(id),
        deleted: (id) => this.#chat.streamDeleted(id),
        // A key made, rotated or gone: the SRT listener learns its passphrase now (other nodes within 10 s).
        keysChanged: async () => this.#srt?.refresh().catch((error: unknown) => this.log.warn({ err: (error as Error).message }, 'SRT passphrases not refreshed')),
      }),
    });
    this.#chat.attach(this.#http.server);
    this.#audience.start();
  }

  /**
   * Builds and starts a node: data dir, Redis, database, encoder probe, RTMP and HTTP listeners. `wiring`: what is not
   * configuration (e.g. where a WebRTC edge finds a stream's origin, issue #17).
   */
  static async start(config: Config, log: Logger, wiring: NodeWiring = {}): Promise<OnAirNode> {
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    const adminToken = await loadAdminToken(config.dataDir, config.adminToken);
    const embeddedRedis = config.redisUrl === undefined
      ? await startEmbeddedRedis({ dataDir: config.dataDir, logger: log.child({ component: 'redis' }) })
      : undefined;
    const redisUrl = config.redisUrl ?? embeddedRedis!.url;
    const redis = new Redis({ ...redisOptionsFromUrl(redisUrl), lazyConnect: true, maxRetriesPerRequest: 1 });
    redis.on('error', (error) => log.debug({ err: error.message }, 'redis connection error'));
    let database: Database | undefined;
    let edge: WebRtcEdge | undefined;
    let chat: ChatServer | undefined;
    let vod: VodArchive | undefined;
    let webhooks: Webhooks | undefined;
    // The chat asks about the live events; they exist only once the node (and everything it needs) has started.
    const nodeRef: { current?: OnAirNode } = {};
    try {
      await redis.connect();
      database = await openDatabase({ dataDir: config.dataDir, ...(config.databaseUrl === undefined ? {} : { databaseUrl: config.databaseUrl }) });
      chat = await startChat(config, log, {
        database,
        redis: redisOptionsFromUrl(redisUrl),
        adminToken,
        streams: new StreamStore(database),
        liveEvent: (id) => (nodeRef.current ? nodeRef.current.#events.get(id) : undefined),
      });
      const encoder = await chooseEncoder(config.hwaccel, { ffmpegPath: config.ffmpegPath, vaapiDevice: config.vaapiDevice });
      log.info({ encoder: encoder.kind, reason: encoder.reason }, 'video encoder chosen');
      const tls = config.tls
        ? { cert: await readFile(config.tls.certFile), key: await readFile(config.tls.keyFile) }
        : undefined;
      webhooks = startWebhooks(config, log, database, redis, redisOptionsFromUrl(redisUrl), config.role !== 'edge');
      const hooks = webhooks;
      vod = startVodArchive(config, log, database, redisOptionsFromUrl(redisUrl), config.role === 'all' ? config.vod.concurrency : 0,
        (videoId, outcome, reason) => void videoFinished(hooks, vod!, videoId, outcome, reason, nodeRef.current?.publicUrl));
      // An edge's WebRTC viewers are fed from the stream's origin (found through discovery) over one PipeTransport per
      // stream (ONAIR_CLUSTER_SECRET on both); origins and all-in-one nodes feed their own streams.
      edge = await startEdge(config, log, config.role === 'edge' && !wiring.webrtcOrigin
        ? { ...wiring, webrtcOrigin: async (id) => nodeRef.current?.discovery.lookup(id) }
        : wiring);
      const node = new OnAirNode({ config, log, adminToken, encoder, database, redis, embeddedRedis, tls, edge, chat, vod, webhooks });
      nodeRef.current = node;
      // An edge holds no live events and no recordings: the streams marked live in the shared database are the origins'.
      if (config.role !== 'edge') {
        await node.#events.recoverAfterCrash();
        await vod.recover();
      }
      await node.#listen();
      if (config.role !== 'edge') node.#events.archiveLeftRecordings();
      return node;
    } catch (error) {
      await chat?.close();
      await vod?.close();
      await webhooks?.close();
      await edge?.close();
      redis.disconnect();
      await database?.close();
      await embeddedRedis?.stop();
      throw error;
    }
  }

  get httpUrl(): string {
    return `${this.config.tls ? 'https' : 'http'}://${connectHost(this.config.host)}:${this.#httpPort}`;
  }

  /** The public origin: ONAIR_PUBLIC_URL or the listening address. */
  get publicUrl(): string {
    return this.config.publicUrl ?? this.httpUrl;
  }

  /** How other nodes reach this one: ONAIR_INTERNAL_URL, or the public URL. */
  get internalUrl(): string {
    return this.config.internalUrl ?? this.publicUrl;
  }

  /** This node's internal URL, also before it listens (from the config; an ephemeral port is known only after). */
  #ownInternalUrl(): string | undefined {
    if (this.config.internalUrl ?? this.config.publicUrl) return this.internalUrl;
    if (this.#httpPort > 0) return this.internalUrl;
    if (this.config.httpPort > 0) return `${this.config.tls ? 'https' : 'http'}://${connectHost(this.config.host)}:${this.config.httpPort}`;
    return undefined;
  }

  /** What OBS calls "Server": the RTMP URL without the key. */
  get rtmpUrl(): string {
    return `rtmp://${this.#ingestHost()}:${this.#rtmpPort}/${RTMP_APP}`;
  }

  /** The same over TLS, when RTMPS is on (`ONAIR_RTMPS_PORT`). */
  get rtmpsUrl(): string | undefined {
    return this.#rtmpsPort > 0 ? `rtmps://${this.#ingestHost()}:${this.#rtmpsPort}/${RTMP_APP}` : undefined;
  }

  /** What OBS takes as the SRT "Server" (with `&passphrase=` from the create or rotate answer), when SRT is on. */
  srtUrl(streamId: string): string | undefined {
    return this.#srtPort > 0 ? `srt://${this.#ingestHost()}:${this.#srtPort}?streamid=${streamId}` : undefined;
  }

  #ingestHost(): string {
    return this.config.publicUrl ? new URL(this.config.publicUrl).hostname : connectHost(this.config.host);
  }

  /** RTMP connections open now, and those without an accepted publish (for tests and tools). */
  rtmpConnections(): { open: number; unauthenticated: number } {
    return this.#ingest.connections();
  }

  get rtmpPort(): number {
    return this.#rtmpPort;
  }

  /** The LL-HLS packager of a stream: while it is live, and for a while after it ended. */
  packager(streamId: string): StreamPackager | undefined {
    return this.#events.packager(streamId);
  }

  /** The WebRTC edge (for stats and tests); undefined when WebRTC is off. */
  get edge(): WebRtcEdge | undefined {
    return this.#edge;
  }

  /** The chat (comments, reactions, moderation; cues go out through `chat.sendCue`). */
  get chat(): ChatServer {
    return this.#chat;
  }

  /** The VOD room: catalog, storage, queue (for tests and tools). */
  get vod(): VodArchive {
    return this.#vod;
  }

  /** The live transcoder of a stream, while its event lasts. */
  transcoder(streamId: string): LiveTranscoder | undefined {
    return this.#events.get(streamId)?.transcoder;
  }

  /**
   * Stops listening, ends live events, closes the rooms, the database and the embedded Redis. Bounded: resolves
   * within CLOSE_TIMEOUT_MS even when a dependency hangs (a step past its deadline is logged and abandoned; its
   * resources go with the process). Rejects, after every step, when one of them failed. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /**
   * The ended event's audience (peak, total) into the database, beside the event. Tried a few times over a minute if
   * the database is away; then given up with a warning (the counts are figures, not a viewer's media).
   */
  async #keepAudience(streamId: string, eventId: string): Promise<void> {
    const counts = await this.#audience.end(streamId);
    void this.#webhooks.emit('stream.ended', {
      streamId, eventId, endedAt: new Date().toISOString(), ...(counts ? { audience: { peak: counts.peak, total: counts.total } } : {}),
    });
    if (!counts) return;
    for (let attempt = 1; ; attempt += 1) {
      try {
        await this.streams.setEventAudience(eventId, { peak: counts.peak, total: counts.total });
        return;
      } catch (error) {
        if (attempt >= 6 || this.#closed) {
          this.log.warn({ err: error, streamId, eventId, peak: counts.peak, total: counts.total }, 'audience: the event\'s figures could not be kept (database)');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 10_000).unref());
      }
    }
  }

  /**
   * Stops listening and lets requests in flight finish for HTTP_DRAIN_MS; then cuts the connections of those still open
   * (a blocking LL-HLS reload parked for three target durations, a client that never reads), naming them in the log.
   */
  async #closeHttp(): Promise<void> {
    const closing = this.#http.close();
    const cut = setTimeout(() => {
      const open = inFlightRoutes(this.#http);
      if (open.length > 0) {
        this.log.warn({ count: open.length, requests: open.slice(0, 20) }, 'close: requests still in flight after the drain; their connections are cut');
      }
      (this.#http.server as { closeAllConnections?: () => void }).closeAllConnections?.();
    }, HTTP_DRAIN_MS);
    try {
      await closing;
    } finally {
      clearTimeout(cut);
    }
  }

  async #close(): Promise<void> {
    this.#closed = true;
    const steps = new CloseSteps({ log: this.log, budgetsMs: CLOSE_STEP_MS, timeoutMs: CLOSE_TIMEOUT_MS, reserveMs: CLOSE_REDIS_RESERVE_MS });
    const step = steps.step.bind(steps);
    // Retries of ends of events stop now: a recording they leave is archived by the next start.
    this.#events.stop();
    // An edge's viewers waiting on an origin are answered now (503), not held until the HTTP step's deadline.
    this.#relay?.close();
    // Chat first: its WebSocket connections would otherwise hold the HTTP server open.
    await step('chat', () => this.#chat.close());
    await step('http', () => this.#closeHttp());
    await step('audience', () => this.#audience.close());
    this.#whip.close();
    this.#srt?.close();
    await step('ingest', () => this.#ingest.close());
    // An event cut off here keeps its recording on disk: the next start archives it (archiveLeftRecordings).
    await step('endings', () => this.#events.settled());
    await step('transcoders', () => this.#events.closeTranscoders());
    this.#events.clearRetention();
    await step('vod', () => this.#vod.close());
    await step('webhooks', () => this.#webhooks.close());
    await step('discovery', () => this.discovery.close());
    await step('edge', async () => this.#edge?.close());
    this.#governor.close();
    this.#redis.disconnect();
    await step('database', () => this.#database.close());
    if (this.#embeddedRedis) {
      // Whatever is left, at least the reserve: redis-server gets SIGTERM (flushes its file), SIGKILL after that.
      const timeoutMs = Math.max(CLOSE_REDIS_RESERVE_MS, steps.leftMs);
      await this.#embeddedRedis.stop({ timeoutMs }).catch((error: unknown) => {
        this.log.error({ err: error }, 'close: could not stop the embedded redis');
        steps.failures.push('redis failed');
      });
    }
    if (steps.failures.length > 0) throw new Error(`the node closed with failures: ${steps.failures.join(', ')}`);
  }

  async #listen(): Promise<void> {
    // An edge is playback only: no RTMP listener (publishers go to an origin).
    if (this.config.role !== 'edge') {
      const ports = await this.#ingest.listen();
      this.#rtmpPort = ports.port;
      this.#rtmpsPort = ports.tlsPort ?? 0;
      if (this.#srt) this.#srtPort = await this.#srt.listen();
    }
    await this.#http.listen({ host: this.config.host, port: this.config.httpPort });
    this.#httpPort = (this.#http.server.address() as AddressInfo).port;
  }

  #wireIngest(): void {
    this.#ingest.on('refused', (refusal) => this.#metrics.publishRefused.inc({ reason: refusal.reason }));
    this.#ingest.on('dropped', (dropped) => this.#metrics.rtmpDropped.inc({ reason: dropped.reason }));
    this.#ingest.on('publish', (session, { resumed }) => {
      void this.#events.publish(session, resumed).catch((error: unknown) => {
        this.log.error({ err: error, streamId: session.streamId }, 'could not start the live event');
        this.#ingest.end(session.streamId);
      });
    });
    this.#ingest.on('end', (streamId) => this.#events.end(streamId));
  }
}

/** A wildcard listen address is not something a client can dial. */
function connectHost(host: string): string {
  return host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
}
