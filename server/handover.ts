import type { Redis } from 'ioredis';
import type { Logger } from '../lib/log.js';

/** Where one rendition's numbering goes on (ll-hls-packager's `Continuation`). */
export interface RenditionContinuation {
  mediaSequence: number;
  discontinuitySequence: number;
}

/**
 * What another origin needs to continue a live event (issue #17): the event, when it started, which origin holds
 * it now (its internal URL), and per rendition where the LL-HLS numbering goes on.
 */
export interface EventHandover {
  eventId: string;
  startedAt: number;
  origin: string;
  renditions: Record<string, RenditionContinuation>;
}

export interface EventHandoversOptions {
  redis: Redis;
  log: Logger;
  /**
   * A record lives this long unless written again: at least the discovery lease plus the reconnect grace, so that a
   * publisher that moves within the grace finds it even when its origin died at the start of the grace.
   */
  ttlMs: number;
}

const KEY_PREFIX = 'onair:event:';
const STREAM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const EVENT_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** At most this many renditions in one record (a ladder has a handful; bounds what a reader accepts). */
const MAX_RENDITIONS = 32;

/** Deletes the record only while it still names this event and this origin: a continuation elsewhere keeps its own. */
const DELETE_IF_OURS = `local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, r = pcall(cjson.decode, v)
if ok and type(r) == 'table' and r.eventId == ARGV[1] and r.origin == ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * Writes the record unless another origin's is there: a late segment of the origin the event moved away from (its
 * ffmpeg flushing after the publisher left) must not take the record back.
 */
const WRITE_IF_OURS = `local v = redis.call('GET', KEYS[1])
if v then
  local ok, r = pcall(cjson.decode, v)
  if ok and type(r) == 'table' and r.origin ~= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1`;

/**
 * The hand-over records of live events in the shared Redis, `onair:event:<streamId>` with a TTL: the origin that
 * holds an event writes it when the event starts or continues there and again as its segments complete (at most
 * once a second per stream); another origin that gets a publish for the stream reads it to continue the event; the
 * origin that ends the event deletes it (compare-and-delete). Redis away: writes are logged and retried by the next
 * write; a read that fails reads as "no record" (a new event starts, as before scale-out).
 */
export class EventHandovers {
  readonly #redis: Redis;
  readonly #log: Logger;
  readonly #ttlMs: number;
  /** Last write per stream (ms), for the once-a-second bound. */
  readonly #written = new Map<string, number>();

  constructor(options: EventHandoversOptions) {
    this.#redis = options.redis;
    this.#log = options.log;
    this.#ttlMs = options.ttlMs;
  }

  /**
   * Writes the record. `force` (the event starts or continues here): now, over any other. Otherwise (a segment
   * completed) at most once a second per stream, and only while the record is this origin's or gone.
   */
  async write(streamId: string, record: EventHandover, force = false): Promise<void> {
    if (!STREAM_ID.test(streamId)) return;
    const now = Date.now();
    if (!force && now - (this.#written.get(streamId) ?? 0) < 1_000) return;
    this.#written.set(streamId, now);
    const key = KEY_PREFIX + streamId;
    const value = JSON.stringify(record);
    await (force ? this.#redis.set(key, value, 'PX', this.#ttlMs) : this.#redis.eval(WRITE_IF_OURS, 1, key, value, record.origin, String(this.#ttlMs)))
      .catch((error: unknown) => this.#log.warn({ err: (error as Error).message, streamId }, 'hand-over: could not write the event record (written again at the next segment)'));
  }

  /** The stream's record, if one is fresh and well-formed. */
  async read(streamId: string): Promise<EventHandover | undefined> {
    if (!STREAM_ID.test(streamId)) return undefined;
    try {
      return parseHandover(await this.#redis.get(KEY_PREFIX + streamId));
    } catch (error) {
      this.#log.warn({ err: (error as Error).message, streamId }, 'hand-over: could not read the event record (a new event starts)');
      return undefined;
    }
  }

  /** The event ended at `origin`: its record goes, unless it names another event or origin since. */
  async release(streamId: string, eventId: string, origin: string): Promise<void> {
    this.#written.delete(streamId);
    if (!STREAM_ID.test(streamId)) return;
    await this.#redis.eval(DELETE_IF_OURS, 1, KEY_PREFIX + streamId, eventId, origin)
      .catch((error: unknown) => this.#log.warn({ err: (error as Error).message, streamId }, 'hand-over: could not remove the event record (it lapses)'));
  }

  /** This node no longer writes for the stream (it let the event go to another origin). */
  forget(streamId: string): void {
    this.#written.delete(streamId);
  }
}

const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** A record as read from Redis, checked field by field: anything malformed reads as none. */
export function parseHandover(raw: string | null): EventHandover | undefined {
  if (raw === null) return undefined;
  try {
    const value = JSON.parse(raw) as Partial<EventHandover>;
    if (typeof value.eventId !== 'string' || !EVENT_ID.test(value.eventId)) return undefined;
    if (!count(value.startedAt) || typeof value.origin !== 'string' || !/^https?:\/\//.test(value.origin)) return undefined;
    if (typeof value.renditions !== 'object' || value.renditions === null) return undefined;
    const renditions: Record<string, RenditionContinuation> = {};
    for (const [name, r] of Object.entries(value.renditions).slice(0, MAX_RENDITIONS)) {
      if (!/^[a-z0-9]{1,16}$/.test(name) || typeof r !== 'object' || r === null) return undefined;
      const { mediaSequence, discontinuitySequence } = r as Partial<RenditionContinuation>;
      if (!count(mediaSequence) || !count(discontinuitySequence)) return undefined;
      renditions[name] = { mediaSequence, discontinuitySequence };
    }
    return { eventId: value.eventId, startedAt: value.startedAt, origin: value.origin, renditions };
  } catch {
    return undefined;
  }
}
