import { fork, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../server/config.js';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult, type SummaryRow } from './support/benchmark.js';
import { epochMs, sleep } from './support/clock.js';
import { freePort, nginxMissing, nginxVersion, startNginx, type RunningNginx } from './support/nginx.js';
import type { NodeProcessCommand } from './support/onairNodeProcess.js';
import { createStream, nodeReady } from './support/nodeProcess.js';
import { liveRenditions } from './support/playlist.js';
import { cleanEnv, forkBounded, processCpuSec, spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { summarize, type Summary } from './support/stats.js';
import type { LoadOptions } from './support/viewerLoad.js';
import { runViewerLoad } from './support/viewerRun.js';

/*
 * N simulated low-latency viewers on one OnAir process, and nginx serving the same bytes as a ceiling, side by side
 * at each N.
 *
 * - Server: an OnAir node in a child process of its own (bench/support/onairNodeProcess.ts: server/main.ts plus a
 *   'fragment' listener that reports over IPC when each part appeared), defaults as shipped (libx264, ladder, 200 ms
 *   parts, 2 s segments; the WebRTC feed off), loopback, temp data dir; the harness's OBS-like publish at 854x480 (-re), so two renditions
 *   (480p, 360p). Its CPU: utime+stime of the node process from /proc (its threads included; its ffmpeg and Redis
 *   are other processes and left out), over the measurement window, as core-seconds per second. The same process
 *   with no viewer is measured first (ingest, fMP4 splitting, packaging of the stream itself).
 * - Viewers: bench/support/viewerLoad.ts in a separate Node process, one keep-alive TCP connection each, half on
 *   each rendition: blocking reload of the next part (`_HLS_msn/_HLS_part`), then GET of the new part(s).
 * - Publication of a part: for OnAir, the server-side moment it was added to the playlist (the instant blocked
 *   requests are released); both processes read the same system clock (bench/support/clock.ts).
 *   Delivery = the viewer has the whole part − publication; "part GET" = the part's own request → response.
 * - Ceiling: nginx (Debian, one worker, sendfile, no access log) serving the very same bytes as static files: while it
 *   is measured, the OnAir process writes each new part and then the playlist listing it (atomic rename) to a
 *   directory; publication = the moment the playlist file is in place. nginx cannot hold a request, so its viewers
 *   poll the playlist every part target (200 ms, each at its own phase) and GET each new part: the same requests at
 *   the same rate. Its delivery therefore includes the wait for the next poll (up to one part target, by design of
 *   a server that cannot block); its part GET is the like-for-like serving time. Its CPU: master + worker from /proc.
 * - Steps: N in 100, 250, 500, 1000, … up to BENCH_VIEWERS, each for BENCH_VIEWER_SECONDS after a ramp and a
 *   warm-up; a step ends early at its first error, and no larger N is tried after an OnAir error.
 */

/** The issue's goal: 1,000 viewers per core with p99 part delivery ≤ 50 ms after publication, and no error. */
const GOAL_VIEWERS_PER_CORE = 1000;
const GOAL_P99_MS = 50;
const STEPS = [100, 250, 500, 1000, 2000, 5000, 10000];
const SOURCE = { width: 854, height: 480, fps: 30 };
const WARMUP_MS = 3000;
const TAIL_MS = 1500;
const IDLE_MS = 5000;

const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_PROCESS = path.join(here, 'support', 'onairNodeProcess.js');

export const benchmark: Benchmark = {
  name: 'viewers',
  title: 'N LL-HLS viewers (blocking reload + parts, 2 renditions) on one OnAir process vs nginx with the same bytes: delivery after publication, CPU',
  run,
};

interface StepFigures {
  server: 'OnAir' | 'nginx';
  viewers: number;
  delivery: Summary | undefined;
  fetch: Summary | undefined;
  errors: number;
  firstErrors: string[];
  stoppedEarly: boolean;
  /** Receipts / (viewers × parts published in the window), per cent. */
  complete: number;
  serverCpu: number;
  generatorCpu: number;
  loopDelayP99Ms: number;
  reconnects: number;
  requestsPerSec: number;
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const maxViewers = envInteger('BENCH_VIEWERS', 1000, 2, 20_000);
  const measureMs = envInteger('BENCH_VIEWER_SECONDS', 20, 2, 300) * 1000;
  const steps = [...STEPS.filter((n) => n < maxViewers), maxViewers];
  const config = loadConfig({});
  const missing = nginxMissing(false);
  const stepLimitMs = (n: number): number => rampMs(n) + WARMUP_MS + measureMs + TAIL_MS;
  const totalMs = IDLE_MS + steps.reduce((sum, n) => sum + 2 * (stepLimitMs(n) + 5000), 0) + 60_000;

  report(`server    one OnAir node process (libx264 ${config.x264Preset}, ladder ${config.ladderHeights.join('/')}, part ` +
    `${config.partTargetMs} ms, WebRTC feed off); publish ${SOURCE.width}x${SOURCE.height} ${SOURCE.fps} fps -re → 2 renditions`);
  report(`ceiling   ${missing ? `NOT MEASURED: ${missing}` : `nginx ${nginxVersion()}, 1 worker, the same playlists and parts as static files, polled every ${config.partTargetMs} ms`}`);
  report(`load      N viewers in a separate Node process, half per rendition, steps ${steps.join(', ')}; ` +
    `${measureMs / 1000} s window per step after a ramp and ${WARMUP_MS / 1000} s warm-up`);
  report(`machine   ${os.availableParallelism()} cores shared by the server, the load generator, nginx and ffmpeg (publisher + ladder): ` +
    'the generator competes with the server, so every figure is pessimistic for both');

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-viewers-'));
  const mirrorDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-mirror-'));
  const nginxDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-nginx-'));
  // nginx's worker runs unprivileged when started as root: it must read the mirror.
  await chmod(mirrorDir, 0o755);
  const node = forkBounded(NODE_PROCESS, cleanEnv({
    ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_DATA_DIR: dataDir, ONAIR_HWACCEL: 'none', ONAIR_LOG_LEVEL: 'error',
    // The LL-HLS origin alone: no WebRTC layers in the same ffmpeg, no fixed WebRTC port to collide with other tests.
    ONAIR_WEBRTC_LAYERS: 'off',
    // Every viewer of the load generator comes from 127.0.0.1: no per-address cap on parked blocking requests.
    ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: '100000', ONAIR_LLHLS_MAX_BLOCKING: '1000000',
  }), totalMs + 60_000, signal);
  let publisher: BoundedChild | undefined;
  let nginx: RunningNginx | undefined;
  let nginxPort = 0;
  const figures: StepFigures[] = [];
  try {
    /** Part publications: `${rendition}/${sequence}` → time, per mode (direct, or after the mirror wrote it). */
    const published = { direct: new Map<string, number>(), mirrored: new Map<string, number>() };
    const mirroredRenditions = new Set<string>();
    const { httpUrl, rtmpUrl, adminToken } = await nodeReady(node, signal, (part) => {
      (part.mirrored ? published.mirrored : published.direct).set(`${part.rendition}/${part.sequence}`, part.at);
      if (part.mirrored) mirroredRenditions.add(part.rendition);
    });
    const nodePid = node.child.pid!;
    const httpPort = Number(new URL(httpUrl).port);

    const stream = await createStream(httpUrl, adminToken, 'bench: viewers');
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec: Math.ceil(totalMs / 1000), output: `${rtmpUrl}/${stream.streamKey}` }), {
      timeoutMs: totalMs + 60_000, signal,
    });
    publisher.exited.catch(() => undefined);
    const renditions = await within('the stream to go live', liveRenditions(httpUrl, stream.id, signal), 45_000, signal);
    if (renditions.length < 2) throw new BenchError(`expected 2 renditions, the stream has ${renditions.join(', ')}`);

    // The node with the stream and no viewer.
    await sleep(2000, signal);
    const idleFrom = processCpuSec(nodePid) ?? 0;
    const idleStart = epochMs();
    await sleep(IDLE_MS, signal);
    const idleCpu = ((processCpuSec(nodePid) ?? 0) - idleFrom) / ((epochMs() - idleStart) / 1000);
    report(`idle      the OnAir process with the stream and no viewer: ${fixed(idleCpu)} core-s/s`);

    if (!missing) {
      const port = await freePort();
      nginxPort = port;
      nginx = await startNginx({
        dir: nginxDir,
        main: 'worker_processes 1;\nworker_rlimit_nofile 65536;',
        http: `  types {
    application/vnd.apple.mpegurl m3u8;
    video/iso.segment m4s;
  }
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  etag off;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    root ${mirrorDir};
    location / { add_header Cache-Control no-cache; }
  }`,
        ports: [port],
        timeoutMs: totalMs + 60_000,
        signal,
      });
    }

    const header = ['viewers', 'server', 'deliv p50', 'p99', 'GET p50', 'p99', 'errors', 'complete', 'req/s', 'CPU', 'viewers/core', 'gen CPU', 'gen lag p99'];
    const widths = [7, 6, 10, 8, 8, 7, 7, 9, 8, 7, 13, 8, 12];
    const row = (cells: string[]): string => cells.map((c, i) => (i === 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' ');
    const figureRow = (f: StepFigures): string => row([String(f.viewers), f.server, ms(f.delivery?.p50), ms(f.delivery?.p99), ms(f.fetch?.p50), ms(f.fetch?.p99),
      `${f.errors}${f.stoppedEarly ? '!' : ''}`, `${fixed(f.complete, 1)}%`, String(Math.round(f.requestsPerSec)), fixed(f.serverCpu, 2),
      String(Math.round(f.viewers / f.serverCpu)), fixed(f.generatorCpu, 2), ms(f.loopDelayP99Ms)]);
    report('deliv = viewer has the whole part − publication; GET = the part\'s request → response; ms, except: errors (! = the step ' +
      'ended at its first error), complete = parts received / (viewers × parts published in the window), CPU in core-s/s of the server ' +
      'process(es), viewers/core = N / CPU, gen = the load generator process (its CPU and event-loop delay)');
    report(row(header));

    for (const viewers of steps) {
      const playlists = renditions.map((r) => ({ rendition: r, path: `/live/${stream.id}/${r}/index.m3u8` }));
      const onair = await measureStep('OnAir', {
        mode: 'blocking', host: '127.0.0.1', port: httpPort, playlists, viewers, rampMs: rampMs(viewers), warmupMs: WARMUP_MS, measureMs, tailMs: TAIL_MS,
        pollMs: config.partTargetMs, requestTimeoutMs: 10_000, stopOnError: true,
      }, () => processCpuSec(nodePid) ?? NaN, published.direct, signal);
      figures.push(onair);
      report(figureRow(onair));

      if (nginx) {
        mirroredRenditions.clear();
        node.child.send({ type: 'mirror', dir: mirrorDir } satisfies NodeProcessCommand);
        try {
          await within('the mirror to hold every rendition', waitUntil(() => renditions.every((r) => mirroredRenditions.has(r)), signal), 10_000, signal);
          const ceiling = await measureStep('nginx', {
            mode: 'polling', host: '127.0.0.1', port: nginxPort, playlists: renditions.map((r) => ({ rendition: r, path: `/${r}/index.m3u8` })),
            viewers, rampMs: rampMs(viewers), warmupMs: WARMUP_MS, measureMs, tailMs: TAIL_MS, pollMs: config.partTargetMs, requestTimeoutMs: 10_000,
            stopOnError: true,
          }, nginx.cpuSec, published.mirrored, signal);
          figures.push(ceiling);
          report(figureRow(ceiling));
          report(row(['', 'ratio', ratio(onair.delivery?.p50, ceiling.delivery?.p50), ratio(onair.delivery?.p99, ceiling.delivery?.p99),
            ratio(onair.fetch?.p50, ceiling.fetch?.p50), ratio(onair.fetch?.p99, ceiling.fetch?.p99), '', '', '', ratio(onair.serverCpu, ceiling.serverCpu)]));
        } finally {
          node.child.send({ type: 'mirror', dir: null } satisfies NodeProcessCommand);
        }
      }
      for (const f of figures.slice(-2)) for (const error of f.firstErrors.slice(0, 2)) report(`error     ${f.server} at ${f.viewers}: ${error}`);
      if (onair.errors > 0) {
        report(`stopped   OnAir had ${onair.errors} error(s) at ${viewers} viewers: no larger N`);
        break;
      }
    }
    if (publisher.child.exitCode !== null) throw new BenchError('the publisher ended before the last step');
  } finally {
    publisher?.kill();
    await nginx?.stop();
    node.stop();
    await node.exited;
    await Promise.all([dataDir, mirrorDir, nginxDir].map((dir) => rm(dir, { recursive: true, force: true })));
  }
  return { rows: summaryRows(figures, maxViewers) };
}

