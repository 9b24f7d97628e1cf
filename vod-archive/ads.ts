import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../lib/log.js';
import { runTied } from '../lib/tiedProcess.js';
import type { LadderPlan, Rendition } from '../live-transcoder/index.js';
import { splitAdRendition, type AdMedia, type AdRendition } from '../ll-hls-packager/index.js';
import type { Video, VideoCatalog } from './catalog.js';
import { probeSource } from './probe.js';
import type { Storage } from './storage.js';

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
  log: Logger;
}

/** Longer ads are cut: an ad break is made of spots, not programmes. */
export const MAX_AD_SEC = 120;

/**
 * Catalog videos marked as ads, packaged in the ladder of a live stream so that ad breaks can splice them into every
 * rendition: once per plan (one ffmpeg at a time, at low priority beside the live encodes), kept on disk across
 * restarts and in memory while in use.
 */
export class AdLibrary {
  readonly #options: AdLibraryOptions;
  readonly #log: Logger;
  readonly #packaged = new Map<string, Promise<AdMedia | undefined>>();
  #queue: Promise<unknown> = Promise.resolve();

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
    return ads.filter((ad): ad is AdMedia => ad !== undefined);
  }

  /** A video is no longer an ad (or is gone): its packaged media go. */
  async forget(videoId: string): Promise<void> {
    for (const key of this.#packaged.keys()) if (key.endsWith(`/${videoId}`)) this.#packaged.delete(key);
    const plans = await readdir(this.#options.dir).catch(() => [] as string[]);
    await Promise.all(plans.map((plan) => rm(path.join(this.#options.dir, plan, videoId), { recursive: true, force: true })));
  }

  #get(key: string, plan: LadderPlan, video: Video): Promise<AdMedia | undefined> {
    const id = `${key}/${video.id}`;
    let packaged = this.#packaged.get(id);
    if (!packaged) {
      const run = this.#queue.then(() => this.#package(key, plan, video));
      this.#queue = run.catch(() => undefined);
      packaged = run.catch((error: unknown) => {
        this.#log.warn({ err: error, videoId: video.id }, 'this ad cannot be packaged for the live ladder: ad breaks go without it');
        this.#packaged.delete(id);
        return undefined;
      });
      this.#packaged.set(id, packaged);
    }
    return packaged;
  }

  async #package(key: string, plan: LadderPlan, video: Video): Promise<AdMedia> {
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
      const result = await runTied('nice', ['-n', '10', this.#options.ffmpegPath, ...args]);
      await rm(source, { force: true });
      if (result.code !== 0) {
        const reason = result.stderr.trim().split('\n').pop()?.slice(0, 200) ?? `exit ${result.code}`;
        throw new Error(`ffmpeg could not package the ad: ${reason}`);
      }
      await writeFile(ready, JSON.stringify({ videoId: video.id, packagedAt: new Date().toISOString() }));
      this.#log.info({ videoId: video.id, plan: key, ms: Date.now() - started }, 'ad packaged for the live ladder');
    }
    const renditions = new Map<string, AdRendition>();
    for (const rendition of plan.renditions) {
      const ad = splitAdRendition(await readFile(path.join(dir, `${rendition.name}.mp4`)));
      if (!ad) throw new Error(`the packaged ad has no playable ${rendition.name} rendition`);
      renditions.set(rendition.name, ad);
    }
    const durationMs = Math.min(...[...renditions.values()].map((r) => r.durationMs));
    return { id: video.id, durationMs, renditions };
  }
}
