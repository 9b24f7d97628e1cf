import type { Redis } from 'ioredis';
import type { Logger } from '../lib/log.js';

/** Where a live stream is held: the origin's internal URL, its event, since when (ms). */
export interface StreamLocation {
  internalUrl: string;
  eventId: string;
  since: number;
}

export interface StreamDirectoryOptions {
  redis: Redis;
  log: Logger;
  /** A registration lives this long unless refreshed: an origin that dies drops out within it. */
  leaseMs?: number;
  /** Registrations are refreshed this often (well under the lease). */
  refreshMs?: number;
  /** Lookups are cached this long (an edge asks at every upstream request). */
  cacheMs?: number;
  /** At most this many lookups cached at once (oldest dropped first). */
  maxCached?: number;
}

const KEY_PREFIX = 'onair:live:';
const STREAM_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Deletes the key only while it still holds our registration: a stream that moved to another origin keeps its new one. */
const DELETE_IF_OURS = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
/**
 * Extends the lease while the key holds our registration; writes it again when it lapsed (Redis was away longer than
 * the lease); leaves another origin's registration alone (the stream moved there).
 */
const REFRESH_IF_OURS = `local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0`;

/**
 * Discovery through the shared Redis: an origin registers each live stream it holds under `onair:live:<id>` with a
 * lease (PX), refreshed while it holds the stream and deleted at the end of the event; an origin that dies (SIGKILL)
 * drops out when the lease lapses. An edge looks streams up here (cached briefly, bounded). The newest registration
 * wins: a publisher that reconnects to another origin moves the stream there, and the old origin's end does not
 * remove the new registration (compare-and-delete).
 */
export class StreamDirectory {
  readonly #redis: Redis;
  readonly #log: Logger;
  readonly #leaseMs: number;
  readonly #cacheMs: number;
  readonly #maxCached: number;
  /** What this node registered: stream → the exact value written (for compare-and-delete). */
  readonly #held = new Map<string, string>();
  readonly #cache = new Map<string, { at: number; location: StreamLocation | undefined }>();
  /** Reads of Redis in flight, by stream (as many as distinct streams asked about at once; each gone when done). */
  readonly #reading = new Map<string, Promise<StreamLocation | undefined>>();
  readonly #timer: NodeJS.Timeout;

  constructor(options: StreamDirectoryOptions) {
    this.#redis = options.redis;
    this.#log = options.log;
    this.#leaseMs = options.leaseMs ?? 10_000;
    this.#cacheMs = options.cacheMs ?? 1_000;
    this.#maxCached = options.maxCached ?? 10_000;
    this.#timer = setInterval(() => this.#refresh(), options.refreshMs ?? 3_000);
    this.#timer.unref();
  }

  /** Registers (or moves here) a stream this origin now holds. Failures are logged; the next refresh writes it again. */
  async register(streamId: string, location: StreamLocation): Promise<void> {
    const value = JSON.stringify(location);
    this.#held.set(streamId, value);
    await this.#redis.set(KEY_PREFIX + streamId, value, 'PX', this.#leaseMs)
      .catch((error: unknown) => this.#log.warn({ err: (error as Error).message, streamId }, 'discovery: could not register a live stream (retried)'));
  }

  /** The event ended here: the registration goes, unless another origin has taken the stream since. */
  async unregister(streamId: string): Promise<void> {
    const value = this.#held.get(streamId);
    if (value === undefined) return;
    this.#held.delete(streamId);
    await this.#redis.eval(DELETE_IF_OURS, 1, KEY_PREFIX + streamId, value)
      .catch((error: unknown) => this.#log.warn({ err: (error as Error).message, streamId }, 'discovery: could not remove a registration (its lease lapses)'));
  }

  /**
   * Where a stream is live now, or undefined. Cached for a second (`fresh`: ask Redis). A malformed id or entry, or
   * Redis down, reads as "not live here".
   */
  async lookup(streamId: string, options: { fresh?: boolean } = {}): Promise<StreamLocation | undefined> {
    if (!STREAM_ID.test(streamId)) return undefined;
    const cached = this.#cache.get(streamId);
    if (cached && !options.fresh && Date.now() - cached.at < this.#cacheMs) return cached.location;
    if (options.fresh) return this.#read(streamId, cached);
    // A crowd asking at once when the cache expires (an edge's viewers) shares one read of Redis.
    let reading = this.#reading.get(streamId);
    if (!reading) {
      reading = this.#read(streamId, cached).finally(() => this.#reading.delete(streamId));
      this.#reading.set(streamId, reading);
    }
    return reading;
  }

  async #read(streamId: string, cached: { location: StreamLocation | undefined } | undefined): Promise<StreamLocation | undefined> {
    let location: StreamLocation | undefined;
    try {
      location = parseLocation(await this.#redis.get(KEY_PREFIX + streamId));
    } catch (error) {
      this.#log.debug({ err: (error as Error).message, streamId }, 'discovery: lookup failed');
      return cached?.location;
    }
    this.#cache.delete(streamId);
    if (this.#cache.size >= this.#maxCached) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(streamId, { at: Date.now(), location });
    return location;
  }

  /** Stops refreshing and removes this node's registrations (a clean shutdown; a crash leaves them to their lease). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all([...this.#held.keys()].map((id) => this.unregister(id)));
  }

  #refresh(): void {
    for (const [streamId, value] of this.#held) {
      this.#redis.eval(REFRESH_IF_OURS, 1, KEY_PREFIX + streamId, value, String(this.#leaseMs)).catch((error: unknown) => this.#log.debug({ err: (error as Error).message, streamId }, 'discovery: refresh failed'));
    }
  }
}

function parseLocation(raw: string | null): StreamLocation | undefined {
  if (raw === null) return undefined;
  try {
    const value = JSON.parse(raw) as Partial<StreamLocation>;
    if (typeof value.internalUrl !== 'string' || !/^https?:\/\//.test(value.internalUrl)) return undefined;
    if (typeof value.eventId !== 'string' || typeof value.since !== 'number') return undefined;
    return { internalUrl: value.internalUrl, eventId: value.eventId, since: value.since };
  } catch {
    return undefined;
  }
}