/** Viewers join over this long (no connection storm): 4 ms apart, between 1 and 5 s in all. */
const rampMs = (viewers: number): number => Math.min(5000, Math.max(1000, viewers * 4));

const ms = (value: number | undefined): string => (value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(1));
const ratio = (a: number | undefined, b: number | undefined): string =>
  (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? 'n/a' : `${(a / b).toFixed(2)}x`);

async function waitUntil(check: () => boolean, signal: AbortSignal): Promise<void> {
  while (!check()) await sleep(50, signal);
}

/** One step: a fresh generator process, the server's CPU over its window, delivery from the publications seen. */
async function measureStep(server: StepFigures['server'], options: LoadOptions, cpu: () => number, published: Map<string, number>, signal: AbortSignal): Promise<StepFigures> {
  const { result, from, to } = await runViewerLoad(`the ${server} load of ${options.viewers} viewers`, options, () => ({ cpu: cpu(), at: epochMs() }), signal);
  const cpuFrom = from?.cpu;
  const cpuTo = to?.cpu;
  const windowFrom = from?.at ?? 0;
  const windowTo = to?.at ?? 0;

  // Parts published in the window, and how many viewers follow each rendition.
  const perRendition = new Map<string, number>();
  options.playlists.forEach((p, i) => perRendition.set(p.rendition, (perRendition.get(p.rendition) ?? 0) + (i < options.viewers ? Math.ceil((options.viewers - i) / options.playlists.length) : 0)));
  const delivery: number[] = [];
  let expected = 0;
  for (const [key, at] of published) {
    if (at < result.measureFrom || at > result.measureTo) continue;
    expected += perRendition.get(key.slice(0, key.indexOf('/'))) ?? 0;
    for (const receipt of result.receipts[key] ?? []) delivery.push(receipt - at);
  }
  const windowSec = Math.max(0.001, (windowTo - windowFrom) / 1000);
  return {
    server,
    viewers: options.viewers,
    delivery: summarize(delivery),
    fetch: summarize(result.fetchMs),
    errors: result.errors,
    firstErrors: result.firstErrors,
    stoppedEarly: result.stoppedEarly,
    complete: expected > 0 ? (100 * delivery.length) / expected : 0,
    serverCpu: cpuFrom !== undefined && cpuTo !== undefined ? (cpuTo - cpuFrom) / windowSec : NaN,
    generatorCpu: result.cpuPerSec,
    loopDelayP99Ms: result.loopDelayP99Ms,
    reconnects: result.reconnects,
    requestsPerSec: result.windowRequests / Math.max(0.001, (result.measureTo - result.measureFrom) / 1000),
  };
}

