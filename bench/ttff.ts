import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { launchChromium } from '../test/support/browser.js';
import { api, startTestNode, waitFor } from '../test/support/harness.js';
import { tusCreate, tusPatch } from '../test/support/tus.js';
import { BenchError, envInteger, type BenchContext, type Benchmark, type BenchResult } from './support/benchmark.js';
import { sleep } from './support/clock.js';
import { spawnBounded, within, type BoundedChild } from './support/process.js';
import { publisherArgs } from './support/publisher.js';
import { summarize, type Summary } from './support/stats.js';

/*
 * Time to first frame of the watch page (issue #18): from navigation start to the first frame the <video> presents
 * (requestVideoFrameCallback), in headless Chromium on loopback, for each way a viewer plays: live LL-HLS (hls.js),
 * live WebRTC (WHEP) and a replay/upload (VOD HLS). Every navigation is cold: the browser cache is cleared first.
 *
 * Baseline, same run, same page: the page's own `load` event (HTML, scripts, styles): what any page costs before a
 * player can start. The figure a viewer feels is TTFF; the ratio says how much the player adds on top of the page.
 * Also kept per navigation (Resource Timing): when the first playlist (or WHEP answer) and the first media arrived.
 */

const NO_ABORT = new AbortController().signal;

export const benchmark: Benchmark = {
  name: 'ttff',
  title: 'time to first frame of the watch page (navigation → first frame): live LL-HLS, live WebRTC, replay (ms)',
  run,
};

interface Navigation {
  ttff: number;
  load: number;
  playlist: number;
  media: number;
}

interface Mode {
  name: string;
  url: string;
  runs: Navigation[];
}

/** What the page logs once its first frame is shown (watchFirstFrame). */
const FIRST_FRAME = 'onair-bench: first frame';

/**
 * Runs before the page's scripts: the first frame the <video> presents, ms since navigation start, and a console line
 * then. The bench waits for that line rather than asking the page: Playwright's first question to a page compiles its
 * own ~10 ms script on the page's main thread, in the middle of the start being measured (seen in Chromium traces).
 */
function watchFirstFrame(): void {
  const w = window as unknown as { __ttff?: number };
  document.addEventListener('DOMContentLoaded', () => {
    const video = document.querySelector('video');
    video?.requestVideoFrameCallback(() => {
      w.__ttff = performance.now();
      console.debug('onair-bench: first frame');
    });
  });
}

/** In the page, once the first frame is shown: what the navigation cost, ms since its start. */
function navigationFigures(): Navigation {
  const entries = performance.getEntriesByType('resource') as PerformanceResourceTiming[];
  const first = (match: (name: string) => boolean): number => {
    const ends = entries.filter((e) => match(e.name)).map((e) => e.responseEnd);
    return ends.length ? Math.min(...ends) : NaN;
  };
  const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined;
  return {
    ttff: (window as unknown as { __ttff: number }).__ttff,
    load: nav?.loadEventEnd || nav?.domContentLoadedEventEnd || NaN,
    // A media playlist (/live/:id/:rendition/…m3u8, /vod/:id/…/…m3u8), not the multivariant one; or the WHEP answer.
    playlist: first((name) => {
      const pathname = new URL(name).pathname;
      return /^\/(live|vod)\/[^/]+\/.+\.m3u8$/.test(pathname) || pathname.endsWith('/whep');
    }),
    media: first((name) => /\.(mp4|m4s)(\?|$)/.test(name)),
  };
}

async function navigate(page: Page, url: string): Promise<Navigation> {
  const cdp = await page.context().newCDPSession(page);
  try {
    await cdp.send('Network.clearBrowserCache');
  } finally {
    await cdp.detach().catch(() => undefined);
  }
  let shown: () => void = () => undefined;
  const firstFrame = new Promise<void>((resolve) => { shown = resolve; });
  const onConsole = (message: { text(): string }): void => { if (message.text() === FIRST_FRAME) shown(); };
  page.on('console', onConsole);
  try {
    await page.goto(url, { timeout: 30_000, waitUntil: 'commit' });
    await within(`${url}: the first frame`, firstFrame, 30_000, NO_ABORT);
  } finally {
    page.off('console', onConsole);
  }
  // The figures once the page has loaded (its own load event is the baseline).
  await page.waitForLoadState('load', { timeout: 30_000 });
  return page.evaluate(navigationFigures);
}

async function measure(browser: BrowserContext, mode: Mode, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    const page = await browser.newPage();
    try {
      await page.addInitScript(watchFirstFrame);
      mode.runs.push(await navigate(page, mode.url));
    } finally {
      await page.close().catch(() => undefined);
    }
  }
}

