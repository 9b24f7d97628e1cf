import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Server } from 'socket.io';
import WebSocket from 'ws';
import { BenchError, envInteger, type BenchContext, type Benchmark, type BenchResult, type SummaryRow } from './support/benchmark.js';
import { sleep } from './support/clock.js';
import { cleanEnv, processCpuSec } from './support/process.js';
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
 * - Clients: a minimal Socket.IO v5 / Engine.IO v4 client over `ws` (what socket.io-client puts on the wire, without its
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
const SENDERS = 10;
const CONNECT_BATCH = 100;
const WARMUP_MS = 1000;
const TAIL_MS = 2000;
const BASELINE_ENV = 'ONAIR_BENCH_CHAT_BASELINE';

const here = path.dirname(fileURLToPath(import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const MAIN_JS = path.resolve(here, '..', 'server', 'main.js');

export const benchmark: Benchmark = {
  name: 'chat-fanout',
  title: 'N chat clients in one process: p99 comment fan-out at a steady rate, OnAir vs a bare Socket.IO server; reaction storm',
  run,
};

/** A latency histogram at 0.1 ms resolution up to 10 s (beyond: the last bucket). */
class Histogram {
  readonly #buckets = new Uint32Array(100_001);
  count = 0;

  add(ms: number): void {
    this.#buckets[Math.min(this.#buckets.length - 1, Math.max(0, Math.round(ms * 10)))]!++;
    this.count++;
  }

  percentile(p: number): number | undefined {
    if (this.count === 0) return undefined;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.#buckets.length; i++) {
      seen += this.#buckets[i]!;
      if (seen >= rank) return i / 10;
    }
    return undefined;
  }
}

interface Target {
  label: 'OnAir' | 'baseline';
  /** `ws://host:port`. */
  origin: string;
  streamId: string;
  pid: number;
  /** Another room (a stream) for the storm. */
  newRoom(): Promise<string>;
  stop(): Promise<void>;
}

const COMMENT_PREFIX = '42/chat,["comment",';
const REACTIONS_PREFIX = '42/chat,["reactions",';
const SEQ_RE = /"text":"#(\d+)#/;

/** A minimal Socket.IO client on `/chat`: connects, joins, answers pings, hands events to `onEvent`. */
class RawChatClient {
  readonly #ws: WebSocket;
  #acks = new Map<number, (payload: unknown) => void>();
  #nextAck = 1;
  onComment: (seq: number) => void = () => {};
  onReactions: (text: string) => void = () => {};
  readonly opened: Promise<void>;
  closed = false;

  constructor(origin: string) {
    this.#ws = new WebSocket(`${origin}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false });
    this.opened = new Promise((resolve, reject) => {
      this.#ws.once('error', reject);
      this.#ws.on('close', () => {
        this.closed = true;
        reject(new BenchError('a chat client was closed before it connected'));
      });
      this.#ws.on('message', (data: WebSocket.RawData) => {
        const text = data.toString();
        if (text.startsWith(COMMENT_PREFIX)) {
          const match = SEQ_RE.exec(text);
          if (match) this.onComment(Number(match[1]));
        } else if (text.startsWith(REACTIONS_PREFIX)) {
          this.onReactions(text.slice(REACTIONS_PREFIX.length, -1));
        } else if (text === '2') {
          this.#ws.send('3');
        } else if (text.startsWith('0{')) {
          this.#ws.send('40/chat,');
        } else if (text.startsWith('40/chat,')) {
          resolve();
        } else if (text.startsWith('43/chat,')) {
          const match = /^43\/chat,(\d+)\[(.*)\]$/s.exec(text);
          if (match) this.#acks.get(Number(match[1]))?.(JSON.parse(match[2]!));
        } else if (text.startsWith('44/chat,')) {
          reject(new BenchError(`connect refused: ${text}`));
        }
      });
    });
  }

  emit(event: string, payload: unknown): void {
    this.#ws.send(`42/chat,${JSON.stringify([event, payload])}`);
  }

  request(event: string, payload: unknown, timeoutMs = 10_000): Promise<any> {
    const id = this.#nextAck++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new BenchError(`no answer to ${event} within ${timeoutMs} ms`)), timeoutMs);
      this.#acks.set(id, (response) => {
        clearTimeout(timer);
        this.#acks.delete(id);
        resolve(response);
      });
      this.#ws.send(`42/chat,${id}${JSON.stringify([event, payload])}`);
    });
  }

  close(): void {
    this.#ws.terminate();
  }
}

async function connectAll(target: Target, count: number, streamId: string, signal: AbortSignal): Promise<RawChatClient[]> {
  const clients: RawChatClient[] = [];
  try {
    for (let i = 0; i < count; i += CONNECT_BATCH) {
      if (signal.aborted) throw new BenchError('aborted');
      const batch = Array.from({ length: Math.min(CONNECT_BATCH, count - i) }, () => new RawChatClient(target.origin));
      clients.push(...batch);
      await Promise.all(batch.map((client) => client.opened));
      const joined = await Promise.all(batch.map((client, k) => client.request('join', { streamId, name: `viewer ${i + k}` })));
      const refused = joined.find((response) => !response?.ok);
      if (refused) throw new BenchError(`${target.label}: join refused: ${JSON.stringify(refused)}`);
    }
    return clients;
  } catch (error) {
    for (const client of clients) client.close();
    throw error;
  }
}

