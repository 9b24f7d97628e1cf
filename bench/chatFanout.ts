import { fork } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:http';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Server } from 'socket.io';
import { BenchError, envInteger, type BenchContext, type Benchmark, type BenchResult, type SummaryRow } from './support/benchmark.js';
import { sleep } from './support/clock.js';
import { connectAll, fanout, SENDERS, WARMUP_MS, startOnAir, stopChild, type FanoutFigures, type RawChatClient, type Target } from './support/chatLoad.js';
import { processCpuSec } from './support/process.js';
import { msText, ratioText } from './support/stats.js';

/*
 * Chat fan-out: N chat clients held by this one process on one stream's room, a steady rate of comments, and the
 * time from sending a comment to each client receiving it (the p99 over every delivery).
 *
 * - OnAir: `node dist/server/main.js` in a child process, as shipped (embedded Redis with the sharded Socket.IO adapter,
 *   SQLite, every comment validated, rate-checked — limits raised so that they check but never refuse — stored with
 *   its event and broadcast through the adapter); loopback; WebRTC off.
 * - Baseline, measured in the same run with the same clients: a bare Socket.IO server (same version, in-memory
 *   adapter) in a child process that joins the room and broadcasts each comment as it comes — no validation, no rate
 *   limits, no storage, no Redis.
 * - Clients (bench/support/chatLoad.ts): a minimal Socket.IO v5 / Engine.IO v4 client over `ws` (what socket.io-client puts on the wire, without its
 *   per-message overhead, so that the load generator is not the bottleneck); senders are the first few clients, round
 *   robin; every client counts and times every comment. Both servers and this process share the machine's cores.
 * - Reaction storm: M clients of one room react at a steady total rate. OnAir sends each client one coalesced update per
 *   window (250 ms); the baseline relays each reaction to the room as it comes — what a chat without coalescing does.
 *   Reported: messages per client per second, the server's CPU, and whether every client's totals are exact.
 *
 * Steps of N up to BENCH_CHAT_CLIENTS (5000, the issue's goal); a server's steps stop after the first it could not keep
 * up with (a comment missed a client within 2 s, or p99 over 100 ms).
 *
 * Knobs: BENCH_CHAT_CLIENTS (5000), BENCH_CHAT_RATE comments/s (100), BENCH_CHAT_SECONDS per step (5),
 * BENCH_CHAT_STORM_CLIENTS (200), BENCH_CHAT_STORM_RATE reactions/s (1000), BENCH_CHAT_STORM_SECONDS (5).
 */

const GOAL = { clients: 5000, rate: 100, p99Ms: 100 };
const STEPS = [250, 500, 1000, 2000, 5000];
const BASELINE_ENV = 'ONAIR_BENCH_CHAT_BASELINE';

const SELF = fileURLToPath(import.meta.url);

export const benchmark: Benchmark = {
  name: 'chat-fanout',
  title: 'N chat clients in one process: p99 comment fan-out at a steady rate, OnAir vs a bare Socket.IO server; reaction storm',
  run,
};

interface StormFigures {
  reactions: number;
  messagesPerClientSec: number;
  exact: boolean;
  serverCpu: number;
}

