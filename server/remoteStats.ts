import type { Logger } from '../lib/log.js';
import type { StreamLocation } from './discovery.js';
import type { StreamStats } from './views.js';

export interface RemoteStatsOptions {
  /** Where a stream is live (discovery); undefined: nowhere. */
  locate: (streamId: string) => Promise<StreamLocation | undefined>;
  /** This node's own internal URL: a stream registered under it is not remote. */
  self: () => string | undefined;
  log: Logger;
  /** Answers are reused this long (a watch page polls every few seconds; a crowd on one edge costs one fetch). */
  cacheMs?: number;
  /** At most this many streams cached (oldest dropped first). */
  maxCached?: number;
  /** The origin's answer is awaited this long, then the view goes without stats. */
  timeoutMs?: number;
}

const STREAM_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * A live event's figures for a stream held by another node: an edge (or another origin) serves the stream view from
 * the shared database, but the event's `stats` (publishing, the ladder, the ad break on air) live in the origin's
 * memory. They are read from the origin's public view (`GET <internal URL>/api/streams/:id`), once per second per
 * stream whatever the number of viewers asking, bounded, and dropped (never waited on past the timeout) when the
 * origin does not answer.
 */
export class RemoteStats {
  readonly #options: RemoteStatsOptions;
  readonly #cacheMs: number;
  readonly #maxCached: number;
  readonly #timeoutMs: number;
  readonly #cache = new Map<string, { at: number; stats: Promise<StreamStats | undefined> }>();

  constructor(options: RemoteStatsOptions) {
    this.#options = options;
    this.#cacheMs = options.cacheMs ?? 1_000;
    this.#maxCached = options.maxCached ?? 1_000;
    this.#timeoutMs = options.timeoutMs ?? 1_000;
  }

  /** The stats the stream's origin shows, or undefined (not live anywhere else, the origin silent or odd). */
  get(streamId: string): Promise<StreamStats | undefined> {
    if (!STREAM_ID.test(streamId)) return Promise.resolve(undefined);
    const cached = this.#cache.get(streamId);
    if (cached && Date.now() - cached.at < this.#cacheMs) return cached.stats;
    const stats = this.#fetch(streamId);
    this.#cache.delete(streamId);
    if (this.#cache.size >= this.#maxCached) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(streamId, { at: Date.now(), stats });
    return stats;
  }

  async #fetch(streamId: string): Promise<StreamStats | undefined> {
    const location = await this.#options.locate(streamId);
    if (!location || location.internalUrl === this.#options.self()) return undefined;
    try {
      const response = await fetch(`${location.internalUrl}/api/streams/${streamId}`, { signal: AbortSignal.timeout(this.#timeoutMs) });
      if (response.status !== 200) {
        await response.body?.cancel();
        return undefined;
      }
      const view = (await response.json()) as { stats?: unknown } | null;
      const stats = view?.stats;
      if (!stats || typeof stats !== 'object' || typeof (stats as { eventId?: unknown }).eventId !== 'string') return undefined;
      return stats as StreamStats;
    } catch (error) {
      this.#options.log.debug({ err: (error as Error).message, streamId }, 'remote stats: the origin did not answer');
      return undefined;
    }
  }
}
