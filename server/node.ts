import { mkdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { TypedEmitter } from '../lib/emitter.js';
import type { Logger } from '../lib/log.js';
import { RtmpIngest, RTMP_APP, type PublishSession } from '../ingest/index.js';
import { chooseEncoder, LiveTranscoder, LoadGovernor, type EncoderChoice, type LadderPlan } from '../live-transcoder/index.js';
import { registerLiveRoutes, StreamPackager } from '../ll-hls-packager/index.js';
import { playbackTokenExpiry, signPlaybackToken } from '../lib/signing.js';
import { registerWhepRoutes, WebRtcEdge } from '../webrtc-edge/index.js';
import { ChatServer, registerChatRoutes, type ChatTables } from '../chat/index.js';
import {
  createStorage, EventRecorder, registerUploadRoutes, registerVodRoutes, VodArchive, type CatalogTables,
} from '../vod-archive/index.js';
import type { Kysely } from 'kysely';
import os from 'node:os';
import { loadAdminToken, tokenMatches } from './adminToken.js';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db.js';
import { buildHttpServer, type StreamView } from './http.js';
import { Metrics, type LiveStreamSample } from './metrics.js';
import { registerWebRoutes } from './web.js';
import { AdLibrary, adLadderArgs, registerCueRoutes, type Cue, type CueInput } from '../cues/index.js';
import { randomId } from '../lib/ids.js';
import { OnAirError } from '../lib/errors.js';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { redisOptionsFromUrl, startEmbeddedRedis, type EmbeddedRedis } from './redis.js';
import { StreamStore, type StreamRecord } from './streams.js';

/** A stream with a live event: its publisher (absent during the reconnect grace) and its transcoder. */
interface LiveStream {
  streamId: string;
  eventId: string;
  startedAt: number;
  publisher: PublishSession | undefined;
  transcoder: LiveTranscoder;
  packager: StreamPackager;
  /** The event's recording (its source and its ladder's segments): the replay and the archive's input. */
  recorder: EventRecorder | undefined;
  /** The file the transcoder burns in as a ticker (news flashes); undefined when the data dir path cannot be one. */
  tickerFile: string | undefined;
  /** News flashes on screen now, and the timer that clears the ticker after the last one. */
  news: { cue: Cue; until: number }[];
  newsTimer: NodeJS.Timeout | undefined;
  /** The transcoder's current plan: ads are packaged in it. */
  plan: LadderPlan | undefined;
}

/**
 * close() ends within this, whatever state children and dependencies are in: each step has its own deadline (below)
 * and a step that runs out is logged and left behind. main.ts force-exits shortly after, in case even that hangs.
 */
export const CLOSE_TIMEOUT_MS = 10_000;
/** Kept at the end of close() for the embedded redis-server to flush its append-only file (then it is killed). */
const CLOSE_REDIS_RESERVE_MS = 2_000;
/** The longest any one step of close() may take (within what is left of CLOSE_TIMEOUT_MS). */
const CLOSE_STEP_MS = { chat: 2_000, http: 2_000, ingest: 1_000, endings: 8_000, transcoders: 3_000, vod: 2_000, edge: 2_000, database: 2_000 } as const;
/** A readiness check that takes longer than this fails (a hung dependency must not hang /readyz). */
const READY_CHECK_TIMEOUT_MS = 1_000;

/** An ended stream's playlists (with ENDLIST) stay this long for players finishing up. */
const ENDED_PLAYLIST_RETENTION_MS = 10 * 60_000;

/**
 * The end of an event whose dependency (database, Redis, storage) fails is tried again after 0.5 s, then twice as
 * long each time up to this cap, for as long as the node runs.
 */
const ENDING_RETRY_FIRST_MS = 500;
const ENDING_RETRY_MAX_MS = 10_000;

export type OnAirNodeEvents = {
  /** A live event began: its transcoder is ready to listen to. */
  live: [{ streamId: string; eventId: string; transcoder: LiveTranscoder }];
  /** A live event ended (grace ran out, stream deleted, node closing). */
  ended: [{ streamId: string; eventId: string }];
  /** An ended event's replay is published (catalog video `videoId`, playable at /vod/:videoId/index.m3u8). */
  archived: [{ streamId: string; eventId: string; videoId: string }];
};

/**
 * The composition root: reads config, builds the rooms, wires their events and listens. Only this file knows all of
 * them; rooms talk to each other through the events wired here.
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
  readonly #governor: LoadGovernor;
  readonly #http: FastifyInstance;
  readonly #metrics: Metrics;
  readonly #chat: ChatServer;
  readonly #vod: VodArchive;
  readonly #ads: AdLibrary;
  readonly #live = new Map<string, LiveStream>();
  /** The WebRTC edge; undefined when WebRTC is off (ONAIR_WEBRTC_LAYERS=off) or mediasoup could not start. */
  readonly #edge: WebRtcEdge | undefined;
  /** LL-HLS packagers by stream: live ones, and ended ones kept for ENDED_PLAYLIST_RETENTION_MS. */
  readonly #packagers = new Map<string, StreamPackager>();
  readonly #retentionTimers = new Set<NodeJS.Timeout>();
  /** Event endings in progress: close() waits for them before it closes the database. */
  readonly #endings = new Set<Promise<void>>();
  /**
   * Events whose end is in progress (and may wait for a dependency), by stream: one per stream, a stream has one event
   * at a time. The API shows such a stream `ended` at once, whatever the database still says.
   */
  readonly #waitingEnds = new Map<string, string>();
  /** Steps of an event's end now waiting between two tries (`onair_event_endings_waiting`). */
  #endingsWaiting = 0;
  /** Aborted when close() begins: an ending waiting between two tries stops waiting (the next start finishes it). */
  /** Aborted when close() begins: retries of ends of events stop (their recordings stay for the next start). */
  readonly #stopping = new AbortController();
  #httpPort = 0;
  #rtmpPort = 0;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(parts: {
    config: Config; log: Logger; adminToken: string; encoder: EncoderChoice; database: Database;
    redis: Redis; embeddedRedis: EmbeddedRedis | undefined; tls: { cert: Buffer; key: Buffer } | undefined;
    edge: WebRtcEdge | undefined; chat: ChatServer; vod: VodArchive;
  }) {
    super();
    this.config = parts.config;
    this.log = parts.log;
    this.adminToken = parts.adminToken;
    this.encoder = parts.encoder;
    this.#database = parts.database;
    this.streams = new StreamStore(parts.database);
    this.#redis = parts.redis;
    this.#embeddedRedis = parts.embeddedRedis;
    this.#edge = parts.edge;
    this.#chat = parts.chat;
    this.#vod = parts.vod;
    this.#ads = new AdLibrary({
      catalog: this.#vod.catalog,
      storage: this.#vod.storage,
      dir: path.join(this.config.dataDir, 'ads'),
      ffmpegPath: this.config.ffmpegPath,
      ffprobePath: this.config.ffprobePath,
      settings: `${this.encoder.kind}/${this.config.x264Preset}/${this.config.partTargetMs}`,
      args: (packaging) => adLadderArgs({
        ...packaging,
        encoder: this.encoder.kind,
        x264Preset: this.config.x264Preset,
        partTargetMs: this.config.partTargetMs,
        vaapiDevice: this.config.vaapiDevice,
      }),
      limits: this.config.ads,
      // What a running ad break plays is never evicted (its plan's key and its ads' ids).
      inUse: () => {
        const ids = new Set<string>();
        for (const live of this.#live.values()) {
          const running = live.plan && live.packager.runningBreak;
          if (!running) continue;
          const key = this.#ads.planKey(live.plan!);
          for (const ad of live.packager.adsOf(running.id)) ids.add(`${key}/${ad.id}`);
        }
        return ids;
      },
      log: this.log.child({ component: 'ads' }),
    });
    this.#metrics = new Metrics(() => this.#samples());
    this.#governor = new LoadGovernor({
      policy: this.config.ladderPolicy,
      recoverAfterMs: this.config.ladderRecoverMs,
      log: this.log.child({ component: 'load' }),
    });
    this.#governor.on('change', ({ direction }) => this.#metrics.ladderChanges.inc({ direction }));
    if (this.#embeddedRedis) {
      const restarts = this.#metrics.childRestarts;
      restarts.inc({ child: 'redis' }, 0);
      this.#embeddedRedis.supervisor.on('restart', () => restarts.inc({ child: 'redis' }));
    }
    this.#chat.registerMetrics(this.#metrics.registry);
    this.#vod.registerMetrics(this.#metrics.registry);
    this.#ads.registerMetrics(this.#metrics.registry);
    this.#metrics.gauge('onair_recordings_disk_full', 'Live recordings waiting for disk space (their segments are left out until a write succeeds).', () => this.#recordingsDiskFull());
    this.#metrics.gauge('onair_event_endings_waiting', 'Ended live events whose end (database update, replay, archive job) waits for a dependency to come back.', () => this.#endingsWaiting);
    if (this.#edge) {
      this.#metrics.childRestarts.inc({ child: 'mediasoup' }, 0); // the series exists from the start, for alerts on its rate
      this.#edge.on('restart', () => this.#metrics.childRestarts.inc({ child: 'mediasoup' }));
    }
    this.#ingest = new RtmpIngest({
      host: this.config.host,
      port: this.config.rtmpPort,
      reconnectGraceMs: this.config.reconnectGraceMs,
      limits: this.config.limits.rtmp,
      log: this.log.child({ component: 'ingest' }),
      authorize: async (streamKey) => {
        const stream = await this.streams.verifyKey(streamKey);
        return stream ? { ok: true, streamId: stream.id } : { ok: false, reason: 'bad-key' };
      },
      admit: ({ live }) => {
        const max = this.config.maxStreams;
        if (max > 0 && live >= max) return `${live} live streams, ONAIR_MAX_STREAMS=${max}`;
        return this.#governor.refusal();
      },
    });
    this.#wireIngest();
    this.#http = buildHttpServer({
      log: this.log,
      tls: parts.tls,
      adminToken: this.adminToken,
      metrics: this.#metrics,
      redis: this.#redis,
      limits: this.config.limits.http,
      plugins: [
        registerWebRoutes,
        (app) => registerLiveRoutes(app, {
          packager: (id) => this.#packagers.get(id),
          playbackSigningKey: this.config.playbackSigningKey,
          limits: this.config.limits.llhls,
          registry: this.#metrics.registry,
        }),
        (app) => registerCueRoutes(app, { addCue: (id, input) => this.#addCue(id, input) }),
        (app) => registerWhepRoutes(app, { edge: () => this.#edge, playbackSigningKey: this.config.playbackSigningKey }),
        (app) => registerChatRoutes(app, {
          chat: this.#chat,
          streamExists: async (id) => (await this.streams.get(id)) !== undefined,
          // An archived event's video keeps the event's id, and its chat is kept under it; an upload has no chat.
          video: async (id) => {
            const video = await this.#vod.catalog.get(id);
            if (video) return video.source === 'upload' ? { eventId: `upload-${video.id}` } : { eventId: video.id };
            const event = await this.#event(id);
            return event && { eventId: event.id };
          },
        }),
        (app) => registerVodRoutes(app, {
          catalog: this.#vod.catalog,
          storage: this.#vod.storage,
          deleteVideo: (id) => this.#vod.deleteVideo(id),
          retryVideo: (id) => this.#vod.retryVideo(id),
          adsChanged: (videoId, ad) => this.#adsChanged(videoId, ad),
          publicUrl: () => this.publicUrl,
          playbackSigningKey: this.config.playbackSigningKey,
          playbackTokenTtlSec: this.config.playbackTokenTtlSec,
          signToken: (id, expiresAtSec) => signPlaybackToken(this.config.playbackSigningKey!, id, expiresAtSec),
        }),
        (app) => registerUploadRoutes(app, {
          dir: this.#vod.uploadDir,
          maxBytes: this.config.vod.uploadMaxBytes,
          expiryMs: this.config.vod.uploadExpiryMs,
          expired: (id) => this.#vod.uploadExpired(id, this.config.vod.uploadExpiryMs),
          created: (id, metadata) => this.#vod.uploadCreated(id, metadata),
          finished: (id, file) => this.#vod.uploadFinished(id, file),
          onError: (error, id) => this.log.error({ err: error, videoId: id }, 'could not hand a finished upload over (retried at the next start) or sweep expired uploads'),
        }),
      ],
      ready: () => this.#ready(),
      streams: {
        create: async (input) => {
          const { stream, streamKey } = await this.streams.create(input);
          return { stream: await this.#view(stream, true), streamKey };
        },
        list: async () => Promise.all((await this.streams.list()).map((s) => this.#view(s, false))),
        get: async (id, admin, token) => {
          const stream = await this.streams.get(id);
          return stream && this.#view(stream, admin, token);
        },
        rotateKey: async (id) => {
          const streamKey = await this.streams.rotateKey(id);
          const stream = streamKey === undefined ? undefined : await this.streams.get(id);
          return stream && streamKey ? { stream: await this.#view(stream, true), streamKey } : undefined;
        },
        end: async (id) => {
          if (!(await this.streams.get(id))) return undefined;
          if (!this.#live.has(id)) return false;
          this.#ingest.end(id);
          return true;
        },
        delete: async (id) => {
          this.#ingest.end(id);
          const deleted = await this.streams.delete(id);
          if (deleted) await this.#chat.streamDeleted(id);
          return deleted;
        },
      },
    });
    this.#chat.attach(this.#http.server);
  }

  /** Builds and starts a node: data dir, Redis, database, encoder probe, RTMP and HTTP listeners. */
  static async start(config: Config, log: Logger): Promise<OnAirNode> {
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
    // The chat asks the node about streams; the node exists only once everything it needs has started.
    const nodeRef: { current?: OnAirNode } = {};
    try {
      await redis.connect();
      database = await openDatabase({ dataDir: config.dataDir, ...(config.databaseUrl === undefined ? {} : { databaseUrl: config.databaseUrl }) });
      const streams = new StreamStore(database);
      chat = await ChatServer.create({
        log: log.child({ component: 'chat' }),
        redis: redisOptionsFromUrl(redisUrl),
        adapter: config.chat.redisAdapter,
        db: database.db as unknown as Kysely<ChatTables>,
        reactions: config.chat.reactions,
        reactionWindowMs: config.chat.reactionWindowMs,
        limits: config.chat.limits,
        blockedWords: config.chat.blockedWords,
        trustProxy: config.chat.trustProxy,
        isAdmin: (token) => tokenMatches(token, adminToken),
        streamExists: async (id) => (await streams.get(id)) !== undefined,
        currentEvent: async (id) => {
          const live = nodeRef.current ? nodeRef.current.#live.get(id) : undefined;
          if (live) return { eventId: live.eventId, startedAt: live.startedAt };
          // Live on another process (or between this node's start and its first publish): the database knows.
          const event = await streams.currentEvent(id);
          return event && { eventId: event.id, startedAt: event.startedAt };
        },
      });
      const encoder = await chooseEncoder(config.hwaccel, { ffmpegPath: config.ffmpegPath, vaapiDevice: config.vaapiDevice });
      log.info({ encoder: encoder.kind, reason: encoder.reason }, 'video encoder chosen');
      const tls = config.tls
        ? { cert: await readFile(config.tls.certFile), key: await readFile(config.tls.keyFile) }
        : undefined;
      vod = startVodArchive(config, log, database, redisOptionsFromUrl(redisUrl), config.role === 'all' ? config.vod.concurrency : 0);
      edge = await startEdge(config, log);
      const node = new OnAirNode({ config, log, adminToken, encoder, database, redis, embeddedRedis, tls, edge, chat, vod });
      nodeRef.current = node;
      await node.#recoverAfterCrash();
      await vod.recover();
      await node.#listen();
      node.#background(node.#archiveLeftRecordings(), 'could not archive a recording left by the last run (kept on disk for the next start)');
      return node;
    } catch (error) {
      await chat?.close();
      await vod?.close();
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

  /** What OBS calls "Server": the RTMP URL without the key. */
  get rtmpUrl(): string {
    const host = this.config.publicUrl ? new URL(this.config.publicUrl).hostname : connectHost(this.config.host);
    return `rtmp://${host}:${this.#rtmpPort}/${RTMP_APP}`;
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
    return this.#packagers.get(streamId);
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
    return this.#live.get(streamId)?.transcoder;
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

  async #close(): Promise<void> {
    this.#closed = true;
    const deadline = Date.now() + CLOSE_TIMEOUT_MS;
    const failures: string[] = [];
    const step = async (name: keyof typeof CLOSE_STEP_MS, work: () => Promise<unknown>): Promise<void> => {
      const budgetMs = Math.max(0, Math.min(CLOSE_STEP_MS[name], deadline - CLOSE_REDIS_RESERVE_MS - Date.now()));
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        Promise.resolve().then(work).then(() => 'done' as const, (error: unknown) => {
          this.log.error({ err: error, step: name }, 'close: a step failed');
          return 'failed' as const;
        }),
        new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), budgetMs);
        }),
      ]);
      clearTimeout(timer);
      if (outcome === 'timeout') this.log.error({ step: name, budgetMs }, 'close: a step ran out of time; going on without it');
      if (outcome !== 'done') failures.push(`${name} ${outcome}`);
    };
    // Retries of ends of events stop now: a recording they leave is archived by the next start.
    this.#stopping.abort();
    // Chat first: its WebSocket connections would otherwise hold the HTTP server open.
    await step('chat', () => this.#chat.close());
    await step('http', () => this.#http.close());
    await step('ingest', () => this.#ingest.close());
    // An event cut off here keeps its recording on disk: the next start archives it (#archiveLeftRecordings).
    await step('endings', () => Promise.all([...this.#endings]));
    await step('transcoders', () => Promise.all([...this.#live.values()].map((live) => live.transcoder.close())));
    for (const timer of this.#retentionTimers) clearTimeout(timer);
    await step('vod', () => this.#vod.close());
    await step('edge', async () => this.#edge?.close());
    this.#governor.close();
    this.#redis.disconnect();
    await step('database', () => this.#database.close());
    if (this.#embeddedRedis) {
      // Whatever is left, at least the reserve: redis-server gets SIGTERM (flushes its file), SIGKILL after that.
      const timeoutMs = Math.max(CLOSE_REDIS_RESERVE_MS, deadline - Date.now());
      await this.#embeddedRedis.stop({ timeoutMs }).catch((error: unknown) => {
        this.log.error({ err: error }, 'close: could not stop the embedded redis');
        failures.push('redis failed');
      });
    }
    if (failures.length > 0) throw new Error(`the node closed with failures: ${failures.join(', ')}`);
  }

  /** Work that outlives the call that started it: logged if it fails, awaited by close(). */
  #background(work: Promise<void>, failure: string, fields: Record<string, unknown> = {}): void {
    const tracked: Promise<void> = work
      .catch((error: unknown) => this.log.error({ ...fields, err: error }, failure))
      .finally(() => this.#endings.delete(tracked));
    this.#endings.add(tracked);
  }

  async #listen(): Promise<void> {
    const { port } = await this.#ingest.listen();
    this.#rtmpPort = port;
    await this.#http.listen({ host: this.config.host, port: this.config.httpPort });
    this.#httpPort = (this.#http.server.address() as AddressInfo).port;
  }

  /** A node that died mid-event left streams marked live: their events are over. */
  async #recoverAfterCrash(): Promise<void> {
    for (const stream of await this.streams.list()) {
      if (stream.status !== 'live') continue;
      const event = await this.streams.currentEvent(stream.id);
      if (event) await this.streams.endEvent(event.id);
      await this.streams.setStatus(stream.id, 'ended');
    }
  }

  #wireIngest(): void {
    this.#ingest.on('refused', (refusal) => this.#metrics.publishRefused.inc({ reason: refusal.reason }));
    this.#ingest.on('dropped', (dropped) => this.#metrics.rtmpDropped.inc({ reason: dropped.reason }));
    this.#ingest.on('publish', (session, { resumed }) => {
      void this.#onPublish(session, resumed).catch((error: unknown) => {
        this.log.error({ err: error, streamId: session.streamId }, 'could not start the live event');
        this.#ingest.end(session.streamId);
      });
    });
    this.#ingest.on('end', (streamId) => {
      this.#background(this.#onEnd(streamId), 'could not end the live event', { streamId });
    });
  }

  async #onPublish(session: PublishSession, resumed: boolean): Promise<void> {
    const streamId = session.streamId;
    let live = this.#live.get(streamId);
    if (!live || !resumed) {
      const log = this.log.child({ streamId });
      const startedAt = Date.now();
      const eventId = await this.streams.startEvent(streamId, startedAt);
      const recorder = await this.#vod.startRecording(eventId).catch((error: unknown) => {
        log.error({ err: error }, 'the event cannot be recorded (no replay or archive for it)');
        return undefined;
      });
      // The WebRTC room's plain-RTP input exists before ffmpeg starts: the transcoder asks for it at every (re)start.
      const rtpInputs = this.#edge ? await this.#edge.openStream(streamId) : undefined;
      let tickerFile: string | undefined;
      try {
        tickerFile = prepareTicker(this.config.dataDir, streamId);
        if (!tickerFile) log.warn('the data dir path has characters ffmpeg filters cannot take: news flashes will not be burned in');
      } catch (error) {
        // A full disk does not keep a stream off the air: it goes live without the ticker.
        log.warn({ err: error }, 'could not write the ticker file: news flashes will not be burned in for this event');
      }
      const transcoder = new LiveTranscoder({
        streamId,
        ...(tickerFile ? { tickerFile } : {}),
        ...(rtpInputs ? { rtp: () => rtpInputs } : {}),
        ffmpegPath: this.config.ffmpegPath,
        encoder: this.encoder.kind,
        x264Preset: this.config.x264Preset,
        partTargetMs: this.config.partTargetMs,
        vaapiDevice: this.config.vaapiDevice,
        ladder: {
          heights: this.config.ladderHeights,
          passthrough: this.config.passthrough,
          gopMs: this.config.segmentTargetMs,
          webrtcHeights: this.#edge ? this.config.webrtcLayers : [],
        },
        log: log.child({ component: 'transcoder' }),
      });
      this.#governor.add(transcoder);
      transcoder.on('exit', ({ expected }) => {
        if (!expected) this.#metrics.transcoderRestarts.inc({ stream: streamId });
      });
      const packager = new StreamPackager({
        streamId,
        partTargetMs: this.config.partTargetMs,
        segmentTargetMs: this.config.segmentTargetMs,
        windowMs: this.config.dvrWindowMs,
        ...(recorder ? { onSegment: (rendition, segment, init) => recorder.addSegment(rendition, segment, init) } : {}),
      });
      transcoder.on('start', ({ plan }) => {
        packager.setPlan(plan);
        const current = this.#live.get(streamId);
        // A restart with the same ladder keeps the packaged ads; another ladder (the publisher changed its picture)
        // plays none until they are packaged for it.
        if (current?.transcoder === transcoder && (!current.plan || this.#ads.planKey(current.plan) !== this.#ads.planKey(plan))) {
          current.plan = plan;
          packager.setAds([]);
          this.#refreshAds(current);
        }
        const feed = transcoder.rtp;
        if (this.#edge && feed) {
          void this.#edge.setProducers(streamId, {
            layers: feed.video.map((v) => ({ ssrc: v.ssrc, kbps: v.layer.kbps })),
            audio: feed.audio !== undefined,
          });
        }
      });
      transcoder.on('init', ({ generation, rendition, init }) => packager.playlist(rendition.name)?.addInit(generation, init));
      transcoder.on('fragment', ({ generation, rendition, fragment }) => packager.playlist(rendition.name)?.addFragment(generation, fragment));
      this.#packagers.get(streamId)?.end();
      this.#packagers.set(streamId, packager);
      live = { streamId, eventId, startedAt, publisher: undefined, transcoder, packager, recorder, tickerFile, news: [], newsTimer: undefined, plan: undefined };
      this.#live.set(streamId, live);
      // Marked live only now: a client that sees `live` also sees the event's stats.
      await this.streams.setStatus(streamId, 'live');
      this.safeEmit('live', { streamId, eventId, transcoder });
    }
    if (session.closed) return;
    const current = live;
    current.publisher = session;
    let record: ((tag: Buffer) => void) | undefined;
    // Backpressure: a backlogged ffmpeg pauses the publisher's socket until it drains.
    const feed = (tag: Buffer): void => {
      if (!current.transcoder.write(tag)) session.pause();
      record?.(tag);
    };
    const resume = (): void => session.resume();
    const start = (): void => {
      current.transcoder.on('drain', resume);
      current.transcoder.attach({ source: session.source!, prelude: () => session.prelude() });
      record = current.recorder?.startSource(() => session.prelude());
      session.on('tag', feed);
    };
    if (session.source) start();
    else session.once('source', start);
    session.once('close', () => {
      session.off('tag', feed);
      current.transcoder.off('drain', resume);
      if (record) current.recorder?.endSource();
      if (current.publisher === session) {
        current.publisher = undefined;
        current.transcoder.detach();
      }
    });
  }

  async #onEnd(streamId: string): Promise<void> {
    const live = this.#live.get(streamId);
    if (!live) return;
    this.#live.delete(streamId);
    if (live.newsTimer) clearTimeout(live.newsTimer);
    this.#governor.remove(live.transcoder);
    await live.transcoder.close();
    live.packager.end();
    this.#edge?.closeStream(streamId);
    if (!this.#closed) {
      const timer = setTimeout(() => {
        this.#retentionTimers.delete(timer);
        if (this.#packagers.get(streamId) === live.packager) this.#packagers.delete(streamId);
      }, ENDED_PLAYLIST_RETENTION_MS);
      timer.unref();
      this.#retentionTimers.add(timer);
    }
    // Viewers saw the end already (ENDLIST). What follows needs the database, Redis and storage: each step is
    // idempotent and tried again until it succeeds; a node that stops meanwhile leaves the recording on disk, and the
    // next start ends the event and archives it (#recoverAfterCrash, #archiveLeftRecordings).
    const { eventId } = live;
    this.#waitingEnds.set(streamId, eventId);
    try {
      const ended = await this.#untilDone({ streamId, eventId }, 'marking the event ended', async () => {
        // A deleted stream has no row left: both updates then touch nothing. A new event on the same stream (the
        // publisher came back once the database did) keeps its `live`.
        await this.streams.endEvent(eventId);
        if (!this.#live.has(streamId)) await this.streams.setStatus(streamId, 'ended');
      });
      if (!ended) return;
      this.safeEmit('ended', { streamId, eventId });
      await this.#untilDone({ streamId, eventId }, 'publishing the replay and queueing the archive', () => this.#archive(live));
    } finally {
      if (this.#waitingEnds.get(streamId) === eventId) this.#waitingEnds.delete(streamId);
    }
  }

  /**
   * Runs `step` until it succeeds: after a failure (a dependency down) it waits with capped backoff and tries again,
   * logging each wait. False when the node began stopping first: the step is left for the next start.
   */
  async #untilDone(fields: Record<string, unknown>, what: string, step: () => Promise<void>): Promise<boolean> {
    let waiting = false;
    try {
      return await this.#tryUntilDone(fields, what, step, () => {
        if (!waiting) this.#endingsWaiting++;
        waiting = true;
      });
    } finally {
      if (waiting) this.#endingsWaiting--;
    }
  }

  /** The first try always runs (a node that stops ends its live events); tries again only while it is not stopping. */
  async #tryUntilDone(fields: Record<string, unknown>, what: string, step: () => Promise<void>, failed: () => void): Promise<boolean> {
    const stopping = (error?: unknown): false => {
      this.log.warn({ ...fields, ...(error === undefined ? {} : { err: error }) }, `the node is stopping before ${what}: the recording stays on disk and the next start finishes it`);
      return false;
    };
    for (let attempt = 1; ; attempt++) {
      try {
        await step();
        if (attempt > 1) this.log.info({ ...fields, attempt }, `the end of the event went on: ${what} succeeded`);
        return true;
      } catch (error) {
        if (this.#stopping.signal.aborted) return stopping(error);
        failed();
        const retryInMs = Math.min(ENDING_RETRY_MAX_MS, ENDING_RETRY_FIRST_MS * 2 ** (attempt - 1));
        this.log.warn({ ...fields, err: error, attempt, retryInMs }, `the end of the event waits: ${what} failed (a dependency is down); tried again`);
        await sleep(retryInMs, undefined, { signal: this.#stopping.signal }).catch(() => {});
        if (this.#stopping.signal.aborted) return stopping();
      }
    }
  }

  /** The ended event's replay is published at once and its archive job queued; a deleted stream keeps nothing. */
  async #archive(live: LiveStream): Promise<void> {
    if (live.recorder) await this.#archiveRecording({ eventId: live.eventId, streamId: live.streamId, startedAt: live.startedAt, recorder: live.recorder, cues: live.packager.cues });
  }

  async #archiveRecording(event: { eventId: string; streamId: string; startedAt: number; recorder: EventRecorder; cues: readonly Cue[] }): Promise<void> {
    const { eventId, streamId, recorder } = event;
    const stream = await this.streams.get(streamId);
    if (!stream) {
      await recorder.remove();
      return;
    }
    const video = await this.#vod.archiveEvent({
      ...event,
      title: stream.title,
      description: stream.description,
      // A chat that cannot move keeps its offsets from the event's start: the replay still goes out.
      placeComments: (timeline) => this.#chat.placeOnTimeline(eventId, timeline)
        .catch((error: unknown) => this.log.warn({ err: error, eventId }, 'could not place the chat on the replay\'s timeline')),
    });
    if (video?.version) this.safeEmit('archived', { streamId, eventId, videoId: video.id });
  }

  /**
   * A node that died mid-event left its recording on disk (the event itself was ended by #recoverAfterCrash): it
   * is archived like any ended event, its replay from the segments the journal names, then the job. Its cues were
   * in memory and are gone.
   */
  async #archiveLeftRecordings(): Promise<void> {
    for (const eventId of await this.#vod.recordings()) {
      if ([...this.#live.values()].some((live) => live.eventId === eventId)) continue;
      const event = await this.#event(eventId);
      const recorder = await this.#vod.recoverRecording(eventId);
      if (!event) {
        await recorder.remove();
        continue;
      }
      this.log.info({ eventId, streamId: event.streamId }, 'archiving the recording of an event cut off when the node stopped');
      await this.#untilDone({ eventId, streamId: event.streamId }, 'archiving a recording left by the last run',
        () => this.#archiveRecording({ eventId, streamId: event.streamId, startedAt: event.startedAt, recorder, cues: [] }));
    }
  }

  /**
   * An ad break or a news flash on a live stream: into every rendition's playlist (from the shared packager), to chat
   * clients as a `cue` event, and for news into the burned-in ticker. An ad break answers once it has its start (the
   * next segment boundary, within one segment duration).
   */
  async #addCue(streamId: string, input: CueInput): Promise<{ id: string; kind: string; startDate: string; ads?: string[] } | undefined> {
    const live = this.#live.get(streamId);
    if (!live) {
      if (!(await this.streams.get(streamId))) return undefined;
      throw new OnAirError('ONAIR_ERR_STREAM_NOT_LIVE');
    }
    const running = input.kind === 'ad' ? live.packager.runningBreak : undefined;
    if (running) {
      const until = running.startDate === undefined ? 'it starts and ends' : new Date(running.startDate + running.plannedDurationMs).toISOString();
      throw new OnAirError('ONAIR_ERR_AD_BREAK_RUNNING', `An ad break (${running.id}) is on until ${until}`);
    }
    const now = Date.now();
    const cue: Cue = {
      id: `${input.kind}-${randomId(10)}`,
      kind: input.kind,
      eventId: Math.floor(Math.random() * 0xffffffff) >>> 0,
      requestedAt: now,
      plannedDurationMs: Math.round(input.durationSec * 1000),
      startDate: input.kind === 'news' ? now : undefined,
      startPts: undefined,
      endDate: undefined,
      endPts: undefined,
      ...(input.text !== undefined ? { text: input.text } : {}),
    };
    if (input.kind === 'news') this.#showNews(live, cue);
    const started = live.packager.addCue(cue);
    // Bounded: a stream whose encoder stalls still answers (the cue then starts on the first segment to come).
    await Promise.race([started, new Promise((resolve) => setTimeout(resolve, 3 * this.config.segmentTargetMs).unref())]);
    const startDate = new Date(cue.startDate ?? cue.requestedAt).toISOString();
    this.#chat.sendCue(streamId, {
      id: cue.id,
      kind: cue.kind,
      startDate,
      durationSec: input.durationSec,
      ...(cue.text !== undefined ? { text: cue.text } : {}),
    });
    if (cue.kind === 'ad') return { id: cue.id, kind: cue.kind, startDate, ads: live.packager.adsOf(cue.id).map((ad) => ad.id) };
    return { id: cue.id, kind: cue.kind, startDate };
  }

  /** The catalog's ads, packaged in the stream's current plan, for its next ad breaks (in the background). */
  #refreshAds(live: LiveStream): void {
    const plan = live.plan;
    if (!plan) return;
    void this.#ads.forPlan(plan).then((ads) => {
      if (this.#live.get(live.streamId) === live && live.plan === plan) live.packager.setAds(ads);
    }).catch((error: unknown) => this.log.warn({ err: error, streamId: live.streamId }, 'could not load the ads'));
  }

  /** A video was marked or unmarked as an ad, or an ad deleted: its packaged media go if it is out, live streams get the new set. */
  #adsChanged(videoId: string, ad: boolean): void {
    void (ad ? Promise.resolve() : this.#ads.forget(videoId))
      .then(() => { for (const live of this.#live.values()) this.#refreshAds(live); })
      .catch((error: unknown) => this.log.warn({ err: error, videoId }, 'could not refresh the ads'));
  }

  /** Writes the ticker (atomically: ffmpeg re-reads it every frame) and clears it when the last flash is over. */
  #showNews(live: LiveStream, cue: Cue): void {
    if (!live.tickerFile) return;
    live.news.push({ cue, until: cue.requestedAt + cue.plannedDurationMs });
    const update = (): void => {
      const now = Date.now();
      live.news = live.news.filter((n) => n.until > now);
      try {
        writeTicker(live.tickerFile!, live.news.map((n) => n.cue.text ?? '').join('   •   '));
      } catch (error) {
        // The flash still goes to the playlists and the chat; only the burned-in text misses it (a full disk).
        this.log.warn({ err: error, streamId: live.streamId }, 'could not write the ticker file');
      }
      if (live.newsTimer) clearTimeout(live.newsTimer);
      live.newsTimer = undefined;
      if (live.news.length > 0) {
        live.newsTimer = setTimeout(update, Math.min(...live.news.map((n) => n.until)) - now + 5);
        live.newsTimer.unref();
      }
    };
    update();
  }

  /** A live event (current or past) by id. */
  async #event(eventId: string): Promise<{ id: string; streamId: string; startedAt: number } | undefined> {
    if (!/^[a-z0-9]{16}$/.test(eventId)) return undefined;
    const row = await this.#database.db
      .selectFrom('stream_events')
      .select(['id', 'stream_id', 'started_at'])
      .where('id', '=', eventId)
      .executeTakeFirst();
    return row && { id: row.id, streamId: row.stream_id, startedAt: Number(row.started_at) };
  }

  #recordingsDiskFull(): number {
    return [...this.#live.values()].filter((live) => live.recorder?.diskFull).length;
  }

  /**
   * Readiness: Redis and the database answer (each within READY_CHECK_TIMEOUT_MS). `degraded` names what is failing
   * or being repaired (`redis` while the embedded redis-server restarts, `webrtc` while a mediasoup worker does, `disk`
   * while a recording waits for space); it
   * empties on its own once they are back.
   */
  async #ready(): Promise<{ ok: boolean; checks: Record<string, boolean | string>; degraded: string[] }> {
    const checks: Record<string, boolean | string> = {};
    const [redis, database] = await Promise.all([
      // A restarting embedded redis-server is down whatever an old connection still answers.
      this.#embeddedRedis?.up === false ? false : passes(async () => (await this.#redis.ping()) === 'PONG'),
      passes(async () => {
        await this.streams.list();
        return true;
      }),
    ]);
    checks['redis'] = redis;
    checks['database'] = database;
    checks['encoder'] = this.encoder.kind;
    // A recording waiting for disk space is listed, not a reason to leave the pool: live playback goes on.
    const full = this.#recordingsDiskFull();
    checks['disk'] = full === 0 ? true : `full: ${full} recording${full === 1 ? '' : 's'} waiting for space`;
    // A WebRTC edge repairing itself is listed, not a reason to leave the pool: LL-HLS and the rest keep serving.
    checks['webrtc'] = this.#edge ? this.#edge.degraded ?? true : 'off';
    const degraded = Object.keys(checks).filter((name) => checks[name] === false || (typeof checks[name] === 'string' && /^(degraded|full)/.test(checks[name])));
    return { ok: checks['redis'] === true && checks['database'] === true && !this.#closed, checks, degraded };
  }

  /**
   * `admin`: playback URLs carry a fresh signed token when signing is on (the public view cannot hand out tokens).
   * `token`: what a viewer presented (`?token=`). A valid one for this stream is carried into the playback URLs and,
   * signed for the replay's video with the same expiry, into the replay's: the watch link plays the replay after the
   * event, and opens nothing else.
   */
  async #view(stream: StreamRecord, admin: boolean, token?: unknown): Promise<StreamView> {
    const base = this.publicUrl;
    const key = this.config.playbackSigningKey;
    const expiresAtSec = key === undefined ? undefined
      : admin ? Math.floor(Date.now() / 1000) + this.config.playbackTokenTtlSec
      : playbackTokenExpiry(key, stream.id, token);
    const signed = (id: string): string => (expiresAtSec === undefined ? '' : `?token=${signPlaybackToken(key!, id, expiresAtSec)}`);
    const query = signed(stream.id);
    const view: StreamView = {
      ...stream,
      ingest: { rtmpUrl: this.rtmpUrl },
      playback: {
        hls: `${base}/live/${stream.id}/index.m3u8${query}`,
        whep: `${base}/live/${stream.id}/whep${query}`,
        watchPage: `${base}/watch/${stream.id}${query}`,
      },
    };
    const live = this.#live.get(stream.id);
    if (live) view.stats = this.#stats(live, admin);
    // Its event is over on this node; the database has not been told yet (it was down): viewers see it ended.
    else if (stream.status === 'live' && this.#waitingEnds.has(stream.id)) view.status = 'ended';
    else if (stream.status === 'ended') {
      // The same /watch/:id plays the replay once the event is over.
      const video = await this.#vod.catalog.latestOfStream(stream.id);
      if (video?.version) view.replay = { videoId: video.id, hls: `${base}/vod/${video.id}/index.m3u8${signed(video.id)}` };
    }
    return view;
  }

  /** `admin`: the WebRTC sessions are listed (their ids are the capability to end them: never public). */
  #stats(live: LiveStream, admin: boolean): unknown {
    const source = live.publisher?.source;
    const input = live.publisher?.stats;
    const transcoder = live.transcoder.stats;
    return {
      eventId: live.eventId,
      startedAt: live.startedAt,
      publishing: live.publisher !== undefined,
      input: {
        kbps: input?.inKbps ?? 0,
        fps: input?.inFps ?? 0,
        width: source?.width,
        height: source?.height,
        videoCodec: source?.videoCodec,
        audioCodec: source?.audioCodec,
      },
      encoder: {
        kind: transcoder.encoder, speed: transcoder.speed, fps: transcoder.fps, restarts: transcoder.restarts,
        backlogMs: Math.round(transcoder.backlogMs),
      },
      // Steps taken because the node is short of CPU (undefined: the full ladder); see live-transcoder/degrade.ts.
      degraded: transcoder.degraded && {
        step: transcoder.degraded.steps[transcoder.degraded.steps.length - 1],
        steps: transcoder.degraded.steps,
        reason: transcoder.degraded.reason,
        since: new Date(transcoder.degraded.since).toISOString(),
      },
      renditions: transcoder.renditions,
      viewers: this.#edge?.viewers(live.streamId) ?? 0,
      // Chat connections in the stream's room on every process: a separate figure, since a WebRTC viewer with the
      // chat open would otherwise count twice.
      chatViewers: this.#chat.viewers(live.streamId),
      webrtc: this.#edge
        ? { viewers: this.#edge.viewers(live.streamId), ...(admin ? { sessions: this.#edge.sessionStats(live.streamId) } : {}) }
        : undefined,
      // What an ad break would play now (packaged in this stream's ladder), and the break on air, if any.
      ads: live.packager.ads.map((ad) => ({ videoId: ad.id, durationSec: ad.durationMs / 1000 })),
      adBreak: adBreakView(live.packager.runningBreak),
    };
  }

  #samples(): LiveStreamSample[] {
    return [...this.#live.values()].map((live) => {
      const input = live.publisher?.stats;
      const stats = live.transcoder.stats;
      return {
        streamId: live.streamId,
        inputKbps: input?.inKbps ?? 0,
        inputFps: input?.inFps ?? 0,
        encoderSpeed: stats.speed,
        encoderFps: stats.fps,
        renditions: stats.renditions.map((r) => ({ name: r.name, kbps: r.kbps, fps: r.fps })),
        backlogMs: stats.backlogMs,
        ladderLevel: stats.degraded?.level ?? 0,
      };
    });
  }
}

