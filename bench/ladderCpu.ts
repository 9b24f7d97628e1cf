import dgram from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { IOType } from 'node:child_process';
import type { Readable } from 'node:stream';
import {
  applicableSteps, degradeLadder, formatCommandLine, liveLadderArgs, planLadder, ProgressParser,
  type LadderPlan, type LiveTranscoder, type RtpTargets, type SourceInfo,
} from '../live-transcoder/index.js';
import { loadConfig, type Config } from '../server/config.js';
import type { OnAirNodeEvents } from '../server/node.js';
import { api, startTestNode } from '../test/support/harness.js';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import {
  CpuSampler, expectSuccess, parseTimes, reapedChildrenCpuSec, spawnBounded, within, withTimes, type BoundedChild,
} from './support/process.js';

/*
 * CPU core-seconds per media-second of OnAir's live ladder against the same ladder run by the ffmpeg CLI, one after
 * the other on the same source.
 *
 * - Source: a 1080p30 OBS-like FLV (x264 veryfast CBR 6 Mbit/s, 2 s keyframes, AAC 160k 48 kHz), BENCH_SECONDS long.
 * - Baseline: the exact argv OnAir would build (liveLadderArgs + planLadder, default config, libx264, the news ticker's
 *   drawtext on an empty file), its FLV input
 *   `-i pipe:0` replaced by `-re -i <file>`, every pipe (progress and renditions) drained by this process. Cost:
 *   ffmpeg's own CPU.
 * - OnAir: a node in this process (loopback, ephemeral ports, temp data dir, ONAIR_HWACCEL=none, default preset and
 *   ladder) and the file published to it with `ffmpeg -re -c copy`. Cost: the node's ffmpeg(s) plus this process's
 *   CPU from the publish until that ffmpeg has exited (ingest, FLV tags, fMP4 splitting: all of Node). The
 *   publisher's CPU is not OnAir's and is left out.
 * - How CPU is read: see bench/support/process.ts (the kernel's rusage of reaped children; no sampling error).
 * - Then the same for every degradation level of the overload policy (live-transcoder/degrade.ts): the CLI runs the
 *   level's argv, the node runs the stream at that level from its first ffmpeg run (ONAIR_LADDER_POLICY=fixed, so
 *   nothing else changes the ladder). Streams per core = 1 / core-s per media-s: how many such streams one core holds
 *   in real time. `BENCH_LADDER_STEPS=0` skips the levels.
 */

/** OnAir's whole cost within 5 % of the CLI's. */
const GOAL_RATIO = 1.05;
/** ffmpeg's `speed` at the end of a run, at or above which it kept up with the real-time input. */
const REAL_TIME_SPEED = 0.98;
/** Never aborted: closing the node must run even when the benchmark is being aborted. */
const NO_ABORT = new AbortController().signal;

interface Setup {
  seconds: number;
  config: Config;
  file: string;
  source: SourceInfo;
  plan: LadderPlan;
  argv: string[];
  signal: AbortSignal;
}

interface CliRun {
  ffmpegSec: number;
  /** Last /proc sample before the exit: a lower bound, for cross-checking. */
  sampledSec: number;
  speed: number | undefined;
  mediaSec: number;
  wallSec: number;
}

interface OnAirRun {
  ffmpegSec: number;
  nodeSec: number;
  publisherSec: number;
  sampledSec: number;
  speed: number | undefined;
  mediaSec: number;
  wallSec: number;
  runs: number;
  crashes: number;
  plan: LadderPlan | undefined;
}

export const benchmark: Benchmark = {
  name: 'ladder-cpu',
  title: 'live ladder CPU, OnAir vs the ffmpeg CLI: core-seconds per media-second',
  run,
};

