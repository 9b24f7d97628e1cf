import os from 'node:os';
import type { Page } from 'playwright-core';
import { loadConfig } from '../server/config.js';
import { launchChromium } from '../test/support/browser.js';
import { api, startTestNode, waitFor } from '../test/support/harness.js';
import { whipPublish, whipState } from '../test/support/whip.js';
import { BenchError, envInteger, fixed, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { measurePlayback, type PlaybackSamples } from './support/glassToGlass.js';
import { spawnBounded, within } from './support/process.js';
import { barcodeFilter, BARCODE, publisherArgs } from './support/publisher.js';
import { ratioText, summarize, type Summary } from './support/stats.js';

/*
 * Glass-to-glass latency into WebRTC viewers from a WHIP publisher (issue #20), beside the same from an RTMP publisher
 * (the baseline), same node, same run, one publisher at a time; method of /work/shared/measuring-latency.md.
 *
 * - RTMP: the barcode ffmpeg of the other latency benchmarks (x264 ultrafast zerolatency, 2 s GOP, -re), 640x360 30 fps
 *   (the barcode drawn at 1280x720 geometry and scaled: a 2-core machine holds that in real time beside the ladder).
 * - WHIP: a Chromium page drawing the same barcode (Date.now() at each draw) on a 640x360 canvas 30 times a second,
 *   captureStream → RTCPeerConnection (H.264, Chromium's software encoder) → POST /live/:id/whip: WebRTC viewers get
 *   the publisher's own H.264 (ONAIR_WHIP_PASSTHROUGH, the default), the bridge copies it into the ladder's input.
 * - Viewer: the watch page in real-time mode (WHEP) in the same Chromium, for each: the ladder's WebRTC layers for
 *   RTMP, the publisher's own layer for WHIP.
 */

const FPS = 30;
const WIDTH = 640;
const HEIGHT = 360;
const LADDER = '360';
/** Issue #20's goal for WHIP → WHEP on loopback. */
const GOAL_MS = 200;

export const benchmark: Benchmark = {
  name: 'whip-latency',
  title: 'glass-to-glass latency into WebRTC viewers: WHIP publisher (Chromium) vs RTMP publisher (ffmpeg) (ms)',
  run,
};

interface Side {
  samples: PlaybackSamples;
  latency: Summary | undefined;
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const measureSec = envInteger('BENCH_WHIP_LATENCY_SECONDS', 20, 3, 600);
  const warmupSec = envInteger('BENCH_WHIP_LATENCY_WARMUP_SECONDS', 10, 2, 120);
  const config = loadConfig({ ONAIR_LADDER: LADDER });
  report(`publishers ${WIDTH}x${HEIGHT} ${FPS} fps with the 20-bit wall-clock barcode: RTMP = ffmpeg x264 ultrafast zerolatency 1500k -re; ` +
    'WHIP = a headless Chromium canvas (captureStream) encoded by Chromium\'s H.264 (maintain-resolution)');
  report(`node       libx264 ${config.x264Preset}, HLS ladder ${LADDER}, WebRTC layers ${config.webrtcLayers.join(',')}, ` +
    `${os.availableParallelism()} viewer workers; WHEP viewers of a WHIP publish get its own H.264 (no re-encode; the bridge copies it into the same ladder)`);
  report(`viewer     the watch page ?mode=webrtc (WHEP) in the same Chromium; ${warmupSec} s warm-up after playback starts, then ${measureSec} s`);

  const harness = await within('starting an OnAir node', startTestNode({ ONAIR_X264_PRESET: config.x264Preset, ONAIR_LADDER: LADDER }), 60_000, signal,
    (late) => late.close());
  const { node } = harness;
  let chromium: Awaited<ReturnType<typeof launchChromium>> | undefined;
  let rtmp: Side;
  let whip: Side;
  let encoder = '';
  try {
    if (!node.edge) throw new BenchError('the node has no WebRTC edge (mediasoup did not start: see `npm run setup`)');
    chromium = await within('starting Chromium', launchChromium(), 60_000, signal, (late) => late.close());
    const browser = chromium.browser;
    const stream = async (title: string): Promise<{ id: string; key: string }> => {
      const created = await within('creating a stream', api(node, 'POST', '/api/streams', { body: { title } }), 10_000, signal);
      if (created.status !== 201) throw new BenchError(`POST /api/streams answered ${created.status}`);
      return { id: String(created.body.id), key: String(created.body.streamKey) };
    };
    const onAir = async (id: string): Promise<void> => {
      await within('the stream to have segments', waitFor('segments', () => node.packager(id)?.ready, 45_000), 50_000, signal);
      await within('the WebRTC producers', waitFor('producers', () => node.edge?.hasStream(id), 10_000), 15_000, signal);
    };
    const measure = async (id: string): Promise<Side> => {
      const page = await browser.newPage();
      try {
        const samples = await measurePlayback(page, `${node.httpUrl}/watch/${id}?mode=webrtc`, warmupSec, measureSec, signal);
        return { samples, latency: summarize(samples.latencies) };
      } finally {
        await page.close().catch(() => undefined);
      }
    };

    // The baseline: RTMP.
    const a = await stream('bench: RTMP → WHEP');
    const filter = `scale=${BARCODE.sourceWidth}:${BARCODE.sourceHeight}:flags=fast_bilinear,${barcodeFilter(FPS)},scale=${WIDTH}:${HEIGHT}:flags=area`;
    const mediaSec = warmupSec + measureSec + 60;
    const publisher = spawnBounded('the RTMP publisher', 'ffmpeg', publisherArgs({
      width: WIDTH, height: HEIGHT, fps: FPS, videoKbps: 1500, durationSec: mediaSec, output: `${node.rtmpUrl}/${a.key}`, videoFilter: filter,
    }), { timeoutMs: (mediaSec + 60) * 1000, signal });
    try {
      await onAir(a.id);
      rtmp = await measure(a.id);
    } finally {
      publisher.kill();
    }
    await api(node, 'POST', `/api/streams/${a.id}/end`);

    // WHIP.
    const b = await stream('bench: WHIP → WHEP');
    const publisherPage: Page = await browser.newPage();
    await publisherPage.goto(`${node.httpUrl}/`);
    const published = await whipPublish(publisherPage, `${node.httpUrl}/live/${b.id}/whip`, {
      key: b.key, audio: false, barcode: { width: WIDTH, height: HEIGHT, fps: FPS, geometry: BARCODE },
    });
    if (published.status !== 201) throw new BenchError(`the WHIP POST answered ${published.status}: ${published.body}`);
    await onAir(b.id);
    whip = await measure(b.id);
    const out = (await whipState(publisherPage)).outbound;
    encoder = `${String(out['frameWidth'] ?? '?')}x${String(out['frameHeight'] ?? '?')} at ` +
      `${String(out['framesPerSecond'] ?? '?')} fps, limited by ${String(out['qualityLimitationReason'] ?? '?')}`;
  } finally {
    await chromium?.close().catch(() => undefined);
    await within('closing the OnAir node', harness.close(), 30_000, new AbortController().signal);
  }

  const ms = (v: number | undefined): string => (v === undefined ? 'n/a' : `${fixed(v, 0)} ms`);
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(22) : c.padStart(10))).join('');
  report(row(['', 'median', 'p90', 'frames', 'bad', 'stalls']));
  const sideRow = (name: string, side: Side): string => row([name, ms(side.latency?.p50), ms(side.latency?.p90),
    String(side.samples.latencies.length), String(side.samples.bad), String(side.samples.stalls)]);
  report(sideRow('RTMP → WHEP', rtmp));
  report(sideRow('WHIP → WHEP', whip));
  report(row(['WHIP / RTMP', ratioText(whip.latency?.p50, rtmp.latency?.p50), ratioText(whip.latency?.p90, rtmp.latency?.p90)]));
  report(`WHIP encoder (Chromium's outbound-rtp at the end): ${encoder}`);
  if (!whip.latency) throw new BenchError('no WHIP → WHEP frame could be decoded');
  return {
    rows: [
      { metric: 'WHIP → WHEP glass-to-glass median', value: ms(whip.latency.p50), goal: `≤ ${GOAL_MS} ms`, met: whip.latency.p50 <= GOAL_MS },
      { metric: 'RTMP → WHEP glass-to-glass median (same run)', value: ms(rtmp.latency?.p50) },
      { metric: 'WHIP / RTMP (median)', value: ratioText(whip.latency.p50, rtmp.latency?.p50) },
    ],
  };
}
