import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedRedis, type EmbeddedRedis } from '../server/redis.js';
import { startPostgres, type TestPostgres } from '../test/support/postgres.js';
import { BenchError, envInteger, envSteps, fixed, type BenchContext, type Benchmark, type BenchResult, type SummaryRow } from './support/benchmark.js';
import { epochMs, sleep } from './support/clock.js';
import { createStream, nodeReady } from './support/nodeProcess.js';
import { liveRenditions } from './support/playlist.js';
import { cleanEnv, forkBounded, processCpuSec, spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { summarize, type Summary } from './support/stats.js';
import type { LoadOptions } from './support/viewerLoad.js';
import { runViewerLoad } from './support/viewerRun.js';

/*
 * Scale-out (issue #17): the same N LL-HLS viewers served by one origin alone, then by one edge (ONAIR_ROLE=edge) in
 * front of that origin, side by side at each N.
 *
 * - Nodes: an origin and an edge, each an OnAir node in a process of its own (bench/support/onairNodeProcess.ts),
 *   sharing one redis-server (discovery) and one PostgreSQL (catalog), as in production; loopback only. The origin
 *   gets an OBS-like 854x480 publish (-re) → 2 renditions, WebRTC off; its IPC 'part' messages give each part's
 *   publication (the instant it is in the playlist and the origin releases its blocked requests).
 * - Viewers: bench/support/viewerLoad.ts in a separate Node process (raw keep-alive HTTP/1.1, one connection per
 *   viewer, half per rendition): blocking reload of the next part (`_HLS_msn/_HLS_part`), then GET of the new part.
 *   Delivery = the viewer has the whole part − its publication on the origin (the edge's hop included).
 * - CPU: utime+stime of each node process from /proc over the measurement window (core-s/s; its ffmpeg, Redis and
 *   PostgreSQL are other processes and left out). Baseline in the same run: the origin with one viewer, measured
 *   first and again last (the lower counts: the first runs while the node is young).
 *   Viewers per edge core = N / the edge's CPU; the origin's cost of an edge = its CPU with the edge and N viewers
 *   behind it / its CPU with one viewer.
 * - Steps: BENCH_EDGE_VIEWERS (default `500,1000,2000`), BENCH_EDGE_SECONDS (default 10) of window after a ramp and
 *   a warm-up, direct then through the edge. BENCH_EDGE_GZIP=1: the viewers ask for gzip, as browsers do.
 * - BENCH_EDGE_PROFILE=<dir>: the edge writes a V8 CPU profile (node --cpu-prof) there when it stops.
 */

/** The goal: ≥ 2,000 viewers per edge core with p99 ≤ 50 ms and no error; the origin within 10 % of one viewer. */
const GOAL_PER_CORE = 2000;
const GOAL_P99_MS = 50;
const GOAL_ORIGIN_RATIO = 1.1;
const SOURCE = { width: 854, height: 480, fps: 30 };
const WARMUP_MS = 3000;
const TAIL_MS = 1500;
const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_PROCESS = path.join(here, 'support', 'onairNodeProcess.js');

export const benchmark: Benchmark = {
  name: 'scale-edge-viewers',
  title: 'N LL-HLS viewers on one origin vs on one edge in front of it (#17): delivery p99, errors, edge CPU (viewers per edge core), origin CPU vs one viewer',
  run,
};

export interface EdgeStep {
  via: 'origin' | 'edge';
  viewers: number;
  delivery: Summary | undefined;
  errors: number;
  firstErrors: string[];
  /** Parts received / (viewers × parts published in the window), per cent. */
  complete: number;
  originCpu: number;
  edgeCpu: number;
  generatorCpu: number;
  loopDelayP99Ms: number;
  loadavg: number;
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const steps = envSteps('BENCH_EDGE_VIEWERS', [500, 1000, 2000], 20_000);
  const measureMs = envInteger('BENCH_EDGE_SECONDS', 10, 2, 300) * 1000;
  // BENCH_EDGE_GZIP=1: viewers ask for gzip as browsers do (the servers then gzip playlists; the generator inflates).
  const gzip = process.env['BENCH_EDGE_GZIP'] === '1';
  const stepMs = (n: number): number => rampMs(n) + WARMUP_MS + measureMs + TAIL_MS + 5000;
  const totalMs = stepMs(1) + steps.reduce((sum, n) => sum + 2 * stepMs(n), 0) + 120_000;
  report(`nodes     one origin and one edge (ONAIR_ROLE=edge), each an OnAir process; one redis-server (discovery), one PostgreSQL; ` +
    `publish ${SOURCE.width}x${SOURCE.height} ${SOURCE.fps} fps -re → 2 renditions, WebRTC off`);
  report(`load      viewerLoad in its own process (raw keep-alive HTTP, blocking reload + part), steps ${steps.join(', ')} ` +
    `(BENCH_EDGE_VIEWERS), ${measureMs / 1000} s window (BENCH_EDGE_SECONDS), ${gzip ? 'Accept-Encoding: gzip' : 'no gzip asked'} (BENCH_EDGE_GZIP); ` +
    'baseline: the origin with 1 viewer');
  report(`machine   ${os.availableParallelism()} cores shared by origin, edge, ffmpeg, the load generator (and whatever else runs): pessimistic`);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-edge-'));
  let redis: EmbeddedRedis | undefined;
  let postgres: TestPostgres | undefined;
  let origin: ReturnType<typeof forkBounded> | undefined;
  let edge: ReturnType<typeof forkBounded> | undefined;
  let publisher: BoundedChild | undefined;
  const figures: EdgeStep[] = [];
  let baseline: EdgeStep | undefined;
  try {
    redis = await within('redis-server to start', startEmbeddedRedis({ dataDir: dir }), 20_000, signal);
    postgres = await within('PostgreSQL to start', startPostgres(), 60_000, signal);
    const shared = {
      ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_HWACCEL: 'none', ONAIR_LOG_LEVEL: 'error',
      ONAIR_REDIS_URL: redis.url, ONAIR_DATABASE_URL: postgres.url, ONAIR_WEBRTC_LAYERS: 'off', ONAIR_VOD_CONCURRENCY: '0',
      // Every viewer comes from 127.0.0.1: the per-address cap on parked requests at its maximum.
      ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: '100000', ONAIR_LLHLS_MAX_BLOCKING: '100000',
    };
    const published = new Map<string, number>();
    origin = forkBounded(NODE_PROCESS, cleanEnv({ ...shared, ONAIR_ROLE: 'origin', ONAIR_DATA_DIR: path.join(dir, 'origin') }), totalMs, signal);
    const ready = await nodeReady(origin, signal, (part) => {
      if (!part.mirrored) published.set(`${part.rendition}/${part.sequence}`, part.at);
    });
    // BENCH_EDGE_PROFILE=<dir>: the edge writes a V8 CPU profile there when it stops (node --cpu-prof).
    const profile = process.env['BENCH_EDGE_PROFILE'];
    edge = forkBounded(NODE_PROCESS, cleanEnv({ ...shared, ONAIR_ROLE: 'edge', ONAIR_DATA_DIR: path.join(dir, 'edge') }), totalMs, signal,
      profile ? { execArgv: ['--cpu-prof', `--cpu-prof-dir=${path.resolve(profile)}`] } : {});
    const edgeReady = await nodeReady(edge, signal);
    const originPid = origin.child.pid!;
    const edgePid = edge.child.pid!;
    const stream = await createStream(ready.httpUrl, ready.adminToken, 'bench: edge viewers');
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec: Math.ceil(totalMs / 1000), output: `${ready.rtmpUrl}/${stream.streamKey}` }), {
      timeoutMs: totalMs, signal,
    });
    publisher.exited.catch(() => undefined);
    const renditions = await within('the stream to go live', liveRenditions(ready.httpUrl, stream.id, signal), 45_000, signal);
    await within('the edge to serve the stream', liveRenditions(edgeReady.httpUrl, stream.id, signal), 30_000, signal);
    await sleep(2000, signal);

    const playlists = renditions.map((r) => ({ rendition: r, path: `/live/${stream.id}/${r}/index.m3u8` }));
    const port = { origin: Number(new URL(ready.httpUrl).port), edge: Number(new URL(edgeReady.httpUrl).port) };
    const cpu = { origin: () => processCpuSec(originPid) ?? NaN, edge: () => processCpuSec(edgePid) ?? NaN };
    const step = (via: EdgeStep['via'], viewers: number): Promise<EdgeStep> => measureStep(via, {
      mode: 'blocking', host: '127.0.0.1', port: port[via], playlists, viewers, rampMs: rampMs(viewers), warmupMs: WARMUP_MS, measureMs,
      tailMs: TAIL_MS, pollMs: 200, requestTimeoutMs: 10_000, stopOnError: false, acceptGzip: gzip,
    }, cpu, published, signal);

    report('deliv = the viewer has the whole part − its publication on the origin, ms; CPU in core-s/s of each node process; ' +
      'complete = parts received / parts expected; gen = the load generator (CPU, event-loop p99)');
    report(header());
    baseline = await step('origin', 1);
    report(line(baseline));
    for (const viewers of steps) {
      for (const via of ['origin', 'edge'] as const) {
        const figure = await step(via, viewers);
        figures.push(figure);
        report(line(figure));
        for (const error of figure.firstErrors.slice(0, 2)) report(`error     ${via} at ${viewers}: ${error}`);
      }
      const atEdge = figures[figures.length - 1]!;
      report(`          → ${viewers} on the edge: ${Math.round(viewers / atEdge.edgeCpu)} viewers per edge core; origin ${fixed(atEdge.originCpu / baseline.originCpu, 2)}× its CPU with 1 viewer`);
    }
    // The baseline again at the end: the first one runs while the node is young (JIT, first segments); the lower counts.
    const again = await step('origin', 1);
    report(line(again));
    if (again.originCpu < baseline.originCpu) baseline = again;
    if (publisher.child.exitCode !== null) throw new BenchError('the publisher ended before the last step');
  } finally {
    publisher?.kill();
    edge?.stop();
    origin?.stop();
    await edge?.exited;
    await origin?.exited;
    await redis?.stop();
    await postgres?.stop();
    await rm(dir, { recursive: true, force: true });
  }
  return { rows: summaryRows(figures, baseline!) };
}

