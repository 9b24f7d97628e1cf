import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeVideo, tusCreate, tusPatch } from '../../test/support/tus.js';
import { BenchError } from '../support/benchmark.js';
import { epochMs, sleep } from '../support/clock.js';
import { nodeDied, nodeReady } from '../support/nodeProcess.js';
import { liveRenditions } from '../support/playlist.js';
import { cleanEnv, forkBounded, spawnBounded, within, type BoundedChild } from '../support/process.js';
import { publisherArgs } from '../support/publisher.js';
import type { LoadOptions, LoadResult } from '../support/viewerLoad.js';
import { WhepGenerator } from '../support/whepGenerator.js';
import type { Sample as WhepSample } from '../support/whepLoad.js';
import { ChatCrowd, type ChatFigures } from './chatCrowd.js';
import { ProcessSampler, sampleHeader, sampleRow, type Sample } from './sampler.js';

/*
 * The soak run (issue #14, scope 8): one OnAir node in a process of its own (bench/support/onairNodeProcess.ts, as
 * `npm start` runs it plus an IPC note per published part) under a steady, mixed load for a long time, its resources
 * sampled every minute; at the end, whether they grew and whether everything still works.
 *
 * Load, each part from the helper the benchmarks use:
 * - one live stream published by ffmpeg from lavfi (bench/support/publisher.ts), killed and started again every
 *   `reconnect.everyMs` — within the reconnect grace, so the same event goes on;
 * - LL-HLS viewers (bench/support/viewerLoad.ts in its own process: blocking playlist reload, then every part);
 * - WHEP viewers (bench/support/whepLoad.ts in its own process, werift);
 * - chat clients (socket.io-client, bench/soak/chatCrowd.ts, in this process) posting now and then;
 * - an ad break every `adBreak.everyMs` (`POST /api/streams/:id/cues`), filled with a catalog ad uploaded first;
 * - tus uploads spread over the run, each to end `ready`.
 * Scheduled actions keep clear of the sample instants (ad breaks at :15, reconnects at :45 of a minute in the full
 * run) and of the run's last 35 s: the last 20 s are where health is checked.
 *
 * Growth: each figure at the end against its value at `growthFromMs` (the end of minute 2: caches, pools and JIT
 * warmed up by then), in %. RSS and heap are read every 5 s and judged per minute: RSS on its median (it moves both
 * ways: up with garbage and buffers, down when the allocator hands pages back), the heap on its floor (garbage swings
 * it by ±20 % within a minute under this load, so one reading against another says nothing at 5 %; leaked objects
 * raise the floor).
 * Health, checked at the end while the load is still on: the LL-HLS viewers received (nearly) every part published
 * in the last 20 s, every WHEP viewer still receives video, a probe comment reaches every chat client, the stream is
 * live in the same event, every scheduled action succeeded, every upload is `ready`, and the node logged no line at
 * error level.
 */

