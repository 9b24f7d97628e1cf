import os from 'node:os';
import { loadConfig } from '../server/config.js';
import { api, startTestNode, waitFor } from '../test/support/harness.js';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { sleep } from './support/clock.js';
import { childProcesses, CpuWindow, mediasoupWorkers } from './support/procfs.js';
import { spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { percentile } from './support/stats.js';
import { WhepGenerator } from './support/whepGenerator.js';
import type { Sample } from './support/whepLoad.js';

/*
 * How many WebRTC consumers one mediasoup viewer worker carries at a fixed CPU budget.
 *
 * - Node: startTestNode in this process with ONAIR_WEBRTC_WORKERS=1 (one viewer worker beside the ingest worker), the
 *   shipped WebRTC layers (480,240 simulcast) and x264 preset, a one-rendition HLS ladder (360) so that the ladder's
 *   encodes crowd the machine less, an ephemeral WebRTC port. One live stream: the harness's publisher at 854x480.
 * - Consumers: werift WHEP viewers (test/support/whepClient.ts, congestion control on, audio + video) in a separate
 *   Node process (bench/support/whepLoad.ts), added in steps; each counts as connected once its first video packet
 *   arrived. After each step has settled, a window in which CPU is read.
 * - CPU: utime+stime growth of each process over the window (/proc/<pid>/stat) / wall time, in % of one core. The
 *   workers are children of this process; the viewer worker is the one holding a listening TCP socket (its
 *   WebRtcServer), the ingest worker the other (bench/support/procfs.ts). The edge keeps their pids to itself.
 * - Baseline, same run: step 0 (no consumer), where only the ingest worker works (the plain-RTP input and producers).
 *   Per consumer: the least-squares slope of the viewer worker's CPU over the steps with consumers (its intercept is
 *   the stream's fixed cost there: the pipe from the ingest worker); net per step: both workers' CPU above step 0 / N.
 *   Consumers per worker at one core at 80 %: (80 − intercept) / slope.
 */

const NO_ABORT = new AbortController().signal;
const STEPS = [10, 25, 50, 100, 200, 400, 800];
const SOURCE = { width: 854, height: 480, fps: 30 };
const LADDER = '360';
/** The budget: one core, of which 80 % may go to consumers. */
const BUDGET_PERCENT = 80;
const CONNECT_CONCURRENCY = 8;

export const benchmark: Benchmark = {
  name: 'webrtc-consumers',
  title: 'WebRTC consumers per mediasoup viewer worker at one core at 80 % (werift WHEP viewers, CPU % per consumer)',
  run,
};

interface Step {
  consumers: number;
  viewer: number;
  ingest: number;
  transcoder: number;
  node: number;
  generator: number;
  machine: number;
  /** Median video kbps received per consumer in the window. */
  kbps: number;
  /** Consumers that received no video in the window. */
  starved: number;
  /** Simulcast layer heights received, as `480p×n`. */
  layers: string;
  loopDelayMs: number;
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const maxConsumers = envInteger('BENCH_CONSUMERS', 100, 1, 2000);
  const windowSec = envInteger('BENCH_CONSUMERS_SECONDS', 10, 2, 300);
  const settleSec = envInteger('BENCH_CONSUMERS_SETTLE_SECONDS', 5, 1, 120);
  const steps = [0, ...STEPS.filter((n) => n < maxConsumers), maxConsumers];
  const config = loadConfig({ ONAIR_LADDER: LADDER, ONAIR_WEBRTC_WORKERS: '1' });
  const cores = os.availableParallelism();
  report(`node      in this process: 1 viewer worker + the ingest worker, WebRTC layers ${config.webrtcLayers.join(',')} simulcast, ` +
    `libx264 ${config.x264Preset}, HLS ladder ${LADDER}; publish ${SOURCE.width}x${SOURCE.height} ${SOURCE.fps} fps -re (x264 ultrafast, AAC)`);
  report(`consumers werift WHEP viewers (audio + video, transport-wide-cc) in a separate Node process, steps ${steps.join(', ')} ` +
    `(BENCH_CONSUMERS bounds them), ${CONNECT_CONCURRENCY} connecting at once; ${settleSec} s settle, then a ${windowSec} s window`);
  report('method    CPU % of one core = utime+stime growth of the process over the window (/proc/<pid>/stat) / wall time; ' +
    'per consumer = least-squares slope of the viewer worker over the steps with consumers; baseline: step 0, no consumer ' +
    '(only the ingest worker works); net = both workers above step 0, / N');
  report(`machine   ${cores} cores shared by the node (ffmpeg transcoder, mediasoup workers), the publisher and the load generator` +
    (cores <= 2 ? ': the generator (pure-JS SRTP/DTLS per consumer) competes with the server for them' : ''));

  const harness = await within('starting an OnAir node', startTestNode({
    ONAIR_X264_PRESET: config.x264Preset, ONAIR_LADDER: LADDER, ONAIR_WEBRTC_WORKERS: '1', ONAIR_WEBRTC_PORT: '0',
    // Every consumer comes from loopback: no per-address cap or rate limit on WHEP for a load test.
    ONAIR_WHEP_MAX_SESSIONS_PER_ADDRESS: '1000000', ONAIR_WHEP_MAX_SESSIONS_PER_WORKER: '1000000', ONAIR_RATE_WHEP_PER_MIN: '0',
  }), 60_000, signal, (late) => late.close());
  const { node } = harness;
  let publisher: BoundedChild | undefined;
  let generator: WhepGenerator | undefined;
  const measured: Step[] = [];
  let how = '';
  let stoppedAt: string | undefined;
  try {
    if (!node.edge) throw new BenchError('the node has no WebRTC edge (mediasoup did not start: see `npm run setup`)');
    const created = await within('creating a stream', api(node, 'POST', '/api/streams', { body: { title: 'bench: WebRTC consumers' } }), 10_000, signal);
    if (created.status !== 201) throw new BenchError(`POST /api/streams answered ${created.status}`);
    const streamId = String(created.body.id);
    const totalSec = steps.reduce((sum, n) => sum + settleSec + windowSec + n, 0) + 120;
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec: totalSec, output: `${node.rtmpUrl}/${String(created.body.streamKey)}` }), {
      timeoutMs: (totalSec + 60) * 1000, signal,
    });
    await within('the stream to have segments', waitFor('segments', () => node.packager(streamId)?.ready, 30_000), 35_000, signal);
    await within('the WebRTC producers', waitFor('producers', () => node.edge?.hasStream(streamId), 10_000), 15_000, signal);
    const workers = mediasoupWorkers();
    how = workers.how;
    if (workers.viewers.length !== 1) throw new BenchError(`expected one viewer worker, found ${workers.viewers.length}`);
    const viewerPid = workers.viewers[0]!;
    const transcoderPid = childProcesses(process.pid).find((p) => p.comm === 'ffmpeg' && p.pid !== publisher!.child.pid)?.pid;
    if (transcoderPid === undefined) throw new BenchError('the node\'s ffmpeg was not found among this process\'s children');
    generator = new WhepGenerator(signal);
    const url = `${node.httpUrl}/live/${streamId}/whep`;

    for (const consumers of steps) {
      const have = measured.length === 0 ? 0 : measured[measured.length - 1]!.consumers;
      if (consumers > have) {
        const count = consumers - have;
        const timeoutMs = 20_000;
        const added = await generator.ask({ type: 'add', url, count, concurrency: CONNECT_CONCURRENCY, timeoutMs }, 'added',
          Math.ceil(count / CONNECT_CONCURRENCY) * (timeoutMs * 2 + 5000) + 30_000, signal);
        if (added.failed > 0 || added.viewers !== consumers) {
          stoppedAt = `${added.failed} of ${count} consumers failed to connect on the way to ${consumers} (${added.errors.join('; ')})`;
          break;
        }
      }
      await sleep(settleSec * 1000, signal);
      const before = await generator.ask({ type: 'sample' }, 'sample', 10_000, signal);
      const cpu = new CpuWindow([viewerPid, workers.ingest, transcoderPid, process.pid, generator.pid]);
      await sleep(windowSec * 1000, signal);
      const used = cpu.stop();
      const after = await generator.ask({ type: 'sample' }, 'sample', 10_000, signal);
      if (node.edge.viewers(streamId) !== consumers) {
        stoppedAt = `the edge counts ${node.edge.viewers(streamId)} viewers at step ${consumers}`;
      }
      const step: Step = {
        consumers,
        viewer: used.percent.get(viewerPid)!,
        ingest: used.percent.get(workers.ingest)!,
        transcoder: used.percent.get(transcoderPid)!,
        node: used.percent.get(process.pid)!,
        generator: used.percent.get(generator.pid)!,
        machine: used.machinePercent,
        ...delivery(before, after),
      };
      measured.push(step);
      report(stepLine(step, measured[0]!));
      if (stoppedAt) break;
    }
  } finally {
    await generator?.close().catch(() => undefined);
    publisher?.kill();
    await within('closing the OnAir node', harness.close(), 30_000, NO_ABORT);
  }

  if (stoppedAt) report(`stopped   ${stoppedAt}`);
  const base = measured[0];
  const loaded = measured.filter((s) => s.consumers > 0);
  if (!base || loaded.length === 0) throw new BenchError(stoppedAt ?? 'no step with consumers was measured');
  // The viewer worker's line: over the loaded steps when there are two, else through step 0.
  const points = loaded.length >= 2 ? loaded : [base, ...loaded];
  const { slope, intercept } = leastSquares(points.map((s) => [s.consumers, s.viewer]));
  const perWorker = slope > 0 ? Math.floor((BUDGET_PERCENT - intercept) / slope) : NaN;
  const top = loaded[loaded.length - 1]!;
  const saturated = measured.some((s) => s.machine > 90);
  report(`workers   ${how}`);
  report(`baseline  step 0: ingest worker ${fixed(base.ingest, 1)} %, viewer worker ${fixed(base.viewer, 1)} % (idle); ` +
    `at ${top.consumers} consumers the ingest worker is at ${fixed(top.ingest, 1)} % (one pipe per viewer worker, not per consumer)`);
  report(`per consumer ${fixed(slope, 3)} % of a core (viewer worker, slope over ${points.map((s) => s.consumers).join('/')}; ` +
    `intercept ${fixed(intercept, 1)} %: the stream's fixed cost there); net at ${top.consumers}: ${fixed(net(top, base), 3)} % each, both workers above step 0`);
  report(`budget    one core at ${BUDGET_PERCENT} %: (${BUDGET_PERCENT} − ${fixed(intercept, 1)}) / ${fixed(slope, 3)} ≈ ${Number.isFinite(perWorker) ? perWorker : 'n/a'} ` +
    `consumers per viewer worker (extrapolated from ${top.consumers}; at ~${fixed(top.kbps, 0)} kbps video each)`);
  report(`caveat    ${cores} cores: the generator used up to ${fixed(Math.max(...measured.map((s) => s.generator)), 0)} % and the machine was up to ` +
    `${fixed(Math.max(...measured.map((s) => s.machine)), 0)} % busy${saturated ? ' — SATURATED: the workers waited for CPU and the generator may have read late (see loop p99), so the slope is uncertain' : ''}; ` +
    'worker CPU is the worker\'s own time, not affected by the wait, but consumers the generator starves of RTCP get less bitrate');
  return {
    rows: [
      { metric: 'viewer worker CPU per consumer', value: `${fixed(slope, 3)} % of a core` },
      { metric: `consumers per worker at 1 core × ${BUDGET_PERCENT} %`, value: Number.isFinite(perWorker) ? `≈ ${perWorker} (extrapolated from ${top.consumers})` : 'n/a' },
      { metric: 'ingest worker, 0 consumers (baseline)', value: `${fixed(base.ingest, 1)} % of a core` },
      { metric: `consumers starved of video at ${top.consumers}`, value: String(top.starved), goal: '0', met: top.starved === 0 },
    ],
  };
}