/** Every client reacts in turn at `rate` reactions/s in total; each counts what it is told. */
async function storm(target: Target, clients: RawChatClient[], rate: number, seconds: number, signal: AbortSignal): Promise<StormFigures> {
  const tallies = clients.map(() => ({ messages: 0, total: 0 }));
  clients.forEach((client, i) => {
    client.onReactions = (text) => {
      const tally = tallies[i]!;
      tally.messages++;
      try {
        const update = JSON.parse(text) as { counts: Record<string, number> };
        for (const n of Object.values(update.counts)) tally.total += n;
      } catch { /* counted as a message all the same */ }
    };
  });
  const emojis = ['❤️', '👏', '😂', '🔥'];
  const start = performance.now();
  const end = start + seconds * 1000;
  const cpuStart = processCpuSec(target.pid) ?? 0;
  let sent = 0;
  while (performance.now() < end) {
    if (signal.aborted) throw new BenchError('aborted');
    const due = Math.floor(((performance.now() - start) / 1000) * rate);
    while (sent < due) {
      clients[sent % clients.length]!.emit('reaction', { emoji: emojis[sent % emojis.length] });
      sent++;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const cpuEnd = processCpuSec(target.pid) ?? cpuStart;
  const wallSec = (performance.now() - start) / 1000;
  // Let the last windows arrive.
  const deadline = performance.now() + 5000;
  while (performance.now() < deadline && !tallies.every((t) => t.total >= sent)) await sleep(50, signal);
  const messages = tallies.reduce((sum, t) => sum + t.messages, 0);
  return {
    reactions: sent,
    messagesPerClientSec: messages / clients.length / seconds,
    exact: tallies.every((t) => t.total === sent),
    serverCpu: (cpuEnd - cpuStart) / wallSec,
  };
}


async function startBaseline(signal: AbortSignal): Promise<Target> {
  const child = fork(SELF, [], { env: { ...process.env, [BASELINE_ENV]: '1' }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  const onAbort = (): void => void stopChild(child);
  signal.addEventListener('abort', onAbort, { once: true });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchError('the baseline server did not start within 20 s')), 20_000);
    child.once('message', (message: { port: number }) => {
      clearTimeout(timer);
      resolve(message.port);
    });
    child.once('exit', (code) => reject(new BenchError(`the baseline server exited (${code})`)));
  });
  return {
    label: 'baseline', origin: `ws://127.0.0.1:${port}`, streamId: 'benchstream0', pid: child.pid!,
    newRoom: async () => 'benchstorm00',
    stop: async () => {
      signal.removeEventListener('abort', onAbort);
      await stopChild(child);
    },
  };
}

