import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedRedis, type EmbeddedRedis } from '../server/redis.js';
import { startPostgres, type TestPostgres } from '../test/support/postgres.js';
import { BenchError, envInteger, envSteps, fixed, type BenchContext, type Benchmark, type BenchResult, type SummaryRow } from './support/benchmark.js';
import { sleep } from './support/clock.js';
import { createStream, nodeReady } from './support/nodeProcess.js';
import { liveRenditions } from './support/playlist.js';
import { descendantProcesses } from './support/procfs.js';
import { cleanEnv, forkBounded, processCpuSec, spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { percentile } from './support/stats.js';
import { WhepGenerator } from './support/whepGenerator.js';

/*
 * Scale-out (issue #17): N WHEP viewers on the origin directly vs on an edge (ONAIR_ROLE=edge) that receives the
 * stream once from the origin over a PipeTransport, side by side at each N.
 *
 * - Nodes: an origin and an edge, each an OnAir node in a process of its own (bench/support/onairNodeProcess.ts),
 *   sharing one redis-server and one PostgreSQL; one viewer mediasoup worker each, WebRTC layers 240,144 (simulcast),
 *   HLS ladder 240, the shared ONAIR_CLUSTER_SECRET; loopback. A 640x360 publish (-re) to the origin.
 * - Viewers: werift WHEP clients (bench/support/whepLoad.ts, audio + video, transport-wide-cc) in a process of their
 *   own, 4 connecting at once. Setup = POST of the offer → the viewer's first video packet.
 * - CPU: over a window after the viewers settled, utime+stime of each node process and of its mediasoup workers (its
 *   ffmpeg excluded: the ladder costs the same whoever watches) from /proc, in % of one core. Baseline in the same
 *   run: the same processes with no viewer.
 * - Steps: BENCH_SCALE_WHEP_VIEWERS (default `10,30`), BENCH_SCALE_WHEP_SECONDS window (default 5).
 */

const SOURCE = { width: 640, height: 360, fps: 30 };
const CONCURRENCY = 4;
const SETTLE_MS = 3000;
const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_PROCESS = path.join(here, 'support', 'onairNodeProcess.js');

export const benchmark: Benchmark = {
  name: 'scale-whep',
  title: 'N WHEP viewers on the origin directly vs on an edge fed over a PipeTransport (#17): setup time, CPU of origin and edge',
  run,
};

interface WhepStep {
  via: 'baseline' | 'origin' | 'edge';
  viewers: number;
  setupP50: number;
  setupP99: number;
  failed: number;
  /** % of one core: node process + its mediasoup workers. */
  origin: number;
  edge: number;
  generator: number;
  loadavg: number;
}

/** utime+stime of a node process and its mediasoup workers (not its ffmpeg), s. */
function nodeCpuSec(pid: number): number {
  const workers = descendantProcesses(pid).filter((p) => p.comm.startsWith('mediasoup-work')).map((p) => p.pid);
  return [pid, ...workers].reduce((sum, p) => sum + (processCpuSec(p) ?? 0), 0);
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const steps = envSteps('BENCH_SCALE_WHEP_VIEWERS', [10, 30], 500);
  const windowMs = envInteger('BENCH_SCALE_WHEP_SECONDS', 5, 2, 300) * 1000;
  const totalMs = steps.reduce((sum, n) => sum + 2 * (n * 2000 + SETTLE_MS + windowMs + 30_000), 0) + 180_000;
  report(`nodes     one origin and one edge (ONAIR_ROLE=edge), each an OnAir process with 1 viewer mediasoup worker; one redis-server, ` +
    `one PostgreSQL; publish ${SOURCE.width}x${SOURCE.height} ${SOURCE.fps} fps -re → WebRTC 240,144 simulcast`);
  report(`load      werift WHEP viewers in a separate process, ${CONCURRENCY} connecting at once, steps ${steps.join(', ')} ` +
    `(BENCH_SCALE_WHEP_VIEWERS), directly on the origin then on the edge; ${SETTLE_MS / 1000} s settle, ${windowMs / 1000} s CPU window`);
  report('CPU       % of one core: the node process + its mediasoup workers (its ffmpeg excluded); baseline: no viewer');

  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-scale-whep-'));
  let redis: EmbeddedRedis | undefined;
  let postgres: TestPostgres | undefined;
  let origin: ReturnType<typeof forkBounded> | undefined;
  let edge: ReturnType<typeof forkBounded> | undefined;
  let publisher: BoundedChild | undefined;
  const figures: WhepStep[] = [];
  try {
    redis = await within('redis-server to start', startEmbeddedRedis({ dataDir: dir }), 20_000, signal);
    postgres = await within('PostgreSQL to start', startPostgres(), 60_000, signal);
    const shared = {
      ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_WEBRTC_PORT: '0', ONAIR_HWACCEL: 'none', ONAIR_LOG_LEVEL: 'error',
      ONAIR_REDIS_URL: redis.url, ONAIR_DATABASE_URL: postgres.url, ONAIR_VOD_CONCURRENCY: '0', ONAIR_X264_PRESET: 'ultrafast',
      ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '240,144', ONAIR_WEBRTC_WORKERS: '1',
      ONAIR_CLUSTER_SECRET: `bench-${process.pid}-${Date.now()}-cluster-secret-0123456789`,
      // Every viewer comes from loopback: no per-address cap or rate limit on WHEP for a load test.
      ONAIR_WHEP_MAX_SESSIONS_PER_ADDRESS: '1000000', ONAIR_WHEP_MAX_SESSIONS_PER_WORKER: '1000000', ONAIR_RATE_WHEP_PER_MIN: '0',
    };
    origin = forkBounded(NODE_PROCESS, cleanEnv({ ...shared, ONAIR_ROLE: 'origin', ONAIR_DATA_DIR: path.join(dir, 'origin') }), totalMs, signal);
    const ready = await nodeReady(origin, signal);
    edge = forkBounded(NODE_PROCESS, cleanEnv({ ...shared, ONAIR_ROLE: 'edge', ONAIR_DATA_DIR: path.join(dir, 'edge') }), totalMs, signal);
    const edgeReady = await nodeReady(edge, signal);
    const stream = await createStream(ready.httpUrl, ready.adminToken, 'bench: WHEP through an edge');
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec: Math.ceil(totalMs / 1000), output: `${ready.rtmpUrl}/${stream.streamKey}` }), {
      timeoutMs: totalMs, signal,
    });
    publisher.exited.catch(() => undefined);
    await within('the stream to go live', liveRenditions(ready.httpUrl, stream.id, signal), 45_000, signal);
    const urls = { origin: `${ready.httpUrl}/live/${stream.id}/whep`, edge: `${edgeReady.httpUrl}/live/${stream.id}/whep` };
    const pids = { origin: origin.child.pid!, edge: edge.child.pid! };

    const measure = async (via: WhepStep['via'], viewers: number): Promise<WhepStep> => {
      const generator = new WhepGenerator(signal);
      try {
        let setupMs: number[] = [];
        let failed = 0;
        if (viewers > 0) {
          const url = via === 'edge' ? urls.edge : urls.origin;
          const added = await generator.ask({ type: 'add', url, count: viewers, concurrency: CONCURRENCY, timeoutMs: 20_000 }, 'added',
            Math.ceil(viewers / CONCURRENCY) * 45_000 + 30_000, signal);
          setupMs = added.setupMs;
          failed = added.failed;
          for (const error of added.errors.slice(0, 2)) report(`error     ${via} at ${viewers}: ${error}`);
        }
        await sleep(SETTLE_MS, signal);
        const from = { origin: nodeCpuSec(pids.origin), edge: nodeCpuSec(pids.edge), generator: processCpuSec(generator.pid) ?? 0, at: Date.now() };
        await sleep(windowMs, signal);
        const sec = (Date.now() - from.at) / 1000;
        const pct = (now: number, then: number): number => (100 * (now - then)) / sec;
        setupMs.sort((a, b) => a - b);
        return {
          via, viewers, failed,
          setupP50: setupMs.length ? percentile(setupMs, 50) : NaN,
          setupP99: setupMs.length ? percentile(setupMs, 99) : NaN,
          origin: pct(nodeCpuSec(pids.origin), from.origin),
          edge: pct(nodeCpuSec(pids.edge), from.edge),
          generator: pct(processCpuSec(generator.pid) ?? 0, from.generator),
          loadavg: os.loadavg()[0]!,
        };
      } finally {
        await generator.close().catch(() => undefined);
        // Let the node drop the sessions (and the edge its pipe, once idle) before the next step.
        await sleep(1000, signal);
      }
    };

    report(`${'viewers'.padStart(7)} ${'via'.padEnd(8)} ${'setup p50'.padStart(9)} ${'p99'.padStart(7)} ${'failed'.padStart(6)} ${'origin CPU'.padStart(10)} ${'edge CPU'.padStart(8)} ${'gen CPU'.padStart(7)} ${'load1'.padStart(5)}`);
    const line = (f: WhepStep): string => `${String(f.viewers).padStart(7)} ${f.via.padEnd(8)} ${fixed(f.setupP50, 0).padStart(9)} ${fixed(f.setupP99, 0).padStart(7)} ` +
      `${String(f.failed).padStart(6)} ${`${fixed(f.origin, 1)}%`.padStart(10)} ${`${fixed(f.edge, 1)}%`.padStart(8)} ${`${fixed(f.generator, 0)}%`.padStart(7)} ${fixed(f.loadavg, 1).padStart(5)}`;
    const baseline = await measure('baseline', 0);
    figures.push(baseline);
    report(line(baseline));
    for (const viewers of steps) {
      for (const via of ['origin', 'edge'] as const) {
        const figure = await measure(via, viewers);
        figures.push(figure);
        report(line(figure));
      }
    }
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
  return { rows: summaryRows(figures) };
}