function net(step: Step, base: Step): number {
  return (step.viewer + step.ingest - base.viewer - base.ingest) / step.consumers;
}

function stepLine(s: Step, base: Step): string {
  const pct = (v: number, w = 6): string => `${fixed(v, 1)}%`.padStart(w);
  return `N=${String(s.consumers).padStart(4)}  viewer worker ${pct(s.viewer)}  ingest ${pct(s.ingest)}  ` +
    `net/consumer ${s.consumers > 0 ? `${fixed(net(s, base), 3)}%` : '   -  '}  video ${fixed(s.kbps, 0).padStart(4)} kbps each (${s.layers || '-'})` +
    `${s.starved > 0 ? `, ${s.starved} STARVED` : ''}  | transcoder ${pct(s.transcoder)}  node ${pct(s.node)}  generator ${pct(s.generator)} ` +
    `(loop p99 ${fixed(s.loopDelayMs, 0)} ms)  machine (all processes) ${pct(s.machine, 4)} of ${os.availableParallelism()} cores`;
}

/** What the consumers received between two samples of the generator. */
function delivery(before: Sample, after: Sample): Pick<Step, 'kbps' | 'starved' | 'layers' | 'loopDelayMs'> {
  const seconds = (after.at - before.at) / 1000;
  const kbps: number[] = [];
  let starved = 0;
  const layers = new Map<number, number>();
  after.videoPackets.forEach((packets, i) => {
    const bytes = after.videoBytes[i]! - (before.videoBytes[i] ?? 0);
    if (packets - (before.videoPackets[i] ?? 0) === 0) starved += 1;
    kbps.push((bytes * 8) / seconds / 1000);
    layers.set(after.heights[i]!, (layers.get(after.heights[i]!) ?? 0) + 1);
  });
  kbps.sort((a, b) => a - b);
  return {
    kbps: kbps.length ? percentile(kbps, 50) : 0,
    starved,
    layers: [...layers].sort((a, b) => b[0] - a[0]).map(([h, n]) => `${h > 0 ? `${h}p` : '?'}×${n}`).join(' '),
    loopDelayMs: after.loopDelayP99Ms,
  };
}

function leastSquares(points: [number, number][]): { slope: number; intercept: number } {
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const slope = sxx > 0 ? sxy / sxx : NaN;
  return { slope, intercept: my - slope * mx };
}
