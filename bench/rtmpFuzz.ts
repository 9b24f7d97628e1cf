import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzzRtmp, makePublishCorpus } from '../test/support/rtmpFuzz.js';
import { BenchError, envInteger, fixed, type BenchContext, type BenchResult, type Benchmark } from './support/benchmark.js';
import { createStream, nodeReady } from './support/nodeProcess.js';
import { cleanEnv, forkBounded, spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';

/*
 * RTMP fuzz run (issue #13): one OnAir node in a process of its own serves a live stream (ffmpeg -re, 360p) while
 * BENCH_RTMP_FUZZ_SESSIONS (10,000) sessions — a valid handshake, then a real ffmpeg publish mutated six ways (bit
 * flips, spliced chunks, lying chunk headers, odd chunk sizes, noise, cuts: test/support/rtmpFuzz.ts) — arrive from
 * 250 loopback addresses, 32 at a time. Measured: the node stays up, its peak RSS against its RSS with the stream live
 * before the run (the baseline), and the longest time the live playlist went without a new part against the part
 * target (its baseline). Bounded: every session lasts at most 1 s, the whole run at most BENCH_RTMP_FUZZ_MINUTES.
 */

const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_PROCESS = path.join(here, 'support', 'onairNodeProcess.js');
const PART_MS = 200;

function rssMiB(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls a media playlist and keeps the longest gap between two new parts. */
function watchPlaylist(url: string): { stop(): void; longestGapMs(): number; parts(): number } {
  let last = -1;
  let lastAt = Date.now();
  let longest = 0;
  let parts = 0;
  let stopped = false;
  void (async () => {
    while (!stopped) {
      try {
        const text = await (await fetch(url, { signal: AbortSignal.timeout(5000) })).text();
        const sequences = [...text.matchAll(/p(\d+)\.m4s/g)].map((m) => Number(m[1]));
        const newest = sequences.length > 0 ? Math.max(...sequences) : -1;
        const now = Date.now();
        if (newest > last) {
          if (last >= 0) {
            longest = Math.max(longest, now - lastAt);
            parts += newest - last;
          }
          last = newest;
          lastAt = now;
        }
      } catch { /* counted as a gap */ }
      await sleep(100);
    }
    longest = Math.max(longest, Date.now() - lastAt);
  })();
  return { stop: () => { stopped = true; }, longestGapMs: () => Math.max(longest, Date.now() - lastAt), parts: () => parts };
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const sessions = envInteger('BENCH_RTMP_FUZZ_SESSIONS', 10_000, 10, 1_000_000);
  const limitMs = envInteger('BENCH_RTMP_FUZZ_MINUTES', 10, 1, 120) * 60_000;
  report(`server    one OnAir node process (ladder 360p, WebRTC off), publisher 640x360 30 fps -re`);
  report(`load      ${sessions} sessions, 32 at a time from 127.0.0.2–251, each ≤ 1 s: handshake, then a real publish mutated`);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-fuzz-'));
  const node = forkBounded(NODE_PROCESS, cleanEnv({
    ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_DATA_DIR: dataDir, ONAIR_HWACCEL: 'none',
    ONAIR_LOG_LEVEL: 'error', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_LADDER: '360',
  }), limitMs + 120_000, signal);
  let publisher: BoundedChild | undefined;
  try {
    const { httpUrl, rtmpUrl, adminToken } = await nodeReady(node, signal);
    const pid = node.child.pid!;
    const stream = await createStream(httpUrl, adminToken, 'bench: rtmp fuzz');
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({
      width: 640, height: 360, durationSec: Math.ceil(limitMs / 1000) + 60, output: `${rtmpUrl}/${stream.streamKey}`,
    }), { timeoutMs: limitMs + 120_000, signal });
    publisher.exited.catch(() => undefined);
    const multivariant = `${httpUrl}/live/${stream.id}/index.m3u8`;
    const text = await within('the stream to go live', (async () => {
      for (;;) {
        const response = await fetch(multivariant);
        if (response.status === 200) return response.text();
        await sleep(250);
      }
    })(), 45_000, signal);
    const rendition = new URL(text.split('\n').find((line) => line.endsWith('.m3u8'))!, multivariant).href;

    // Baseline: the node with the stream live, before any attack.
    await sleep(5000);
    let baseline = 0;
    for (let i = 0; i < 10; i++) {
      baseline = Math.max(baseline, rssMiB(pid));
      await sleep(500);
    }
    report(`baseline  RSS ${fixed(baseline, 1)} MiB with the stream live`);

    const watcher = watchPlaylist(rendition);
    let peak = baseline;
    const sampler = setInterval(() => { peak = Math.max(peak, rssMiB(pid)); }, 250);
    const port = Number(new URL(rtmpUrl).port);
    const corpus = await makePublishCorpus(port, 'not-a-stream-key-0123456789abcdef');
    const abort = new AbortController();
    const deadline = setTimeout(() => abort.abort(), limitMs);
    signal.addEventListener('abort', () => abort.abort(), { once: true });
    const started = Date.now();
    let result;
    try {
      result = await fuzzRtmp({ port, corpus, sessions, concurrency: 32, seed: 7, sessionMs: 1000, signal: abort.signal });
    } finally {
      clearTimeout(deadline);
      clearInterval(sampler);
    }
    const seconds = (Date.now() - started) / 1000;
    await sleep(2000);
    watcher.stop();
    const alive = node.child.exitCode === null && node.child.signalCode === null;
    const after = rssMiB(pid);
    const metrics = alive ? await (await fetch(`${httpUrl}/metrics`)).text() : '';
    const dropped = [...metrics.matchAll(/onair_rtmp_dropped_total\{reason="([^"]+)"\} (\d+)/g)].map((m) => `${m[1]} ${m[2]}`).join(', ');
    const refused = [...metrics.matchAll(/onair_publish_refused_total\{reason="([^"]+)"\} (\d+)/g)].map((m) => `${m[1]} ${m[2]}`).join(', ');
    const gap = watcher.longestGapMs();
    report(`sessions  ${result.sessions} in ${fixed(seconds, 1)} s (${fixed(result.sessions / seconds, 0)}/s); by mutation ${JSON.stringify(result.byMutation)}`);
    report(`closed    by the server ${result.closedByServer}; guard: ${dropped || 'none'}; refused publishes: ${refused || 'none'}; handshakes not completed ${result.handshakeFailed}`);
    report(`memory    peak RSS ${fixed(peak, 1)} MiB (+${fixed(peak - baseline, 1)} MiB, ${fixed(peak / baseline, 2)}× baseline), ${fixed(after, 1)} MiB after`);
    report(`stream    ${watcher.parts()} new parts during the run; longest gap ${gap} ms (${fixed(gap / PART_MS, 1)}× the ${PART_MS} ms part target)`);
    if (!alive) throw new BenchError('the node died during the fuzz run');
    return {
      rows: [
        { metric: 'sessions survived', value: `${result.sessions}`, goal: `≥ ${Math.min(sessions, 10_000)}`, met: result.sessions >= Math.min(sessions, 10_000) },
        { metric: 'peak RSS / baseline', value: `${fixed(peak / baseline, 2)}× (+${fixed(peak - baseline, 0)} MiB)`, goal: '≤ 1.5×', met: peak / baseline <= 1.5 },
        { metric: 'longest playlist gap / part', value: `${fixed(gap / PART_MS, 1)}×`, goal: '≤ 5× (1 s)', met: gap <= 5 * PART_MS },
      ],
    };
  } finally {
    publisher?.kill();
    node.stop();
    await Promise.all([node.exited, publisher?.exited.catch(() => undefined)]);
    await rm(dataDir, { recursive: true, force: true });
  }
}

export const benchmark: Benchmark = {
  name: 'rtmp-fuzz',
  title: 'RTMP fuzz: 10,000 mutated publishes against a live node — it stays up, RSS bounded, the stream never stalls',
  run,
};