interface FanoutFigures {
  sent: number;
  deliveries: number;
  expected: number;
  p50: number | undefined;
  p99: number | undefined;
  max: number | undefined;
  serverCpu: number;
  loopP99Ms: number;
  refused: number;
}

/** Steady comments for `seconds` from the first SENDERS clients; every client times every comment. */
async function fanout(target: Target, clients: RawChatClient[], rate: number, seconds: number, signal: AbortSignal): Promise<FanoutFigures> {
  const sentAt = new Map<number, number>();
  const histogram = new Histogram();
  let deliveries = 0;
  let measuring = false;
  let refused = 0;
  for (const client of clients) {
    client.onComment = (seq) => {
      const at = sentAt.get(seq);
      if (at === undefined || !measuring) return;
      histogram.add(performance.now() - at);
      deliveries++;
    };
  }
  const senders = clients.slice(0, Math.min(SENDERS, clients.length));
  let seq = 0;
  let sentMeasured = 0;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const send = (): void => {
    const sender = senders[seq % senders.length]!;
    const id = ++seq;
    if (measuring) {
      sentAt.set(id, performance.now());
      sentMeasured++;
    }
    sender.request('comment', { text: `#${id}# a comment of ordinary length, about as long as people type` }).then((ack) => {
      if (!ack?.ok) refused++;
    }, () => { refused++; });
  };
  const start = performance.now();
  const warmupEnd = start + WARMUP_MS;
  const end = warmupEnd + seconds * 1000;
  let cpuStart = 0;
  let cpuAt = 0;
  let scheduled = 0;
  while (performance.now() < end) {
    if (signal.aborted) throw new BenchError('aborted');
    const now = performance.now();
    if (!measuring && now >= warmupEnd) {
      measuring = true;
      loop.enable();
      cpuStart = processCpuSec(target.pid) ?? 0;
      cpuAt = now;
    }
    const due = Math.floor(((now - start) / 1000) * rate);
    while (scheduled < due) {
      send();
      scheduled++;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const cpuEnd = processCpuSec(target.pid) ?? cpuStart;
  const wallSec = (performance.now() - cpuAt) / 1000;
  await sleep(TAIL_MS, signal);
  measuring = false;
  loop.disable();
  return {
    sent: sentMeasured,
    deliveries,
    expected: sentMeasured * clients.length,
    p50: histogram.percentile(50),
    p99: histogram.percentile(99),
    max: histogram.percentile(100),
    serverCpu: (cpuEnd - cpuStart) / wallSec,
    loopP99Ms: loop.percentile(99) / 1e6,
    refused,
  };
}

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


/** Stops a child: SIGTERM (OnAir then closes its Redis), SIGKILL after 10 s. */
function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

async function startOnAir(signal: AbortSignal): Promise<Target & { dataDir: string }> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-chat-'));
  const unlimited = '1000000/1s';
  const child = spawn(process.execPath, [MAIN_JS], {
    env: cleanEnv({
      ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_DATA_DIR: dataDir, ONAIR_HWACCEL: 'none',
      ONAIR_WEBRTC_LAYERS: 'off', ONAIR_LOG_LEVEL: 'error',
      // All the bench's clients share one address and send far faster than a person: the limits check, never refuse.
      ONAIR_CHAT_COMMENT_LIMIT: unlimited, ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: unlimited,
      ONAIR_CHAT_REACTION_LIMIT: unlimited, ONAIR_CHAT_ADDRESS_REACTION_LIMIT: unlimited, ONAIR_CHAT_JOIN_LIMIT: unlimited,
      ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS: '0',
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => { stdout += text; });
  child.stderr!.setEncoding('utf8').on('data', (text: string) => { stderr = (stderr + text).slice(-4000); });
  const stop = async (): Promise<void> => {
    await stopChild(child);
    await rm(dataDir, { recursive: true, force: true });
  };
  const onAbort = (): void => void stop();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const deadline = Date.now() + 60_000;
    let match: RegExpExecArray | null = null;
    while (!(match = /Dashboard:\s+(http:\/\/\S+)\/studio/.exec(stdout))) {
      if (child.exitCode !== null) throw new BenchError(`OnAir exited at start: ${stderr}`);
      if (Date.now() > deadline) throw new BenchError(`OnAir did not start within 60 s: ${stderr}`);
      await sleep(50, signal);
    }
    const [, origin] = match;
    // The banner shows the admin token only on a terminal: read it where the node keeps it.
    const token = (await readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim();
    const createStream = async (title: string): Promise<string> => {
      const response = await fetch(`${origin}/api/streams`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ title }),
      });
      if (response.status !== 201) throw new BenchError(`OnAir: could not create a stream (${response.status})`);
      return ((await response.json()) as { id: string }).id;
    };
    return {
      label: 'OnAir', origin: origin!.replace(/^http/, 'ws'), streamId: await createStream('chat bench'), pid: child.pid!, dataDir,
      newRoom: () => createStream('chat bench storm'),
      stop: async () => {
        signal.removeEventListener('abort', onAbort);
        await stop();
      },
    };
  } catch (error) {
    signal.removeEventListener('abort', onAbort);
    await stop();
    throw error;
  }
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

  const results: Record<Target['label'], { steps: Map<number, FanoutFigures>; storm?: StormFigures }> = {
    OnAir: { steps: new Map() },
    baseline: { steps: new Map() },
  };
  for (const start of [startOnAir, startBaseline]) {
    const target = await start(signal);
    const mine = results[target.label];
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
