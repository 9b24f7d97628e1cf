import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { Fmp4Splitter, type Fragment, type InitSegment } from '../lib/media/fmp4.js';
import { liveLadderArgs, type LadderPlan, type LiveTranscoder, type TranscoderInput } from '../live-transcoder/index.js';
import type { MediaPlaylist, StreamPackager } from '../ll-hls-packager/index.js';
import { loadConfig, type Config } from '../server/config.js';
import type { OnAirNode, OnAirNodeEvents } from '../server/node.js';
import { api, startTestNode } from '../test/support/harness.js';
import { BenchError, envInteger, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { epochMs, sleep } from './support/clock.js';
import { FlvTagScanner, flvTags, readFlvTag } from './support/flv.js';
import { HttpConnection } from './support/httpClient.js';
import { newestPart, nextPartQuery, type NewestPart } from './support/playlist.js';
import { spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { msText, ratioText, summarize, type Summary } from './support/stats.js';

/*
 * Publish → part available, and part available → a blocking client has it, for OnAir's LL-HLS origin, each beside a
 * floor measured in the same run.
 *
 * - Stream: an OnAir node in this process (loopback, ephemeral ports, temp data dir, libx264 with the shipped preset,
 *   default ladder and part target, WebRTC feed off: the LL-HLS origin alone) and the harness's OBS-like publish (854x480 30 fps, x264 ultrafast zerolatency,
 *   2 s GOP, AAC, `-re`) over RTMP. The ladder is then 480p + 360p; the top rendition is followed.
 * - Publish time of a frame: when its FLV tag reached the transcoder's input. The ingest hands each tag on as soon as
 *   the RTMP parser has it, so this is the arrival of the frame at the server. Read by wrapping this one transcoder
 *   instance's write() (and its input's prelude(), whose first frame anchors the timeline) from the node's 'live'
 *   event: nothing in server/ or live-transcoder/ changes. The publisher's own encode and the capture before it are
 *   not OnAir's and are left out.
 * - Part available: the moment the transcoder's 'fragment' event reaches this benchmark's listener, registered after
 *   the packager's own: the part is in the playlist and the blocked requests have been released.
 * - Which frames a part holds: its first video sample's decode time (tfdt) plus the offset between the output
 *   timeline and the input's (the first input frame of the run is the first output sample; no frame is dropped at
 *   30 fps). "Beyond the part's duration" = available − publish time of its first frame − its duration: 0 would mean
 *   the part came out the instant its last frame's time was over.
 * - Blocking client: one keep-alive HTTP/1.1 connection (bench/support/httpClient.ts) asking
 *   `?_HLS_msn=M&_HLS_part=P+1` for the part after the newest it has; "has it" = the whole response is read.
 *
 * Floors, in the same run:
 * - Delivery: the same client against a bare Node `http` server in this process that holds each request and answers
 *   when the same 'fragment' event fires, with the same playlist bytes rendered beforehand (no routing, no waiting
 *   logic, no rendering in the timed path): what Node and loopback cost anyway.
 * - Publish → available: the ffmpeg CLI with the exact argv OnAir ran (same plan), fed the same publish command's FLV
 *   through a pipe (`-f flv pipe:1`, tags timed as they come off the pipe, just before ffmpeg's stdin), its fMP4
 *   pipes split by the same splitter: the part cannot be there sooner than ffmpeg writes it.
 */

/** The issue's goal: a part is available ≤ 150 ms (p50) after its own duration is over. */
const GOAL_BEYOND_P50_MS = 150;
/** Source size: two rungs of the default ladder, in real time on two cores. */
const SOURCE = { width: 854, height: 480, fps: 30 };
/**
 * The LL-HLS origin alone: with WebRTC on, the same ffmpeg also encodes the WebRTC layers (more load, another argv)
 * and the node needs the fixed WebRTC port, which a test running beside the bench may hold.
 */
const WEBRTC_OFF = 'off';
/** Never aborted: closing the node must run even when the benchmark is being aborted. */
const NO_ABORT = new AbortController().signal;

export const benchmark: Benchmark = {
  name: 'part-latency',
  title: 'LL-HLS publish → part available beyond its duration, and → blocking client; floors: ffmpeg CLI, bare Node http (ms)',
  run,
};

/** Server-side times of one part. */
interface PartTimes {
  availableAt: number;
  /** Publish time of its first video frame, when known. */
  firstFrameAt: number | undefined;
  durationMs: number;
}

/**
 * The frames of a run (input decode time → arrival) and its parts (sequence → times), for one rendition.
 * Output media time t maps to input decode time t + (first input frame's dts − first output tfdt).
 */
class Timeline {
  readonly #arrivals = new Map<number, number>();
  readonly parts = new Map<number, PartTimes>();
  #firstInputDts: number | undefined;
  #offsetMs: number | undefined;

  /** A video frame of the input arrived. */
  frame(dts: number, at: number): void {
    this.#firstInputDts ??= dts;
    this.#arrivals.set(dts, at);
  }

  /** The first input frame of the run came some other way (a prelude): no arrival time, only the anchor. */
  anchor(dts: number): void {
    this.#firstInputDts ??= dts;
  }

  /** A part of the followed rendition became available. */
  part(sequence: number, startMs: number, durationMs: number, at: number): void {
    if (this.#offsetMs === undefined && this.#firstInputDts !== undefined) this.#offsetMs = this.#firstInputDts - startMs;
    this.parts.set(sequence, { availableAt: at, firstFrameAt: this.#arrivalNear(startMs), durationMs });
  }

  /** Arrival of the input frame nearest to output time `startMs` (FLV dts are whole ms: within half a frame). */
  #arrivalNear(startMs: number): number | undefined {
    if (this.#offsetMs === undefined) return undefined;
    const dts = Math.round(startMs + this.#offsetMs);
    for (let d = 0; d <= 16; d += 1) {
      const at = this.#arrivals.get(dts - d) ?? this.#arrivals.get(dts + d);
      if (at !== undefined) return at;
    }
    return undefined;
  }

  /** available − first frame's publish − duration, for the parts available in [from, to). */
  beyondDuration(from: number, to: number): number[] {
    const values: number[] = [];
    for (const p of this.parts.values()) {
      if (p.availableAt >= from && p.availableAt < to && p.firstFrameAt !== undefined) values.push(p.availableAt - p.firstFrameAt - p.durationMs);
    }
    return values;
  }
}

/** Start (ms) of the video track's first sample in a fragment, from its tfdt. */
function videoStartMs(fragment: Fragment, init: InitSegment | undefined): number | undefined {
  const video = init?.tracks.find((t) => t.kind === 'video');
  const track = video && fragment.tracks.find((t) => t.trackId === video.trackId);
  return video && track ? (Number(track.baseMediaDecodeTime) * 1000) / video.timescale : undefined;
}

interface FollowResult {
  /** Part sequence → when the client had the playlist listing it as the newest part. */
  received: Map<number, number>;
  requests: number;
  errors: string[];
  /** Parts that appeared two or more at a time (the client was late for one). */
  skipped: number;
}

/**
 * The blocking client: asks for the part after the newest it has until `until`, on one keep-alive connection.
 */
async function followParts(port: number, playlistPath: string, until: number, signal: AbortSignal): Promise<FollowResult> {
  const connection = new HttpConnection('127.0.0.1', port, 10_000);
  const result: FollowResult = { received: new Map(), requests: 0, errors: [], skipped: 0 };
  let stopped = false;
  const stop = (): void => {
    stopped = true;
    connection.close();
  };
  signal.addEventListener('abort', stop, { once: true });
  const timer = setTimeout(stop, Math.max(0, until - epochMs()));
  try {
    let newest: NewestPart | undefined;
    while (!stopped && epochMs() < until) {
      const path = newest ? `${playlistPath}?${nextPartQuery(newest)}` : playlistPath;
      let response;
      try {
        result.requests += 1;
        response = await connection.get(path);
      } catch (error) {
        if (stopped) break;
        result.errors.push((error as Error).message);
        newest = undefined;
        continue;
      }
      const at = epochMs();
      const part = response.status === 200 ? newestPart(response.body.toString('latin1')) : undefined;
      if (!part) {
        result.errors.push(`GET ${path}: ${response.status} ${response.body.toString('utf8').slice(0, 120)}`);
        newest = undefined;
        if (result.errors.length > 20) break;
        continue;
      }
      if (newest && part.sequence > newest.sequence) {
        result.received.set(part.sequence, at);
        result.skipped += part.sequence - newest.sequence - 1;
      }
      newest = part;
    }
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', stop);
    connection.close();
  }
  return result;
}

/**
 * The delivery floor: a bare Node http server that answers a request without `_HLS_msn` at once and holds the others
 * until release(), which answers them all with the bytes given.
 */
class HoldingServer {
  readonly server = http.createServer({ keepAlive: true, noDelay: true }, (request, response) => {
    if (!request.url?.includes('_HLS_msn=')) {
      this.#answer(response, this.#body);
      return;
    }
    this.#held.push(response);
  });

  #held: http.ServerResponse[] = [];
  #body: Buffer = Buffer.alloc(0);

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as AddressInfo).port;
  }

  /** The bytes the next responses carry. */
  set body(body: Buffer) {
    this.#body = body;
  }

  release(): void {
    const held = this.#held;
    this.#held = [];
    for (const response of held) this.#answer(response, this.#body);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  #answer(response: http.ServerResponse, body: Buffer): void {
    response.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl', 'content-length': body.length, 'cache-control': 'no-cache' });
    response.end(body);
  }
}

interface OnAirPhase {
  plan: LadderPlan;
  rendition: string;
  beyond: number[];
  delivery: number[];
  floorDelivery: number[];
  clientBeyond: number[];
  parts: number;
  requests: number;
  errors: string[];
  floorErrors: string[];
  skipped: number;
  restarts: number;
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const seconds = envInteger('BENCH_PART_SECONDS', 30, 3, 600);
  const warmupSec = envInteger('BENCH_PART_WARMUP_SECONDS', 6, 2, 120);
  // Defaults only (as a fresh install runs), whatever ONAIR_* the shell holds.
  const config = loadConfig({});
  report(`source    ${SOURCE.width}x${SOURCE.height} ${SOURCE.fps} fps testsrc2 + sine, x264 ultrafast zerolatency 1500k, 2 s GOP, -re, FLV`);
  report(`onair     libx264 ${config.x264Preset}, ladder ${config.ladderHeights.join('/')} (no upscaling), part ${config.partTargetMs} ms, ` +
    `segment ${config.segmentTargetMs} ms, WebRTC feed off; ${warmupSec} s warm-up, then ${seconds} s per phase`);

  const onair = await measureOnAir(config, seconds, warmupSec, signal);
  report(`ladder    ${onair.plan.renditions.map((r) => `${r.name} ${r.width}x${r.height}`).join(', ')}; following ${onair.rendition}`);
  const cli = await measureCli(config, onair.plan, onair.rendition, seconds, warmupSec, signal);

  const beyond = summarize(onair.beyond);
  const cliBeyond = summarize(cli.beyond);
  const delivery = summarize(onair.delivery);
  const floor = summarize(onair.floorDelivery);
  const clientBeyond = summarize(onair.clientBeyond);

  const cell = (v: number | undefined): string => (v === undefined ? 'n/a' : v.toFixed(1)).padStart(8);
  const line = (label: string, s: Summary | undefined): string =>
    `  ${label.padEnd(44)}${cell(s?.p50)}${cell(s?.p90)}${cell(s?.p99)}${cell(s?.max)}${String(s?.n ?? 0).padStart(7)}`;
  const ratioLine = (label: string, a: Summary | undefined, b: Summary | undefined): string =>
    `  ${label.padEnd(44)}${ratioText(a?.p50, b?.p50).padStart(8)}${ratioText(a?.p90, b?.p90).padStart(8)}${ratioText(a?.p99, b?.p99).padStart(8)}`;
  report('method    publish = the frame\'s FLV tag reaches the transcoder\'s input (parsed off RTMP; for the CLI: off the pipe); ' +
    'available = the part is in the playlist and blocked requests are released (for the CLI: its fMP4 fragment is split off ' +
    'the pipe); beyond = available − publish of the part\'s first frame − the part\'s duration');
  report('method    client = one keep-alive connection asking _HLS_msn/_HLS_part for the next part; "has it" = the whole ' +
    'playlist response read; the floor server answers held requests when the same part event fires');
  report(`${'ms'.padEnd(46)}${'p50'.padStart(8)}${'p90'.padStart(8)}${'p99'.padStart(8)}${'max'.padStart(8)}${'n'.padStart(7)}`);
  report('publish → part available, beyond the part\'s own duration');
  report(line('OnAir (RTMP ingest + ffmpeg + packager)', beyond));
  report(line('floor: ffmpeg CLI, same argv, FLV by pipe', cliBeyond));
  report(ratioLine('OnAir / floor', beyond, cliBeyond));
  report('part available → blocking client has the playlist');
  report(line('OnAir (fastify /live route, blocking reload)', delivery));
  report(line('floor: bare Node http server, same bytes', floor));
  report(ratioLine('OnAir / floor', delivery, floor));
  report('publish → blocking client has the playlist, beyond the part\'s duration (the two above, end to end)');
  report(line('OnAir', clientBeyond));
  report(`checks    ${onair.parts} parts of ${onair.rendition} timed; client: ${onair.requests} requests, ${onair.skipped} parts arrived ` +
    `two at a time, errors ${onair.errors.length} (floor ${onair.floorErrors.length}); transcoder restarts ${onair.restarts}; ` +
    `CLI: ${cli.parts} parts, speed ${cli.speed ?? 'n/a'}`);
  for (const error of [...onair.errors, ...onair.floorErrors].slice(0, 3)) report(`error     ${error}`);
  const met = beyond !== undefined && beyond.p50 <= GOAL_BEYOND_P50_MS;
  report(`goal      publish → available p50 ≤ ${GOAL_BEYOND_P50_MS} ms beyond the part's duration: ${beyond ? (met ? 'met' : 'MISSED') : 'n/a'} ` +
    `(${msText(beyond?.p50)}; the ffmpeg CLI alone: ${msText(cliBeyond?.p50)})`);
  if (!beyond || !delivery) throw new BenchError('no part could be timed');

  return {
    rows: [
      { metric: 'publish→part available beyond duration p50/p99', value: `${msText(beyond.p50)} / ${msText(beyond.p99)}`, goal: `p50 ≤ ${GOAL_BEYOND_P50_MS} ms`, met },
      { metric: '  vs ffmpeg CLI alone (p50 ratio)', value: `${ratioText(beyond.p50, cliBeyond?.p50)} (CLI ${msText(cliBeyond?.p50)})` },
      { metric: 'part available→blocking client p50/p99', value: `${msText(delivery.p50, 2)} / ${msText(delivery.p99, 2)}` },
      { metric: '  vs bare Node http (p50 ratio)', value: `${ratioText(delivery.p50, floor?.p50)} (floor ${msText(floor?.p50, 2)})` },
      { metric: 'blocking client errors', value: String(onair.errors.length), goal: '0', met: onair.errors.length === 0 },
    ],
  };
}

/** Phases 1 and 2: OnAir's own route, then the bare http floor, on one live stream. */
async function measureOnAir(config: Config, seconds: number, warmupSec: number, signal: AbortSignal): Promise<OnAirPhase> {
  const harness = await within('starting an OnAir node', startTestNode({
    ONAIR_HWACCEL: 'none',
    // The harness defaults to ultrafast for quick tests; the bench measures the shipped default.
    ONAIR_X264_PRESET: config.x264Preset,
    ONAIR_WEBRTC_LAYERS: WEBRTC_OFF,
  }), 60_000, signal, (late) => late.close());
  const { node } = harness;
  let publisher: BoundedChild | undefined;
  let onLive: ((...args: OnAirNodeEvents['live']) => void) | undefined;
  const floor = new HoldingServer();
  try {
    const created = await within('creating a stream', api(node, 'POST', '/api/streams', { body: { title: 'bench: part latency' } }), 10_000, signal);
    if (created.status !== 201) throw new BenchError(`POST /api/streams answered ${created.status}`);
    const streamId = String(created.body.id);
    const timeline = new Timeline();
    const floorTimes = new Map<number, number>();
    let floorOn = false;
    let restarts = 0;
    let followed: { name: string; plan: LadderPlan } | undefined;
    let firstPart: () => void = () => undefined;
    const started = new Promise<void>((resolve) => { firstPart = resolve; });

    // Subscribed in the 'live' listener itself: the transcoder starts right after it, before an awaiting caller resumes.
    onLive = ({ transcoder }) => instrument(node, streamId, transcoder, {
      onStart: (plan, generation) => {
        if (generation > 0) restarts += 1;
        followed ??= { name: plan.renditions[0]!.name, plan };
      },
      frame: (dts, at, generation) => { if (generation === 0) timeline.frame(dts, at); },
      anchor: (dts, generation) => { if (generation === 0) timeline.anchor(dts); },
      part: (rendition, generation, playlist, packager, startMs, durationMs, at) => {
        if (rendition !== followed?.name || generation !== 0) return;
        timeline.part(playlist.nextPartSequence - 1, startMs, durationMs, at);
        firstPart();
        if (floorOn) {
          floor.body = Buffer.from(playlist.render({ serverControl: packager.serverControl, reports: packager.reportsFor(rendition) }), 'latin1');
          floorTimes.set(playlist.nextPartSequence - 1, epochMs());
          floor.release();
        }
      },
    });
    node.on('live', onLive);

    const durationSec = warmupSec + 2 * seconds + 15;
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec, output: `${node.rtmpUrl}/${String(created.body.streamKey)}` }), {
      timeoutMs: (durationSec + 60) * 1000, signal,
    });
    const endedEarly = publisher.exited.then((exit) => {
      throw new BenchError(`the publisher ended early (status ${exit.code}): ${exit.stderrTail.trim()}`);
    });
    endedEarly.catch(() => undefined); // raced below; its end after the measurement is no error
    await within('the first part', Promise.race([started, endedEarly]), 30_000, signal);
    await sleep(warmupSec * 1000, signal);
    const name = followed!.name;
    const playlistPath = `/live/${streamId}/${name}/index.m3u8`;

    // Phase 1: OnAir's route.
    const port = Number(new URL(node.httpUrl).port);
    const from1 = epochMs();
    const mine = await followParts(port, playlistPath, from1 + seconds * 1000, signal);
    const to1 = epochMs();

    // Phase 2: the floor, on the same stream (same machine load), the same client.
    const floorPort = await floor.listen();
    floor.body = Buffer.from(node.packager(streamId)!.playlist(name)!.render({
      serverControl: node.packager(streamId)!.serverControl, reports: node.packager(streamId)!.reportsFor(name),
    }), 'latin1');
    floorOn = true;
    const from2 = epochMs();
    const bare = await followParts(floorPort, playlistPath, from2 + seconds * 1000, signal);
    const to2 = epochMs();
    floorOn = false;
    if (publisher.child.exitCode !== null) throw new BenchError('the publisher ended before the measurement did');

    const delivery: number[] = [];
    const clientBeyond: number[] = [];
    for (const [sequence, at] of mine.received) {
      const part = timeline.parts.get(sequence);
      if (!part) continue;
      delivery.push(at - part.availableAt);
      if (part.firstFrameAt !== undefined) clientBeyond.push(at - part.firstFrameAt - part.durationMs);
    }
    const floorDelivery: number[] = [];
    for (const [sequence, at] of bare.received) {
      const released = floorTimes.get(sequence);
      if (released !== undefined) floorDelivery.push(at - released);
    }
    return {
      plan: followed!.plan,
      rendition: name,
      beyond: [...timeline.beyondDuration(from1, to1), ...timeline.beyondDuration(from2, to2)],
      delivery,
      floorDelivery,
      clientBeyond,
      parts: [...timeline.parts.values()].filter((p) => p.availableAt >= from1 && p.availableAt < to2).length,
      requests: mine.requests,
      errors: mine.errors,
      floorErrors: bare.errors,
      skipped: mine.skipped,
      restarts,
    };
  } finally {
    publisher?.kill();
    if (onLive) node.off('live', onLive);
    await floor.close().catch(() => undefined);
    await within('closing the OnAir node', harness.close(), 30_000, NO_ABORT);
  }
}

interface Instruments {
  onStart(plan: LadderPlan, generation: number): void;
  frame(dts: number, at: number, generation: number): void;
  anchor(dts: number, generation: number): void;
  part(rendition: string, generation: number, playlist: MediaPlaylist, packager: StreamPackager, startMs: number, durationMs: number, at: number): void;
}

/**
 * Times one transcoder instance from the outside: its input tags (write), the first frame of each run (the prelude
 * its input hands each new ffmpeg), and each part the packager has just added (a 'fragment' listener registered after
 * the packager's).
 */
function instrument(node: OnAirNode, streamId: string, transcoder: LiveTranscoder, on: Instruments): void {
  // A run's generation is the number of preludes asked for before it: every run starts with one.
  let generation = -1;
  const write = transcoder.write.bind(transcoder);
  transcoder.write = (tag: Buffer): boolean => {
    const info = readFlvTag(tag);
    if (info.videoFrame) on.frame(info.dts, epochMs(), generation);
    return write(tag);
  };
  const attach = transcoder.attach.bind(transcoder);
  transcoder.attach = (input: TranscoderInput): void => attach({
    source: input.source,
    prelude: () => {
      const bytes = input.prelude();
      generation += 1;
      for (const tag of flvTags(bytes)) {
        if (tag.videoFrame) {
          on.anchor(tag.dts, generation);
          break;
        }
      }
      return bytes;
    },
  });
  transcoder.on('start', ({ plan, generation: g }) => on.onStart(plan, g));
  const lastSequence = new Map<string, number>();
  transcoder.on('fragment', ({ generation: g, rendition, fragment }) => {
    const at = epochMs();
    const packager = node.packager(streamId);
    const playlist = packager?.playlist(rendition.name);
    if (!packager || !playlist) return;
    const sequence = playlist.nextPartSequence - 1;
    // The packager drops fragments before a segment's first keyframe: only parts it added count.
    if (sequence < 0 || lastSequence.get(rendition.name) === sequence) return;
    lastSequence.set(rendition.name, sequence);
    const startMs = videoStartMs(fragment, playlist.init);
    if (startMs !== undefined) on.part(rendition.name, g, playlist, packager, startMs, fragment.durationMs, at);
  });
}

/** Phase 3: the same ffmpeg argv as a plain CLI, fed the same publish command's FLV through a pipe. */
async function measureCli(config: Config, plan: LadderPlan, rendition: string, seconds: number, warmupSec: number, signal: AbortSignal): Promise<{
  beyond: number[]; parts: number; speed: string | undefined;
}> {
  const argv = liveLadderArgs({ plan, encoder: 'libx264', x264Preset: config.x264Preset, partTargetMs: config.partTargetMs, vaapiDevice: config.vaapiDevice });
  const durationSec = warmupSec + seconds + 5;
  const limitMs = (durationSec + 60) * 1000;
  const cli = spawnBounded('the ffmpeg CLI', config.ffmpegPath, argv, {
    timeoutMs: limitMs, signal, stdio: ['pipe', 'ignore', 'pipe', 'pipe', ...plan.renditions.map(() => 'pipe' as const)],
  });
  const publisher = spawnBounded('the publisher (pipe)', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec, output: 'pipe:1' }), {
    timeoutMs: limitMs, signal, stdio: ['ignore', 'pipe'],
  });
  try {
    const timeline = new Timeline();
    let speed: string | undefined;
    (cli.child.stdio[3] as Readable).setEncoding('utf8').on('data', (text: string) => {
      speed = /speed=\s*([\d.]+x)/.exec(text)?.[1] ?? speed;
    });
    let firstPart: () => void = () => undefined;
    const started = new Promise<void>((resolve) => { firstPart = resolve; });
    plan.renditions.forEach((r, i) => {
      const splitter = new Fmp4Splitter();
      let init: InitSegment | undefined;
      let sequence = 0;
      splitter.on('init', (segment) => { init = segment; });
      splitter.on('fragment', (fragment) => {
        const at = epochMs();
        if (r.name !== rendition) return;
        const startMs = videoStartMs(fragment, init);
        if (startMs !== undefined) timeline.part(sequence++, startMs, fragment.durationMs, at);
        firstPart();
      });
      (cli.child.stdio[4 + i] as Readable).on('data', (chunk: Buffer) => splitter.push(chunk));
    });
    const stdin = cli.child.stdin as Writable;
    stdin.on('error', () => undefined);
    const scanner = new FlvTagScanner((tag) => {
      if (tag.videoFrame) timeline.frame(tag.dts, epochMs());
    });
    publisher.child.stdout!.on('data', (chunk: Buffer) => {
      // Timed as it comes off the pipe, then handed on: the same point as OnAir's transcoder input.
      scanner.push(chunk);
      stdin.write(chunk);
    });
    const endedEarly = Promise.race([publisher.exited, cli.exited]).then((exit) => {
      throw new BenchError(`the publisher or the CLI ended early (status ${exit.code}): ${exit.stderrTail.trim()}`);
    });
    endedEarly.catch(() => undefined); // raced below; its end after the measurement is no error
    await within('the CLI\'s first part', Promise.race([started, endedEarly]), 30_000, signal);
    await sleep(warmupSec * 1000, signal);
    const from = epochMs();
    await Promise.race([sleep(seconds * 1000, signal), endedEarly]);
    const to = epochMs();
    return { beyond: timeline.beyondDuration(from, to), parts: [...timeline.parts.values()].filter((p) => p.availableAt >= from && p.availableAt < to).length, speed };
  } finally {
    publisher.kill();
    cli.kill();
    await Promise.all([publisher.exited.catch(() => undefined), cli.exited.catch(() => undefined)]);
  }
}
