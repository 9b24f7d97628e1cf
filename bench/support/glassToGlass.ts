import type { Page } from 'playwright-core';
import { BenchError } from './benchmark.js';
import { sleep } from './clock.js';
import { BARCODE } from './publisher.js';

/*
 * The player side of /work/shared/measuring-latency.md: read the barcode of bench/support/publisher.ts from the
 * playing <video> on every requestVideoFrameCallback and subtract it from the page's own Date.now() % 2^20.
 */

export interface PlaybackSamples {
  /** Glass-to-glass latency of each decoded frame in the window, ms. */
  latencies: number[];
  /** hls.js's own `latency` estimate at those frames, s. */
  hlsLatencies: number[];
  /** Frames whose barcode decoded to nonsense (> 60 s) in the window. */
  bad: number;
  /**
   * `waiting` events after playback had started, in the window: those the page logged between the window's start and
   * its end as the page's clock had them (not the page's `waiting` count read afterwards: reading thousands of samples
   * out of the page blocks its main thread, and with half a second buffered that alone can stall the player).
   */
  stalls: number;
  /**
   * Each of them: seconds into the window, what was buffered ahead of the playhead then, the longest wait between two
   * part loads in the 5 s before it (ms), and hls.js's errors, switches and flushes from 5 s before to 1 s after.
   */
  stallsAt: { at: number; afterSec: number; aheadSec: number; partGapMs: number; events: string[] }[];
  /** Media seconds played in the window. */
  played: number;
  /** Height of the rendition on screen at the end. */
  height: number;
  /**
   * Each frame's ingest → display, ms: the page's Date.now() minus the frame's EXT-X-PROGRAM-DATE-TIME (OnAir dates
   * media by when it reached the RTMP ingest), taken from the LL-HLS part the frame's media time falls in (that part's
   * date + the frame's offset in it); paired with `latencies` (NaN where there is no dated part).
   */
  sinceIngest: number[];
  /** Each LL-HLS part hls.js loaded in the window: its media's end as dated (ingest time), when it was loaded, ms. */
  parts: { dateEnd: number; loadedAt: number; durationMs: number }[];
}

interface PageState {
  samples: [number, number, number, number][];
  /** Each `waiting` after playback started: when (Date.now()), and what was buffered ahead then (s). */
  stallLog: [number, number][];
  /** `start`: the part's start on hls.js's media timeline, s (what `currentTime` and a frame's `mediaTime` are on). */
  parts: { dateEnd: number; loadedAt: number; durationMs: number; start: number }[];
  bad: number;
  frames: number;
}

interface HlsLike {
  on(event: string, listener: (event: string, data: { frag: { programDateTime: number | null }; part?: PartLike }) => void): void;
  on(event: string, listener: (event: string, data: Record<string, unknown>) => void): void;
}

/** hls.js events worth seeing next to a stall (bounded log: when, what). */
const STALL_CONTEXT_EVENTS = ['hlsError', 'hlsLevelSwitched', 'hlsBufferFlushing', 'hlsLiveBackBufferReached', 'hlsBackBufferReached'];

interface PartLike {
  start: number;
  fragOffset: number;
  duration: number;
  stats: { loading: { end: number } };
}

/**
 * Runs before the page's scripts: keeps the hls.js instance the page makes (window.__g2gHls) and the load time of
 * every part, without a test hook in the watch page.
 */
function captureHls(events: string[]): void {
  const w = window as unknown as { Hls?: unknown; __g2gHls?: HlsLike; __g2gParts: PageState['parts']; __g2gEvents: [number, string][] };
  w.__g2gParts = [];
  w.__g2gEvents = [];
  let wrapped: unknown;
  Object.defineProperty(window, 'Hls', {
    configurable: true,
    get: () => wrapped,
    set: (Hls: new (config: unknown) => HlsLike) => {
      if (typeof Hls !== 'function') { wrapped = Hls; return; }
      wrapped = class extends Hls {
        constructor(config: unknown) {
          super(config);
          w.__g2gHls = this;
          this.on('hlsFragLoaded', (_event, data) => {
            const part = data.part;
            const date = data.frag.programDateTime;
            if (!part || date === null || w.__g2gParts.length >= 20_000) return;
            w.__g2gParts.push({
              dateEnd: date + (part.fragOffset + part.duration) * 1000,
              loadedAt: performance.timeOrigin + part.stats.loading.end,
              durationMs: part.duration * 1000,
              start: part.start,
            });
          });
          for (const name of events) {
            this.on(name, (_event, data: Record<string, unknown>) => {
              if (w.__g2gEvents.length >= 2000) return;
              const detail = name === 'hlsError' ? `${String(data['details'])}${data['fatal'] ? ' (fatal)' : ''}`
                : name === 'hlsLevelSwitched' ? `level ${String(data['level'])}`
                : name === 'hlsBufferFlushing' ? `${String(data['type'])} ${Number(data['startOffset']).toFixed(1)}–${Number(data['endOffset']).toFixed(1)}`
                : '';
              w.__g2gEvents.push([Date.now(), `${name.slice(3)} ${detail}`.trim()]);
            });
          }
        }
      };
    },
  });
}

type Geometry = typeof BARCODE & { modulo: number; maxMs: number };