export interface SoakOptions {
  durationMs: number;
  sampleEveryMs: number;
  /** The baseline sample for growth; the sample taken at this instant. */
  growthFromMs: number;
  /** Goal on growth in %; undefined: growth is reported, not judged (a short run says nothing about leaks). */
  growthGoalPercent: number | undefined;
  hlsViewers: number;
  whepViewers: number;
  chatClients: number;
  /** Mean time between two comments of one chat client. */
  commentEveryMs: number;
  reconnect: { firstMs: number; everyMs: number };
  adBreak: { firstMs: number; everyMs: number; durationSec: number };
  uploads: { count: number; firstMs: number };
  source: { width: number; height: number; fps: number };
  /** The live ladder (`ONAIR_LADDER`) and WebRTC layers: small, so that the load generators get their share of the CPU. */
  ladder: string;
  webrtcLayers: string;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface Growth {
  figure: string;
  from: number;
  to: number;
  percent: number;
  /** The lowest and highest sample from the baseline on: how much the figure moves without growing. */
  min: number;
  max: number;
  /** Undefined when growth is not judged. */
  ok: boolean | undefined;
}

export interface SoakResult {
  samples: Sample[];
  growth: Growth[];
  checks: Check[];
  chat: ChatFigures;
  hls: { requests: number; errors: number; firstErrors: string[]; reconnects: number };
  log: { errors: number; warnings: number; firstErrors: string[]; firstWarnings: string[] };
  ok: boolean;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_PROCESS = path.join(here, '..', 'support', 'onairNodeProcess.js');
const VIEWER_LOAD = path.join(here, '..', 'support', 'viewerLoad.js');
const NO_ABORT = new AbortController().signal;
/** Health is judged over this tail of the run. */
const END_WINDOW_MS = 20_000;
/** No scheduled action starts this close to the end: an ad break (10 s) or a reconnect is over before the end window. */
const ACTION_MARGIN_MS = 35_000;
const WHEP_CONCURRENCY = 4;
/** RSS and heap are read this often between samples, for the RSS median and the heap floor. */
const FLOOR_POLL_MS = 5000;

/** The figures growth is judged on, with how each is read from the samples. */
const FIGURES: { figure: string; read: (s: Sample) => number; meanOfLast?: number }[] = [
  { figure: 'RSS (median of the minute)', read: (s) => s.rssMedianBytes },
  { figure: 'heap used (floor of the minute)', read: (s) => s.heapFloorBytes },
  { figure: 'open fds', read: (s) => s.fds },
  { figure: 'active handles', read: (s) => s.handles },
];

/** Instants of a repeated action from `firstMs` on, clear of the end window. */
function schedule(firstMs: number, everyMs: number, durationMs: number): number[] {
  const times: number[] = [];
  for (let t = firstMs; t <= durationMs - ACTION_MARGIN_MS && everyMs > 0; t += everyMs) times.push(t);
  return times;
}

async function json(url: string, token: string, method = 'GET', body?: unknown): Promise<{ status: number; body: any }> {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch { /* not JSON */ }
  return { status: response.status, body: parsed };
}

/** Uploads `file` over tus; resolves with the video id. */
async function upload(httpUrl: string, token: string, file: string, title: string): Promise<string> {
  const data = await readFile(file);
  const created = await tusCreate(httpUrl, token, data.length, { filename: path.basename(file), title });
  if (created.status !== 201 || !created.url) throw new BenchError(`tus POST answered ${created.status}: ${created.body.slice(0, 200)}`);
  await tusPatch(created.url, token, data, 0);
  return created.url.split('/').pop()!;
}

async function waitUntil<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, signal: AbortSignal): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new BenchError(`${what}: not within ${timeoutMs} ms`);
    await sleep(250, signal);
  }
}

/** Counts the node's log lines (pino JSON on stdout) by level; keeps the first few messages at warn and error. */
class LogCounter {
  errors = 0;
  warnings = 0;
  readonly firstErrors: string[] = [];
  readonly firstWarnings: string[] = [];
  #rest = '';

  feed = (text: string): void => {
    const lines = (this.#rest + text).split('\n');
    this.#rest = lines.pop()!.slice(-65_536);
    for (const line of lines) {
      let entry: Record<string, unknown> & { level?: number; msg?: string; err?: { message?: string } };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue;
      }
      // The message and its context (an ffmpeg stderr line, a stream id), without the stack.
      const { level: _level, time: _time, msg, err, ...context } = entry;
      const what = `${msg ?? ''}${err?.message ? `: ${err.message}` : ''} ${JSON.stringify(context)}`.slice(0, 300);
      if ((entry.level ?? 0) >= 50) {
        this.errors += 1;
        if (this.firstErrors.length < 5) this.firstErrors.push(what);
      } else if (entry.level === 40) {
        this.warnings += 1;
        if (this.firstWarnings.length < 5) this.firstWarnings.push(what);
      }
    }
  };
}

