import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { createLogger } from '../lib/log.js';
import { Audience } from '../server/Audience.js';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { epochMs, sleep } from './support/clock.js';
import { createStream, nodeReady } from './support/nodeProcess.js';
import { liveRenditions } from './support/playlist.js';
import { cleanEnv, forkBounded, processCpuSec, spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { runViewerLoad } from './support/viewerRun.js';

/*
 * What counting the audience costs (issue #19): the same OnAir node process, the same publish and the same N LL-HLS
 * viewers, once with ONAIR_AUDIENCE=false (the baseline, measured first), once with counting on, and once more with
 * counting on and the N watch pages' quality reports (POST /api/qoe, one per page per 10 s: N/10 per second) posted
 * by the bench process, side by side.
 *
 * - Server: bench/support/onairNodeProcess.ts (server/main.ts), shipped defaults, WebRTC feed off, loopback; publish
 *   854x480 (two renditions). A fresh process and data dir per side.
 * - Viewers: bench/support/viewerLoad.ts in its own process, blocking reloads and parts as hls.js does, each with its
 *   own `X-Playback-Session-Id` (as players send it), so every viewer is a session to count.
 * - Cost: the node process's CPU (utime + stime) over the window, core-seconds per second, per 1,000 viewers; the
 *   counting side also reads `stats.audience` during the window: the count must be N (a cost figure for a count
 *   that is wrong would mean nothing). Redis is another process; its share (one script per stream per second per
 *   node) is not in the figure.
 */

const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_PROCESS = path.join(here, 'support', 'onairNodeProcess.js');
const SOURCE = { width: 854, height: 480, fps: 30 };
const WARMUP_MS = 3000;
const TAIL_MS = 1500;

export const benchmark: Benchmark = {
  name: 'audience-cost',
  title: 'what counting the audience costs: N LL-HLS viewers with session ids, counting off vs on (node CPU per 1,000 viewers)',
  run,
};

interface Side {
  counting: boolean;
  cpu: number;
  requestsPerSec: number;
  errors: number;
  counted: number | undefined;
  /** Counting sides: the node's CPU with the stream and no viewer, then with quality reports at `reportsPerSec`. */
  reports?: { idleCpu: number; cpu: number; perSec: number; errors: number };
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const viewers = envInteger('BENCH_AUDIENCE_VIEWERS', 1000, 10, 5000);
  const measureMs = envInteger('BENCH_AUDIENCE_SECONDS', 15, 5, 120) * 1000;
  const rounds = envInteger('BENCH_AUDIENCE_ROUNDS', 2, 1, 10);
  const reportsPerSec = envInteger('BENCH_AUDIENCE_REPORTS_PER_SEC', 1000, 10, 5000);
  report(`load      ${viewers} LL-HLS viewers (blocking reload + parts, each with its own X-Playback-Session-Id), ` +
    `${measureMs / 1000} s window; a fresh node process per side, off and on alternating, ${rounds} rounds`);
  report(`reports   in each counting process, after its viewers: 5 s with the stream and no viewer, then 5 s of quality ` +
    `reports at ${reportsPerSec}/s (10x what 1,000 watch pages send, so that their cost stands out of the noise)`);
  // The counting itself, in this process: what each media playlist request adds (1,000 sessions, known ones).
  const callNs = countingCallNs(viewers);
  report(`call      Audience.llhls() for ${viewers} known sessions: ${fixed(callNs, 0)} ns per playlist request (in-process, 3 × 10^6 calls, best)`);
  const sides: Side[] = [];
  for (let round = 0; round < rounds; round += 1) {
    for (const counting of [false, true]) sides.push(await measureSide(counting, counting ? reportsPerSec : 0, viewers, measureMs, signal));
  }
  const per1000 = (cpu: number): number => (cpu * 1000) / viewers;
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(10) : c.padStart(14))).join('');
  report(row(['counting', 'CPU core-s/s', 'per 1,000', 'req/s', 'errors', 'counted', 'report µs']));
  const reportUs = (side: Side): number => (side.reports ? ((side.reports.cpu - side.reports.idleCpu) / side.reports.perSec) * 1e6 : NaN);
  for (const side of sides) {
    report(row([side.counting ? 'on' : 'off', fixed(side.cpu, 3), fixed(per1000(side.cpu), 3), String(Math.round(side.requestsPerSec)),
      String(side.errors + (side.reports?.errors ?? 0)), side.counting ? String(side.counted ?? 'n/a') : '–', side.counting ? fixed(reportUs(side), 0) : '–']));
  }
  const mean = (values: number[]): number => values.reduce((a, b) => a + b, 0) / values.length;
  const off = mean(sides.filter((x) => !x.counting).map((x) => x.cpu));
  const on = mean(sides.filter((x) => x.counting).map((x) => x.cpu));
  const spread = Math.max(...sides.map((x) => x.cpu)) - Math.min(...sides.map((x) => x.cpu));
  const perReportUs = mean(sides.filter((x) => x.counting).map(reportUs));
  // 1,000 watch pages send 100 reports a second.
  const reportsPer1000 = (perReportUs / 1e6) * 100;
  report(`cost      counting: ${fixed(per1000(off), 3)} → ${fixed(per1000(on), 3)} core-s/s per 1,000 viewers (means; ` +
    `${(on / off).toFixed(2)}x; the spread between processes is ${fixed(spread, 3)} core-s/s)`);
  // Each viewer asks for a playlist, then for the part it announces: half the requests are playlist requests.
  const playlistsPerSec = mean(sides.filter((x) => x.counting).map((x) => x.requestsPerSec)) / 2;
  report(`cost      the counting call at the ${Math.round(playlistsPerSec)} playlist requests/s of ${viewers} viewers: ` +
    `${fixed((callNs / 1e9) * playlistsPerSec, 4)} core-s/s`);
  report(`cost      quality reports: ~${fixed(perReportUs, 0)} µs each, so ${fixed(reportsPer1000, 4)} core-s/s for the 100 reports/s of 1,000 viewers`);
  const counted = sides.filter((x) => x.counting).map((x) => x.counted);
  return {
    rows: [
      { metric: 'node CPU per 1,000 LL-HLS viewers, counting off → on', value: `${fixed(per1000(off), 3)} → ${fixed(per1000(on), 3)} core-s/s (${(on / off).toFixed(2)}x, spread ${fixed(spread, 3)})` },
      { metric: 'the counting call per playlist request (in-process)', value: `${fixed(callNs, 0)} ns` },
      { metric: 'quality reports of 1,000 viewers (100/s)', value: `${fixed(reportsPer1000, 4)} core-s/s (~${fixed(perReportUs, 0)} µs each)` },
      { metric: `viewers counted (of ${viewers})`, value: counted.join(', '), goal: String(viewers), met: counted.every((c) => c === viewers) },
    ],
  };
}

