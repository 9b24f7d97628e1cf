import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchError, fixed, type BenchContext, type Benchmark, type BenchResult, type SummaryRow } from './support/benchmark.js';
import { epochMs, sleep } from './support/clock.js';
import { freePort, nginxMissing, nginxVersion, startNginx, type RunningNginx } from './support/nginx.js';
import { createStream, nodeReady } from './support/nodeProcess.js';
import { liveRenditions } from './support/playlist.js';
import { cleanEnv, forkBounded, processCpuSec, spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { summarize, type Summary } from './support/stats.js';
import type { LoadOptions } from './support/viewerLoad.js';
import { runViewerLoad } from './support/viewerRun.js';

/*
 * deploy/nginx/onair.conf in front of one OnAir origin (issue #17): the same N LL-HLS viewers (blocking reload of the
 * next part, then the part; bench/support/viewerLoad.ts in a process of its own) served by the origin directly, then
 * through nginx. What it says for sizing (docs/scaling.md): how much of the origin's work nginx takes (the origin's
 * CPU and requests per second with N viewers behind nginx vs served directly), what nginx itself costs per viewer,
 * and what the cache adds to part delivery (publication → the viewer has the whole part).
 *
 * Server: an OnAir node in a child process (bench/support/onairNodeProcess.ts), 854x480 publish → 2 renditions, WebRTC
 * off. nginx: Debian's, the shipped conf with its upstream, listen and cache path rewritten to loopback and a temp
 * dir, `worker_processes 1`. Both sides' CPU from /proc over the measurement window; the origin's requests from its
 * own `onair_http_requests_total`. `BENCH_NGINX_VIEWERS` (default `250,1000`), `BENCH_NGINX_SECONDS` (default 15).
 */

const SOURCE = { width: 854, height: 480, fps: 30 };
const WARMUP_MS = 3000;
const TAIL_MS = 1500;
const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_PROCESS = path.join(here, 'support', 'onairNodeProcess.js');
const CONF = path.resolve(here, '..', '..', 'deploy', 'nginx', 'onair.conf');

export const benchmark: Benchmark = {
  name: 'nginx-cache',
  title: 'N LL-HLS viewers on one origin directly vs through deploy/nginx/onair.conf: origin CPU and requests/s, nginx CPU, delivery',
  run,
};

interface Step {
  path: 'direct' | 'nginx';
  viewers: number;
  delivery: Summary | undefined;
  errors: number;
  originCpu: number;
  originRequestsPerSec: number;
  nginxCpu: number;
  viewerRequestsPerSec: number;
}

function viewerSteps(): number[] {
  const raw = process.env['BENCH_NGINX_VIEWERS'] ?? '250,1000';
  const steps = raw.split(',').map((s) => Number(s.trim()));
  if (steps.some((n) => !Number.isInteger(n) || n < 1 || n > 20_000)) throw new BenchError(`BENCH_NGINX_VIEWERS: expected numbers from 1 to 20000, got "${raw}"`);
  return steps;
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const missing = nginxMissing(false);
  if (missing) return { rows: [{ metric: 'nginx-cache', value: `not measured: ${missing}` }] };
  const steps = viewerSteps();
  const seconds = Number(process.env['BENCH_NGINX_SECONDS'] ?? 15);
  if (!Number.isInteger(seconds) || seconds < 2 || seconds > 300) throw new BenchError('BENCH_NGINX_SECONDS: expected 2 to 300');
  const measureMs = seconds * 1000;
  const totalMs = steps.reduce((sum, n) => sum + 2 * (rampMs(n) + WARMUP_MS + measureMs + TAIL_MS + 5000), 0) + 90_000;
  report(`origin    one OnAir node process, publish ${SOURCE.width}x${SOURCE.height} → 2 renditions, WebRTC off`);
  report(`nginx     ${nginxVersion()}, deploy/nginx/onair.conf, 1 worker`);
  report(`load      steps ${steps.join(', ')}, ${seconds} s window each, direct then through nginx; one machine for all (pessimistic)`);

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-nginx-cache-'));
  const nginxDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-nginx-cache-n-'));
  await chmod(nginxDir, 0o755);
  const node = forkBounded(NODE_PROCESS, cleanEnv({
    ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_DATA_DIR: dataDir, ONAIR_HWACCEL: 'none', ONAIR_LOG_LEVEL: 'error',
    ONAIR_WEBRTC_LAYERS: 'off',
    // Every viewer comes from 127.0.0.1 (nginx too): the per-address cap on parked requests at its maximum.
    ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: '100000', ONAIR_LLHLS_MAX_BLOCKING: '100000',
  }), totalMs + 60_000, signal);
  let publisher: BoundedChild | undefined;
  let nginx: RunningNginx | undefined;
  const figures: Step[] = [];
  try {
    const published = new Map<string, number>();
    const { httpUrl, rtmpUrl, adminToken } = await nodeReady(node, signal, (part) => {
      if (!part.mirrored) published.set(`${part.rendition}/${part.sequence}`, part.at);
    });
    const nodePid = node.child.pid!;
    const httpPort = Number(new URL(httpUrl).port);
    const stream = await createStream(httpUrl, adminToken, 'bench: nginx cache');
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec: Math.ceil(totalMs / 1000), output: `${rtmpUrl}/${stream.streamKey}` }), {
      timeoutMs: totalMs + 60_000, signal,
    });
    publisher.exited.catch(() => undefined);
    const renditions = await within('the stream to go live', liveRenditions(httpUrl, stream.id, signal), 45_000, signal);

    const nginxPort = await freePort();
    const conf = (await readFile(CONF, 'utf8'))
      .replace(/^(\s*)server 127\.0\.0\.1:8080;/m, `$1server 127.0.0.1:${httpPort};`)
      .replace(/^(\s*)listen 80;/m, `$1listen 127.0.0.1:${nginxPort} backlog=4096;`)
      .replace('/var/cache/nginx/onair', path.join(nginxDir, 'cache'));
    nginx = await startNginx({
      dir: nginxDir, main: 'worker_processes 1;\nworker_rlimit_nofile 65536;', http: conf, ports: [nginxPort], timeoutMs: totalMs + 60_000, signal,
    });
    await sleep(2000, signal);

    const originRequests = async (): Promise<number> => {
      const text = await (await fetch(`${httpUrl}/metrics`)).text();
      return text.split('\n').filter((l) => l.startsWith('onair_http_requests_total{'))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    };
    report('deliv = the viewer has the whole part − its publication on the origin, ms; CPU in core-s/s; req/s: what the viewers sent, what reached the origin');
    report(`${'viewers'.padStart(7)} ${'path'.padEnd(6)} ${'deliv p50'.padStart(9)} ${'p99'.padStart(7)} ${'errors'.padStart(6)} ${'viewer req/s'.padStart(12)} ${'origin req/s'.padStart(12)} ${'origin CPU'.padStart(10)} ${'nginx CPU'.padStart(9)}`);
    for (const viewers of steps) {
      for (const via of ['direct', 'nginx'] as const) {
        const playlists = renditions.map((r) => ({ rendition: r, path: `/live/${stream.id}/${r}/index.m3u8` }));
        const step = await measureStep(via, {
          mode: 'blocking', host: '127.0.0.1', port: via === 'direct' ? httpPort : nginxPort, playlists, viewers, rampMs: rampMs(viewers),
          warmupMs: WARMUP_MS, measureMs, tailMs: TAIL_MS, pollMs: 200, requestTimeoutMs: 10_000, stopOnError: false,
        }, { origin: () => processCpuSec(nodePid) ?? NaN, nginx: () => nginx!.cpuSec(), requests: originRequests }, published, signal);
        figures.push(step);
        report(`${String(viewers).padStart(7)} ${via.padEnd(6)} ${ms(step.delivery?.p50).padStart(9)} ${ms(step.delivery?.p99).padStart(7)} ${String(step.errors).padStart(6)} ` +
          `${String(Math.round(step.viewerRequestsPerSec)).padStart(12)} ${String(Math.round(step.originRequestsPerSec)).padStart(12)} ${fixed(step.originCpu, 2).padStart(10)} ${(via === 'nginx' ? fixed(step.nginxCpu, 2) : '-').padStart(9)}`);
      }
    }
  } finally {
    publisher?.kill();
    await nginx?.stop();
    node.stop();
    await node.exited;
    await Promise.all([dataDir, nginxDir].map((dir) => rm(dir, { recursive: true, force: true })));
  }
  return { rows: summaryRows(figures) };
}