const rampMs = (viewers: number): number => Math.min(5000, Math.max(1000, viewers * 2));
const ms = (value: number | undefined): string => (value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(1));

const COLUMNS: [string, number][] = [['viewers', 7], ['via', 6], ['deliv p50', 9], ['p99', 7], ['errors', 6], ['complete', 8],
  ['origin CPU', 10], ['edge CPU', 8], ['viewers/edge core', 17], ['gen CPU', 7], ['gen lag p99', 11], ['load1', 5]];
const header = (): string => COLUMNS.map(([name, w], i) => (i === 1 ? name.padEnd(w) : name.padStart(w))).join(' ');
function line(f: EdgeStep): string {
  const cells = [String(f.viewers), f.via, ms(f.delivery?.p50), ms(f.delivery?.p99), String(f.errors), `${fixed(f.complete, 1)}%`,
    fixed(f.originCpu, 3), f.via === 'edge' ? fixed(f.edgeCpu, 3) : '-', f.via === 'edge' ? String(Math.round(f.viewers / f.edgeCpu)) : '-',
    fixed(f.generatorCpu, 2), ms(f.loopDelayP99Ms), fixed(f.loadavg, 1)];
  return cells.map((c, i) => (i === 1 ? c.padEnd(COLUMNS[i]![1]) : c.padStart(COLUMNS[i]![1]))).join(' ');
}

