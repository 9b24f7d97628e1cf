import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { OnAirError } from '../lib/errors.js';
import { randomId } from '../lib/ids.js';
import type { Logger } from '../lib/log.js';
import type { LadderPlan, VideoEncoderKind } from '../live-transcoder/index.js';
import type { StreamPackager } from '../ll-hls-packager/index.js';
import type { VodArchive } from '../vod-archive/index.js';
import type { Cue } from '../lib/media/cues.js';
import { AdLibrary, type AdLimits } from './AdLibrary.js';
import { adLadderArgs } from './adCommand.js';
import type { CueInput } from './routes.js';

/**
 * Cues on live events: ad breaks (from the ad library, packaged in each stream's ladder) and news flashes (burned in
 * as a ticker). One LiveCues per node; each live event keeps its own cue state (LiveEventCues).
 */

/** The cue state of one live event. */
export interface LiveEventCues {
  /** The file the transcoder burns in as a ticker (news flashes); undefined when the data dir path cannot be one. */
  tickerFile: string | undefined;
  /** News flashes on screen now, and the timer that clears the ticker after the last one. */
  news: { cue: Cue; until: number }[];
  newsTimer: NodeJS.Timeout | undefined;
  /** The transcoder's current plan: ads are packaged in it. */
  plan: LadderPlan | undefined;
}

/** What cues need of a live event. */
export interface CueTarget {
  readonly streamId: string;
  readonly packager: StreamPackager;
  readonly cues: LiveEventCues;
}

export interface LiveCuesOptions {
  /** The node's settings the cues need (a subset of its config). */
  config: {
    dataDir: string; ffmpegPath: string; ffprobePath: string; x264Preset: string; partTargetMs: number;
    vaapiDevice: string; ads: AdLimits; segmentTargetMs: number;
  };
  encoder: VideoEncoderKind;
  vod: Pick<VodArchive, 'catalog' | 'storage'>;
  log: Logger;
  /** The live event of a stream on this node, and all of them. */
  live: (streamId: string) => CueTarget | undefined;
  lives: () => Iterable<CueTarget>;
  streamExists: (streamId: string) => Promise<boolean>;
  /** Tells chat clients (the `cue` event). */
  sendCue: (streamId: string, cue: { id: string; kind: 'ad' | 'news'; startDate: string; durationSec: number; text?: string }) => void;
}

/** A new live event's cue state: its ticker file written empty (a failure leaves the event without a ticker). */
export function openEventCues(dataDir: string, streamId: string, log: Logger): LiveEventCues {
  let tickerFile: string | undefined;
  try {
    tickerFile = prepareTicker(dataDir, streamId);
    if (!tickerFile) log.warn('the data dir path has characters ffmpeg filters cannot take: news flashes will not be burned in');
  } catch (error) {
    // A full disk does not keep a stream off the air: it goes live without the ticker.
    log.warn({ err: error }, 'could not write the ticker file: news flashes will not be burned in for this event');
  }
  return { tickerFile, news: [], newsTimer: undefined, plan: undefined };
}

/** An ended event's cue state: the ticker's timer stops. */
export function closeEventCues(cues: LiveEventCues): void {
  if (cues.newsTimer) clearTimeout(cues.newsTimer);
}

export class LiveCues {
  readonly ads: AdLibrary;
  readonly #options: LiveCuesOptions;
  readonly log: Logger;

  constructor(options: LiveCuesOptions) {
    this.#options = options;
    this.log = options.log;
    const { config, encoder } = options;
    this.ads = new AdLibrary({
      catalog: options.vod.catalog,
      storage: options.vod.storage,
      dir: path.join(config.dataDir, 'ads'),
      ffmpegPath: config.ffmpegPath,
      ffprobePath: config.ffprobePath,
      settings: `${encoder}/${config.x264Preset}/${config.partTargetMs}`,
      args: (packaging) => adLadderArgs({
        ...packaging,
        encoder,
        x264Preset: config.x264Preset,
        partTargetMs: config.partTargetMs,
        vaapiDevice: config.vaapiDevice,
      }),
      limits: config.ads,
      // What a running ad break plays is never evicted (its plan's key and its ads' ids).
      inUse: () => {
        const ids = new Set<string>();
        for (const live of options.lives()) {
          const running = live.cues.plan && live.packager.runningBreak;
          if (!running) continue;
          const key = this.ads.planKey(live.cues.plan!);
          for (const ad of live.packager.adsOf(running.id)) ids.add(`${key}/${ad.id}`);
        }
        return ids;
      },
      log: this.log.child({ component: 'ads' }),
    });
  }