/** Runs the soak; `report` gets each line of the running account (the table lines as they come). */
export async function runSoak(options: SoakOptions, report: (line: string) => void, signal: AbortSignal): Promise<SoakResult> {
  const { durationMs } = options;
  const limitMs = durationMs + 300_000;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-soak-'));
  const mediaDir = await mkdtemp(path.join(os.tmpdir(), 'onair-soak-media-'));
  const log = new LogCounter();
  const node = forkBounded(NODE_PROCESS, cleanEnv({
    ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_DATA_DIR: dataDir, ONAIR_HWACCEL: 'none',
    ONAIR_LOG_LEVEL: 'warn', ONAIR_X264_PRESET: 'ultrafast', ONAIR_LADDER: options.ladder,
    ONAIR_WEBRTC_LAYERS: options.webrtcLayers, ONAIR_WEBRTC_WORKERS: '1', ONAIR_WEBRTC_PORT: '0',
    ONAIR_VOD_CONCURRENCY: '1', ONAIR_VOD_LADDER: '240', ONAIR_VOD_X264_PRESET: 'ultrafast', ONAIR_VOD_SEGMENT_SEC: '2',
    // Every client of the load comes from 127.0.0.1: no per-address cap may refuse them (the caps are tested elsewhere).
    ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: '100000', ONAIR_LLHLS_MAX_BLOCKING: '1000000',
    ONAIR_WHEP_MAX_SESSIONS_PER_ADDRESS: '1000000', ONAIR_WHEP_MAX_SESSIONS_PER_WORKER: '1000000', ONAIR_RATE_WHEP_PER_MIN: '0',
    ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS: '0', ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: 'off', ONAIR_CHAT_COMMENT_LIMIT: 'off',
    ONAIR_RATE_UPLOAD_CREATE_PER_MIN: '0',
  }), limitMs, signal, { onStdout: log.feed });
  let publisher: BoundedChild | undefined;
  let whep: WhepGenerator | undefined;
  let chat: ChatCrowd | undefined;
  let viewers: ReturnType<typeof forkBounded> | undefined;
  try {
    /** Parts the node published: `${rendition}/${sequence}` → when. */
    const published = new Map<string, number>();
    const died = nodeDied(node);
    const { httpUrl, rtmpUrl, adminToken } = await nodeReady(node, signal, (part) => {
      if (!part.mirrored) published.set(`${part.rendition}/${part.sequence}`, part.at);
    });
    const nodePid = node.child.pid!;

    // Media made before the load starts (ffmpeg here would compete with the node later).
    const adFile = path.join(mediaDir, 'ad.mp4');
    makeVideo(adFile, { seconds: 4, megabytes: 0.3, width: 320, height: 240 });
    const uploadFiles = Array.from({ length: options.uploads.count }, (_, i) => path.join(mediaDir, `upload${i}.mp4`));
    for (const file of uploadFiles) makeVideo(file, { seconds: 3, megabytes: 0.3, width: 320, height: 240 });

    const adId = await upload(httpUrl, adminToken, adFile, 'soak: ad');
    await waitUntil('the ad to be ready', async () => ((await json(`${httpUrl}/api/videos/${adId}`, adminToken)).body?.status === 'ready' ? true : undefined), 90_000, signal);
    const marked = await json(`${httpUrl}/api/videos/${adId}`, adminToken, 'PATCH', { ad: true });
    if (marked.status !== 200) throw new BenchError(`marking the ad answered ${marked.status}`);

    const created = await json(`${httpUrl}/api/streams`, adminToken, 'POST', { title: 'soak' });
    if (created.status !== 201) throw new BenchError(`POST /api/streams answered ${created.status}`);
    const streamId = String(created.body.id);
    const ingestUrl = `${rtmpUrl}/${String(created.body.streamKey)}`;
    const startPublisher = (): BoundedChild => {
      const child = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...options.source, durationSec: Math.ceil(limitMs / 1000), output: ingestUrl }), {
        timeoutMs: limitMs, signal,
      });
      child.exited.catch(() => undefined);
      return child;
    };
    publisher = startPublisher();
    const renditions = await within('the stream to go live', liveRenditions(httpUrl, streamId, signal), 45_000, signal);
    const eventId = await waitUntil('the live event', async () => (await json(`${httpUrl}/api/streams/${streamId}`, adminToken)).body?.stats?.eventId as string | undefined, 20_000, signal);
    await waitUntil('the ad to be packaged for the stream', async () => {
      const ads = (await json(`${httpUrl}/api/streams/${streamId}`, adminToken)).body?.stats?.ads as unknown[] | undefined;
      return ads && ads.length > 0 ? true : undefined;
    }, 60_000, signal);

    // The clients, all connected before the clock starts.
    whep = new WhepGenerator(signal);
    const added = await whep.ask({ type: 'add', url: `${httpUrl}/live/${streamId}/whep`, count: options.whepViewers, concurrency: WHEP_CONCURRENCY, timeoutMs: 20_000 },
      'added', Math.ceil(options.whepViewers / WHEP_CONCURRENCY) * 45_000 + 30_000, signal);
    if (added.failed > 0) throw new BenchError(`${added.failed} of ${options.whepViewers} WHEP viewers could not connect: ${added.errors.join('; ')}`);
    chat = new ChatCrowd(httpUrl, streamId, options.chatClients, options.commentEveryMs);
    await within('the chat clients to join', chat.connect(), 60_000 + options.chatClients * 200, signal);

    const startedAt = Date.now();
    const sampler = new ProcessSampler(nodePid, `${httpUrl}/metrics`, startedAt);
    const polling = setInterval(() => void sampler.poll(), FLOOR_POLL_MS);
    report(`node      pid ${nodePid}; stream ${streamId}, renditions ${renditions.join(', ')}, WebRTC layers ${options.webrtcLayers}; event ${eventId}`);
    report(`load      ${options.hlsViewers} LL-HLS viewers, ${options.whepViewers} WHEP viewers, ${options.chatClients} chat clients ` +
      `(a comment each every ~${Math.round(options.commentEveryMs / 1000)} s); for ${Math.round(durationMs / 1000)} s`);
    report(`${sampleHeader()} ${'WHEP vid'.padStart(8)} ${'WHEP aud'.padStart(8)} ${'WHEP lag'.padStart(9)}`);
    // WHEP viewers that received video (audio) since the previous sample: a stall shows in the minute it began; the
    // generator's event-loop delay tells a starved load generator from a server that stopped sending.
    let whepLast = await whep.ask({ type: 'sample' }, 'sample', 10_000, signal);
    /** Samples in which not every WHEP viewer received video and audio: `<t>s <video>/<audio> of N`. */
    const whepStalls: string[] = [];
    const whepCells = async (): Promise<string> => {
      const now = await whep!.ask({ type: 'sample' }, 'sample', 10_000, signal);
      const receiving = now.videoPackets.filter((n, i) => n > (whepLast.videoPackets[i] ?? 0)).length;
      const hearing = now.audioPackets.filter((n, i) => n > (whepLast.audioPackets[i] ?? 0)).length;
      whepLast = now;
      if (receiving < options.whepViewers || hearing < options.whepViewers) {
        whepStalls.push(`${Math.round((Date.now() - startedAt) / 1000)}s ${receiving}/${hearing}`);
      }
      return `${`${receiving}/${now.videoPackets.length}`.padStart(8)} ${`${hearing}/${now.audioPackets.length}`.padStart(8)} ` +
        `${`${now.loopDelayP99Ms.toFixed(0)}ms`.padStart(9)}`;
    };

    const hlsResult = new Promise<LoadResult>((resolve, reject) => {
      viewers = forkBounded(VIEWER_LOAD, process.env, durationMs + 60_000, signal);
      viewers.child.on('message', (message: { type: string; result?: LoadResult }) => {
        if (message.type === 'result') resolve(message.result!);
      });
      void viewers.exited.then(() => reject(new BenchError(`the LL-HLS viewer load exited: ${viewers!.stderr().trim().slice(-300) || 'no result'}`)));
      const load: LoadOptions = {
        mode: 'blocking', host: '127.0.0.1', port: Number(new URL(httpUrl).port),
        playlists: renditions.map((r) => ({ rendition: r, path: `/live/${streamId}/${r}/index.m3u8` })),
        viewers: options.hlsViewers, rampMs: Math.min(5000, options.hlsViewers * 50), warmupMs: 0, measureMs: durationMs, tailMs: 0,
        pollMs: 200, requestTimeoutMs: 15_000, stopOnError: false,
      };
      viewers.child.send({ type: 'start', options: load });
    });
    hlsResult.catch(() => undefined);
    chat.startPosting();

    // Scheduled actions: each failure is kept for the report, none stops the run.
    const failures: string[] = [];
    const timers: NodeJS.Timeout[] = [];
    const pending = new Set<Promise<unknown>>();
    const at = (atMs: number, what: string, action: () => Promise<void>): void => {
      timers.push(setTimeout(() => {
        const running = action().catch((error: unknown) => {
          failures.push(`${what} at ${Math.round(atMs / 1000)} s: ${(error as Error).message}`);
        });
        pending.add(running);
        void running.finally(() => pending.delete(running));
      }, atMs - (Date.now() - startedAt)));
    };
    let reconnects = 0;
    for (const t of schedule(options.reconnect.firstMs, options.reconnect.everyMs, durationMs)) {
      at(t, 'publisher reconnect', async () => {
        const old = publisher!;
        old.kill();
        await old.exited.catch(() => undefined);
        publisher = startPublisher();
        reconnects += 1;
        report(`          ${Math.round((Date.now() - startedAt) / 1000)}s publisher reconnected`);
      });
    }
    let adBreaks = 0;
    const adTimes = schedule(options.adBreak.firstMs, options.adBreak.everyMs, durationMs);
    for (const t of adTimes) {
      at(t, 'ad break', async () => {
        const cue = await json(`${httpUrl}/api/streams/${streamId}/cues`, adminToken, 'POST', { kind: 'ad', durationSec: options.adBreak.durationSec });
        if (cue.status !== 201) throw new Error(`POST cues answered ${cue.status}: ${JSON.stringify(cue.body).slice(0, 200)}`);
        if (!Array.isArray(cue.body?.ads) || !cue.body.ads.includes(adId)) throw new Error(`the break plays ${JSON.stringify(cue.body?.ads)}, not the ad`);
        adBreaks += 1;
      });
    }
    const uploadIds: string[] = [];
    const uploadTimes = uploadFiles.map((_, i) => options.uploads.firstMs + Math.floor((i * (durationMs - ACTION_MARGIN_MS - options.uploads.firstMs)) / uploadFiles.length));
    uploadFiles.forEach((file, i) => {
      at(uploadTimes[i]!, 'upload', async () => {
        uploadIds.push(await upload(httpUrl, adminToken, file, `soak upload ${i + 1}`));
      });
    });
    const sampleTimes: number[] = [];
    for (let t = options.sampleEveryMs; t <= durationMs; t += options.sampleEveryMs) sampleTimes.push(t);
    if (sampleTimes[sampleTimes.length - 1] !== durationMs) sampleTimes.push(durationMs);
    for (const t of sampleTimes) {
      at(t, 'sample', async () => {
        const sample = await sampler.take();
        report(`${sampleRow(sample)} ${await whepCells().catch((error: unknown) => `(${(error as Error).message})`)}`);
      });
    }
    let whepBefore: WhepSample | undefined;
    at(durationMs - 10_000, 'WHEP sample', async () => {
      whepBefore = await whep!.ask({ type: 'sample' }, 'sample', 10_000, signal);
    });

    try {
      await within('the soak', Promise.race([sleep(durationMs, signal), died]), durationMs + 10_000, signal);
      // The last sample and any action still under way.
      while (pending.size > 0) await within('the scheduled actions', Promise.all([...pending]), 60_000, signal);
    } finally {
      for (const timer of timers) clearTimeout(timer);
      clearInterval(polling);
    }

    // Health, with the load still on (the LL-HLS viewers stop by themselves at the end of their window).
    const checks: Check[] = [];
    const check = (name: string, ok: boolean, detail: string): void => {
      checks.push({ name, ok, detail });
    };
    const hls = await within('the LL-HLS viewers\' result', hlsResult, 60_000, signal);
    const endAt = epochMs();
    {
      const from = endAt - END_WINDOW_MS;
      const to = endAt - 3000;
      let expected = 0;
      let received = 0;
      const perRendition = new Map(renditions.map((r, i) => [r, Array.from({ length: options.hlsViewers }, (_, k) => k).filter((k) => k % renditions.length === i).length]));
      for (const [key, when] of published) {
        if (when < from || when > to) continue;
        expected += perRendition.get(key.slice(0, key.indexOf('/'))) ?? 0;
        received += Math.min(hls.receipts[key]?.length ?? 0, perRendition.get(key.slice(0, key.indexOf('/'))) ?? 0);
      }
      const complete = expected > 0 ? (received / expected) * 100 : 0;
      check('LL-HLS viewers receive parts at the end', expected > 0 && complete >= 95,
        `${received} of ${expected} part deliveries (${complete.toFixed(1)} %) of the parts published ${END_WINDOW_MS / 1000}–3 s before the end; ` +
        `over the run ${hls.requests} requests, ${hls.errors} errors${hls.firstErrors.length ? ` (${hls.firstErrors.slice(0, 2).join('; ')})` : ''}`);
    }
    {
      const after = await whep.ask({ type: 'sample' }, 'sample', 10_000, signal);
      const receiving = whepBefore ? after.videoPackets.filter((n, i) => n > (whepBefore!.videoPackets[i] ?? 0)).length : 0;
      check('WHEP viewers connected and receiving', receiving === options.whepViewers,
        `${receiving} of ${options.whepViewers} received video in the last 10 s`);
    }
    check('WHEP viewers received video and audio in every sample interval', whepStalls.length === 0,
      whepStalls.length === 0 ? `every interval, ${options.whepViewers} of ${options.whepViewers}`
        : `intervals ending at (video/audio receivers of ${options.whepViewers}): ${whepStalls.join(', ')}`);
    {
      const probe = await chat.probe(10_000);
      const figures = chat.figures();
      check('chat delivers', probe.reached === probe.of && figures.connected === options.chatClients,
        `a probe comment reached ${probe.reached} of ${probe.of} clients; ${figures.connected} connected; over the run ${figures.accepted} comments accepted, ` +
        `${figures.refused} refused, ${figures.received} deliveries (${figures.accepted > 0 ? ((figures.received / (figures.accepted * options.chatClients)) * 100).toFixed(1) : 'n/a'} % of accepted × clients), ` +
        `${figures.disconnects} disconnects${figures.firstErrors.length ? `; ${figures.firstErrors.slice(0, 2).join('; ')}` : ''}`);
    }
    {
      const view = (await json(`${httpUrl}/api/streams/${streamId}`, adminToken)).body;
      check('the stream is live in the same event', view?.status === 'live' && view?.stats?.eventId === eventId,
        `status ${String(view?.status)}, event ${String(view?.stats?.eventId)} (started as ${eventId}) after ${reconnects} reconnects`);
    }
    const plannedReconnects = schedule(options.reconnect.firstMs, options.reconnect.everyMs, durationMs).length;
    check('scheduled actions', failures.length === 0 && adBreaks === adTimes.length && reconnects === plannedReconnects && uploadIds.length === uploadFiles.length,
      `${reconnects}/${plannedReconnects} reconnects, ${adBreaks}/${adTimes.length} ad breaks, ${uploadIds.length}/${uploadFiles.length} uploads sent` +
      `${failures.length ? `; ${failures.slice(0, 3).join('; ')}` : ''}`);
    {
      const statuses = async (): Promise<string[]> => Promise.all(uploadIds.map(async (id) => String((await json(`${httpUrl}/api/videos/${id}`, adminToken)).body?.status)));
      let last: string[] = [];
      await waitUntil('the uploads to be ready', async () => {
        last = await statuses();
        return last.every((s) => s === 'ready' || s === 'failed') ? true : undefined;
      }, 120_000, signal).catch(() => undefined);
      check('uploads ready', uploadIds.length === uploadFiles.length && last.every((s) => s === 'ready'),
        `${last.filter((s) => s === 'ready').length} of ${uploadFiles.length} ready${last.some((s) => s !== 'ready') ? ` (${last.join(', ')})` : ''}`);
    }
    check('no error logged by the node', log.errors === 0,
      `${log.errors} lines at error level, ${log.warnings} at warn${log.firstErrors.length ? `; first: ${log.firstErrors.join(' | ')}` : ''}`);
    const samples = sampler.samples;
    check('the sampler produced figures', samples.length >= 2 && samples.every((s) => [s.rssBytes, s.heapUsedBytes, s.fds, s.handles].every(Number.isFinite)),
      `${samples.length} samples`);

    const growth = growthOf(samples, options);
    const ok = checks.every((c) => c.ok) && growth.every((g) => g.ok !== false);
    return {
      samples, growth, checks, chat: chat.figures(), ok,
      hls: { requests: hls.requests, errors: hls.errors, firstErrors: hls.firstErrors, reconnects: hls.reconnects },
      log: { errors: log.errors, warnings: log.warnings, firstErrors: log.firstErrors, firstWarnings: log.firstWarnings },
    };
  } finally {
    chat?.close();
    await whep?.close().catch(() => undefined);
    viewers?.stop();
    publisher?.kill();
    node.stop();
    await within('the OnAir node process to stop', node.exited, 30_000, NO_ABORT).catch(() => undefined);
    await Promise.all([dataDir, mediaDir].map((dir) => rm(dir, { recursive: true, force: true })));
  }
}

/** Growth of each figure from the sample at `growthFromMs` to the end, in % of the former. */
export function growthOf(samples: Sample[], options: Pick<SoakOptions, 'growthFromMs' | 'growthGoalPercent' | 'sampleEveryMs'>): Growth[] {
  // The sample taken at growthFromMs (its atMs is a little later: the time it was read).
  const base = samples.find((s) => s.atMs >= options.growthFromMs - options.sampleEveryMs / 2);
  const last = samples[samples.length - 1];
  if (!base || !last || base === last) return [];
  return FIGURES.map(({ figure, read, meanOfLast }) => {
    const tail = samples.slice(samples.indexOf(base) + 1).slice(-(meanOfLast ?? 1));
    const to = tail.reduce((sum, s) => sum + read(s), 0) / tail.length;
    const from = read(base);
    const percent = ((to - from) / from) * 100;
    const values = samples.slice(samples.indexOf(base)).map(read);
    return {
      figure: meanOfLast ? `${figure} (mean of last ${tail.length})` : figure,
      from, to, percent, min: Math.min(...values), max: Math.max(...values),
      ok: options.growthGoalPercent === undefined ? undefined : Number.isFinite(percent) && percent <= options.growthGoalPercent,
    };
  });
}