/** Runs in the page: samples the centre of each box of the strip, scaled to whatever rendition plays. */
function installDecoder(g: Geometry): void {
  const video = document.querySelector('video');
  if (!video) throw new Error('no <video> on the page');
  const width = g.sourceWidth / 2;
  const height = g.stripHeight / 2;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d', { willReadFrequently: true })!;
  const w = window as unknown as { __g2g: PageState; __g2gHls?: HlsLike; __g2gParts?: PageState['parts'] };
  const state: PageState = { samples: [], stallLog: [], parts: w.__g2gParts ?? [], bad: 0, frames: 0 };
  w.__g2g = state;
  video.addEventListener('waiting', () => {
    if (video.currentTime <= 0 || state.stallLog.length >= 100) return;
    const ahead = video.buffered.length ? video.buffered.end(video.buffered.length - 1) - video.currentTime : 0;
    state.stallLog.push([Date.now(), ahead]);
  });
  const y = Math.round(((g.top + g.height / 2) * height) / g.stripHeight);
  const xs = Array.from({ length: g.bits }, (_, k) => Math.round(((g.left + k * g.pitch + g.width / 2) * width) / g.sourceWidth));
  const onFrame = (_now: number, frame: { mediaTime: number }): void => {
    const now = Date.now();
    // The frame's date: that of the part its media time falls in, plus its offset in the part. (hls.js's playingDate
    // read ~460 ms late here: it dates from the fragment it considers playing, whose start is not the parts'.)
    let sinceIngest = NaN;
    for (let i = state.parts.length - 1; i >= 0 && i >= state.parts.length - 200; i--) {
      const p = state.parts[i]!;
      const offset = frame.mediaTime - p.start;
      if (offset >= 0 && offset < p.durationMs / 1000) {
        sinceIngest = now - (p.dateEnd - p.durationMs + offset * 1000);
        break;
      }
    }
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (vw > 0 && vh > 0) {
      // The strip only, scaled to half the source size: box centres land on whole pixels for every rendition.
      context.drawImage(video, 0, 0, vw, (vh * g.stripHeight) / g.sourceHeight, 0, 0, width, height);
      const pixels = context.getImageData(0, 0, width, height).data;
      let value = 0;
      xs.forEach((x, k) => {
        let sum = 0;
        for (let dy = -1; dy <= 1; dy += 1) {
          for (let dx = -1; dx <= 1; dx += 1) {
            const i = ((y + dy) * width + (x + dx)) * 4;
            sum += pixels[i]! + pixels[i + 1]! + pixels[i + 2]!;
          }
        }
        if (sum / 27 > 128) value += 2 ** k;
      });
      const latency = (((now % g.modulo) - value) % g.modulo + g.modulo) % g.modulo;
      // hls.js's estimate as the page's latency readout holds it (refreshed every 250 ms).
      const hlsLatency = Number(document.getElementById('latency')?.dataset['seconds'] ?? NaN);
      state.frames += 1;
      if (latency > g.maxMs) state.bad += 1;
      else state.samples.push([now, latency, hlsLatency, sinceIngest]);
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

/**
 * Opens `url` (the watch page: hls.js or WebRTC playing into its <video>), waits for playback, lets it settle
 * `warmupSec`, then keeps the samples of the next `measureSec`.
 */
export async function measurePlayback(page: Page, url: string, warmupSec: number, measureSec: number, signal: AbortSignal,
  window?: { start?: () => Promise<void>; end?: () => Promise<void> }): Promise<PlaybackSamples> {
  // The budget's hooks (hls.js's part loads and dates) only where they are asked for: OnAir's page.
  if (window) await page.addInitScript(captureHls, STALL_CONTEXT_EVENTS);
  await page.goto(url, { timeout: 30_000 });
  try {
    await page.waitForFunction(() => {
      const video = document.querySelector('video');
      return video !== null && video.currentTime > 0.5 && video.videoWidth > 0;
    }, undefined, { timeout: 60_000, polling: 250 });
  } catch {
    throw new BenchError(`${url}: playback did not start within 60 s`);
  }
  await page.evaluate(installDecoder, { ...BARCODE, modulo: 2 ** BARCODE.bits, maxMs: 60_000 });
  await sleep(warmupSec * 1000, signal);
  const start = await page.evaluate(() => ({
    now: Date.now(),
    time: document.querySelector('video')!.currentTime,
    bad: (window as unknown as { __g2g: PageState }).__g2g.bad,
  }));
  await window?.start?.();
  await sleep(measureSec * 1000, signal);
  await window?.end?.();
  const end = await page.evaluate(() => {
    const state = (window as unknown as { __g2g: PageState }).__g2g;
    const video = document.querySelector('video')!;
    return {
      now: Date.now(),
      samples: state.samples,
      stallLog: state.stallLog,
      parts: state.parts,
      events: (window as unknown as { __g2gEvents?: [number, string][] }).__g2gEvents ?? [],
      bad: state.bad,
      time: video.currentTime,
      height: video.videoHeight,
    };
  });
  const kept = end.samples.filter(([at]) => at >= start.now);
  const inWindow = end.stallLog.filter(([at]) => at >= start.now && at <= end.now);
  return {
    latencies: kept.map(([, latency]) => latency),
    hlsLatencies: kept.map(([, , hls]) => hls).filter((v) => Number.isFinite(v)),
    sinceIngest: kept.map(([, , , since]) => since),
    parts: end.parts.filter((p) => p.loadedAt >= start.now),
    bad: end.bad - start.bad,
    stalls: inWindow.length,
    stallsAt: inWindow.map(([at, ahead]) => ({
      at,
      afterSec: (at - start.now) / 1000,
      aheadSec: ahead,
      partGapMs: longestGap(end.parts.map((p) => p.loadedAt).filter((t) => t >= at - 5000 && t <= at)),
      events: end.events.filter(([t]) => t >= at - 5000 && t <= at + 1000).map(([t, what]) => `${((t - at) / 1000).toFixed(2)} s ${what}`),
    })),
    played: end.time - start.time,
    height: end.height,
  };
}

/** The longest interval between consecutive times (ms), 0 for fewer than two. */
function longestGap(times: number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < sorted.length; i++) gap = Math.max(gap, sorted[i]! - sorted[i - 1]!);
  return gap;
}