function summaryRows(figures: StepFigures[], maxViewers: number): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const passing = (f: StepFigures): boolean => f.errors === 0 && f.delivery !== undefined && f.delivery.p99 <= GOAL_P99_MS;
  const onair = figures.filter((f) => f.server === 'OnAir');
  const last = onair[onair.length - 1];
  if (!last) return [{ metric: 'error', value: 'no step was measured' }];
  const best = onair.filter(passing).pop();
  rows.push({
    metric: `OnAir: largest N with p99 ≤ ${GOAL_P99_MS} ms, 0 errors`,
    value: best ? `${best.viewers} (p99 ${ms(best.delivery?.p99)} ms, ${Math.round(best.viewers / best.serverCpu)} viewers/core)` : 'none',
  });
  rows.push({
    metric: `OnAir at ${last.viewers}: delivery p50/p99, errors`,
    value: `${ms(last.delivery?.p50)} / ${ms(last.delivery?.p99)} ms, ${last.errors}`,
  });
  rows.push({ metric: `OnAir at ${last.viewers}: CPU, viewers/core`, value: `${fixed(last.serverCpu, 2)} core-s/s, ${Math.round(last.viewers / last.serverCpu)}` });
  const ceiling = figures.find((f) => f.server === 'nginx' && f.viewers === last.viewers);
  if (ceiling) {
    rows.push({
      metric: `nginx at ${last.viewers}: part GET p99, CPU, viewers/core`,
      value: `${ms(ceiling.fetch?.p99)} ms, ${fixed(ceiling.serverCpu, 2)} core-s/s, ${Math.round(ceiling.viewers / ceiling.serverCpu)}`,
    });
    rows.push({ metric: `  OnAir / nginx CPU at ${last.viewers}`, value: ratio(last.serverCpu, ceiling.serverCpu) });
  } else {
    rows.push({ metric: 'nginx ceiling', value: 'not measured' });
  }
  const judged = maxViewers >= GOAL_VIEWERS_PER_CORE;
  const met = onair.some((f) => f.viewers >= GOAL_VIEWERS_PER_CORE && passing(f) && f.viewers / f.serverCpu >= GOAL_VIEWERS_PER_CORE);
  rows.push({
    metric: 'OnAir goal: 1,000 viewers/core, p99 ≤ 50 ms, 0 errors',
    value: judged ? (met ? 'yes' : 'no') : `not judged (BENCH_VIEWERS ${maxViewers} < ${GOAL_VIEWERS_PER_CORE})`,
    goal: `≥ ${GOAL_VIEWERS_PER_CORE} viewers/core`,
    ...(judged ? { met } : {}),
  });
  return rows;
}