/** The baseline server (in its own process): join a room, broadcast each comment and reaction as it comes. */
async function serveBaseline(): Promise<void> {
  const http = createServer();
  const io = new Server(http, { serveClient: false });
  let id = 0;
  io.of('/chat').on('connection', (socket) => {
    let room: string | undefined;
    let name = '';
    socket.on('join', (payload: { streamId: string; name: string }, ack?: (r: unknown) => void) => {
      room = `s:${payload.streamId}`;
      name = payload.name;
      void socket.join(room);
      ack?.({ ok: true });
    });
    socket.on('comment', (payload: { text: string }, ack?: (r: unknown) => void) => {
      if (!room) return;
      const at = Date.now();
      const commentId = String(++id);
      io.of('/chat').to(room).emit('comment', { id: commentId, name, text: payload.text, at });
      ack?.({ ok: true, id: commentId, at });
    });
    socket.on('reaction', (payload: { emoji: string }) => {
      if (room) io.of('/chat').to(room).emit('reactions', { counts: { [payload.emoji]: 1 }, windowMs: 0 });
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  process.send!({ port: (http.address() as AddressInfo).port });
  process.once('SIGTERM', () => {
    void io.close();
    process.exit(0);
  });
}

/** Every comment reached every client (within the tail), and in time. */
const keptUp = (f: FanoutFigures): boolean => f.deliveries >= f.expected && f.p99 !== undefined && f.p99 <= GOAL.p99Ms;

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const maxClients = envInteger('BENCH_CHAT_CLIENTS', GOAL.clients, 2, 9000);
  const rate = envInteger('BENCH_CHAT_RATE', GOAL.rate, 1, 2000);
  const seconds = envInteger('BENCH_CHAT_SECONDS', 5, 1, 120);
  const stormClients = envInteger('BENCH_CHAT_STORM_CLIENTS', 200, 1, 5000);
  const stormRate = envInteger('BENCH_CHAT_STORM_RATE', 1000, 1, 20_000);
  const stormSeconds = envInteger('BENCH_CHAT_STORM_SECONDS', 5, 1, 60);
  const steps = [...STEPS.filter((n) => n < maxClients), maxClients];
  report(`load      N clients in this process (raw Socket.IO v5 over ws), N in ${steps.join(', ')}; ${rate} comments/s from ` +
    `${SENDERS} of them for ${seconds} s after ${WARMUP_MS / 1000} s warm-up; every client times every comment; a server's ` +
    `steps stop after the first where a comment missed a client or p99 passed ${GOAL.p99Ms} ms`);
  report('server    OnAir as shipped (embedded Redis, sharded adapter, SQLite, validation, limits that never refuse), ' +
    `vs a bare Socket.IO server broadcasting the same comments; both single Node processes on this machine's ${os.availableParallelism()} cores, ` +
    'shared with the load generator');
  report(`storm     ${stormClients} clients, ${stormRate} reactions/s for ${stormSeconds} s: OnAir coalesces, the baseline relays each`);

  const results: Record<'OnAir' | 'baseline', { steps: Map<number, FanoutFigures>; storm?: StormFigures }> = {
    OnAir: { steps: new Map() },
    baseline: { steps: new Map() },
  };
  for (const start of [startOnAir, startBaseline]) {
    const target = await start(signal);
    const mine = results[target.label as 'OnAir' | 'baseline'];
    try {
      for (const n of steps) {
        const connected = await connectAll(target, n, target.streamId, signal);
        let fan: FanoutFigures;
        try {
          fan = await fanout(target, connected, rate, seconds, signal);
        } finally {
          for (const client of connected) client.close();
        }
        mine.steps.set(n, fan);
        report(`${target.label.padEnd(8)}  N=${String(n).padEnd(5)} p50 ${msText(fan.p50)}, p99 ${msText(fan.p99)}, max ${msText(fan.max)}; ` +
          `${fan.deliveries}/${fan.expected} delivered; server CPU ${fan.serverCpu.toFixed(2)} cores; load-generator loop p99 ` +
          `${fan.loopP99Ms.toFixed(1)} ms${fan.refused > 0 ? `; ${fan.refused} refused` : ''}`);
        if (!keptUp(fan)) break;
        // Let the closed connections go before the next step.
        await sleep(500, signal);
      }
      const connected = await connectAll(target, stormClients, await target.newRoom(), signal);
      try {
        mine.storm = await storm(target, connected, stormRate, stormSeconds, signal);
      } finally {
        for (const client of connected) client.close();
      }
      report(`${target.label.padEnd(8)}  storm: ${mine.storm.messagesPerClientSec.toFixed(1)} messages per client per s, totals ` +
        `${mine.storm.exact ? 'exact' : 'NOT exact'}, server CPU ${mine.storm.serverCpu.toFixed(2)} cores`);
    } finally {
      await target.stop();
    }
  }

  const onair = results.OnAir;
  const base = results.baseline;
  const capacity = (r: typeof onair): number => Math.max(0, ...[...r.steps].filter(([, f]) => keptUp(f)).map(([n]) => n));
  const rows: SummaryRow[] = [];
  for (const n of steps) {
    const o = onair.steps.get(n);
    const b = base.steps.get(n);
    if (!o && !b) continue;
    const text = (f: FanoutFigures | undefined): string => (f ? `${msText(f.p99)}${f.deliveries < f.expected ? ' (lost)' : ''}` : 'not run');
    rows.push({ metric: `p99 fan-out, ${n} clients @ ${rate}/s`, value: `${text(o)} vs bare ${text(b)}` });
  }
  if (maxClients >= GOAL.clients && rate >= GOAL.rate) {
    const atGoal = onair.steps.get(maxClients);
    rows.push({
      metric: `OnAir at ${maxClients} clients, ${rate}/s`,
      value: atGoal ? `p99 ${msText(atGoal.p99)}, ${((100 * atGoal.deliveries) / atGoal.expected).toFixed(1)} % delivered` : `not reached (kept up to ${capacity(onair)})`,
      goal: `p99 ≤ ${GOAL.p99Ms} ms, all delivered`,
      met: atGoal !== undefined && keptUp(atGoal),
    });
  }
  rows.push({ metric: `clients kept up with @ ${rate}/s`, value: `${capacity(onair)} vs bare ${capacity(base)} (${ratioText(capacity(onair), capacity(base))})` });
  if (onair.storm && base.storm) {
    rows.push({
      metric: `storm msgs/client/s @ ${stormRate}/s`,
      value: `${onair.storm.messagesPerClientSec.toFixed(1)} vs ${base.storm.messagesPerClientSec.toFixed(1)} relayed`,
      goal: '≤ 5, exact totals',
      met: onair.storm.messagesPerClientSec <= 5 && onair.storm.exact,
    });
    rows.push({ metric: 'server CPU, storm', value: `${onair.storm.serverCpu.toFixed(2)} vs ${base.storm.serverCpu.toFixed(2)} cores (${ratioText(onair.storm.serverCpu, base.storm.serverCpu)})` });
  }
  return { rows };
}

if (process.env[BASELINE_ENV] === '1' && process.send) void serveBaseline();