async function run(context: BenchContext): Promise<BenchResult> {
  const { report, signal } = context;
  const seconds = envInteger('BENCH_SECONDS', 30, 5, 3600);
  // Defaults only: the bench measures what a fresh install runs, whatever ONAIR_* the shell holds.
  const config = loadConfig({});
  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-ladder-'));
  try {
    const file = path.join(dir, 'source.flv');
    const made = performance.now();
    await makeSource(config.ffmpegPath, file, seconds, signal);
    const source = await probeSource(config.ffprobePath, file, signal);
    report(`source    ${describeSource(source)}, ${seconds} s (made in ${fixed((performance.now() - made) / 1000, 1)} s)`);

    rtpSink = await openRtpSink();
    // OnAir's ffmpeg burns in the (empty) news ticker; the baseline runs the same filter on an empty file of its own.
    tickerFile = path.join(dir, 'ticker.txt');
    await writeFile(tickerFile, '');
    const plan = planLadder(source, ladderOptions(config));
    const argv = liveLadderArgs(commandOptions(config, plan));
    report(`ladder    ${describePlan(plan)}; libx264 ${config.x264Preset}, part ${config.partTargetMs} ms, GOP ${config.segmentTargetMs} ms`);
    if (process.env['BENCH_VERBOSE']) report(`onair argv ${formatCommandLine(config.ffmpegPath, argv)}`);
    const setup: Setup = { seconds, config, file, source, plan, argv, signal };

    // One after the other, never at once: each side gets the whole machine.
    const cli = await runCli(setup);
    const onair = await runOnAir(setup);

    const cliRate = cli.ffmpegSec / seconds;
    const onairTotal = onair.ffmpegSec + onair.nodeSec;
    const onairRate = onairTotal / seconds;
    const ratio = onairRate / cliRate;
    const sameArgs = onair.plan !== undefined && sameArgv(liveLadderArgs(commandOptions(config, onair.plan)), argv);
    const cliRealTime = (cli.speed ?? 0) >= REAL_TIME_SPEED;
    const onairRealTime = (onair.speed ?? 0) >= REAL_TIME_SPEED;

    const row = (cells: string[]): string => cells.map((cell, i) => (i === 0 ? cell.padEnd(10) : cell.padStart(i === 4 ? 16 : 9))).join(' ');
    report(row(['', 'ffmpeg', 'node', 'total', 'core-s/media-s', 'speed', 'media', 'wall']));
    report(row(['ffmpeg CLI', fixed(cli.ffmpegSec, 2), '-', fixed(cli.ffmpegSec, 2), fixed(cliRate), speedText(cli.speed),
      `${fixed(cli.mediaSec, 1)} s`, `${fixed(cli.wallSec, 1)} s`]));
    report(row(['OnAir', fixed(onair.ffmpegSec, 2), fixed(onair.nodeSec, 2), fixed(onairTotal, 2), fixed(onairRate),
      speedText(onair.speed), `${fixed(onair.mediaSec, 1)} s`, `${fixed(onair.wallSec, 1)} s`]));
    report(`ratio     OnAir/CLI ${fixed(ratio)} (goal ≤ ${GOAL_RATIO}: ${ratio <= GOAL_RATIO ? 'met' : 'MISSED'}); ffmpeg alone ` +
      `${fixed(onair.ffmpegSec / cli.ffmpegSec)}, Node ${fixed((100 * onair.nodeSec) / onairTotal, 1)} % of OnAir's CPU`);
    report(`real time CLI ${cliRealTime ? 'yes' : 'NO'} (${speedText(cli.speed)}), OnAir ${onairRealTime ? 'yes' : 'NO'} ` +
      `(${speedText(onair.speed)}); kept when ffmpeg's final speed ≥ ${REAL_TIME_SPEED}`);
    report(`checks    OnAir ran ${sameArgs ? 'the same' : 'DIFFERENT'} ffmpeg arguments (input aside); ffmpeg runs ${onair.runs}, ` +
      `crashes ${onair.crashes}; last /proc samples ${fixed(cli.sampledSec, 2)} (CLI) and ${fixed(onair.sampledSec, 2)} ` +
      `(OnAir) core-s; publisher left out: ${fixed(onair.publisherSec, 2)} core-s`);
    for (const [name, exact, sampled] of [['CLI', cli.ffmpegSec, cli.sampledSec], ['OnAir', onair.ffmpegSec, onair.sampledSec]] as const) {
      // The exact figure can only exceed the last sample by what ran after it (≤ one 100 ms interval on every core).
      if (exact < sampled - 0.05 || exact > sampled + 0.1 * os.availableParallelism() + 0.02 * sampled) {
        report(`WARNING   ${name}: exact ${fixed(exact, 2)} vs sampled ${fixed(sampled, 2)} core-s: another process may have ended in the window`);
      }
    }

    // The overload policy's levels, each measured like the full ladder (the level-0 figures above are its baseline).
    const levelRows: { metric: string; value: string }[] = [];
    const levels = envInteger('BENCH_LADDER_STEPS', 1, 0, 1) === 1
      ? applicableSteps(plan, 'libx264', config.x264Preset).length : 0;
    if (levels > 0) {
      report(row(['level', 'CLI c-s/s', 'OnAir', 'streams/core (CLI, OnAir)', 'speed']));
      report(row(['0 full', fixed(cliRate), fixed(onairRate), `${fixed(1 / cliRate, 2)}, ${fixed(1 / onairRate, 2)}`, speedText(onair.speed)]));
    }
    for (let level = 1; level <= levels; level++) {
      const degraded = degradeLadder(plan, level, 'libx264', config.x264Preset);
      const levelArgv = liveLadderArgs({ ...commandOptions(config, degraded.outputs), x264Preset: degraded.x264Preset });
      const levelSetup: Setup = { ...setup, plan: degraded.outputs, argv: levelArgv };
      const c = await runCli(levelSetup);
      const o = await runOnAir(levelSetup, level);
      const cRate = c.ffmpegSec / seconds;
      const oRate = (o.ffmpegSec + o.nodeSec) / seconds;
      const step = degraded.steps[degraded.steps.length - 1]!;
      report(row([`${level} ${step}`, fixed(cRate), fixed(oRate), `${fixed(1 / cRate, 2)}, ${fixed(1 / oRate, 2)}`, speedText(o.speed)]));
      levelRows.push({
        metric: `level ${level} (${step}) streams/core CLI, OnAir`,
        value: `${fixed(1 / cRate, 2)}, ${fixed(1 / oRate, 2)} (${fixed(oRate / cRate)}×)`,
      });
    }

    return {
      rows: [
        { metric: 'ffmpeg CLI core-s/media-s', value: fixed(cliRate) },
        { metric: 'OnAir core-s/media-s (ffmpeg + node)', value: `${fixed(onairRate)} (${fixed(onair.ffmpegSec / seconds)} + ${fixed(onair.nodeSec / seconds)})` },
        { metric: 'OnAir / CLI', value: fixed(ratio), goal: `≤ ${GOAL_RATIO}`, met: ratio <= GOAL_RATIO },
        {
          metric: 'kept real time (CLI, OnAir)',
          value: `${speedText(cli.speed)}, ${speedText(onair.speed)}`,
          goal: `≥ ${REAL_TIME_SPEED}x`,
          met: cliRealTime && onairRealTime,
        },
        ...(sameArgs ? [] : [{ metric: 'same ffmpeg arguments', value: 'no', goal: 'yes', met: false }]),
        ...(levels > 0 ? [{ metric: 'level 0 (full) streams/core CLI, OnAir', value: `${fixed(1 / cliRate, 2)}, ${fixed(1 / onairRate, 2)}` }] : []),
        ...levelRows,
      ],
    };
  } finally {
    rtpSink?.close();
    rtpSink = undefined;
    await rm(dir, { recursive: true, force: true });
  }
}

