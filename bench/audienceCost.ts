import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { epochMs, sleep } from './support/clock.js';
import { createStream, nodeReady } from './support/nodeProcess.js';
import { liveRenditions } from './support/playlist.js';
import { cleanEnv, forkBounded, processCpuSec, spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { runViewerLoad } from './support/viewerRun.js';

/*
 * What counting the audience costs (issue #19): the same OnAir node process, the same publish and the same N LL-HLS
 * viewers, once with ONAIR_AUDIENCE=false (the baseline, measured first) and once with counting on, side by side.
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
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const viewers = envInteger('BENCH_AUDIENCE_VIEWERS', 1000, 10, 5000);
  const measureMs = envInteger('BENCH_AUDIENCE_SECONDS', 15, 5, 120) * 1000;
  report(`load      ${viewers} LL-HLS viewers (blocking reload + parts, each with its own X-Playback-Session-Id), ` +
    `${measureMs / 1000} s window; the same node process fresh for each side, counting off first`);
  const sides: Side[] = [];
  for (const counting of [false, true]) sides.push(await measureSide(counting, viewers, measureMs, signal));
  const [off, on] = sides as [Side, Side];
  const per1000 = (side: Side): number => (side.cpu * 1000) / viewers;
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(10) : c.padStart(14))).join('');
  report(row(['counting', 'CPU core-s/s', 'per 1,000', 'req/s', 'errors', 'counted']));
  for (const side of sides) {
    report(row([side.counting ? 'on' : 'off', fixed(side.cpu, 3), fixed(per1000(side), 3), String(Math.round(side.requestsPerSec)), String(side.errors),
      side.counting ? String(side.counted ?? 'n/a') : '–']));
  }
  const extra = per1000(on) - per1000(off);
  const perRequestUs = on.requestsPerSec > 0 ? ((on.cpu - off.cpu) / on.requestsPerSec) * 1e6 : NaN;
  report(`cost      counting adds ${fixed(extra, 3)} core-s/s per 1,000 viewers (${(on.cpu / off.cpu).toFixed(2)}x the node's CPU ` +
    `without it; ~${fixed(perRequestUs, 1)} µs per request)`);
  return {
    rows: [
      { metric: `node CPU per 1,000 LL-HLS viewers, counting off → on`, value: `${fixed(per1000(off), 3)} → ${fixed(per1000(on), 3)} core-s/s (${(on.cpu / off.cpu).toFixed(2)}x)` },
      { metric: `viewers counted (of ${viewers})`, value: String(on.counted ?? 'n/a'), goal: String(viewers), met: on.counted === viewers },
    ],
  };
}

async function measureSide(counting: boolean, viewers: number, measureMs: number, signal: AbortSignal): Promise<Side> {
  const rampMs = Math.min(5000, Math.max(1000, viewers * 4));
  const totalMs = 60_000 + rampMs + WARMUP_MS + measureMs + TAIL_MS;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-audience-'));
  const node = forkBounded(NODE_PROCESS, cleanEnv({
    ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_DATA_DIR: dataDir, ONAIR_HWACCEL: 'none', ONAIR_LOG_LEVEL: 'error',
    ONAIR_WEBRTC_LAYERS: 'off', ONAIR_AUDIENCE: String(counting),
    // Every viewer of the load generator comes from 127.0.0.1: no per-address cap on parked blocking requests.
    ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: '100000', ONAIR_LLHLS_MAX_BLOCKING: '1000000',
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
    let counted: number | undefined;
    const { result, from, to } = await runViewerLoad(`${viewers} viewers, counting ${counting ? 'on' : 'off'}`, {
      mode: 'blocking', host: '127.0.0.1', port: Number(new URL(httpUrl).port),
      playlists: renditions.map((r) => ({ rendition: r, path: `/live/${stream.id}/${r}/index.m3u8` })),
      viewers, rampMs, warmupMs: WARMUP_MS, measureMs, tailMs: TAIL_MS, pollMs: 200, requestTimeoutMs: 10_000, stopOnError: false, sessions: true,
    }, () => {
      // At the window's end: what the node counts (read asynchronously; the figure is kept when it answers).
      if (counting) {
        void fetch(`${httpUrl}/api/streams/${stream.id}`).then(async (r) => {
          counted = ((await r.json()) as { stats?: { audience?: { byProtocol: { llhls: number } } } }).stats?.audience?.byProtocol.llhls;
        }).catch(() => undefined);
      }
      return { cpu: processCpuSec(pid) ?? NaN, at: epochMs() };
    }, signal);
    if (!from || !to) throw new BenchError('the load generator did not report its window');
    await sleep(500, signal);
    const windowSec = Math.max(0.001, (to.at - from.at) / 1000);
    return { counting, cpu: (to.cpu - from.cpu) / windowSec, requestsPerSec: result.windowRequests / windowSec, errors: result.errors, counted };
  } finally {
    publisher?.kill();
    node.stop();
    await node.exited;
    await rm(dataDir, { recursive: true, force: true });
  }
}
