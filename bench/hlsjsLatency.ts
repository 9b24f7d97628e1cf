import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from '../server/config.js';
import { launchChromium } from '../test/support/browser.js';
import { api, startTestNode, waitFor } from '../test/support/harness.js';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { sleep } from './support/clock.js';
import { measurePlayback, type PlaybackSamples } from './support/glassToGlass.js';
import { freePort, nginxMissing, nginxVersion, RTMP_MODULE, startNginx, type RunningNginx } from './support/nginx.js';
import { spawnBounded, within, type BoundedChild } from './support/process.js';
import { barcodeFilter, publisherArgs } from './support/publisher.js';
import { measurePublisherDelay } from './support/publisherDelay.js';
import { ratioText, summarize, type Summary } from './support/stats.js';

/*
 * Glass-to-glass latency of the watch page (hls.js, low-latency mode, headless Chromium) by the method of
 * /work/shared/measuring-latency.md, against nginx with the RTMP module producing classic HLS from the same publish,
 * played by the same page in the same browser and measured the same way, one after the other.
 *
 * - Publish (both): the harness's OBS-like ffmpeg (1280x720 30 fps, x264 ultrafast zerolatency, 2 s GOP, AAC, -re)
 *   with the wall-clock barcode of bench/support/publisher.ts burnt into every frame.
 * - OnAir: a node in this process (loopback, ephemeral ports, temp data dir, libx264 with the shipped preset, default
 *   ladder, part target and segment, WebRTC feed off); the page is its own /watch/:id.
 * - nginx: Debian's nginx + libnginx-mod-rtmp, `hls_fragment 1s; hls_playlist_length 6s;` (nginx cuts at keyframes,
 *   so the fragments follow the publisher's 2 s GOP), served over HTTP by the same nginx at /live/<name>/, and the
 *   same watch.html, watch.js (with common.js) and hls.min.js copied next to it: the page, the player and its settings are OnAir's.
 * - Latency of a frame: the page's Date.now() when requestVideoFrameCallback reports it, minus the barcode (capture
 *   time in ms mod 2^20); same machine, same clock. Median and p90 over the window after a warm-up; frames decoding
 *   to more than 60 s are dropped and counted. hls.js's own `latency` estimate is sampled at the same frames.
 */

/** Measured here by the same method (nginx 1.22 + rtmp, 1 s fragments, 6 s playlist): the fallback reference. */
const REFERENCE_NGINX_MEDIAN_S = 8.15;
const NO_ABORT = new AbortController().signal;
/** The LL-HLS path alone: no WebRTC layers in the same ffmpeg, no fixed WebRTC port to collide with other tests. */
const WEBRTC_OFF = 'off';
const SOURCE = { width: 1280, height: 720, fps: 30, videoKbps: 2500 };

export const benchmark: Benchmark = {
  name: 'hlsjs-latency',
  title: 'glass-to-glass latency in hls.js (headless Chromium): OnAir LL-HLS vs nginx-rtmp classic HLS (s)',
  run,
};

interface Side {
  samples: PlaybackSamples;
  latency: Summary | undefined;
  hlsLatency: Summary | undefined;
  note: string;
  /** OnAir only: where the time goes (medians, ms). */
  budget?: Budget;
}

/**
 * The latency budget of one run, stage by stage (ms, medians unless said). Measured: glass to glass (barcode), the
 * publisher alone (barcode → FLV tag out of the same publish command, `publisherDelay.ts`), ingest → part served (the
 * server's histogram over the window) and ingest → part loaded by hls.js (its part load events). Derived: the rest.
 * Checked: each frame's PROGRAM-DATE-TIME against its capture + the publisher's delay (the date's error).
 */
interface Budget {
  /** Capture → RTMP ingest: the publisher's encode and FLV out, measured alone (RTMP on loopback adds a TCP write). */
  publisher: number;
  /** The frames' PROGRAM-DATE-TIME − (capture + publisher): how far the date is from the ingest time (median). */
  dateError: number;
  /** A frame waits for its part to close: half a part, less half a frame (mean part duration). */
  assembly: number;
  /** Part's end at the ingest → part served: decode, ladder encode, fragment, package (server histogram, p50). */
  server: number;
  serverMean: number;
  /** Part served → loaded by hls.js: HTTP, blocking reload, preload hint (ingest → loaded p50 − server p50). */
  delivery: number;
  /** Loaded → on screen: the player's buffer (PART-HOLD-BACK), decode and paint (the remainder of ingest → display). */
  player: number;
  sinceIngest: number;
  partMs: number;
}