function ladderOptions(config: Config): { heights: number[]; passthrough: boolean; gopMs: number; webrtcHeights: number[] } {
  return { heights: config.ladderHeights, passthrough: config.passthrough, gopMs: config.segmentTargetMs, webrtcHeights: config.webrtcLayers };
}

/**
 * The WebRTC feed is part of the one ffmpeg a fresh install runs (ONAIR_WEBRTC_LAYERS), so the baseline sends it too:
 * to UDP sockets that swallow it (OnAir sends it to mediasoup, whose own CPU is not counted on either side).
 */
let rtpSink: { targets: RtpTargets; close(): void } | undefined;

async function openRtpSink(): Promise<{ targets: RtpTargets; close(): void }> {
  const sockets: dgram.Socket[] = [];
  const bindPair = async (): Promise<number> => {
    for (;;) {
      const rtp = dgram.createSocket('udp4');
      await new Promise<void>((resolve) => rtp.bind(0, '127.0.0.1', resolve));
      const port = rtp.address().port;
      const rtcp = dgram.createSocket('udp4');
      const ok = port % 2 === 0 && await new Promise<boolean>((resolve) => {
        rtcp.once('error', () => resolve(false));
        rtcp.bind(port + 1, '127.0.0.1', () => resolve(true));
      });
      if (ok) {
        for (const socket of [rtp, rtcp]) socket.on('message', () => {});
        sockets.push(rtp, rtcp);
        return port;
      }
      rtp.close();
      try { rtcp.close(); } catch { /* never bound */ }
    }
  };
  const videoPorts = [await bindPair(), await bindPair(), await bindPair()];
  const audioPort = await bindPair();
  return {
    targets: { videoPorts, audioPort, videoSsrcs: [0x1111, 0x2222, 0x3333], audioSsrc: 0x4444, videoPayloadType: 101, audioPayloadType: 100 },
    close: () => { for (const socket of sockets) socket.close(); },
  };
}

