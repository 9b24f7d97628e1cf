import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { TypedEmitter } from '../lib/emitter.js';
import type { Logger } from '../lib/log.js';
import { formatCommandLine } from './ffmpegArgs.js';
import { Fmp4Splitter, type Fragment, type InitSegment } from '../lib/media/fmp4.js';
import type { VideoEncoderKind } from './hwaccel.js';
import { applicableSteps, degradeLadder, type DegradeStep, type DegradedLadder } from './degrade.js';
import { planLadder, type LadderOptions, type LadderPlan, type Rendition, type SourceInfo } from './ladder.js';
import { FIRST_RENDITION_FD, liveLadderArgs, PROGRESS_FD } from './liveCommand.js';
import { ProgressParser, type Progress } from './progress.js';
import { rtpFeed, type RtpFeed, type RtpTargets } from './rtpOutput.js';


/**
 * Bytes of FLV waiting in ffmpeg's stdin beyond which `write` says stop: the composition root then pauses the
 * publisher's socket (TCP pushes back to it) until `drain`. A publisher faster than real time (no `-re`, a burst after
 * a network stall) costs at most this much memory instead of all it sends.
 */
export const MAX_STDIN_BACKLOG = 4 * 1024 * 1024;

/** Written FLV tags remembered for the backlog's media time; past this the oldest are taken as read. */
const MAX_BACKLOG_MARKS = 65_536;

/** The longest ffmpeg stderr line kept while waiting for its end. */
const MAX_STDERR_LINE = 16 * 1024;
export interface LiveTranscoderOptions {
  streamId: string;
  ffmpegPath: string;
  encoder: VideoEncoderKind;
  x264Preset: string;
  /** LL-HLS part target: the fragment duration asked of ffmpeg. */
  partTargetMs: number;
  vaapiDevice: string;
  /** A text file burned into every encoded rendition as a scrolling ticker, re-read every frame (news flashes). */
  tickerFile?: string;
  ladder: LadderOptions;
  log: Logger;
  /** Delays before successive restarts after crashes; the last one repeats. */
  restartBackoffMs?: readonly number[];
  /** A run that lasted this long resets the backoff. */
  healthyRunMs?: number;
  /** No fragment for this long while input flows: ffmpeg is hung, kill it (it is then restarted). */
  stallTimeoutMs?: number;
  /**
   * Where to send the WebRTC feed (plain RTP on loopback), asked at every (re)start so that the WebRTC room may hand
   * out other ports or SSRCs for a new run; `undefined` sends none for that run. Not called when the plan has no
   * WebRTC part (`ONAIR_WEBRTC_LAYERS=off`). Bad targets are logged and that run goes without RTP: HLS never waits
   * on WebRTC.
   */
  rtp?: (plan: LadderPlan) => RtpTargets | undefined;
}

/** The input of a run: what the source is, and a decodable start (headers + GOP) for a fresh ffmpeg. */
export interface TranscoderInput {
  source: SourceInfo;
  prelude(): Buffer;
}

/** `degrade`: a run restarted at another degradation level (see degrade.ts); it starts from the last keyframe. */
export type DiscontinuityReason = 'restart' | 'reconnect' | 'degrade';

/** `start`: `generation` counts runs of this transcoder from 0; every run after the first is a discontinuity. */
export type TranscoderStartData = { generation: number; plan: LadderPlan; reason: 'publish' | DiscontinuityReason };
/** `discontinuity`: the run whose output follows the break. */
export type DiscontinuityData = { generation: number; reason: DiscontinuityReason };
/** `init`: a rendition's init segment from a run. */
export type RenditionInitData = { generation: number; rendition: Rendition; init: InitSegment };
/** `fragment`: a rendition's CMAF fragment from a run. */
export type RenditionFragmentData = { generation: number; rendition: Rendition; fragment: Fragment };
/** `exit`: `expected` is false for crashes (a restart follows). */
export type TranscoderExitData = { generation: number; code: number | null; signal: NodeJS.Signals | null; expected: boolean };

export type LiveTranscoderEvents = {
  /** A run starts. */
  start: [TranscoderStartData];
  /** Timeline break before a new run's output: downstream starts a new discontinuity with a new init segment. */
  discontinuity: [DiscontinuityData];
  init: [RenditionInitData];
  fragment: [RenditionFragmentData];
  progress: [Progress];
  /** A run ended. */
  exit: [TranscoderExitData];
  /** ffmpeg's input is no longer backlogged (or a new run starts empty): a paused publisher may send again. */
  drain: [];
  close: [];
};

