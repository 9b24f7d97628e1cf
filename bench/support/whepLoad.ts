import { monitorEventLoopDelay } from 'node:perf_hooks';
import { connectWhep, type WhepClient } from '../../test/support/whepClient.js';

/*
 * The load generator of bench/webrtcConsumers.ts, in a process of its own (started with fork()) so that it never
 * shares an event loop with the node it loads: WHEP viewers on werift (test/support/whepClient.ts: recvonly H.264 +
 * Opus, transport-wide-cc and abs-send-time on mediasoup's ids, so that mediasoup runs its bandwidth estimation and
 * picks the simulcast layer for each as it would for a browser). RTP is counted, not decoded.
 *
 * Messages from the parent: { type: 'add', url, count, concurrency, timeoutMs } opens `count` more viewers, at most
 * `concurrency` connecting at once, each counted as connected once its first video packet arrived; answered with
 * { type: 'added', viewers, failed, errors }. { type: 'sample' } is answered with a Sample (counters since the start,
 * the parent takes differences). { type: 'close' } DELETEs every session, closes the peers and exits.
 */

export type LoadCommand =
  | { type: 'add'; url: string; count: number; concurrency: number; timeoutMs: number }
  | { type: 'sample' }
  | { type: 'close' };

export interface Sample {
  type: 'sample';
  /** performance.timeOrigin + now() of this process, ms. */
  at: number;
  /** Per viewer, in connection order. */
  videoPackets: number[];
  videoBytes: number[];
  audioPackets: number[];
  /** Height of the simulcast layer each viewer receives (from the last SPS), 0 when not seen yet. */
  heights: number[];
  /** This process's CPU since it started (user + system), s. */
  cpuSec: number;
  /** Event-loop delay since the last sample, ms: a generator too busy to read its sockets on time skews the server. */
  loopDelayP99Ms: number;
}

export type LoadMessage =
  /** `setupMs`: per viewer added, POST of the offer → its first video packet. */
  | { type: 'added'; viewers: number; failed: number; errors: string[]; setupMs: number[] }
  | Sample;

const send = (message: LoadMessage): void => {
  process.send?.(message);
};

const viewers: WhepClient[] = [];
const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();

async function add(command: Extract<LoadCommand, { type: 'add' }>): Promise<void> {
  let next = 0;
  let failed = 0;
  const errors: string[] = [];
  const setupMs: number[] = [];
  const one = async (): Promise<void> => {
    let client: WhepClient | undefined;
    try {
      const startedAt = performance.now();
      client = await connectWhep(command.url, { timeoutMs: command.timeoutMs });
      if (client.status !== 201) throw new Error(`POST answered ${client.status}: ${client.answer.slice(0, 200)}`);
      await client.waitFor('the first video packet', (s) => s.videoPackets > 0, command.timeoutMs);
      setupMs.push(performance.now() - startedAt);
      viewers.push(client);
    } catch (error) {
      failed += 1;
      if (errors.length < 5) errors.push(error instanceof Error ? error.message : String(error));
      await client?.close().catch(() => undefined);
    }
  };
  const lanes = Array.from({ length: Math.min(command.concurrency, command.count) }, async () => {
    while (next < command.count) {
      next += 1;
      await one();
    }
  });
  await Promise.all(lanes);
  send({ type: 'added', viewers: viewers.length, failed, errors, setupMs });
}

function sample(): Sample {
  const usage = process.cpuUsage();
  const stats = viewers.map((v) => v.stats());
  const p99 = loop.percentile(99) / 1e6;
  loop.reset();
  return {
    type: 'sample',
    at: performance.timeOrigin + performance.now(),
    videoPackets: stats.map((s) => s.videoPackets),
    videoBytes: stats.map((s) => s.videoBytes),
    audioPackets: stats.map((s) => s.audioPackets),
    heights: stats.map((s) => s.lastSpsSize?.height ?? 0),
    cpuSec: (usage.user + usage.system) / 1e6,
    loopDelayP99Ms: p99,
  };
}

let closing = false;
async function close(): Promise<void> {
  if (closing) return;
  closing = true;
  // DELETEs in batches: the node frees each consumer, as a departing browser's would.
  for (let i = 0; i < viewers.length; i += 20) {
    await Promise.all(viewers.slice(i, i + 20).map((v) => v.close().catch(() => undefined)));
  }
  process.exit(0);
}

process.on('message', (command: LoadCommand) => {
  if (command.type === 'add') {
    add(command).catch((error: unknown) => send({ type: 'added', viewers: viewers.length, failed: command.count, errors: [String(error)], setupMs: [] }));
  } else if (command.type === 'sample') {
    send(sample());
  } else if (command.type === 'close') {
    void close();
  }
});
// The benchmark went away: do not outlive it (the node's sessions time out on their own).
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