let tickerFile: string | undefined;

function commandOptions(config: Config, plan: LadderPlan): Parameters<typeof liveLadderArgs>[0] {
  return {
    plan, encoder: 'libx264', x264Preset: config.x264Preset, partTargetMs: config.partTargetMs, vaapiDevice: config.vaapiDevice,
    ...(tickerFile ? { tickerFile } : {}),
    ...(rtpSink && plan.webrtc ? { rtp: rtpSink.targets } : {}),
  };
}

/** What OBS sends with its usual settings, from lavfi test sources. */
async function makeSource(ffmpegPath: string, file: string, seconds: number, signal: AbortSignal): Promise<void> {
  const args = [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc2=size=1920x1080:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', String(seconds), '-map', '0:v:0', '-map', '1:a:0',
    '-c:v', 'libx264', '-preset', 'veryfast', '-profile:v', 'high', '-pix_fmt', 'yuv420p',
    '-g', '60', '-keyint_min', '60', '-sc_threshold', '0',
    '-b:v', '6000k', '-maxrate', '6000k', '-bufsize', '6000k', '-x264-params', 'nal-hrd=cbr',
    '-c:a', 'aac', '-b:a', '160k', '-ar', '48000', '-ac', '2',
    '-f', 'flv', file,
  ];
  const maker = spawnBounded('making the source', ffmpegPath, args, { timeoutMs: Math.max(120_000, seconds * 10_000), signal });
  expectSuccess('making the source', await maker.exited);
}

async function probeSource(ffprobePath: string, file: string, signal: AbortSignal): Promise<SourceInfo> {
  const probe = spawnBounded('ffprobe', ffprobePath, ['-v', 'error', '-show_streams', '-of', 'json', file], {
    timeoutMs: 30_000, signal, stdio: ['ignore', 'pipe'],
  });
  let json = '';
  probe.child.stdout!.setEncoding('utf8').on('data', (text: string) => { json += text; });
  expectSuccess('ffprobe', await probe.exited);
  const streams = (JSON.parse(json) as { streams: Record<string, string | number>[] }).streams;
  const video = streams.find((s) => s['codec_type'] === 'video');
  const audio = streams.find((s) => s['codec_type'] === 'audio');
  if (video?.['codec_name'] !== 'h264') throw new BenchError('the source has no H.264 video');
  const [num, den] = String(video['avg_frame_rate']).split('/').map(Number);
  const source: SourceInfo = {
    width: Number(video['width']),
    height: Number(video['height']),
    fps: num && den ? num / den : 30,
    videoCodec: 'h264',
    audioCodec: audio === undefined ? undefined : audio['codec_name'] === 'aac' ? 'aac' : audio['codec_name'] === 'mp3' ? 'mp3' : 'other',
  };
  if (audio !== undefined) {
    source.audioSampleRate = Number(audio['sample_rate']);
    source.audioChannels = Number(audio['channels']);
  }
  if (video['bit_rate'] !== undefined) source.declaredVideoKbps = Number(video['bit_rate']) / 1000;
  return source;
}

/** Time allowed for `seconds` of real-time media: slack for a machine that cannot keep up, but bounded. */
const mediaLimitMs = (seconds: number): number => seconds * 3000 + 60_000;

