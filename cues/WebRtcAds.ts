import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import type { Logger } from '../lib/log.js';
import type { AdMedia, AdRendition } from '../lib/media/ads.js';
import type { Cue } from '../lib/media/cues.js';
import {
  buildFfmpegArgs, hwGlobalOptions, hwUploadFilter, rtpAudioOutput, rtpVideoOutput,
  type FfmpegOption as Option, type FfmpegOutput, type RtpFeed, type RtpTargets, type VideoEncoderKind,
} from '../live-transcoder/index.js';

/** Which feed a stream's WebRTC viewers get: the live ladder's RTP, or the ad break's. */
export type WebRtcFeed = 'live' | 'ad';

export interface WebRtcAdsOptions {
  streamId: string;
  ffmpegPath: string;
  encoder: VideoEncoderKind;
  x264Preset: string;
  vaapiDevice: string;
  /** Where the ad feed goes: the live feed's SSRCs and payload types on the relay's second set of ports. */
  adInputs: () => Promise<RtpTargets | undefined>;
  /** Switches the stream's viewers to a feed (each layer at that feed's next keyframe, audio with it). */
  useFeed: (feed: WebRtcFeed) => void;
  log: Logger;
  /** How long the ad's ffmpeg goes on after the break's end, so that the switch back lands on a live keyframe. */
  lingerMs?: number;
}

/** Ads one ffmpeg run plays (one pipe each); a longer break chains another run. */
export const MAX_AD_INPUTS = 8;
/** The switch back waits for a live keyframe (1 s GOP), forced by the relay after 2.5 s: the ad's feed lasts past it. */
const LINGER_MS = 3000;
/** A run that ends sooner than this played nothing worth chaining: the break goes on with the programme. */
const MIN_RUN_MS = 1000;

/** The break being played to WebRTC viewers: its ads (one rendition each) and where the next run starts in them. */
interface Break {
  cue: Cue;
  ads: AdRendition[];
  next: number;
  live: RtpFeed;
}

interface Run {
  child: ChildProcess;
  startedAt: number;
  stopping: boolean;
  timer: NodeJS.Timeout;
  stderr: string;
}

/**
 * Ad breaks for a live stream's WebRTC viewers (issue #18): at the break's start (the packager's boundary) one
 * short-lived ffmpeg plays the break's ads, the same packaged media the playlists splice in, at real time, encoded
 * exactly as the live WebRTC feed (same layers, SSRCs, payload types, encoder settings) to the relay's ad inputs; the
 * relay switches the viewers to it at its first keyframe and back to the programme at the next live keyframe after
 * the break's end. At most one such ffmpeg per stream, each run bounded in time; one that cannot start or dies leaves
 * the viewers on the programme (logged as `ONAIR_ERR_AD_WEBRTC_FEED`), and never touches the live ffmpeg.
 */
export class WebRtcAds {
  readonly #options: WebRtcAdsOptions;
  readonly #log: Logger;
  #break: Break | undefined;
  #run: Run | undefined;
  /** A run kept for the switch back after its break ended. */
  #lingering: Run | undefined;
  #closed = false;

  constructor(options: WebRtcAdsOptions) {
    this.#options = options;
    this.#log = options.log;
  }

  /** Is an ad feed being played now (for tests and the stream view)? */
  get playing(): boolean {
    return this.#run !== undefined;
  }