function summaryRows(figures: WhepStep[]): SummaryRow[] {
  const base = figures.find((f) => f.via === 'baseline');
  if (!base) return [{ metric: 'scale-whep', value: 'no step was measured' }];
  const rows: SummaryRow[] = [{ metric: 'no viewer: origin / edge CPU', value: `${fixed(base.origin, 1)} % / ${fixed(base.edge, 1)} % of a core` }];
  for (const viewers of new Set(figures.filter((f) => f.viewers > 0).map((f) => f.viewers))) {
    const direct = figures.find((f) => f.viewers === viewers && f.via === 'origin');
    const edge = figures.find((f) => f.viewers === viewers && f.via === 'edge');
    if (!direct || !edge) continue;
    rows.push({ metric: `${viewers}: setup p50/p99 direct | via edge`, value: `${fixed(direct.setupP50, 0)}/${fixed(direct.setupP99, 0)} | ${fixed(edge.setupP50, 0)}/${fixed(edge.setupP99, 0)} ms` });
    rows.push({ metric: `${viewers}: origin CPU direct | via edge (edge CPU)`, value: `${fixed(direct.origin, 1)} % | ${fixed(edge.origin, 1)} % (${fixed(edge.edge, 1)} %)` });
    if (direct.failed + edge.failed > 0) rows.push({ metric: `${viewers}: failed direct | via edge`, value: `${direct.failed} | ${edge.failed}` });
  }
  const edges = figures.filter((f) => f.via === 'edge');
  if (edges.length > 0) {
    const first = edges[0]!;
    const last = edges[edges.length - 1]!;
    // Flat: the origin's CPU at the most edge viewers within 10 % (or 1 point of a core) of that at the fewest.
    const flat = last.origin <= Math.max(first.origin * 1.1, first.origin + 1);
    rows.push({
      metric: `origin CPU with ${first.viewers} → ${last.viewers} viewers on the edge`,
      value: `${fixed(first.origin, 1)} % → ${fixed(last.origin, 1)} % (no viewer: ${fixed(base.origin, 1)} %)`,
      goal: 'flat',
      met: flat,
    });
  }
  return rows;
}
