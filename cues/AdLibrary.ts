import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../lib/log.js';
import { runTied } from '../lib/tiedProcess.js';
import { splitAdRendition, type AdMedia, type AdRendition } from '../lib/media/ads.js';
import type { LadderPlan, Rendition } from '../live-transcoder/index.js';
import { DEFAULT_TIME_LIMITS, probeSource, transcodeLimitMs, type Storage, type Video, type VideoCatalog } from '../vod-archive/index.js';

/** What packaging one ad in one live plan needs from the live transcoder's side (its encoder settings). */
export interface AdPackaging {
  plan: LadderPlan;
  input: string;
  inputHasAudio: boolean;
  durationSec: number;
  output: (rendition: Rendition) => string;
}

export interface AdLibraryOptions {
  catalog: Pick<VideoCatalog, 'ads'>;
  storage: Storage;
  /** Where packaged ads are kept: `<dir>/<plan key>/<video id>/<rendition>.mp4`. */
  dir: string;
  ffmpegPath: string;
  ffprobePath: string;
  /** The ffmpeg arguments that package an ad in a plan (the live ladder's own encoder settings). */
  args: (packaging: AdPackaging) => string[];
  /** Names the encoder settings `args` uses: packaged ads are kept per plan and per these settings. */
  settings: string;
  /** How much is kept (least recently used evicted past it); DEFAULT_AD_LIMITS when absent. */
  limits?: AdLimits;
  /** Entries (`<plan key>/<video id>`) that a running ad break plays: never evicted (nor those just asked for). */
  inUse?: () => ReadonlySet<string>;
  log: Logger;
}

export interface AdLimits {
  /** Packaged entries (one ad in one plan) kept on disk. */
  maxPackaged: number;
  /** Their bytes on disk. */
  maxDiskBytes: number;
  /** Bytes of packaged media held in memory by the library (what live streams hold for their next breaks aside). */
  maxMemoryBytes: number;
}

export const DEFAULT_AD_LIMITS: AdLimits = { maxPackaged: 200, maxDiskBytes: 4096 * 1024 ** 2, maxMemoryBytes: 512 * 1024 ** 2 };

/** One packaged ad in memory: its media once read, and their size. */
interface Held {
  media: Promise<AdMedia | undefined>;
  bytes: number;
}

/** Longer ads are cut: an ad break is made of spots, not programmes. */
export const MAX_AD_SEC = 120;

/**
 * Catalog videos marked as ads, packaged in the ladder of a live stream so that ad breaks can splice them into every
 * rendition: once per plan (one ffmpeg at a time, at low priority beside the live encodes), kept on disk across
 * restarts and in memory while in use. Both are bounded (AdLimits): past a bound the least recently used entries go
 * (from memory only, or from disk and memory), never one that a running ad break plays; a later request packages it
 * again (or reads it back from disk).
 */
export class AdLibrary {
  readonly #options: AdLibraryOptions;
  readonly #log: Logger;
  /** In memory, least recently used first (a request moves an entry to the end). */
  readonly #packaged = new Map<string, Held>();
  #queue: Promise<unknown> = Promise.resolve();
  #evicted: Counter<'from'> | undefined;

  constructor(options: AdLibraryOptions) {
    this.#options = options;
    this.#log = options.log;
  }

  /** A plan's key: what the packaged media depends on (sizes, rates, GOP, audio, encoder settings). */
  planKey(plan: LadderPlan): string {
    const shape = {
      renditions: plan.renditions.map((r) => [r.name, r.width, r.height, r.fps, r.videoKbps, r.audioKbps]),
      gopMs: plan.gopMs,
      audio: plan.source.audioCodec !== undefined,
      settings: this.#options.settings,
    };
    return createHash('sha256').update(JSON.stringify(shape)).digest('hex').slice(0, 16);
  }