/** Whether `check` resolves true within READY_CHECK_TIMEOUT_MS. */
async function passes(check: () => Promise<boolean>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      check().catch(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), READY_CHECK_TIMEOUT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The VOD room: storage (disk or S3), catalog, queue and, unless ONAIR_VOD_CONCURRENCY=0, a worker in this process. */
export function startVodArchive(config: Config, log: Logger, database: Database, redis: import('ioredis').RedisOptions, concurrency = config.vod.concurrency): VodArchive {
  return new VodArchive({
    db: database.db as unknown as Kysely<CatalogTables>,
    dialect: database.dialect,
    storage: createStorage({ dataDir: config.dataDir, s3: config.s3 }),
    redis,
    dataDir: config.dataDir,
    ffmpegPath: config.ffmpegPath,
    ffprobePath: config.ffprobePath,
    ladder: { heights: config.vod.heights, preset: config.vod.preset, crf: config.vod.crf, segmentSec: config.vod.segmentSec },
    attempts: config.vod.attempts,
    backoffMs: config.vod.backoffMs,
    waitMaxMs: config.vod.waitMaxMs,
    lockMs: config.vod.lockMs,
    concurrency,
    replacedRetentionMs: config.vod.replacedRetentionMs,
    timeLimits: config.vod.timeLimits,
    log: log.child({ component: 'vod' }),
  });
}

/** The ticker file of a stream, empty (no flash on screen); undefined when its path cannot go into a filter. */
function prepareTicker(dataDir: string, streamId: string): string | undefined {
  const file = path.join(dataDir, 'tickers', `${streamId}.txt`);
  if (!/^[A-Za-z0-9/._-]+$/.test(file)) return undefined;
  mkdirSync(path.dirname(file), { recursive: true });
  writeTicker(file, '');
  return file;
}

/**
 * The ticker file holds the text as typed, UTF-8, on one line: drawtext reads it literally (`expansion=none`), but a
 * line break would start a second line under the picture, so control characters and line separators become spaces
 * (the API refuses control characters already; this guards every other caller).
 */
function writeTicker(file: string, text: string): void {
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, text.replace(/[\p{Cc}\u2028\u2029]+/gu, ' '), 'utf8');
  renameSync(temp, file);
}