async function run({ report, signal }: BenchContext): Promise<BenchResult> {
  const count = envInteger('BENCH_TTFF_RUNS', 7, 1, 50);
  report(`method    ${count} cold navigations per mode (browser cache cleared); TTFF = performance.now() at the first ` +
    'requestVideoFrameCallback; baseline: the page\'s own load event');
  const { node, close } = await within('starting an OnAir node', startTestNode({ ONAIR_HWACCEL: 'none', ONAIR_VOD_CONCURRENCY: '1' }), 60_000, signal, (late) => late.close());
  const chromium = await within('starting Chromium', launchChromium(), 60_000, signal, (late) => late.close());
  let publisher: BoundedChild | undefined;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-bench-ttff-'));
  const modes: Mode[] = [];
  try {
    // The replay: a 20 s upload through the VOD path, ready before the live stream starts (no CPU shared).
    const file = path.join(dir, 'upload.mp4');
    const maker = spawnBounded('making the upload', 'ffmpeg', [
      '-hide_banner', '-nostdin', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '20', '-c:v', 'libx264', '-preset', 'veryfast',
      '-g', '60', '-pix_fmt', 'yuv420p', '-c:a', 'aac', file,
    ], { timeoutMs: 120_000, signal });
    const made = await maker.exited;
    if (made.code !== 0) throw new BenchError(`ffmpeg could not make the upload: ${made.stderrTail}`);
    const data = await readFile(file);
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'ttff.mp4', title: 'bench: ttff' });
    if (!created.url) throw new BenchError(`tus POST answered ${created.status}`);
    await tusPatch(created.url, node.adminToken, data, 0);
    const videoId = created.url.split('/').pop()!;
    await within('the upload to be ready', waitFor('ready', async () => {
      const video = (await api(node, 'GET', `/api/videos/${videoId}`)).body;
      if (video.status === 'failed') throw new BenchError(`the VOD job failed: ${video.error}`);
      return video.status === 'ready';
    }, 300_000, 500), 310_000, signal);

    // The replay alone first: a replay viewer's browser does not share its CPU with the server's live encodes, here
    // it would (one machine); measured again below with the live ladder encoding beside it.
    const replay: Mode = { name: 'replay (VOD HLS)', url: `${node.httpUrl}/watch/${videoId}`, runs: [] };
    modes.push(replay);
    await measure(chromium.browser, replay, count);

    const stream = await api(node, 'POST', '/api/streams', { body: { title: 'bench: ttff' } });
    if (stream.status !== 201) throw new BenchError(`POST /api/streams answered ${stream.status}`);
    const streamId = String(stream.body.id);
    const durationSec = 600;
    publisher = spawnBounded('the publisher', 'ffmpeg', publisherArgs({ width: 1280, height: 720, durationSec, output: `${node.rtmpUrl}/${String(stream.body.streamKey)}` }),
      { timeoutMs: (durationSec + 60) * 1000, signal });
    publisher.exited.catch(() => undefined);
    await within('the stream to have segments', waitFor('segments', () => node.packager(streamId)?.ready, 30_000), 35_000, signal);
    // A full playlist and WebRTC layers flowing, as for a viewer who arrives mid-show.
    await sleep(8_000, signal);

    const beside: Mode[] = [
      { name: 'live LL-HLS', url: `${node.httpUrl}/watch/${streamId}`, runs: [] },
      { name: 'live WebRTC', url: `${node.httpUrl}/watch/${streamId}?mode=webrtc`, runs: [] },
      { name: 'replay, live beside', url: replay.url, runs: [] },
    ];
    for (const mode of beside) {
      modes.push(mode);
      await measure(chromium.browser, mode, count);
    }
  } finally {
    publisher?.kill();
    await chromium.close().catch(() => undefined);
    await within('closing the node', close(), 30_000, NO_ABORT);
    await rm(dir, { recursive: true, force: true });
  }

  const ms = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${Math.round(v)} ms`);
  const of = (mode: Mode, key: keyof Navigation): Summary | undefined => summarize(mode.runs.map((r) => r[key]).filter((v) => Number.isFinite(v)));
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(18) : c.padStart(12))).join('');
  report(row(['', 'TTFF p50', 'TTFF max', 'page load', 'playlist', 'first media', 'TTFF / load']));
  for (const mode of modes) {
    const ttff = of(mode, 'ttff');
    const load = of(mode, 'load');
    report(row([mode.name, ms(ttff?.p50), ms(ttff?.max), ms(load?.p50), ms(of(mode, 'playlist')?.p50), ms(of(mode, 'media')?.p50),
      ttff && load ? `${(ttff.p50 / load.p50).toFixed(1)}x` : 'n/a']));
  }
  report('          playlist: the first media playlist asked for (WHEP: the answer; n/a: on demand the page carries its ' +
    'playlists); first media: the first init, part or segment');
  return {
    rows: modes.map((mode) => {
      const ttff = of(mode, 'ttff');
      const load = of(mode, 'load');
      return {
        metric: `TTFF ${mode.name} median (vs page load)`,
        value: `${ms(ttff?.p50)} (${ttff && load ? (ttff.p50 / load.p50).toFixed(1) : 'n/a'}x of ${ms(load?.p50)})`,
        ...(mode === modes[0] ? { goal: '< 200 ms', met: (ttff?.p50 ?? Infinity) < 200 } : {}),
      };
    }),
  };
}