  /** Every ad of the catalog, packaged in this plan (those that cannot be are left out, and logged). */
  async forPlan(plan: LadderPlan): Promise<AdMedia[]> {
    const videos = await this.#options.catalog.ads();
    const key = this.planKey(plan);
    const ads = await Promise.all(videos.map((video) => this.#get(key, plan, video)));
    // What was just asked for is what a live stream is about to hold: it stays, whatever the bounds.
    await this.#serial(() => this.#evict(new Set(videos.map((video) => `${key}/${video.id}`))));
    return ads.filter((ad): ad is AdMedia => ad !== undefined);
  }

  /**
   * `onair_ads_packaged{where}` and `onair_ads_packaged_bytes{where}` (disk, memory): what is kept now;
   * `onair_ads_evicted_total{from}`: entries evicted (from memory only, or from disk and memory).
   */
  registerMetrics(registry: Registry): void {
    this.#evicted = new Counter({ name: 'onair_ads_evicted_total', help: 'Packaged ads evicted, least recently used first (from=memory: memory only; from=disk: disk and memory)', labelNames: ['from'], registers: [registry] });
    for (const from of ['memory', 'disk']) this.#evicted.inc({ from }, 0);
    let last: Promise<Awaited<ReturnType<AdLibrary['stored']>>> | undefined;
    // One look at the disk per scrape for both gauges.
    const read = (): Promise<Awaited<ReturnType<AdLibrary['stored']>>> => {
      last ??= this.stored().finally(() => setTimeout(() => { last = undefined; }, 1000).unref());
      return last;
    };
    new Gauge({
      name: 'onair_ads_packaged', help: 'Packaged ads (one ad in one live ladder) kept, on disk and in memory', labelNames: ['where'], registers: [registry],
      async collect() {
        const stored = await read();
        this.set({ where: 'disk' }, stored.disk.length);
        this.set({ where: 'memory' }, stored.memory.length);
      },
    });
    new Gauge({
      name: 'onair_ads_packaged_bytes', help: 'Bytes of packaged ads kept, on disk and in memory', labelNames: ['where'], registers: [registry],
      async collect() {
        const stored = await read();
        this.set({ where: 'disk' }, stored.diskBytes);
        this.set({ where: 'memory' }, stored.memoryBytes);
      },
    });
  }

  /** Entries packaged on disk (`<plan key>/<video id>`) and in memory: for /metrics and tests. */
  async stored(): Promise<{ disk: string[]; memory: string[]; diskBytes: number; memoryBytes: number }> {
    const disk = await this.#onDisk();
    return {
      disk: disk.map((e) => e.id),
      memory: [...this.#packaged.keys()],
      diskBytes: disk.reduce((sum, e) => sum + e.bytes, 0),
      memoryBytes: [...this.#packaged.values()].reduce((sum, h) => sum + h.bytes, 0),
    };
  }

  /** Runs after the packaging queued before it (one at a time: eviction never races a packaging). */
  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Least recently used first, entries that a running ad break plays spared: from memory while the library holds more
   * than maxMemoryBytes, from disk (and memory) while more than maxPackaged entries or maxDiskBytes are on disk.
   * `spare`: entries kept whatever the bounds (those just asked for).
   */
  async #evict(spare: ReadonlySet<string>): Promise<void> {
    const limits = this.#options.limits ?? DEFAULT_AD_LIMITS;
    const inUse = new Set([...(this.#options.inUse?.() ?? []), ...spare]);
    let memoryBytes = [...this.#packaged.values()].reduce((sum, h) => sum + h.bytes, 0);
    for (const [id, held] of this.#packaged) {
      if (memoryBytes <= limits.maxMemoryBytes) break;
      if (inUse.has(id)) continue;
      this.#packaged.delete(id);
      memoryBytes -= held.bytes;
      this.#evicted?.inc({ from: 'memory' });
    }
    const disk = await this.#onDisk();
    let count = disk.length;
    let bytes = disk.reduce((sum, e) => sum + e.bytes, 0);
    for (const entry of disk.sort((a, b) => a.usedAt - b.usedAt)) {
      if (count <= limits.maxPackaged && bytes <= limits.maxDiskBytes) break;
      if (inUse.has(entry.id)) continue;
      this.#packaged.delete(entry.id);
      await rm(path.join(this.#options.dir, ...entry.id.split('/')), { recursive: true, force: true });
      count -= 1;
      bytes -= entry.bytes;
      this.#evicted?.inc({ from: 'disk' });
      this.#log.info({ ad: entry.id, bytes: entry.bytes }, 'packaged ad evicted (least recently used)');
    }
  }

  /** Packaged entries on disk: each with its size and when it was last used (its ready.json's mtime). */
  async #onDisk(): Promise<{ id: string; bytes: number; usedAt: number }[]> {
    const entries: { id: string; bytes: number; usedAt: number }[] = [];
    for (const plan of await readdir(this.#options.dir).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{16}$/.test(plan)) continue;
      for (const video of await readdir(path.join(this.#options.dir, plan)).catch(() => [] as string[])) {
        const dir = path.join(this.#options.dir, plan, video);
        const ready = await stat(path.join(dir, 'ready.json')).catch(() => undefined);
        if (!ready) continue; // being packaged, or a packaging that died (redone on the next request)
        let bytes = 0;
        for (const name of await readdir(dir).catch(() => [] as string[])) bytes += (await stat(path.join(dir, name)).catch(() => undefined))?.size ?? 0;
        entries.push({ id: `${plan}/${video}`, bytes, usedAt: ready.mtimeMs });
      }
    }
    return entries;
  }

  /** A video is no longer an ad (or is gone): its packaged media go. */
  async forget(videoId: string): Promise<void> {
    for (const key of this.#packaged.keys()) if (key.endsWith(`/${videoId}`)) this.#packaged.delete(key);
    const plans = await readdir(this.#options.dir).catch(() => [] as string[]);
    await Promise.all(plans.map((plan) => rm(path.join(this.#options.dir, plan, videoId), { recursive: true, force: true })));
  }

  #get(key: string, plan: LadderPlan, video: Video): Promise<AdMedia | undefined> {
    const id = `${key}/${video.id}`;
    let held = this.#packaged.get(id);
    if (held) {
      // Most recently used: to the end of the map, and on disk (ready.json's mtime) for the disk's order.
      this.#packaged.delete(id);
      this.#packaged.set(id, held);
      const now = new Date();
      void utimes(path.join(this.#options.dir, key, video.id, 'ready.json'), now, now).catch(() => undefined);
      return held.media;
    }
    const entry: Held = { media: Promise.resolve(undefined), bytes: 0 };
    entry.media = this.#serial(() => this.#package(key, plan, video)).then(({ media, bytes }) => {
      entry.bytes = bytes;
      return media;
    }, (error: unknown) => {
      this.#log.warn({ err: error, videoId: video.id }, 'this ad cannot be packaged for the live ladder: ad breaks go without it');
      if (this.#packaged.get(id) === entry) this.#packaged.delete(id);
      return undefined;
    });
    this.#packaged.set(id, entry);
    return entry.media;
  }

  async #package(key: string, plan: LadderPlan, video: Video): Promise<{ media: AdMedia; bytes: number }> {
    const dir = path.join(this.#options.dir, key, video.id);
    const ready = path.join(dir, 'ready.json');
    if (!(await stat(ready).catch(() => undefined))) {
      const started = Date.now();
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      const source = path.join(dir, 'source');
      await this.#options.storage.download(video.sourceKey!, source);
      const probed = await probeSource(this.#options.ffprobePath, source);
      const args = this.#options.args({
        plan,
        input: source,
        inputHasAudio: probed.hasAudio,
        durationSec: Math.min(probed.durationMs / 1000, MAX_AD_SEC),
        output: (rendition) => path.join(dir, `${rendition.name}.mp4`),
      });
      // Below the live encodes: a viewer's stream comes before an ad that is not needed yet.
      // Bounded like a VOD transcode (an ad is at most MAX_AD_SEC long): a stuck packaging cannot hold the queue.
      const limitMs = transcodeLimitMs(Math.min(probed.durationMs, MAX_AD_SEC * 1000), DEFAULT_TIME_LIMITS);
      const result = await runTied('nice', ['-n', '10', this.#options.ffmpegPath, ...args], { timeoutMs: limitMs });
      if (result.timedOut) throw new Error(`ffmpeg could not package the ad within ${Math.round(limitMs / 1000)} s (stopped)`);
      await rm(source, { force: true });
      if (result.code !== 0) {
        const reason = result.stderr.trim().split('\n').pop()?.slice(0, 200) ?? `exit ${result.code}`;
        throw new Error(`ffmpeg could not package the ad: ${reason}`);
      }
      await writeFile(ready, JSON.stringify({ videoId: video.id, packagedAt: new Date().toISOString() }));
      this.#log.info({ videoId: video.id, plan: key, ms: Date.now() - started }, 'ad packaged for the live ladder');
    } else {
      const now = new Date();
      await utimes(ready, now, now).catch(() => undefined);
    }
    const renditions = new Map<string, AdRendition>();
    let bytes = 0;
    for (const rendition of plan.renditions) {
      const data = await readFile(path.join(dir, `${rendition.name}.mp4`));
      bytes += data.length;
      const ad = splitAdRendition(data);
      if (!ad) throw new Error(`the packaged ad has no playable ${rendition.name} rendition`);
      renditions.set(rendition.name, ad);
    }
    const durationMs = Math.min(...[...renditions.values()].map((r) => r.durationMs));
    return { media: { id: video.id, durationMs, renditions }, bytes };
  }
}