  /**
   * The live event's transcoder (re)started with `plan`. A restart with the same ladder keeps the packaged ads;
   * another ladder (the publisher changed its picture) plays none until they are packaged for it.
   */
  planChanged(live: CueTarget, plan: LadderPlan): void {
    if (this.#options.live(live.streamId) === live && (!live.cues.plan || this.ads.planKey(live.cues.plan) !== this.ads.planKey(plan))) {
      live.cues.plan = plan;
      live.packager.setAds([]);
      this.#refreshAds(live);
    }
  }

  /**
   * An ad break or a news flash on a live stream: into every rendition's playlist (from the shared packager), to chat
   * clients as a `cue` event, and for news into the burned-in ticker. An ad break answers once it has its start (the
   * next segment boundary, within one segment duration).
   */
  async addCue(streamId: string, input: CueInput): Promise<{ id: string; kind: string; startDate: string; ads?: string[] } | undefined> {
    const live = this.#options.live(streamId);
    if (!live) {
      if (!(await this.#options.streamExists(streamId))) return undefined;
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
    await Promise.race([started, new Promise((resolve) => setTimeout(resolve, 3 * this.#options.config.segmentTargetMs).unref())]);
    const startDate = new Date(cue.startDate ?? cue.requestedAt).toISOString();
    this.#options.sendCue(streamId, {
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
  #refreshAds(live: CueTarget): void {
    const plan = live.cues.plan;
    if (!plan) return;
    void this.ads.forPlan(plan).then((ads) => {
      if (this.#options.live(live.streamId) === live && live.cues.plan === plan) live.packager.setAds(ads);
    }).catch((error: unknown) => this.log.warn({ err: error, streamId: live.streamId }, 'could not load the ads'));
  }

  /** A video was marked or unmarked as an ad, or an ad deleted: its packaged media go if it is out, live streams get the new set. */
  adsChanged(videoId: string, ad: boolean): void {
    void (ad ? Promise.resolve() : this.ads.forget(videoId))
      .then(() => { for (const live of this.#options.lives()) this.#refreshAds(live); })
      .catch((error: unknown) => this.log.warn({ err: error, videoId }, 'could not refresh the ads'));
  }

  /** Writes the ticker (atomically: ffmpeg re-reads it every frame) and clears it when the last flash is over. */
  #showNews(live: CueTarget, cue: Cue): void {
    const state = live.cues;
    if (!state.tickerFile) return;
    state.news.push({ cue, until: cue.requestedAt + cue.plannedDurationMs });
    const update = (): void => {
      const now = Date.now();
      state.news = state.news.filter((n) => n.until > now);
      try {
        writeTicker(state.tickerFile!, state.news.map((n) => n.cue.text ?? '').join('   •   '));
      } catch (error) {
        // The flash still goes to the playlists and the chat; only the burned-in text misses it (a full disk).
        this.log.warn({ err: error, streamId: live.streamId }, 'could not write the ticker file');
      }
      if (state.newsTimer) clearTimeout(state.newsTimer);
      state.newsTimer = undefined;
      if (state.news.length > 0) {
        state.newsTimer = setTimeout(update, Math.min(...state.news.map((n) => n.until)) - now + 5);
        state.newsTimer.unref();
      }
    };
    update();
  }
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

/** The ad break on air, as the stream's stats show it (null: none). */
export function adBreakView(cue: Cue | undefined): { id: string; startDate: string | null; plannedDurationSec: number } | null {
  if (!cue) return null;
  return { id: cue.id, startDate: cue.startDate === undefined ? null : new Date(cue.startDate).toISOString(), plannedDurationSec: cue.plannedDurationMs / 1000 };
}