interface HistogramSnapshot {
  buckets: [number, number][];
  sum: number;
  count: number;
}

async function partDelaySnapshot(httpUrl: string): Promise<HistogramSnapshot> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const name = 'onair_llhls_part_delay_seconds';
  const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))]
    .map((m): [number, number] => [m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  const value = (suffix: string): number => Number(new RegExp(`^${name}_${suffix} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { buckets, sum: value('sum'), count: value('count') };
}

/** Median (linear within its bucket) and mean of what the histogram counted between two snapshots, ms. */
function histogramWindow(a: HistogramSnapshot, b: HistogramSnapshot): { p50: number; mean: number; n: number } {
  const n = b.count - a.count;
  const mean = ((b.sum - a.sum) / n) * 1000;
  let below = 0;
  let lower = 0;
  for (const [i, [le, total]] of b.buckets.entries()) {
    const inBucket = total - (a.buckets[i]?.[1] ?? 0) - below;
    if (below + inBucket >= n / 2 && inBucket > 0) {
      const upper = Number.isFinite(le) ? le : lower * 2;
      return { p50: (lower + ((n / 2 - below) / inBucket) * (upper - lower)) * 1000, mean, n };
    }
    below += inBucket;
    lower = le;
  }
  return { p50: NaN, mean, n };
}

const median = (values: number[]): number => summarize(values.filter((v) => Number.isFinite(v)))?.p50 ?? NaN;

function budgetOf(samples: PlaybackSamples, server: { p50: number; mean: number }, publisher: number, fps: number): Budget {
  // PROGRAM-DATE-TIME − capture, per frame, less what the publisher takes: the date's error against the ingest time.
  const dateError = median(samples.latencies.map((l, i) => l - samples.sinceIngest[i]!)) - publisher;
  const sinceIngest = median(samples.latencies) - publisher;
  const partMs = samples.parts.reduce((sum, p) => sum + p.durationMs, 0) / samples.parts.length;
  const assembly = (partMs - 1000 / fps) / 2;
  const loaded = median(samples.parts.map((p) => p.loadedAt - p.dateEnd));
  return {
    publisher, dateError, assembly, server: server.p50, serverMean: server.mean, delivery: loaded - server.p50,
    player: sinceIngest - assembly - loaded, sinceIngest, partMs,
  };
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const measureSec = envInteger('BENCH_HLSJS_SECONDS', 30, 3, 600);
  const warmupSec = envInteger('BENCH_HLSJS_WARMUP_SECONDS', 10, 2, 120);
  const joinSec = envInteger('BENCH_HLSJS_JOIN_SECONDS', 12, 0, 120);
  const config = loadConfig({});
  // PART-HOLD-BACK values to play side by side (parts): the node's default first, e.g. `3,5` to see the trade.
  const holdBacks = (process.env['BENCH_HLSJS_HOLD_BACK_PARTS'] ?? String(config.holdBackParts)).split(',').map(Number);
  if (holdBacks.some((v) => !Number.isInteger(v) || v < 3 || v > 20)) throw new BenchError('BENCH_HLSJS_HOLD_BACK_PARTS: integers 3–20, comma-separated');
  report(`publish   ${SOURCE.width}x${SOURCE.height} ${SOURCE.fps} fps with a 20-bit wall-clock barcode, x264 ultrafast zerolatency ` +
    `${SOURCE.videoKbps}k, 2 s GOP, AAC, -re`);
  report(`viewer    joins ${joinSec} s after the first media (a full playlist), ${warmupSec} s warm-up after playback starts, then ${measureSec} s`);
  report('method    latency = the page\'s Date.now() at requestVideoFrameCallback − the barcode of that frame (the wall clock ' +
    'when the publisher filtered it, ms mod 2^20): capture → display through encode, ingest, transcode, packaging, delivery ' +
    'and the player\'s buffer; frames decoding to > 60 s are dropped and counted as bad');
  const timing = { joinSec, warmupSec, measureSec };
  const chromium = await within('starting Chromium', launchChromium(), 60_000, signal, (late) => late.close());
  const sides: { parts: number; side: Side }[] = [];
  let nginx: Side | undefined;
  let missing = process.env['BENCH_HLSJS_NGINX'] === 'off' ? 'BENCH_HLSJS_NGINX=off' : nginxMissing(true);
  try {
    // The publisher's own share, measured alone first (the budget's first stage; the dates are checked against it).
    const publisher = await measurePublisherDelay(SOURCE, 12, signal);
    report(`publisher capture → FLV out, measured alone: median ${Math.round(publisher.p50)} ms, p90 ${Math.round(publisher.p90)} ms (${publisher.frames} frames)`);
    for (const parts of holdBacks) sides.push({ parts, side: await measureOnAir(config, chromium.browser, timing, signal, parts, publisher.p50) });
    // nginx's side failing keeps OnAir's figures: the reason is printed where nginx's row would be.
    if (!missing) {
      nginx = await measureNginx(chromium.browser, timing, signal).catch((error: unknown) => {
        if (signal.aborted) throw error;
        missing = `its side failed (${error instanceof Error ? error.message : String(error)})`;
        return undefined;
      });
    }
  } finally {
    await chromium.close().catch(() => undefined);
  }

  const s = (v: number | undefined): string => (v === undefined ? 'n/a' : `${fixed(v / 1000, 2)} s`);
  const h = (v: number | undefined): string => (v === undefined ? 'n/a' : `${fixed(v, 2)} s`);
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(24) : c.padStart(i === 3 ? 13 : 9))).join('');
  report(row(['', 'median', 'p90', 'hls.latency', 'frames', 'bad', 'stalls', 'height']));
  const sideRow = (name: string, side: Side): string => row([name, s(side.latency?.p50), s(side.latency?.p90), h(side.hlsLatency?.p50),
    String(side.samples.latencies.length), String(side.samples.bad), String(side.samples.stalls), `${side.samples.height}p`]);
  const onair = sides[0]!.side;
  const name = (parts: number): string => `OnAir LL-HLS, hold ${parts}`;
  for (const { parts, side } of sides) report(sideRow(name(parts), side));
  if (nginx) {
    report(sideRow('nginx-rtmp classic HLS', nginx));
    report(row(['OnAir / nginx', ratioText(onair.latency?.p50, nginx.latency?.p50), ratioText(onair.latency?.p90, nginx.latency?.p90),
      ratioText(onair.hlsLatency?.p50, nginx.hlsLatency?.p50)]));
  } else {
    report(`nginx     NOT MEASURED in this run: ${missing}. Reference (measured earlier by the same method, not in this run): ` +
      `${REFERENCE_NGINX_MEDIAN_S} s median`);
  }
  const ms = (v: number): string => (Number.isFinite(v) ? `${Math.round(v)} ms` : 'n/a');
  for (const { parts, side } of sides) {
    const b = side.budget;
    if (!b) continue;
    report(`budget    where the glass-to-glass time goes, ${name(parts)} (medians; BENCHMARKS.md says how each is measured):`);
    report(`  capture → RTMP ingest (publisher encode, measured alone)     ${ms(b.publisher)}`);
    report(`  frame waits for its part to close ((part − frame) / 2)       ${ms(b.assembly)}  (parts ${ms(b.partMs)})`);
    report(`  part's end at ingest → part served (decode, ladder, package) ${ms(b.server)}  (mean ${ms(b.serverMean)})`);
    report(`  served → loaded by hls.js (HTTP, blocking reload, hint)      ${ms(b.delivery)}`);
    report(`  loaded → on screen (player buffer, decode, paint)            ${ms(b.player)}`);
    report(`  = ingest → display ${ms(b.sinceIngest)}; glass to glass ${ms(side.latency?.p50 ?? NaN)}`);
    report(`  PROGRAM-DATE-TIME − ingest time (capture + publisher), median ${ms(b.dateError)}`);
  }
  const b = onair.budget;
  for (const { parts, side } of sides) report(`setup     ${name(parts)}: ${side.note}`);
  for (const { parts, side } of sides) {
    if (side.samples.stallsAt.length > 0) {
      report(`stalls    ${name(parts)}: ${side.samples.stallsAt.map((s) => `${s.afterSec.toFixed(1)} s into the window at ${new Date(s.at).toISOString()} (${s.aheadSec.toFixed(2)} s buffered, longest wait between parts before it ${s.partGapMs.toFixed(0)} ms${s.events.length ? `; hls.js: ${s.events.join(', ')}` : ''})`).join('; ')}`);
    }
  }
  if (nginx) report(`setup     nginx: ${nginx.note}`);
  if (!onair.latency) throw new BenchError('no frame of the OnAir stream could be decoded');
  const baseline = nginx?.latency ? nginx.latency.p50 / 1000 : REFERENCE_NGINX_MEDIAN_S;
  const baselineText = nginx?.latency ? `nginx ${s(nginx.latency.p50)}` : `reference ${REFERENCE_NGINX_MEDIAN_S} s, NOT measured in this run`;
  return {
    rows: [
      { metric: 'OnAir glass-to-glass median / p90', value: `${s(onair.latency.p50)} / ${s(onair.latency.p90)}`, goal: '≤ 1.5 s',
        met: onair.latency.p50 <= 1500 },
      { metric: 'OnAir hls.latency median', value: h(onair.hlsLatency?.p50) },
      ...(b ? [
        { metric: '  capture → ingest (publisher) median', value: `${Math.round(b.publisher)} ms` },
        { metric: '  PROGRAM-DATE-TIME − ingest time median', value: `${Math.round(b.dateError)} ms`, goal: '±100 ms', met: Math.abs(b.dateError) <= 100 },
        { metric: '  ingest → display median', value: `${Math.round(b.sinceIngest)} ms` },
        { metric: '  server: ingest → part served p50', value: `${Math.round(b.server)} ms` },
        { metric: '  player: loaded → on screen median', value: `${Math.round(b.player)} ms` },
      ] : []),
      { metric: '  vs nginx-rtmp classic HLS (median)', value: `${fixed(onair.latency.p50 / 1000 / baseline, 2)}x (${baselineText})` },
      { metric: 'OnAir stalls during the window', value: String(onair.samples.stalls), goal: '0', met: onair.samples.stalls === 0 },
      ...sides.slice(1).map(({ parts, side }) => ({
        metric: `${name(parts)}: median / stalls`, value: `${s(side.latency?.p50)} / ${side.samples.stalls}`,
      })),
    ],
  };
}

function summarizeSide(samples: PlaybackSamples, note: string): Side {
  return { samples, latency: summarize(samples.latencies), hlsLatency: summarize(samples.hlsLatencies), note };
}

type BrowserContext = Awaited<ReturnType<typeof launchChromium>>['browser'];

interface Timing {
  joinSec: number;
  warmupSec: number;
  measureSec: number;
}

async function measureOnAir(config: Config, browser: BrowserContext, { joinSec, warmupSec, measureSec }: Timing, signal: AbortSignal,
  holdBackParts: number, publisherMs: number): Promise<Side> {
  const harness = await within('starting an OnAir node', startTestNode({
    ONAIR_HWACCEL: 'none', ONAIR_X264_PRESET: config.x264Preset, ONAIR_WEBRTC_LAYERS: WEBRTC_OFF,
    ONAIR_LLHLS_HOLD_BACK_PARTS: String(holdBackParts),
  }),
    60_000, signal, (late) => late.close());
  const { node } = harness;
  let publisher: BoundedChild | undefined;
  const page = await browser.newPage();
  try {
    const created = await within('creating a stream', api(node, 'POST', '/api/streams', { body: { title: 'bench: hls.js latency' } }), 10_000, signal);
    if (created.status !== 201) throw new BenchError(`POST /api/streams answered ${created.status}`);
    const streamId = String(created.body.id);
    publisher = startPublisher(`${node.rtmpUrl}/${String(created.body.streamKey)}`, joinSec + warmupSec + measureSec, signal);
    await within('the stream to have segments', waitFor('segments', () => node.packager(streamId)?.ready, 30_000), 35_000, signal);
    await sleep(joinSec * 1000, signal);
    let before: HistogramSnapshot | undefined;
    let after: HistogramSnapshot | undefined;
    const samples = await measurePlayback(page, `${node.httpUrl}/watch/${streamId}`, warmupSec, measureSec, signal, {
      start: async () => { before = await partDelaySnapshot(node.httpUrl); },
      end: async () => { after = await partDelaySnapshot(node.httpUrl); },
    });
    const stats = node.transcoder(streamId)?.stats;
    const ladder = stats?.renditions.map((r) => `${r.height}p`).join('/') ?? '?';
    const side = summarizeSide(samples, `libx264 ${config.x264Preset}, ladder ${ladder}, part ${config.partTargetMs} ms, ` +
      `segment ${config.segmentTargetMs} ms, PART-HOLD-BACK ${holdBackParts} parts, WebRTC off; transcoder speed at the end ${stats?.speed ?? 'n/a'}x, restarts ${stats?.restarts ?? 'n/a'}`);
    if (before && after && samples.parts.length > 0) side.budget = budgetOf(samples, histogramWindow(before, after), publisherMs, SOURCE.fps);
    return side;
  } finally {
    publisher?.kill();
    await page.close().catch(() => undefined);
    // The figures are in: a node that closes badly (a long recording still being archived) is said, not fatal.
    await within('closing the OnAir node', harness.close(), 30_000, NO_ABORT)
      .catch((error: unknown) => process.stderr.write(`hlsjs-latency: closing the node: ${error instanceof Error ? error.message : String(error)}\n`));
  }
}

async function measureNginx(browser: BrowserContext, { joinSec, warmupSec, measureSec }: Timing, signal: AbortSignal): Promise<Side> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-nginx-rtmp-'));
  let nginx: RunningNginx | undefined;
  let publisher: BoundedChild | undefined;
  const page = await browser.newPage();
  try {
    // nginx's workers run as an unprivileged user when started as root: they must read the page and write the HLS.
    await chmod(dir, 0o755);
    const www = path.join(dir, 'www');
    const hls = path.join(dir, 'hls');
    await mkdir(path.join(www, 'assets'), { recursive: true });
    await mkdir(hls, { mode: 0o777 });
    await chmod(hls, 0o777);
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
    await copyFile(path.join(root, 'web', 'watch.html'), path.join(www, 'watch.html'));
    await copyFile(path.join(root, 'web', 'watch.js'), path.join(www, 'assets', 'watch.js'));
    await copyFile(path.join(root, 'web', 'common.js'), path.join(www, 'assets', 'common.js'));
    await copyFile(path.join(root, 'web', 'onair.css'), path.join(www, 'assets', 'onair.css'));
    await copyFile(createRequire(import.meta.url).resolve('hls.js/dist/hls.min.js'), path.join(www, 'assets', 'hls.min.js'));

    const [rtmpPort, httpPort] = [await freePort(), await freePort()];
    const totalSec = joinSec + warmupSec + measureSec + 90;
    nginx = await startNginx({
      dir,
      modules: [RTMP_MODULE],
      // One worker: the rtmp module's live streams live in one worker's memory.
      main: 'worker_processes 1;',
      rtmp: `  server {
    listen 127.0.0.1:${rtmpPort};
    chunk_size 4096;
    application live {
      live on;
      record off;
      hls on;
      hls_path ${hls};
      hls_nested on;
      hls_fragment 1s;
      hls_playlist_length 6s;
    }
  }`,
      http: `  types {
    text/html html;
    text/css css;
    text/javascript js;
    application/vnd.apple.mpegurl m3u8;
    video/mp2t ts;
  }
  server {
    listen 127.0.0.1:${httpPort};
    location /watch/ { root ${www}; try_files /watch.html =404; }
    # The page asks what /watch/bench is (a live stream) before it plays /live/bench/index.m3u8.
    location = /api/streams/bench {
      default_type application/json;
      return 200 '{"id":"bench","title":"nginx-rtmp","status":"live"}';
    }
    location /assets/ { root ${www}; }
    location /live/ {
      alias ${hls}/;
      add_header Cache-Control no-cache;
      add_header Access-Control-Allow-Origin *;
    }
  }`,
      ports: [rtmpPort, httpPort],
      timeoutMs: totalSec * 1000,
      signal,
    });
    publisher = startPublisher(`rtmp://127.0.0.1:${rtmpPort}/live/bench`, joinSec + warmupSec + measureSec, signal);
    const playlist = path.join(hls, 'bench', 'index.m3u8');
    await within('nginx\'s first playlist', waitFor('the playlist', () => existsSync(playlist), 30_000), 35_000, signal);
    await sleep(joinSec * 1000, signal);
    const samples = await measurePlayback(page, `http://127.0.0.1:${httpPort}/watch/bench`, warmupSec, measureSec, signal);
    const durations = await fragmentDurations(playlist);
    return summarizeSide(samples, `nginx ${nginxVersion()} + rtmp module, hls_fragment 1s, hls_playlist_length 6s; ` +
      `fragments seen at the end: ${durations}`);
  } finally {
    publisher?.kill();
    await page.close().catch(() => undefined);
    await nginx?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function startPublisher(url: string, mediaSec: number, signal: AbortSignal): BoundedChild {
  // Media enough for start-up, warm-up and the window; killed once measured.
  const durationSec = mediaSec + 75;
  const publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ ...SOURCE, durationSec, output: url, videoFilter: barcodeFilter(SOURCE.fps) }), {
    timeoutMs: (durationSec + 60) * 1000, signal,
  });
  publisher.exited.catch(() => undefined);
  return publisher;
}

async function fragmentDurations(playlist: string): Promise<string> {
  const text = await readFile(playlist, 'utf8').catch(() => '');
  const values = [...text.matchAll(/#EXTINF:([\d.]+)/g)].map((m) => Number(m[1]).toFixed(2));
  const target = /#EXT-X-TARGETDURATION:(\d+)/.exec(text)?.[1];
  return `${values.join(', ') || 'none'} s (TARGETDURATION ${target ?? '?'})`;
}