async function runCli(setup: Setup): Promise<CliRun> {
  const { argv, file, seconds, signal } = setup;
  const at = argv.findIndex((arg, i) => arg === '-i' && argv[i + 1] === 'pipe:0');
  if (at < 0) throw new BenchError('liveLadderArgs no longer reads FLV from pipe:0: the baseline needs updating');
  // `-re` is an input option: it goes right before `-i`, after OnAir's own input options.
  const cliArgv = [...argv.slice(0, at), '-re', '-i', file, ...argv.slice(at + 2)];
  const progressAt = cliArgv.indexOf('-progress');
  const progressFd = progressAt < 0 ? undefined : pipeFd(cliArgv[progressAt + 1]);
  const outputFds = cliArgv.map(pipeFd).filter((fd): fd is number => fd !== undefined && fd !== progressFd);
  const fds = [...outputFds, ...(progressFd === undefined ? [] : [progressFd])];
  const stdio: IOType[] = Array.from({ length: Math.max(...fds) + 1 }, (_, fd) => (fds.includes(fd) ? 'pipe' : 'ignore'));

  const childrenBefore = reapedChildrenCpuSec();
  const startedAt = performance.now();
  const cli = spawnBounded('the ffmpeg CLI', setup.config.ffmpegPath, cliArgv, { timeoutMs: mediaLimitMs(seconds), signal, stdio });
  const sampler = cli.child.pid === undefined ? undefined : new CpuSampler(cli.child.pid);
  let speed: number | undefined;
  let outTimeMs = 0;
  if (progressFd !== undefined) {
    const progress = new ProgressParser();
    progress.on('progress', (p) => {
      if (p.speed !== undefined) speed = p.speed;
      outTimeMs = Math.max(outTimeMs, p.outTimeMs);
    });
    (cli.child.stdio[progressFd] as Readable).on('data', (chunk: Buffer) => progress.push(chunk));
  }
  // Drained as OnAir drains them: every chunk read as it comes.
  for (const fd of outputFds) (cli.child.stdio[fd] as Readable).on('data', () => undefined);
  let sampledSec = 0;
  try {
    expectSuccess('the ffmpeg CLI', await cli.exited);
  } finally {
    sampledSec = sampler?.stop() ?? 0;
  }
  return {
    ffmpegSec: reapedChildrenCpuSec() - childrenBefore,
    sampledSec,
    speed,
    mediaSec: outTimeMs / 1000,
    wallSec: (performance.now() - startedAt) / 1000,
  };
}

/** What one live event's transcoder did, from its events. */
class LadderWatch {
  plan: LadderPlan | undefined;
  runs = 0;
  crashes = 0;
  mediaMs = 0;
  speed: number | undefined;
  sampledSec = 0;
  /** Resolves when an ffmpeg run ends as expected: the publish is over and ffmpeg has flushed. */
  readonly finished: Promise<void>;
  #sampler: CpuSampler | undefined;

  constructor(transcoder: LiveTranscoder) {
    let finish!: () => void;
    this.finished = new Promise((resolve) => { finish = resolve; });
    transcoder.on('start', ({ plan }) => {
      this.runs += 1;
      this.plan ??= plan;
      const pid = transcoder.pid;
      if (pid !== undefined) this.#sampler = new CpuSampler(pid);
    });
    transcoder.on('fragment', ({ rendition, fragment }) => {
      if (rendition.name === this.plan?.renditions[0]?.name) this.mediaMs += fragment.durationMs;
    });
    transcoder.on('progress', (p) => {
      if (p.speed !== undefined) this.speed = p.speed;
    });
    transcoder.on('exit', ({ expected }) => {
      this.sampledSec += this.#sampler?.stop() ?? 0;
      this.#sampler = undefined;
      if (expected) finish();
      else this.crashes += 1;
    });
  }

  stop(): void {
    this.#sampler?.stop();
  }
}