  /**
   * An ad break started with these ads (none: markers only, nothing to play). `live`: what the live run sends over
   * RTP now (undefined: no WebRTC feed).
   */
  start(cue: Cue, ads: readonly AdMedia[], live: RtpFeed | undefined): void {
    if (this.#closed) return;
    this.#stopBreak();
    this.#stop(this.#lingering);
    const renditions = live ? pickRendition(ads) : [];
    if (!live || renditions.length === 0) return;
    const entry: Break = { cue, ads: renditions, next: 0, live };
    this.#break = entry;
    void this.#play(entry).catch((error: unknown) => this.#failed(entry, error instanceof Error ? error.message : String(error)));
  }

  /** The break ended (on the boundary where CUE-IN goes): viewers go back to the programme at its next keyframe. */
  end(cue: Cue): void {
    if (this.#break?.cue !== cue) return;
    this.#break = undefined;
    this.#options.useFeed('live');
    const run = this.#run;
    this.#run = undefined;
    if (!run) return;
    run.stopping = true;
    this.#lingering = run;
    clearTimeout(run.timer);
    run.timer = setTimeout(() => this.#stop(run), this.#options.lingerMs ?? LINGER_MS);
    run.timer.unref();
  }

  /** The live event ends: the ad's ffmpeg is killed (the viewers' sessions end with the stream). */
  close(): void {
    this.#closed = true;
    this.#break = undefined;
    this.#stop(this.#run);
    this.#stop(this.#lingering);
    this.#run = undefined;
  }

  async #play(entry: Break): Promise<void> {
    const targets = await this.#options.adInputs();
    if (this.#break !== entry || this.#closed) return;
    if (!targets) throw new Error('the stream has no WebRTC input here');
    if (entry.live.video.length === 0) throw new Error('the live feed has no video layer');
    const feed = onPorts(entry.live, targets);
    // Enough ads for what is left of the break and the switch back, within MAX_AD_INPUTS; a longer break chains runs.
    const cue = entry.cue;
    const leftMs = (cue.startDate ?? Date.now()) + cue.plannedDurationMs + 4000 + (this.#options.lingerMs ?? LINGER_MS) - Date.now();
    const ads: AdRendition[] = [];
    for (let ms = 0; ms < leftMs && ads.length < MAX_AD_INPUTS; entry.next = (entry.next + 1) % entry.ads.length) {
      const ad = entry.ads[entry.next]!;
      ads.push(ad);
      ms += ad.durationMs;
    }
    const hasAudio = feed.audio !== undefined && ads.every((ad) => ad.init.tracks.some((t) => t.kind === 'audio'));
    const argv = webrtcAdArgs({ feed, inputs: ads.length, hasAudio, ...this.#options });
    const child = spawn(this.#options.ffmpegPath, argv, { stdio: ['ignore', 'ignore', 'pipe', ...ads.map(() => 'pipe' as const)] });
    // Bounded: the media it was given, plus a margin; a hung ffmpeg is killed.
    const limitMs = ads.reduce((sum, ad) => sum + ad.durationMs, 0) + 15_000;
    const run: Run = { child, startedAt: Date.now(), stopping: false, stderr: '', timer: setTimeout(() => this.#stop(run), limitMs) };
    run.timer.unref();
    this.#run = run;
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { run.stderr = (run.stderr + chunk).slice(-2048); });
    child.on('error', (error) => { run.stderr += `\n${error.message}`; });
    child.on('close', (code, signal) => this.#exited(entry, run, code, signal));
    ads.forEach((ad, i) => {
      const pipe = child.stdio[3 + i] as Writable;
      pipe.on('error', () => { /* EPIPE when ffmpeg is gone: its exit says why */ });
      for (const chunk of [ad.init.data, ...ad.fragments.map((f) => f.data)]) pipe.write(chunk);
      pipe.end();
    });
    this.#options.useFeed('ad');
    this.#log.info({ cueId: cue.id, ads: ads.length, layers: feed.video.length, audio: hasAudio }, 'ad break: WebRTC viewers switch to the ads');
  }

  #exited(entry: Break, run: Run, code: number | null, signal: NodeJS.Signals | null): void {
    clearTimeout(run.timer);
    if (this.#lingering === run) this.#lingering = undefined;
    if (this.#run !== run) return;
    this.#run = undefined;
    if (run.stopping || this.#break !== entry) return;
    // Out of ads before the break's end: the next run goes on from the next ad (a forced rebase at its keyframe).
    if (code === 0 && Date.now() - run.startedAt >= MIN_RUN_MS) {
      void this.#play(entry).catch((error: unknown) => this.#failed(entry, error instanceof Error ? error.message : String(error)));
      return;
    }
    const last = run.stderr.trim().split('\n').pop()?.slice(0, 200) ?? '';
    this.#failed(entry, `ffmpeg exited (${signal ?? `code ${code}`})${last ? `: ${last}` : ''}`);
  }

  /** The ad feed could not be played: the viewers stay on (or go back to) the programme for the rest of the break. */
  #failed(entry: Break, reason: string): void {
    if (this.#break !== entry) return;
    this.#break = undefined;
    this.#options.useFeed('live');
    this.#log.warn({ code: 'ONAIR_ERR_AD_WEBRTC_FEED', cueId: entry.cue.id, reason }, 'the ad break cannot be played to WebRTC viewers: they keep the programme');
  }

  #stopBreak(): void {
    this.#break = undefined;
    this.#stop(this.#run);
    this.#run = undefined;
  }

  #stop(run: Run | undefined): void {
    if (!run) return;
    run.stopping = true;
    clearTimeout(run.timer);
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
  }
}

/** Each ad's highest rendition present in all of them (the best picture to scale each WebRTC layer from). */
function pickRendition(ads: readonly AdMedia[]): AdRendition[] {
  if (ads.length === 0) return [];
  const height = (r: AdRendition): number => r.init.tracks.find((t) => t.kind === 'video')?.height ?? 0;
  const names = [...ads[0]!.renditions.keys()].filter((name) => ads.every((ad) => ad.renditions.has(name)));
  const best = names.sort((a, b) => height(ads[0]!.renditions.get(b)!) - height(ads[0]!.renditions.get(a)!))[0];
  return best === undefined ? [] : ads.map((ad) => ad.renditions.get(best)!).filter((r) => r.fragments.length > 0);
}

/** The live run's feed (layers, SSRCs, payload types) sent to the ad inputs' ports instead (layer i → port i). */
function onPorts(live: RtpFeed, targets: RtpTargets): RtpFeed {
  const video = live.video.map((v, i) => ({ ...v, port: targets.videoPorts[i]! })).filter((v) => v.port !== undefined);
  const audio = live.audio && targets.audioPort !== undefined ? { ...live.audio, port: targets.audioPort } : undefined;
  return { video, audio, gopMs: live.gopMs };
}

export interface WebRtcAdCommandOptions {
  feed: RtpFeed;
  /** Ads on pipes 3, 4, …: each a whole fMP4 (init + fragments) of one packaged rendition, played in order. */
  inputs: number;
  hasAudio: boolean;
  encoder: VideoEncoderKind;
  x264Preset: string;
  vaapiDevice: string;
}

/**
 * The ffmpeg that plays ads to WebRTC viewers: the ads concatenated, paced at real time by the `realtime` filters
 * (per-input `-re` would read the second ad at full speed), scaled to each layer and encoded by the live WebRTC
 * feed's own outputs (`rtpVideoOutput`, `rtpAudioOutput`: same SSRCs, payload types and encoder settings).
 */
export function webrtcAdArgs(o: WebRtcAdCommandOptions): string[] {
  const { feed, inputs, hasAudio } = o;
  const streams = Array.from({ length: inputs }, (_, i) => (hasAudio ? `[${i}:v:0][${i}:a:0]` : `[${i}:v:0]`)).join('');
  const layers = feed.video;
  const graph = [
    `${streams}concat=n=${inputs}:v=1:a=${hasAudio ? 1 : 0}[cv]${hasAudio ? '[ca]' : ''}`,
    `[cv]realtime,split=${layers.length}${layers.map((_, i) => `[r${i}]`).join('')}`,
    ...layers.map(({ layer }, i) => `[r${i}]scale=${layer.width}:${layer.height}:flags=bicubic,setsar=1,fps=${layer.fps}${hwUploadFilter(o.encoder)}[w${i}]`),
    ...(hasAudio ? ['[ca]arealtime,aresample=async=1[aout]'] : []),
  ].join(';');
  const outputs: FfmpegOutput[] = layers.map((layer, i) => rtpVideoOutput(layer, `w${i}`, o.encoder, o.x264Preset, feed.gopMs));
  if (hasAudio && feed.audio) outputs.push(rtpAudioOutput(feed.audio, 'aout'));
  return buildFfmpegArgs({
    global: [['-hide_banner'], ['-nostdin'], ['-loglevel', 'warning'], ...hwGlobalOptions(o.encoder, o.vaapiDevice)],
    inputs: Array.from({ length: inputs }, (_, i) => ({ options: [['-f', 'mp4']] as Option[], url: `pipe:${3 + i}` })),
    filterComplex: graph,
    outputs,
  });
}
