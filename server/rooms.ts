import os from 'node:os';
import type { Kysely } from 'kysely';
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from '../lib/log.js';
import { ChatServer, type ChatTables } from '../chat/index.js';
import { Webhooks, type WebhooksTable } from './Webhooks.js';
import { createStorage, VodArchive, type CatalogTables, type VodArchiveOptions } from '../vod-archive/index.js';
import { WebRtcEdge, type OriginLookup } from '../webrtc-edge/index.js';
import { tokenMatches } from './adminToken.js';
import type { Config } from './config.js';
import type { Database } from './db.js';
import type { StreamStore } from './streams.js';

/**
 * The rooms that start asynchronously, each from the config and what it needs of the node's dependencies (the
 * database handle, Redis). The node (node.ts) and the VOD worker (worker.ts) build them here.
 */

/** The VOD room: storage (disk or S3), catalog, queue and, unless ONAIR_VOD_CONCURRENCY=0, a worker in this process. */
export function startVodArchive(config: Config, log: Logger, database: Database, redis: RedisOptions, concurrency = config.vod.concurrency,
  onVideoFinished?: VodArchiveOptions['onVideoFinished']): VodArchive {
  return new VodArchive({
    ...(onVideoFinished ? { onVideoFinished } : {}),
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

/** The webhooks: a queue in every process that has events to tell, deliveries where `deliver` (not on edges). */
export function startWebhooks(config: Config, log: Logger, database: Database, redis: Redis, redisOptions: RedisOptions, deliver: boolean): Webhooks {
  return new Webhooks({
    db: database.db as unknown as Kysely<{ webhooks: WebhooksTable }>,
    redis,
    redisOptions,
    log: log.child({ component: 'webhooks' }),
    attempts: config.webhooks.attempts,
    backoffMs: config.webhooks.backoffMs,
    deliver,
  });
}

/** A video this process processed is ready or failed for good: `video.ready` / `video.failed`, with what it is. */
export async function videoFinished(webhooks: Webhooks, vod: VodArchive, videoId: string, outcome: 'ready' | 'failed', reason: string | undefined,
  publicUrl: string | undefined): Promise<void> {
  const video = await vod.catalog.get(videoId).catch(() => undefined);
  await webhooks.emit(outcome === 'ready' ? 'video.ready' : 'video.failed', {
    videoId,
    ...(video ? { title: video.title, source: video.source, durationSec: video.durationSec ?? null } : {}),
    ...(reason !== undefined ? { reason } : {}),
    ...(publicUrl !== undefined && outcome === 'ready' ? { watchPage: `${publicUrl}/watch/${videoId}` } : {}),
  });
}

/**
 * The chat room. `liveEvent`: the stream's event live on this node, if any (asked at every join; the node's live
 * events exist only once the node has started, so this is a closure, not the node).
 */
export function startChat(config: Config, log: Logger, deps: {
  database: Database;
  redis: RedisOptions;
  adminToken: string;
  streams: StreamStore;
  liveEvent: (streamId: string) => { eventId: string; startedAt: number } | undefined;
}): Promise<ChatServer> {
  const { streams } = deps;
  return ChatServer.create({
    log: log.child({ component: 'chat' }),
    redis: deps.redis,
    adapter: config.chat.redisAdapter,
    db: deps.database.db as unknown as Kysely<ChatTables>,
    reactions: config.chat.reactions,
    reactionWindowMs: config.chat.reactionWindowMs,
    limits: config.chat.limits,
    blockedWords: config.chat.blockedWords,
    trustProxy: config.chat.trustProxy,
    trustedProxies: config.trustProxy,
    isAdmin: (token) => tokenMatches(token, deps.adminToken),
    streamExists: async (id) => (await streams.get(id)) !== undefined,
    currentEvent: async (id) => {
      const live = deps.liveEvent(id);
      if (live) return { eventId: live.eventId, startedAt: live.startedAt };
      // Live on another process (or between this node's start and its first publish): the database knows.
      const event = await streams.currentEvent(id);
      return event && { eventId: event.id, startedAt: event.startedAt };
    },
  });
}

/** What a WebRTC edge gets as code (see `NodeWiring`). */
export interface EdgeWiring {
  /**
   * Makes the node's WebRTC a pulling edge: WHEP viewers of a stream not live here are served from a pipe to the
   * origin this returns (undefined: not live anywhere). See webrtc-edge/README.md, *Edge across nodes*.
   */
  webrtcOrigin?: OriginLookup;
  /** How long a pulled stream's pipe outlives its last viewer here; default 30 s. */
  webrtcPipeLingerMs?: number;
}

/**
 * Starts the WebRTC edge unless WebRTC is off. A node whose mediasoup cannot start still serves LL-HLS: the error is
 * logged and WHEP answers 503.
 */
export async function startEdge(config: Config, log: Logger, wiring: EdgeWiring = {}): Promise<WebRtcEdge | undefined> {
  if (config.webrtcLayers.length === 0) return undefined;
  const listenIp = config.webrtc.listenIp ?? (config.host === '::' ? '0.0.0.0' : config.host);
  const announcedIp = config.webrtc.announcedIp ?? (listenIp === '0.0.0.0' ? firstExternalIPv4() : undefined);
  try {
    return await WebRtcEdge.create({
      listenIp,
      announcedIp,
      port: config.webrtc.port,
      limits: config.limits.whep,
      // A pulling edge (issue #17): viewers of streams live on other nodes come through one pipe per stream.
      origin: wiring.webrtcOrigin,
      clusterSecret: config.clusterSecret,
      ...(wiring.webrtcPipeLingerMs === undefined ? {} : { pipeLingerMs: wiring.webrtcPipeLingerMs }),
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
