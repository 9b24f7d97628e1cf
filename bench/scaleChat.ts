import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedRedis, type EmbeddedRedis } from '../server/redis.js';
import { startPostgres, type TestPostgres } from '../test/support/postgres.js';
import { BenchError, envSteps, type BenchContext, type Benchmark, type BenchResult, type SummaryRow } from './support/benchmark.js';
import { sleep } from './support/clock.js';
import { connectAll, fanout, SENDERS, startOnAir, type FanoutFigures, type Target } from './support/chatLoad.js';
import { msText } from './support/stats.js';

/*
 * Scale-out (issue #17): the same chat fan-out spread over two OnAir processes that share one redis-server (the
 * Socket.IO Redis adapter carries each comment to the other process) and one PostgreSQL, vs one process with the
 * same Redis and PostgreSQL. Clients (bench/support/chatLoad.ts, in this process) alternate between the two; the
 * senders too, so half the comments cross Redis. Each client times every comment: p99 from send to receipt.
 *
 * Steps: BENCH_SCALE_CHAT_CLIENTS (default `500,1000,2000`) at BENCH_SCALE_CHAT_RATE comments/s (default 100), for
 * BENCH_SCALE_CHAT_SECONDS each (default 5); one process first, then two, at each N; a layout's steps stop after the
 * first where a comment missed a client. CPU: the sum of the server processes' utime+stime over the window.
 * Goal: twice the clients at the same p99 (the largest N with p99 ≤ 100 ms and every comment delivered).
 */

const P99_MS = 100;

export const benchmark: Benchmark = {
  name: 'scale-chat',
  title: 'chat fan-out over two OnAir processes sharing Redis vs one (#17): clients kept up with at p99 ≤ 100 ms',
  run,
};

function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new BenchError(`${name}: expected ${min} to ${max}, got "${raw}"`);
  return value;
}

const keptUp = (f: FanoutFigures): boolean => f.deliveries >= f.expected && f.p99 !== undefined && f.p99 <= P99_MS;

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const steps = envSteps('BENCH_SCALE_CHAT_CLIENTS', [500, 1000, 2000], 9000);
  const rate = envInt('BENCH_SCALE_CHAT_RATE', 100, 1, 2000);
  const seconds = envInt('BENCH_SCALE_CHAT_SECONDS', 5, 1, 120);
  report(`servers   OnAir processes (dist/server/main.js) on one redis-server and one PostgreSQL: 1 process, then 2 (Socket.IO Redis adapter); ` +
    'chat limits check but never refuse');
  report(`load      N clients in this process (raw Socket.IO over ws), alternating between the processes, N in ${steps.join(', ')}; ` +
    `${rate} comments/s from ${SENDERS} of them, ${seconds} s; every client times every comment`);
  report(`machine   ${os.availableParallelism()} cores shared by the servers, Redis and this load generator (which reads every delivery): pessimistic`);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-scale-chat-'));
  let redis: EmbeddedRedis | undefined;
  let postgres: TestPostgres | undefined;
  const results = new Map<number, Map<number, FanoutFigures>>([[1, new Map()], [2, new Map()]]);
  const started: Target[] = [];
  try {
    redis = await startEmbeddedRedis({ dataDir: dir });
    postgres = await startPostgres();
    const shared = { ONAIR_REDIS_URL: redis.url, ONAIR_DATABASE_URL: postgres.url, ONAIR_VOD_CONCURRENCY: '0' };
    const a = await startOnAir(signal, shared, 'process A');
    started.push(a);
    const b = await startOnAir(signal, shared, 'process B');
    started.push(b);
    const layouts: [number, Target][] = [
      [1, a],
      [2, { ...a, label: 'A + B', origins: [a.origin, b.origin], pids: [a.pid, b.pid] }],
    ];
    const done = new Set<number>();
    for (const n of steps) {
      for (const [processes, target] of layouts) {
        if (done.has(processes)) continue;
        const clients = await connectAll(target, n, a.streamId, signal);
        let figures: FanoutFigures;
        try {
          figures = await fanout(target, clients, rate, seconds, signal);
        } finally {
          for (const client of clients) client.close();
        }
        results.get(processes)!.set(n, figures);
        report(`${processes} process${processes > 1 ? 'es' : '  '} N=${String(n).padEnd(5)} p50 ${msText(figures.p50)}, p99 ${msText(figures.p99)}, ` +
          `max ${msText(figures.max)}; ${figures.deliveries}/${figures.expected} delivered; server CPU ${figures.serverCpu.toFixed(2)} cores; ` +
          `generator loop p99 ${figures.loopP99Ms.toFixed(1)} ms; load ${os.loadavg()[0]!.toFixed(1)}${figures.refused > 0 ? `; ${figures.refused} refused` : ''}`);
        if (figures.deliveries < figures.expected) done.add(processes);
        await sleep(500, signal);
      }
    }
  } finally {
    for (const target of started.reverse()) await target.stop().catch(() => undefined);
    await redis?.stop();
    await postgres?.stop();
    await rm(dir, { recursive: true, force: true });
  }
  return { rows: summaryRows(results) };
}

export function summaryRows(results: Map<number, Map<number, FanoutFigures>>): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const one = results.get(1)!;
  const two = results.get(2)!;
  for (const n of new Set([...one.keys(), ...two.keys()])) {
    const text = (f: FanoutFigures | undefined): string => (f ? `${msText(f.p99)}${f.deliveries < f.expected ? ' (lost)' : ''}, ${f.serverCpu.toFixed(2)} cores` : 'not run');
    rows.push({ metric: `${n} clients: p99, server CPU, 1 process / 2`, value: `${text(one.get(n))} / ${text(two.get(n))}` });
  }
  const capacity = (r: Map<number, FanoutFigures>): number => Math.max(0, ...[...r].filter(([, f]) => keptUp(f)).map(([n]) => n));
  const c1 = capacity(one);
  const c2 = capacity(two);
  const tried = Math.max(0, ...two.keys());
  rows.push({
    metric: `clients kept up with (p99 ≤ ${P99_MS} ms, all delivered), 2 processes / 1`,
    value: `${c2} / ${c1}${c2 === tried && tried > 0 ? ' (2 processes kept up at the largest N tried)' : ''}`,
    goal: '≥ 2×',
    ...(c1 > 0 ? { met: c2 >= 2 * c1 } : {}),
  });
  return rows;
}