/** One step: a fresh generator process; both nodes' CPU over its window; delivery from the origin's publications. */
async function measureStep(via: EdgeStep['via'], options: LoadOptions, cpu: { origin: () => number; edge: () => number },
  published: Map<string, number>, signal: AbortSignal): Promise<EdgeStep> {
  const { result, from, to } = await runViewerLoad(`${options.viewers} viewers on the ${via}`, options,
    () => ({ origin: cpu.origin(), edge: cpu.edge(), at: epochMs() }), signal);
  if (!from || !to) throw new BenchError('the measurement window never opened');
  const windowSec = Math.max(0.001, (to.at - from.at) / 1000);
  const perRendition = new Map<string, number>();
  options.playlists.forEach((p, i) => perRendition.set(p.rendition, (perRendition.get(p.rendition) ?? 0) +
    (i < options.viewers ? Math.ceil((options.viewers - i) / options.playlists.length) : 0)));
  const delivery: number[] = [];
  let expected = 0;
  for (const [key, at] of published) {
    if (at < result.measureFrom || at > result.measureTo) continue;
    expected += perRendition.get(key.slice(0, key.indexOf('/'))) ?? 0;
    for (const receipt of result.receipts[key] ?? []) delivery.push(receipt - at);
  }
  return {
    via,
    viewers: options.viewers,
    delivery: summarize(delivery),
    errors: result.errors,
    firstErrors: result.firstErrors,
    complete: expected > 0 ? (100 * delivery.length) / expected : 0,
    originCpu: (to.origin - from.origin) / windowSec,
    edgeCpu: (to.edge - from.edge) / windowSec,
    generatorCpu: result.cpuPerSec,
    loopDelayP99Ms: result.loopDelayP99Ms,
    loadavg: os.loadavg()[0]!,
  };
}

