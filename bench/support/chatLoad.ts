import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { BenchError } from './benchmark.js';
import { sleep } from './clock.js';
import { cleanEnv, processCpuSec } from './process.js';

/*
 * The chat load of bench/chatFanout.ts and bench/scaleChat.ts: a minimal Socket.IO v5 / Engine.IO v4 client over `ws`
 * (what socket.io-client puts on the wire, without its per-message overhead, so that the load generator is not the
 * bottleneck), steady comment fan-out with every client timing every comment, and an OnAir node (`dist/server/main.js`)
 * in a child process with chat limits that check but never refuse.
 */

export const SENDERS = 10;
const CONNECT_BATCH = 100;
export const WARMUP_MS = 1000;
const TAIL_MS = 2000;

const here = path.dirname(fileURLToPath(import.meta.url));
const MAIN_JS = path.resolve(here, '..', '..', 'server', 'main.js');

/** A latency histogram at 0.1 ms resolution up to 10 s (beyond: the last bucket). */
export class Histogram {
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

export interface Target {
  label: string;
  /** `ws://host:port`; clients spread over several when there are several processes. */
  origin: string;
  /** Every process's `ws://host:port` when the target is several processes (clients go round robin). */
  origins?: string[];
  streamId: string;
  pid: number;
  /** Every server process (CPU is their sum). */
  pids?: number[];
  /** Another room (a stream) for the storm. */
  newRoom(): Promise<string>;
  stop(): Promise<void>;
}

const COMMENT_PREFIX = '42/chat,["comment",';
const REACTIONS_PREFIX = '42/chat,["reactions",';
const SEQ_RE = /"text":"#(\d+)#/;

/** A minimal Socket.IO client on `/chat`: connects, joins, answers pings, hands events to `onEvent`. */
export class RawChatClient {
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

export async function connectAll(target: Target, count: number, streamId: string, signal: AbortSignal): Promise<RawChatClient[]> {
  const clients: RawChatClient[] = [];
  try {
    for (let i = 0; i < count; i += CONNECT_BATCH) {
      if (signal.aborted) throw new BenchError('aborted');
      const batch = Array.from({ length: Math.min(CONNECT_BATCH, count - i) }, (_, k) => new RawChatClient(originOf(target, i + k)));
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

export interface FanoutFigures {
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
export async function fanout(target: Target, clients: RawChatClient[], rate: number, seconds: number, signal: AbortSignal): Promise<FanoutFigures> {
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
      cpuStart = serverCpuSec(target);
      cpuAt = now;
    }
    const due = Math.floor(((now - start) / 1000) * rate);
    while (scheduled < due) {
      send();
      scheduled++;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const cpuEnd = serverCpuSec(target);
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


/** Stops a child: SIGTERM (OnAir then closes its Redis), SIGKILL after 10 s. */
export function stopChild(child: ChildProcess): Promise<void> {
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

export async function startOnAir(signal: AbortSignal, env: Record<string, string> = {}, label = 'OnAir'): Promise<Target & { dataDir: string }> {
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
      ...env,
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
      label, origin: origin!.replace(/^http/, 'ws'), streamId: await createStream('chat bench'), pid: child.pid!, dataDir,
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


/** Client `i`'s server: round robin over the target's processes. */
const originOf = (target: Target, i: number): string => (target.origins ? target.origins[i % target.origins.length]! : target.origin);

/** utime+stime of every server process of the target, s. */
function serverCpuSec(target: Target): number {
  return (target.pids ?? [target.pid]).reduce((sum, pid) => sum + (processCpuSec(pid) ?? 0), 0);
}