const rampMs = (viewers: number): number => Math.min(5000, Math.max(1000, viewers * 4));
const ms = (value: number | undefined): string => (value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(1));

async function measureStep(via: Step['path'], options: LoadOptions, read: { origin: () => number; nginx: () => number; requests: () => Promise<number> },
  published: Map<string, number>, signal: AbortSignal): Promise<Step> {
  const { result, from, to } = await runViewerLoad(`${options.viewers} viewers ${via}`, options,
    () => ({ origin: read.origin(), nginx: read.nginx(), at: epochMs(), requests: read.requests() }), signal);
  if (!from || !to) throw new BenchError('the measurement window never opened');
  const windowSec = Math.max(0.001, (to.at - from.at) / 1000);
  const delivery: number[] = [];
  for (const [key, at] of published) {
    if (at < result.measureFrom || at > result.measureTo) continue;
    for (const receipt of result.receipts[key] ?? []) delivery.push(receipt - at);
  }
  return {
    path: via,
    viewers: options.viewers,
    delivery: summarize(delivery),
    errors: result.errors,
    originCpu: (to.origin - from.origin) / windowSec,
    nginxCpu: (to.nginx - from.nginx) / windowSec,
    originRequestsPerSec: ((await to.requests) - (await from.requests)) / windowSec,
    viewerRequestsPerSec: result.windowRequests / Math.max(0.001, (result.measureTo - result.measureFrom) / 1000),
  };
}

function summaryRows(figures: Step[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  for (const viewers of new Set(figures.map((f) => f.viewers))) {
    const direct = figures.find((f) => f.viewers === viewers && f.path === 'direct');
    const behind = figures.find((f) => f.viewers === viewers && f.path === 'nginx');
    if (!direct || !behind) continue;
    rows.push({ metric: `${viewers} viewers: origin CPU direct → behind nginx`, value: `${fixed(direct.originCpu, 2)} → ${fixed(behind.originCpu, 2)} core-s/s` });
    rows.push({ metric: `${viewers} viewers: origin req/s direct → behind nginx`, value: `${Math.round(direct.originRequestsPerSec)} → ${Math.round(behind.originRequestsPerSec)}` });
    rows.push({ metric: `${viewers} viewers: nginx CPU, viewers per nginx core`, value: `${fixed(behind.nginxCpu, 2)} core-s/s, ${Math.round(viewers / behind.nginxCpu)}` });
    rows.push({ metric: `${viewers} viewers: delivery p99 direct / nginx, errors`, value: `${ms(direct.delivery?.p99)} / ${ms(behind.delivery?.p99)} ms, ${direct.errors} / ${behind.errors}` });
  }
  return rows.length > 0 ? rows : [{ metric: 'nginx-cache', value: 'no step was measured' }];
}
