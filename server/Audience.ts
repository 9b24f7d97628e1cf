import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../lib/log.js';

/**
 * Who is watching (issue #19): every protocol, every process.
 *
 * - **LL-HLS** viewers are sessions seen asking for a media playlist (hls.js reloads it every part, any player at
 *   least every target duration): a session is watching while it asked within `windowMs`. A session is the
 *   `X-Playback-Session-Id` request header (what Apple's players send on every request, and what the watch page's
 *   hls.js sends), or, for players that send none (ffplay, VLC), the client's address with its user agent. Never a
 *   URL: a per-viewer query would make every playlist URL unique and defeat the edges' and a CDN's caches.
 * - **WebRTC** viewers are this node's WHEP sessions.
 * - Each process publishes its own counts to Redis once a second (a hash per stream, a field per process with an
 *   expiry, so a process that dies stops counting) and adds its new sessions to a HyperLogLog per stream (the event's
 *   total: distinct sessions, ±0.8 %); the peak is kept beside it. All three are computed in one script per stream,
 *   on Redis's clock. Session keys are hashed before they leave the process: no session id is ever stored or shown.
 * - **Video views**: a session that loads a video's media playlist is a view, once per `viewDedupMs` (Redis
 *   `SET NX PX`), added to the catalog in batches; views the database could not take are kept and added later.
 *
 * Everything is bounded: streams and sessions per stream tracked, new keys per tick, pending views. Redis or the
 * database away: the counts go stale (and say nothing false about the past); nothing throws past the tick.
 */

export interface AudienceCounts {
  /** Watching now: `llhls + webrtc`. */
  current: number;
  /** The most watching at once during the event. */
  peak: number;
  /** Distinct sessions during the event (HyperLogLog estimate). */
  total: number;
  byProtocol: { llhls: number; webrtc: number };
}

export interface AudienceOptions {
  redis: Redis;
  /** This process, unique among the processes sharing the Redis. */
  nodeId: string;
  log: Logger;
  /** WebRTC viewers of a stream on this node now. */
  webrtcViewers: (streamId: string) => number;
  /** Adds views to the catalog; a rejection keeps them for the next tick. */
  addViews: (views: ReadonlyMap<string, number>) => Promise<void>;
  /** A session watches while it asked for a playlist this recently (default 15 s: two reloads of a 6 s target). */
  windowMs?: number;
  /** The same session loading the same video again within this time is the same view (default 30 min). */
  viewDedupMs?: number;
  /** How often counts are exchanged (default 1 s). */
  intervalMs?: number;
  maxStreams?: number;
  maxSessionsPerStream?: number;
}

export const SESSION_HEADER = 'x-playback-session-id';
const SESSION_ID = /^[A-Za-z0-9_-]{8,64}$/;
const PREFIX = 'onair:audience:';
/** How long a stream's counts outlive its last update: a day (the event's end reads them long before). */
const KEEP_MS = 24 * 3600_000;
/** A process's entry counts this long after its last write (three ticks missed: it is gone). */
const ENTRY_TTL_MS = 5_000;
/** A stream's counts are read while someone asked for them this recently. */
const WATCH_MS = 10_000;
/** New session keys sent per stream per tick (the rest wait for the next tick). */
const FRESH_PER_TICK = 2_000;
const MAX_PENDING_VIEWS = 10_000;

/**
 * KEYS: the stream's nodes hash, total HyperLogLog, peak. ARGV: nodeId, llhls, webrtc, entry TTL ms, keep ms, then the
 * new session keys. Writes this node's entry (or removes it at 0), adds the keys, sums the live entries (dropping
 * entries a minute past their expiry), raises the peak; returns { llhls, webrtc, peak, total }.
 */