export interface RenditionStats {
  name: string;
  width: number;
  height: number;
  /** Measured output bitrate (video + audio) over the last seconds, kbit/s. */
  kbps: number;
  /** Measured output frame rate over the last seconds. */
  fps: number;
  fragments: number;
}

export interface TranscoderStats {
  encoder: VideoEncoderKind;
  /** ffmpeg's `speed`: media seconds encoded per wall-clock second (≥ 1 keeps up with real time). */
  speed: number | undefined;
  fps: number | undefined;
  restarts: number;
  generation: number;
  pid: number | undefined;
  renditions: RenditionStats[];
  /** Media time written to ffmpeg and not yet read by it: how far the encoder is behind its input. */
  backlogMs: number;
  /** The degradation steps taken (empty: the full ladder), since when, and why. */
  degraded: { level: number; steps: DegradeStep[]; reason: string; since: number } | undefined;
}

const STATS_WINDOW_MS = 4000;

interface Run {
  generation: number;
  plan: LadderPlan;
  child: ChildProcess;
  startedAt: number;
  expectedExit: boolean;
  lastFragmentAt: number;
  rtp: RtpFeed | undefined;
  ladder: DegradedLadder;
  /** Bytes written to stdin in all, and where each written tag ends with its media time (for `backlogMs`). */
  written: number;
  marks: { end: number; ts: number }[];
  /** Media time of the last tag ffmpeg has read. */
  readTs: number | undefined;
}

interface Window {
  samples: { at: number; bytes: number; frames: number; durationMs: number }[];
  fragments: number;
}

/**
 * The one ffmpeg process of a live stream and its supervision. Feeds FLV on stdin, reads one CMAF pipe per rendition,
 * splits it into init + fragments, restarts a crashed ffmpeg with backoff and reports each restart (and each
 * publisher reconnect) as a discontinuity.
 */
export class LiveTranscoder extends TypedEmitter<LiveTranscoderEvents> {
  readonly streamId: string;
  readonly #options: LiveTranscoderOptions;
  readonly #log: Logger;
  #input: TranscoderInput | undefined;
  #run: Run | undefined;
  #generation = -1;
  #restarts = 0;
  #maxBacklog = 0;
  #crashesInARow = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #stallTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #progress: Progress | undefined;
  #windows = new Map<string, Window>();
  #level = 0;
  #degraded: { level: number; steps: DegradeStep[]; reason: string; since: number } | undefined;

  constructor(options: LiveTranscoderOptions) {
    super();
    this.streamId = options.streamId;
    this.#options = options;
    this.#log = options.log;
  }

  get plan(): LadderPlan | undefined {
    return this.#run?.plan;
  }

  /** What the current run sends over RTP (layers with their ports and SSRCs, audio), if anything; set before `start`. */
  get rtp(): RtpFeed | undefined {
    return this.#run?.rtp;
  }

  get pid(): number | undefined {
    return this.#run?.child.pid;
  }

  get restarts(): number {
    return this.#restarts;
  }

  get stats(): TranscoderStats {
    const now = Date.now();
    const renditions = (this.#run?.plan.renditions ?? []).map((r) => {
      const window = this.#windows.get(r.name);
      const samples = window?.samples.filter((s) => now - s.at <= STATS_WINDOW_MS) ?? [];
      const bytes = samples.reduce((sum, s) => sum + s.bytes, 0);
      const mediaMs = samples.reduce((sum, s) => sum + s.durationMs, 0);
      const frames = samples.reduce((sum, s) => sum + s.frames, 0);
      return {
        name: r.name,
        width: r.width,
        height: r.height,
        kbps: mediaMs > 0 ? Math.round((bytes * 8) / mediaMs) : 0,
        fps: mediaMs > 0 ? Math.round((frames * 1000 * 10) / mediaMs) / 10 : 0,
        fragments: window?.fragments ?? 0,
      };
    });
    return {
      encoder: this.#options.encoder,
      speed: this.#progress?.speed,
      fps: this.#progress?.fps,
      restarts: this.#restarts,
      generation: Math.max(0, this.#generation),
      pid: this.pid,
      renditions,
      backlogMs: this.backlogMs,
      degraded: this.#degraded,
    };
  }

