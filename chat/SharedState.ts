import type { Redis } from 'ioredis';
import type { RateLimit } from './TokenBucket.js';

/**
 * What every OnAir process must agree on, kept in Redis (the embedded one persists it with its append-only file):
 * per stream the chat settings and the bans, per recent comment who wrote it (for "ban the author of this comment"),
 * per stream and process the number of chat viewers, and per client address the connections it holds.
 */
const PREFIX = 'onair:chat:';
const settingsKey = (streamId: string): string => `${PREFIX}settings:${streamId}`;
const bansKey = (streamId: string): string => `${PREFIX}bans:${streamId}`;
const authorKey = (commentId: string): string => `${PREFIX}author:${commentId}`;
const viewersKey = (streamId: string): string => `${PREFIX}viewers:${streamId}`;
const connectionsKey = (address: string): string => `${PREFIX}connections:${address}`;
const rateKey = (kind: string, address: string): string => `${PREFIX}rate:${kind}:${address}`;

/**
 * The connections of an address are a sorted set: a member per connection, scored with the (Redis clock) time its
 * entry expires. A process refreshes its own entries; those of a process that died expire and stop counting. Redis's
 * clock, not ours, so that processes on hosts whose clocks disagree still agree on what has expired.
 */
const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS[1]: the address's set; ARGV: cap, ttlMs, member. 1 when the member holds a slot (already, or now), else 0. */
const ACQUIRE_SCRIPT = `${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

/** KEYS[1]: the address's set; ARGV: ttlMs, members… (live connections: they count, over the cap or not). */
const REFRESH_SCRIPT = `${NOW_MS}
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0`;

/**
 * A token bucket shared by every process, as GCRA: the key holds the "theoretical arrival time" of the next token
 * (Redis clock, ms). Burst = tokens, one token back per periodMs / tokens. KEYS[1]: the address's key; ARGV: tokens,
 * periodMs. 0 when a token was taken, else the ms until one will be (nothing taken). The key expires when the bucket
 * is full again: an address that stops costs nothing.
 */
const TAKE_TOKEN_SCRIPT = `${NOW_MS}
local period = tonumber(ARGV[2])
local interval = period / tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local due = tat + interval
if due - now > period then return math.ceil(due - now - period) end
redis.call('SET', KEYS[1], tostring(due), 'PX', math.ceil(due - now))
return 0`;

/** How long the author of a comment stays known, for bans by comment. */
export const AUTHOR_RETENTION_SEC = 24 * 3600;

export interface ChatSettings {
  /** 0: off; otherwise a viewer may comment once per this many seconds. */
  slowModeSec: number;
}

export interface ChatBan {
  id: string;
  /** `address`: every connection from the address (an IPv6 /64); `connection`: one Socket.IO connection. */
  kind: 'address' | 'connection';
  /** The address key or the connection id. */
  target: string;
  createdAt: number;
  /** null: until lifted. */
  expiresAt: number | null;
}

export interface CommentAuthor {
  streamId: string;
  connectionId: string;
  address: string;
}

export function banActive(ban: ChatBan, now: number = Date.now()): boolean {
  return ban.expiresAt === null || ban.expiresAt > now;
}

function parseBan(text: string): ChatBan | undefined {
  try {
    const ban = JSON.parse(text) as ChatBan;
    if (typeof ban.id === 'string' && (ban.kind === 'address' || ban.kind === 'connection') && typeof ban.target === 'string') return ban;
  } catch {
    // A foreign or damaged field: ignored.
  }
  return undefined;
}

export class SharedState {
  readonly #redis: Redis;

  constructor(redis: Redis) {
    this.#redis = redis;
  }

  /** The stream's settings and its active bans (expired ones are pruned on the way). */
  async load(streamId: string): Promise<{ settings: ChatSettings; bans: ChatBan[] }> {
    const [settings, bans] = await Promise.all([
      this.#redis.hgetall(settingsKey(streamId)),
      this.#redis.hgetall(bansKey(streamId)),
    ]);
    const now = Date.now();
    const active: ChatBan[] = [];
    const expired: string[] = [];
    for (const [field, value] of Object.entries(bans)) {
      const ban = parseBan(value);
      if (ban && banActive(ban, now)) active.push(ban);
      else expired.push(field);
    }
    if (expired.length > 0) void this.#redis.hdel(bansKey(streamId), ...expired).catch(() => {});
    const slowModeSec = Number(settings['slowModeSec'] ?? 0);
    return { settings: { slowModeSec: Number.isFinite(slowModeSec) && slowModeSec >= 0 ? slowModeSec : 0 }, bans: active };
  }

  async saveSettings(streamId: string, settings: ChatSettings): Promise<void> {
    await this.#redis.hset(settingsKey(streamId), 'slowModeSec', String(settings.slowModeSec));
  }

  async addBan(streamId: string, ban: ChatBan): Promise<void> {
    await this.#redis.hset(bansKey(streamId), ban.id, JSON.stringify(ban));
  }

  async removeBan(streamId: string, banId: string): Promise<boolean> {
    return (await this.#redis.hdel(bansKey(streamId), banId)) > 0;
  }

  async rememberAuthor(commentId: string, author: CommentAuthor): Promise<void> {
    await this.#redis.set(authorKey(commentId), JSON.stringify(author), 'EX', AUTHOR_RETENTION_SEC);
  }

  async author(commentId: string): Promise<CommentAuthor | undefined> {
    const text = await this.#redis.get(authorKey(commentId));
    if (text === null) return undefined;
    try {
      return JSON.parse(text) as CommentAuthor;
    } catch {
      return undefined;
    }
  }

  /** Forgets everything about a deleted stream. */
  async deleteStream(streamId: string): Promise<void> {
    await this.#redis.del(settingsKey(streamId), bansKey(streamId), viewersKey(streamId));
  }

  /**
   * Publishes this process's viewer counts (a hash per stream, a field per process: `<count>:<expiresAt>`, so that a
   * process that died stops counting once its entry expires) and reads the other processes' counts of `watched`.
   */
  async exchangeViewers(nodeId: string, local: Map<string, number>, gone: Iterable<string>, watched: Iterable<string>, ttlMs: number): Promise<Map<string, number>> {
    const now = Date.now();
    const pipeline = this.#redis.pipeline();
    for (const [streamId, count] of local) pipeline.hset(viewersKey(streamId), nodeId, `${count}:${now + ttlMs}`);
    for (const streamId of gone) pipeline.hdel(viewersKey(streamId), nodeId);
    const read = [...watched];
    for (const streamId of read) pipeline.hgetall(viewersKey(streamId));
    const results = (await pipeline.exec()) ?? [];
    const remote = new Map<string, number>();
    const offset = results.length - read.length;
    read.forEach((streamId, index) => {
      const [error, value] = results[offset + index] ?? [null, {}];
      if (error) throw error;
      let sum = 0;
      const stale: string[] = [];
      for (const [field, entry] of Object.entries((value ?? {}) as Record<string, string>)) {
        if (field === nodeId) continue;
        const [count, expiresAt] = entry.split(':').map(Number);
        if (expiresAt !== undefined && expiresAt > now && Number.isFinite(count)) sum += count!;
        else if (expiresAt !== undefined && expiresAt < now - 60_000) stale.push(field);
      }
      if (stale.length > 0) void this.#redis.hdel(viewersKey(streamId), ...stale).catch(() => {});
      remote.set(streamId, sum);
    });
    return remote;
  }

  /**
   * Takes a connection slot of `address` for `member` unless the address already holds `max` live ones, on every
   * process together; true when the member holds one. The entry lasts `ttlMs` unless refreshed.
   */
  /** Takes a token of `kind` for `address` from the bucket every process shares: 0, or the ms to wait (none taken). */
  async takeToken(kind: 'comment', address: string, limit: RateLimit): Promise<number> {
    return Number(await this.#redis.eval(TAKE_TOKEN_SCRIPT, 1, rateKey(kind, address), limit.tokens, limit.periodMs));
  }

  async acquireConnection(address: string, member: string, max: number, ttlMs: number): Promise<boolean> {
    return (await this.#redis.eval(ACQUIRE_SCRIPT, 1, connectionsKey(address), max, ttlMs, member)) === 1;
  }

  /** Extends the entries of this process's live connections, per address, by `ttlMs` from now. */
  async refreshConnections(byAddress: ReadonlyMap<string, readonly string[]>, ttlMs: number): Promise<void> {
    if (byAddress.size === 0) return;
    const pipeline = this.#redis.pipeline();
    for (const [address, members] of byAddress) pipeline.eval(REFRESH_SCRIPT, 1, connectionsKey(address), ttlMs, ...members);
    for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
  }

  /** Frees the slots of closed connections: `[address, member]` pairs. */
  async releaseConnections(entries: Iterable<readonly [string, string]>): Promise<void> {
    const pipeline = this.#redis.pipeline();
    for (const [address, member] of entries) pipeline.zrem(connectionsKey(address), member);
    if (pipeline.length === 0) return;
    for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
  }

  async forgetViewers(nodeId: string, streams: Iterable<string>): Promise<void> {
    const pipeline = this.#redis.pipeline();
    for (const streamId of streams) pipeline.hdel(viewersKey(streamId), nodeId);
    await pipeline.exec();
  }
}