async function runOnAir(setup: Setup, level = 0): Promise<OnAirRun> {
  const { config, file, seconds, signal } = setup;
  const harness = await within('starting the OnAir node', startTestNode({
    ONAIR_HWACCEL: 'none',
    // The ladder under measure, whatever this machine's load: the governor would otherwise step it down.
    ONAIR_LADDER_POLICY: 'fixed',
    // The harness defaults to ultrafast for quick tests; the bench measures the shipped default.
    ONAIR_X264_PRESET: config.x264Preset,
  }), 60_000, signal, (late) => late.close());
  const { node } = harness;
  let publisher: BoundedChild | undefined;
  let watch: LadderWatch | undefined;
  let onLive: ((...args: OnAirNodeEvents['live']) => void) | undefined;
  try {
    if (node.encoder.kind !== 'libx264') throw new BenchError(`the node chose ${node.encoder.kind}, not libx264`);
    const created = await within('creating a stream', api(node, 'POST', '/api/streams', { body: { title: 'bench: ladder CPU' } }), 10_000, signal);
    if (created.status !== 201) throw new BenchError(`POST /api/streams answered ${created.status}`);
    const streamKey = String(created.body.streamKey);
    // Subscribed in the 'live' listener itself: the transcoder may start before an awaiting caller resumes.
    const live = new Promise<LadderWatch>((resolve) => {
      onLive = ({ transcoder }) => {
        if (level > 0) transcoder.setLevel(level, 'bench');
        resolve(watch = new LadderWatch(transcoder));
      };
      node.on('live', onLive);
    });

    const childrenBefore = reapedChildrenCpuSec();
    const nodeBefore = process.cpuUsage();
    const startedAt = performance.now();
    const [shell, shellArgs] = withTimes(config.ffmpegPath, [
      '-hide_banner', '-nostdin', '-loglevel', 'error', '-re', '-i', file, '-c', 'copy', '-f', 'flv', `${node.rtmpUrl}/${streamKey}`,
    ]);
    const running = spawnBounded('the publisher', shell, shellArgs, {
      timeoutMs: mediaLimitMs(seconds), signal, stdio: ['ignore', 'pipe'], group: true,
    });
    publisher = running;
    let times = '';
    running.child.stdout!.setEncoding('utf8').on('data', (text: string) => { times += text; });
    const endedEarly = running.exited.then((exit) => {
      throw new BenchError(`the publisher ended before the stream went live (status ${exit.code}): ${exit.stderrTail.trim()}`);
    });
    const watching = await within('the stream to go live', Promise.race([live, endedEarly]), 30_000, signal);
    expectSuccess('the publisher', await running.exited);
    await within("OnAir's ffmpeg to finish after the publish", watching.finished, 30_000, signal);
    const nodeCpu = process.cpuUsage(nodeBefore);
    const childrenSec = reapedChildrenCpuSec() - childrenBefore;
    const wallSec = (performance.now() - startedAt) / 1000;
    const publisherSec = parseTimes(times);
    if (publisherSec === undefined) throw new BenchError(`the publisher's shell printed no times: "${times.trim()}"`);
    return {
      ffmpegSec: childrenSec - publisherSec,
      nodeSec: (nodeCpu.user + nodeCpu.system) / 1e6,
      publisherSec,
      sampledSec: watching.sampledSec,
      speed: watching.speed,
      mediaSec: watching.mediaMs / 1000,
      wallSec,
      runs: watching.runs,
      crashes: watching.crashes,
      plan: watching.plan,
    };
  } finally {
    publisher?.kill();
    watch?.stop();
    if (onLive) node.off('live', onLive);
    await within('closing the OnAir node', harness.close(), 30_000, NO_ABORT);
  }
}

function pipeFd(arg: string | undefined): number | undefined {
  const match = arg === undefined ? null : /^pipe:(\d+)$/.exec(arg);
  return match ? Number(match[1]) : undefined;
}

/** Both built by liveLadderArgs, before the baseline's input swap: any difference is a different plan. */
function sameArgv(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((arg, i) => arg === b[i]);
}

const speedText = (speed: number | undefined): string => (speed === undefined ? 'n/a' : `${fixed(speed, 2)}x`);

function describeSource(s: SourceInfo): string {
  const audio = s.audioCodec === undefined ? 'no audio' : `${s.audioCodec} ${s.audioSampleRate} Hz ${s.audioChannels} ch`;
  const kbps = s.declaredVideoKbps === undefined ? '' : ` ${Math.round(s.declaredVideoKbps)} kbit/s`;
  return `${s.width}x${s.height} ${fixed(s.fps, 2)} fps h264${kbps} + ${audio}`;
}

function describePlan(plan: LadderPlan): string {
  const rungs = plan.renditions.map((r) => `${r.name} ${r.width}x${r.height}@${r.fps} ${r.videoKbps}k`).join(', ');
  return `${rungs}; audio ${plan.copyAudio ? 'copied' : 're-encoded'}`;
}