  /**
   * Media time waiting in ffmpeg's stdin: the newest tag written minus the last one ffmpeg has read. Near 0 while the
   * encoder keeps up with its input (it reads as fast as the publisher sends); growing when it cannot.
   */
  get backlogMs(): number {
    const run = this.#run;
    const stdin = run?.child.stdin;
    if (!run || !stdin || run.marks.length === 0) return 0;
    const read = run.written - stdin.writableLength;
    let i = 0;
    while (i < run.marks.length && run.marks[i]!.end <= read) i += 1;
    if (i > 0) {
      run.readTs = run.marks[i - 1]!.ts;
      run.marks.splice(0, i);
    }
    const newest = run.marks[run.marks.length - 1];
    if (!newest || run.readTs === undefined) return 0;
    return Math.max(0, newest.ts - run.readTs);
  }

  /** The degradation level (0: the full ladder); see degrade.ts. */
  get level(): number {
    return this.#level;
  }

  /**
   * Runs the ladder at another degradation level: ffmpeg restarts at once from the publisher's last keyframe (what
   * waited in its input is dropped: the stream is back at live), a discontinuity for players. `reason` is logged and
   * shown in the stats. Without a publisher the level is kept for the next run.
   */
  setLevel(level: number, reason: string): void {
    if (this.#closed || level === this.#level || level < 0) return;
    this.#level = level;
    const input = this.#input;
    const steps = input ? this.#ladderFor(input.source).steps : [];
    this.#degraded = level === 0 ? undefined : { level, steps, reason, since: Date.now() };
    this.#log.warn({ level, steps, reason }, level === 0 ? 'ladder restored' : 'ladder degraded');
    if (!input || !this.#run) return;
    clearTimeout(this.#restartTimer);
    this.#stopRun('SIGKILL');
    this.#startRun('degrade');
  }

  /** The most degradation steps this stream's ladder has (0 before a publisher is known). */
  get maxLevel(): number {
    const input = this.#input;
    return input ? applicableSteps(planLadder(input.source, this.#options.ladder), this.#options.encoder, this.#options.x264Preset).length : 0;
  }

  /**
   * Starts the run again from the publisher's last keyframe (a discontinuity), e.g. to ask `rtp` again for its targets
   * (a WHIP publisher's own media could not reach the WebRTC viewers: the ladder's layers serve them).
   */
  rerun(reason: string): void {
    if (this.#closed || !this.#input || !this.#run) return;
    this.#log.warn({ reason }, 'ffmpeg restarted');
    clearTimeout(this.#restartTimer);
    this.#stopRun('SIGKILL');
    this.#startRun('degrade');
  }

  /** Drops what waits in ffmpeg's input: a restart from the publisher's last keyframe, back at live (a discontinuity). */
  catchUp(): void {
    if (this.#closed || !this.#input || !this.#run) return;
    this.#log.warn({ backlogMs: this.backlogMs }, 'ffmpeg behind its input: restarting at live');
    clearTimeout(this.#restartTimer);
    this.#stopRun('SIGKILL');
    this.#startRun('degrade');
  }

  #ladderFor(source: SourceInfo): DegradedLadder {
    return degradeLadder(planLadder(source, this.#options.ladder), this.#level, this.#options.encoder, this.#options.x264Preset);
  }

  /** A publisher is ready: start ffmpeg for it, or restart it with a discontinuity after a reconnect. */
  attach(input: TranscoderInput): void {
    if (this.#closed) return;
    this.#input = input;
    this.#crashesInARow = 0;
    clearTimeout(this.#restartTimer);
    this.#stopRun('SIGKILL');
    this.#startRun(this.#generation < 0 ? 'publish' : 'reconnect');
  }

  /**
   * One FLV tag from the publisher. Dropped while ffmpeg is being restarted; the restart begins at a keyframe. Returns
   * false once ffmpeg's input holds more than `MAX_STDIN_BACKLOG`: stop sending until `drain`.
   */
  write(tag: Buffer): boolean {
    const stdin = this.#run?.child.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) return true;
    stdin.write(tag);
    const run = this.#run!;
    run.written += tag.length;
    if (tag.length >= 11) {
      run.marks.push({ end: run.written, ts: ((tag[7]! << 24) | (tag[4]! << 16) | (tag[5]! << 8) | tag[6]!) >>> 0 });
      if (run.marks.length > MAX_BACKLOG_MARKS) run.marks.splice(0, run.marks.length - MAX_BACKLOG_MARKS);
    }
    this.#maxBacklog = Math.max(this.#maxBacklog, stdin.writableLength);
    return stdin.writableLength <= MAX_STDIN_BACKLOG;
  }

  /** Bytes waiting in ffmpeg's stdin now, and the most seen since this transcoder started. */
  get stdinBacklog(): { bytes: number; maxBytes: number } {
    return { bytes: this.#run?.child.stdin?.writableLength ?? 0, maxBytes: this.#maxBacklog };
  }

  /** The publisher is gone: let ffmpeg finish what it has (flush the last fragments) and exit. */
  detach(): void {
    this.#input = undefined;
    clearTimeout(this.#restartTimer);
    const run = this.#run;
    if (!run) return;
    run.expectedExit = true;
    run.child.stdin?.end();
  }

  /** Stops ffmpeg at once; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#input = undefined;
    clearTimeout(this.#restartTimer);
    const run = this.#run;
    this.#stopRun('SIGKILL');
    if (run && run.child.exitCode === null && run.child.signalCode === null) {
      await new Promise<void>((resolve) => run.child.once('close', () => resolve()));
    }
    this.safeEmit('close');
    this.removeAllListeners();
  }

  #stopRun(signal: NodeJS.Signals): void {
    const run = this.#run;
    if (!run) return;
    run.expectedExit = true;
    this.#run = undefined;
    clearInterval(this.#stallTimer);
    run.child.kill(signal);
  }

  #startRun(reason: 'publish' | DiscontinuityReason): void {
    const input = this.#input;
    if (!input || this.#closed) return;
    const generation = ++this.#generation;
    const ladder = this.#ladderFor(input.source);
    // A level set before the source was known learns its steps now.
    if (this.#degraded) this.#degraded.steps = ladder.steps;
    // ffmpeg makes `ladder.outputs`; everything downstream sees the full ladder's rungs (`ladder.shown`).
    const plan = ladder.outputs;
    const rtp = this.#rtpTargets(plan, generation);
    const argv = liveLadderArgs({
      plan,
      encoder: this.#options.encoder,
      x264Preset: ladder.x264Preset,
      partTargetMs: this.#options.partTargetMs,
      vaapiDevice: this.#options.vaapiDevice,
      ...(rtp ? { rtp: rtp.targets } : {}),
      ...(this.#options.tickerFile !== undefined ? { tickerFile: this.#options.tickerFile } : {}),
    });
    this.#log.debug({ generation, command: formatCommandLine(this.#options.ffmpegPath, argv) }, 'starting ffmpeg');
    const stdio: ('pipe' | 'ignore')[] = ['pipe', 'ignore', 'pipe', 'pipe', ...plan.renditions.map(() => 'pipe' as const)];
    const child = spawn(this.#options.ffmpegPath, argv, { stdio });
    const run: Run = {
      generation, plan, child, startedAt: Date.now(), expectedExit: false, lastFragmentAt: Date.now(), rtp: rtp?.feed,
      ladder, written: 0, marks: [], readTs: undefined,
    };
    this.#run = run;
    this.#windows = new Map(plan.renditions.map((r) => [r.name, { samples: [], fragments: 0 }]));

    if (generation > 0) this.safeEmit('discontinuity', { generation, reason: reason as DiscontinuityReason });
    this.safeEmit('start', { generation, plan: ladder.shown, reason });

    child.stdin!.on('error', () => { /* EPIPE when ffmpeg dies; the exit handler restarts it */ });
    child.stdin!.on('drain', () => {
      if (this.#run === run) this.safeEmit('drain');
    });
    this.#readStderr(child.stderr!, generation);
    const progress = new ProgressParser();
    progress.on('progress', (p) => {
      if (this.#run !== run) return;
      this.#progress = p;
      this.safeEmit('progress', p);
    });
    (child.stdio[PROGRESS_FD] as Readable).on('data', (chunk: Buffer) => progress.push(chunk));

    const shown = new Map(ladder.shown.renditions.map((r) => [r.name, r]));
    plan.renditions.forEach((rendition, i) => {
      // The rungs this output feeds: itself, and those a degradation step stopped encoding.
      const rungs = (ladder.feeds.get(rendition.name) ?? []).map((name) => shown.get(name)!);
      const splitter = new Fmp4Splitter();
      splitter.on('init', (init) => {
        if (this.#run !== run) return;
        for (const rung of rungs) this.safeEmit('init', { generation, rendition: rung, init });
      });
      splitter.on('fragment', (fragment) => {
        if (this.#run !== run) return;
        run.lastFragmentAt = Date.now();
        this.#account(rendition.name, fragment);
        for (const rung of rungs) this.safeEmit('fragment', { generation, rendition: rung, fragment });
      });
      splitter.on('error', (error) => {
        this.#log.error({ generation, rendition: rendition.name, err: error.message }, 'bad fMP4 from ffmpeg; restarting');
        if (this.#run === run) child.kill('SIGKILL');
      });
      (child.stdio[FIRST_RENDITION_FD + i] as Readable).on('data', (chunk: Buffer) => splitter.push(chunk));
    });

    child.on('error', (error) => this.#log.error({ generation, err: error.message }, 'ffmpeg could not start'));
    child.on('close', (code, signal) => this.#onExit(run, code, signal));

    const stallTimeoutMs = this.#options.stallTimeoutMs ?? 10_000;
    clearInterval(this.#stallTimer);
    this.#stallTimer = setInterval(() => {
      if (this.#run === run && Date.now() - run.lastFragmentAt > stallTimeoutMs) {
        this.#log.warn({ generation, stallTimeoutMs }, 'ffmpeg produced nothing; killing it');
        child.kill('SIGKILL');
      }
    }, Math.min(1000, stallTimeoutMs));
    this.#stallTimer.unref();

    const prelude = input.prelude();
    child.stdin!.write(prelude);
    // A publisher paused by the last run's backlog sends again into this one.
    this.safeEmit('drain');
  }

  /** Asks the WebRTC room for this run's targets; a failure there costs the run its RTP output, never its HLS. */
  #rtpTargets(plan: LadderPlan, generation: number): { targets: RtpTargets; feed: RtpFeed } | undefined {
    if (!plan.webrtc || !this.#options.rtp) return undefined;
    try {
      const targets = this.#options.rtp(plan);
      const feed = targets === undefined ? undefined : rtpFeed(plan, targets);
      if (!targets || !feed) return undefined;
      if (feed.video.length < plan.webrtc.layers.length) {
        this.#log.warn({ generation, layers: plan.webrtc.layers.length, ports: targets.videoPorts.length, ssrcs: targets.videoSsrcs.length },
          'fewer RTP targets than WebRTC layers; sending the lowest layers only');
      }
      return { targets, feed };
    } catch (error) {
      this.#log.error({ generation, err: (error as Error).message }, 'no RTP output for this run: bad RTP targets');
      return undefined;
    }
  }

  #onExit(run: Run, code: number | null, signal: NodeJS.Signals | null): void {
    const expected = run.expectedExit;
    this.safeEmit('exit', { generation: run.generation, code, signal, expected });
    if (this.#run === run) {
      this.#run = undefined;
      clearInterval(this.#stallTimer);
    }
    if (expected || this.#closed || !this.#input || this.#run) return;

    const ranMs = Date.now() - run.startedAt;
    if (ranMs >= (this.#options.healthyRunMs ?? 30_000)) this.#crashesInARow = 0;
    const backoff = this.#options.restartBackoffMs ?? [0, 500, 1000, 2000, 5000];
    const delay = backoff[Math.min(this.#crashesInARow, backoff.length - 1)] ?? 0;
    this.#crashesInARow += 1;
    this.#restarts += 1;
    this.#log.warn({ generation: run.generation, code, signal, restartInMs: delay }, 'ffmpeg exited unexpectedly; restarting');
    this.#restartTimer = setTimeout(() => this.#startRun('restart'), delay);
  }

  #account(name: string, fragment: Fragment): void {
    const window = this.#windows.get(name);
    if (!window) return;
    const now = Date.now();
    const video = fragment.tracks[0];
    window.fragments += 1;
    window.samples.push({ at: now, bytes: fragment.data.length, frames: video?.sampleCount ?? 0, durationMs: fragment.durationMs });
    while (window.samples.length > 0 && now - window.samples[0]!.at > STATS_WINDOW_MS) window.samples.shift();
  }

  #readStderr(stderr: Readable, generation: number): void {
    let buffered = '';
    stderr.setEncoding('utf8').on('data', (text: string) => {
      buffered += text;
      const lines = buffered.split('\n');
      // A child's output is outside input too: a line without end is cut, not kept growing.
      buffered = (lines.pop() ?? '').slice(-MAX_STDERR_LINE);
      for (const line of lines) {
        if (!line.trim()) continue;
        // Audio starting after video: harmless in fragmented MP4, where every fragment carries its decode time (tfdt).
        const benign = /starts with a nonzero dts/.test(line);
        this.#log[benign ? 'debug' : 'warn']({ generation, ffmpeg: line.trim() }, 'ffmpeg');
      }
    });
  }
}