async function measureSide(counting: boolean, reportsPerSec: number, viewers: number, measureMs: number, signal: AbortSignal): Promise<Side> {
  const rampMs = Math.min(5000, Math.max(1000, viewers * 4));
  const totalMs = 75_000 + rampMs + WARMUP_MS + measureMs + TAIL_MS;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-audience-'));
  const node = forkBounded(NODE_PROCESS, cleanEnv({
    ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_DATA_DIR: dataDir, ONAIR_HWACCEL: 'none', ONAIR_LOG_LEVEL: 'error',
    ONAIR_WEBRTC_LAYERS: 'off', ONAIR_AUDIENCE: String(counting),
    // Every viewer and report comes from 127.0.0.1: no per-address caps.
    ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: '100000', ONAIR_LLHLS_MAX_BLOCKING: '1000000', ONAIR_RATE_QOE_PER_MIN: '0',
  }), totalMs + 30_000, signal);
  let publisher: BoundedChild | undefined;
  try {
    const { httpUrl, rtmpUrl, adminToken } = await nodeReady(node, signal);
    const stream = await createStream(httpUrl, adminToken, 'bench: audience cost');
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec: Math.ceil(totalMs / 1000), output: `${rtmpUrl}/${stream.streamKey}` }), {
      timeoutMs: totalMs + 30_000, signal,
    });
    publisher.exited.catch(() => undefined);
    const renditions = await within('the stream to go live', liveRenditions(httpUrl, stream.id, signal), 45_000, signal);
    await sleep(2000, signal);
    const pid = node.child.pid!;
    const cpuAt = (): { cpu: number; at: number } => ({ cpu: processCpuSec(pid) ?? NaN, at: epochMs() });
    const rate = (a: { cpu: number; at: number }, b: { cpu: number; at: number }): number => (b.cpu - a.cpu) / Math.max(0.001, (b.at - a.at) / 1000);
    let counted: number | undefined;
    const { result, from, to } = await runViewerLoad(`${viewers} viewers, counting ${counting ? 'on' : 'off'}`, {
      mode: 'blocking', host: '127.0.0.1', port: Number(new URL(httpUrl).port),
      playlists: renditions.map((r) => ({ rendition: r, path: `/live/${stream.id}/${r}/index.m3u8` })),
      viewers, rampMs, warmupMs: WARMUP_MS, measureMs, tailMs: TAIL_MS, pollMs: 200, requestTimeoutMs: 10_000, stopOnError: false, sessions: true,
    }, () => {
      // What the node counts, read at the window's edges (kept when it answers).
      if (counting) {
        void fetch(`${httpUrl}/api/streams/${stream.id}`).then(async (r) => {
          counted = ((await r.json()) as { stats?: { audience?: { byProtocol: { llhls: number } } } }).stats?.audience?.byProtocol.llhls;
        }).catch(() => undefined);
      }
      return cpuAt();
    }, signal);
    if (!from || !to) throw new BenchError('the load generator did not report its window');
    const side: Side = { counting, cpu: rate(from, to), requestsPerSec: result.windowRequests / Math.max(0.001, (to.at - from.at) / 1000), errors: result.errors, counted };
    if (reportsPerSec > 0) {
      // The viewers are gone: the stream alone, then the same with the reports (a typical one: 10 s played, no stall).
      await sleep(2000, signal);
      const idleFrom = cpuAt();
      await sleep(5000, signal);
      const idleTo = cpuAt();
      const body = JSON.stringify({ id: stream.id, protocol: 'llhls', playedMs: 10_000, latencyMs: 650 });
      let sent = 0;
      let errors = 0;
      const inFlight = new Set<Promise<void>>();
      const reportsFrom = cpuAt();
      const until = reportsFrom.at + 5000;
      while (epochMs() < until) {
        // Paced in 10 ms batches: reportsPerSec / 100 each.
        for (let i = 0; i < reportsPerSec / 100; i += 1) {
          sent += 1;
          const request: Promise<void> = fetch(`${httpUrl}/api/qoe`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
            .then(async (r) => { await r.body?.cancel(); if (r.status !== 204) errors += 1; }, () => { errors += 1; })
            .finally(() => inFlight.delete(request));
          inFlight.add(request);
        }
        await sleep(10, signal);
      }
      await Promise.all(inFlight);
      const reportsTo = cpuAt();
      side.reports = { idleCpu: rate(idleFrom, idleTo), cpu: rate(reportsFrom, reportsTo), perSec: sent / Math.max(0.001, (reportsTo.at - reportsFrom.at) / 1000), errors };
    }
    return side;
  } finally {
    publisher?.kill();
    node.stop();
    await node.exited;
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** ns per `Audience.llhls()` call for `sessions` known sessions (a client that never connects: the call touches no Redis). */
function countingCallNs(sessions: number): number {
  const redis = new Redis({ lazyConnect: true });
  try {
    const audience = new Audience({ redis, nodeId: 'bench', log: createLogger({ level: 'silent' }), webrtcViewers: () => 0, addViews: async () => {} });
    const headers = Array.from({ length: sessions }, (_, i) => ({ 'x-playback-session-id': `bench-viewer-${i}-${process.pid}`, 'user-agent': 'bench' }));
    let best = Infinity;
    for (let round = 0; round < 3; round += 1) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < 1_000_000; i += 1) audience.llhls('benchstream1', headers[i % sessions]!, '127.0.0.1');
      best = Math.min(best, Number(process.hrtime.bigint() - start) / 1_000_000);
    }
    return best;
  } finally {
    redis.disconnect();
  }
}