const EXCHANGE_SCRIPT = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = tonumber(ARGV[2]) + tonumber(ARGV[3])
if mine > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. (now + tonumber(ARGV[4])))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if #ARGV > 5 then redis.call('PFADD', KEYS[2], unpack(ARGV, 6)) end
local llhls, webrtc = 0, 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local l, w, e = string.match(entries[i + 1], '^(%d+):(%d+):(%d+)$')
  if e and tonumber(e) > now then
    llhls = llhls + tonumber(l)
    webrtc = webrtc + tonumber(w)
  elseif not e or tonumber(e) < now - 60000 then
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
local peak = tonumber(redis.call('GET', KEYS[3]) or '0')
if llhls + webrtc > peak then peak = llhls + webrtc end
redis.call('SET', KEYS[3], peak, 'PX', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local total = 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  total = redis.call('PFCOUNT', KEYS[2])
end
return { llhls, webrtc, peak, total }`;

type Exchange = (nodes: string, total: string, peak: string, ...args: (string | number)[]) => Promise<[number, number, number, number]>;

interface StreamSessions {
  /** Session (`sessionBasis`, in this process's memory only) → when it last asked (ms). */
  seen: Map<string, number>;
  /** Sessions first seen since they were last sent to the total (hashed when sent). */
  fresh: Set<string>;
}

/** What identifies the request's session: its `X-Playback-Session-Id` when well formed, else its address and agent. */
function sessionBasis(headers: Record<string, string | string[] | undefined>, address: string): string {
  const header = headers[SESSION_HEADER];
  if (typeof header === 'string' && SESSION_ID.test(header)) return `s\n${header}`;
  const agent = headers['user-agent'];
  return `a\n${address}\n${typeof agent === 'string' ? agent.slice(0, 256) : ''}`;
}

const hashed = (basis: string): string => createHash('sha256').update(basis).digest('base64url').slice(0, 22);

/** The request's session as it leaves the process (Redis): hashed. */
export function sessionKey(headers: Record<string, string | string[] | undefined>, address: string): string {
  return hashed(sessionBasis(headers, address));
}

const keys = (streamId: string): [string, string, string] =>
  [`${PREFIX}${streamId}:nodes`, `${PREFIX}${streamId}:total`, `${PREFIX}${streamId}:peak`];

export class Audience {
  readonly #options: AudienceOptions;
  readonly #windowMs: number;
  readonly #viewDedupMs: number;
  readonly #maxStreams: number;
  readonly #maxSessions: number;
  readonly #streams = new Map<string, StreamSessions>();
  /** Streams with WebRTC viewers here (their count is read from the edge at each tick). */
  readonly #webrtc = new Set<string>();
  /** Streams whose counts someone asked for, until when. */
  readonly #watched = new Map<string, number>();
  /** Streams live on this node: always exchanged. */
  readonly #owned = new Set<string>();
  readonly #counts = new Map<string, AudienceCounts>();
  /** Video → session keys that loaded it since the last tick. */
  readonly #viewed = new Map<string, Set<string>>();
  /** Views counted but not yet in the database. */
  readonly #pendingViews = new Map<string, number>();
  readonly #exchange: Exchange;
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #closed = false;

  constructor(options: AudienceOptions) {
    this.#options = options;
    this.#windowMs = options.windowMs ?? 15_000;
    this.#viewDedupMs = options.viewDedupMs ?? 30 * 60_000;
    this.#maxStreams = options.maxStreams ?? 10_000;
    this.#maxSessions = options.maxSessionsPerStream ?? 100_000;
    const redis = options.redis as Redis & { onairAudienceExchange?: Exchange };
    if (!redis.onairAudienceExchange) redis.defineCommand('onairAudienceExchange', { numberOfKeys: 3, lua: EXCHANGE_SCRIPT });
    this.#exchange = (...args) => redis.onairAudienceExchange!(...args);
  }

  start(): void {
    this.#timer = setInterval(() => { if (!this.#ticking) this.#ticking = this.tick().finally(() => { this.#ticking = undefined; }); }, this.#options.intervalMs ?? 1_000);
    this.#timer.unref();
  }

  /** An LL-HLS media playlist request of a live stream (after its token check). */
  llhls(streamId: string, headers: Record<string, string | string[] | undefined>, address: string): void {
    let stream = this.#streams.get(streamId);
    if (!stream) {
      if (this.#streams.size >= this.#maxStreams) return;
      stream = { seen: new Map(), fresh: new Set() };
      this.#streams.set(streamId, stream);
    }
    // Hashed only when first seen (sent to the total): a known session costs a map lookup per request.
    const key = sessionBasis(headers, address);
    if (!stream.seen.has(key)) {
      if (stream.seen.size >= this.#maxSessions) return;
      if (stream.fresh.size < this.#maxSessions) stream.fresh.add(key);
    }
    stream.seen.set(key, Date.now());
  }

  /** A WHEP session began on this node. */
  webrtcJoined(streamId: string, sessionId: string): void {
    if (this.#webrtc.size < this.#maxStreams) this.#webrtc.add(streamId);
    const stream = this.#streams.get(streamId) ?? (this.#streams.size < this.#maxStreams ? { seen: new Map(), fresh: new Set() } : undefined);
    if (!stream) return;
    this.#streams.set(streamId, stream);
    if (stream.fresh.size < this.#maxSessions) stream.fresh.add(`w\n${sessionId}`);
  }

  /** A video's media playlist loaded by a session (a view, unless the same session viewed it recently). */
  video(videoId: string, headers: Record<string, string | string[] | undefined>, address: string): void {
    this.#viewedBy(videoId, sessionKey(headers, address));
  }

  #viewedBy(videoId: string, key: string): void {
    let sessions = this.#viewed.get(videoId);
    if (!sessions) {
      if (this.#viewed.size >= MAX_PENDING_VIEWS) return;
      sessions = new Set();
      this.#viewed.set(videoId, sessions);
    }
    if (sessions.size < MAX_PENDING_VIEWS) sessions.add(key);
  }

  /** A new event of a stream live on this node: its peak and total start from zero. */
  async begin(streamId: string): Promise<void> {
    this.#owned.add(streamId);
    this.#counts.delete(streamId);
    const [, total, peak] = keys(streamId);
    await this.#options.redis.del(total, peak);
  }

  /** The stream is live here again (a reconnect within the grace, a restart): exchanged, not reset. */
  own(streamId: string): void {
    this.#owned.add(streamId);
  }

  /** The event is over here: the final counts (fresh from Redis when it answers), then no more exchanges. */
  async end(streamId: string): Promise<AudienceCounts | undefined> {
    try {
      return await this.#exchangeOne(streamId);
    } catch (error) {
      this.#options.log.warn({ err: error, streamId }, 'audience: final counts not read (Redis); the last known are kept');
      return this.#counts.get(streamId);
    } finally {
      this.#owned.delete(streamId);
    }
  }

  /** The counts as of the last exchange (within about a second); zeros before the first. Keeps them exchanged. */
  counts(streamId: string): AudienceCounts {
    if (this.#watched.size < this.#maxStreams || this.#watched.has(streamId)) this.#watched.set(streamId, Date.now() + WATCH_MS);
    return this.#counts.get(streamId) ?? { current: 0, peak: 0, total: 0, byProtocol: { llhls: 0, webrtc: 0 } };
  }

  /** LL-HLS sessions watching through this node now (for the metrics). */
  get localLlhlsSessions(): number {
    const since = Date.now() - this.#windowMs;
    let count = 0;
    for (const stream of this.#streams.values()) for (const at of stream.seen.values()) if (at >= since) count += 1;
    return count;
  }

  /** Once a second: forget idle sessions, exchange counts, count views. Never throws. */
  async tick(): Promise<void> {
    if (this.#closed) return;
    const now = Date.now();
    for (const [streamId, until] of this.#watched) if (until < now) this.#watched.delete(streamId);
    const streams = new Set([...this.#streams.keys(), ...this.#webrtc, ...this.#owned, ...this.#watched.keys()]);
    await Promise.all([...streams].map(async (streamId) => {
      try {
        await this.#exchangeOne(streamId);
      } catch (error) {
        this.#options.log.debug({ err: error, streamId }, 'audience: counts not exchanged (Redis)');
      }
    }));
    await this.#countViews().catch((error: unknown) => this.#options.log.debug({ err: error }, 'audience: views not counted yet'));
  }

  async #exchangeOne(streamId: string): Promise<AudienceCounts> {
    const since = Date.now() - this.#windowMs;
    const stream = this.#streams.get(streamId);
    let llhls = 0;
    if (stream) {
      for (const [key, at] of stream.seen) {
        if (at < since) stream.seen.delete(key);
        else llhls += 1;
      }
    }
    const webrtc = this.#webrtc.has(streamId) ? this.#options.webrtcViewers(streamId) : 0;
    if (webrtc === 0) this.#webrtc.delete(streamId);
    const fresh = stream ? [...stream.fresh].slice(0, FRESH_PER_TICK) : [];
    const [llhlsAll, webrtcAll, peak, total] = await this.#exchange(...keys(streamId), this.#options.nodeId, llhls, webrtc, ENTRY_TTL_MS, KEEP_MS,
      ...fresh.map(hashed));
    if (stream) {
      for (const key of fresh) stream.fresh.delete(key);
      if (stream.seen.size === 0 && stream.fresh.size === 0) this.#streams.delete(streamId);
    }
    const counts: AudienceCounts = {
      current: Number(llhlsAll) + Number(webrtcAll),
      peak: Number(peak),
      total: Number(total),
      byProtocol: { llhls: Number(llhlsAll), webrtc: Number(webrtcAll) },
    };
    if (this.#owned.has(streamId) || this.#watched.has(streamId)) this.#counts.set(streamId, counts);
    else this.#counts.delete(streamId);
    return counts;
  }

  async #countViews(): Promise<void> {
    if (this.#viewed.size > 0) {
      const batch = [...this.#viewed];
      this.#viewed.clear();
      const pipeline = this.#options.redis.pipeline();
      for (const [videoId, sessions] of batch) {
        for (const key of sessions) pipeline.set(`${PREFIX}view:${videoId}:${key}`, '1', 'PX', this.#viewDedupMs, 'NX');
      }
      let results: [Error | null, unknown][];
      try {
        results = (await pipeline.exec()) ?? [];
      } catch (error) {
        // Redis away: the sessions wait for the next tick (bounded as when they came).
        for (const [videoId, sessions] of batch) for (const key of sessions) this.#viewedBy(videoId, key);
        throw error;
      }
      let index = 0;
      for (const [videoId, sessions] of batch) {
        let views = 0;
        for (let i = 0; i < sessions.size; i += 1) {
          const [error, result] = results[index++] ?? [null, null];
          if (!error && result === 'OK') views += 1;
        }
        if (views > 0 && (this.#pendingViews.size < MAX_PENDING_VIEWS || this.#pendingViews.has(videoId))) {
          this.#pendingViews.set(videoId, (this.#pendingViews.get(videoId) ?? 0) + views);
        }
      }
    }
    if (this.#pendingViews.size === 0) return;
    const views = new Map(this.#pendingViews);
    await this.#options.addViews(views);
    for (const [videoId, count] of views) {
      const left = (this.#pendingViews.get(videoId) ?? 0) - count;
      if (left > 0) this.#pendingViews.set(videoId, left);
      else this.#pendingViews.delete(videoId);
    }
  }

  /** Stops exchanging; this node's entries are removed (they would expire within seconds anyway). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#ticking;
    const pipeline = this.#options.redis.pipeline();
    for (const streamId of new Set([...this.#streams.keys(), ...this.#webrtc])) pipeline.hdel(keys(streamId)[0], this.#options.nodeId);
    await pipeline.exec().catch(() => undefined);
    if (this.#pendingViews.size > 0) {
      await this.#options.addViews(new Map(this.#pendingViews)).catch((error: unknown) => {
        this.#options.log.warn({ err: error, videos: this.#pendingViews.size }, 'audience: views not written at close');
      });
    }
  }
}