/**
 * Starts the WebRTC edge unless WebRTC is off. A node whose mediasoup cannot start still serves LL-HLS: the error is
 * logged and WHEP answers 503.
 */
async function startEdge(config: Config, log: Logger): Promise<WebRtcEdge | undefined> {
  if (config.webrtcLayers.length === 0) return undefined;
  const listenIp = config.webrtc.listenIp ?? (config.host === '::' ? '0.0.0.0' : config.host);
  const announcedIp = config.webrtc.announcedIp ?? (listenIp === '0.0.0.0' ? firstExternalIPv4() : undefined);
  try {
    return await WebRtcEdge.create({
      listenIp,
      announcedIp,
      port: config.webrtc.port,
      limits: config.limits.whep,
      ...(config.webrtc.workers > 0 ? { workers: config.webrtc.workers } : {}),
      log: log.child({ component: 'webrtc' }),
    });
  } catch (error) {
    log.error({ err: (error as Error).message }, 'WebRTC is unavailable on this node (LL-HLS still works)');
    return undefined;
  }
}

/** What to announce when listening on every address and no ONAIR_WEBRTC_ANNOUNCED_IP is given. */
function firstExternalIPv4(): string {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const address of addresses ?? []) if (address.family === 'IPv4' && !address.internal) return address.address;
  }
  return '127.0.0.1';
}

/** A wildcard listen address is not something a client can dial. */
function connectHost(host: string): string {
  return host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
}

function adBreakView(cue: Cue | undefined): { id: string; startDate: string | null; plannedDurationSec: number } | null {
  if (!cue) return null;
  return { id: cue.id, startDate: cue.startDate === undefined ? null : new Date(cue.startDate).toISOString(), plannedDurationSec: cue.plannedDurationMs / 1000 };
}