/** The summary: per N, both paths; then the goals, judged on the largest N the edge served within p99 and errors. */
export function summaryRows(figures: EdgeStep[], baseline: EdgeStep): SummaryRow[] {
  const rows: SummaryRow[] = [{ metric: 'origin with 1 viewer (baseline)', value: `${fixed(baseline.originCpu, 3)} core-s/s` }];
  const passing: EdgeStep[] = [];
  for (const viewers of new Set(figures.map((f) => f.viewers))) {
    const direct = figures.find((f) => f.viewers === viewers && f.via === 'origin');
    const edge = figures.find((f) => f.viewers === viewers && f.via === 'edge');
    if (!direct || !edge) continue;
    rows.push({ metric: `${viewers}: p99 origin / edge, errors`, value: `${ms(direct.delivery?.p99)} / ${ms(edge.delivery?.p99)} ms, ${direct.errors} / ${edge.errors}` });
    rows.push({ metric: `${viewers}: edge CPU, viewers per edge core`, value: `${fixed(edge.edgeCpu, 3)} core-s/s, ${Math.round(viewers / edge.edgeCpu)}` });
    rows.push({ metric: `${viewers}: origin CPU alone / behind the edge / 1 viewer`, value: `${fixed(direct.originCpu, 3)} / ${fixed(edge.originCpu, 3)} / ${fixed(baseline.originCpu, 3)}` });
    if (edge.errors === 0 && edge.delivery !== undefined && edge.delivery.p99 <= GOAL_P99_MS) passing.push(edge);
  }
  const best = passing.sort((a, b) => b.viewers - a.viewers)[0];
  const perCore = best ? best.viewers / best.edgeCpu : 0;
  const largest = figures.filter((f) => f.via === 'edge').sort((a, b) => b.viewers - a.viewers)[0];
  rows.push({
    metric: `edge: viewers per core at the largest N with p99 ≤ ${GOAL_P99_MS} ms, 0 errors`,
    value: best ? `${Math.round(perCore)} (at ${best.viewers}, p99 ${ms(best.delivery?.p99)} ms)` : 'none passed',
    goal: `≥ ${GOAL_PER_CORE}`,
    met: best !== undefined && perCore >= GOAL_PER_CORE,
  });
  if (largest) {
    const ratio = largest.originCpu / baseline.originCpu;
    rows.push({
      metric: `origin CPU with the edge and ${largest.viewers} viewers / with 1 viewer`,
      value: `${fixed(ratio, 2)}×`,
      goal: `≤ ${GOAL_ORIGIN_RATIO}×`,
      met: ratio <= GOAL_ORIGIN_RATIO,
    });
  }
  return rows;
}
