import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { waitFor } from './harness.js';

/** Debian's Chromium, headless, with the flags this machine needs (closed network, no GPU, autoplay allowed). */
export async function launchChromium(options: { ignoreHTTPSErrors?: boolean; fakeCamera?: boolean } = {}): Promise<{ browser: BrowserContext; close(): Promise<void> }> {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'onair-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
      // A publisher (WHIP): Chromium's moving test pattern and beep as camera and microphone, with no prompt.
      ...(options.fakeCamera ? ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] : []),
    ],
    timeout: 30_000,
    // A node on a self-signed certificate made by the test.
    ...(options.ignoreHTTPSErrors ? { ignoreHTTPSErrors: true } : {}),
  });
  return {
    browser,
    async close() {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

export type { Browser };

/** Opens the studio (`path`: its query, e.g. `?stream=<id>`) and signs in with the admin token, as a broadcaster does. */
export async function signInStudio(page: import('playwright-core').Page, httpUrl: string, adminToken: string, path = ''): Promise<void> {
  await page.goto(`${httpUrl}/studio${path}`);
  await page.fill('#token', adminToken);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#studio:not(.hidden)', { timeout: 10_000 });
}

/**
 * Runs in the page: counts the `<video>`'s stalls (`waiting` once playback has begun) from now on, in the element's
 * `onairStalls`; a second call leaves the count running. The pages keep no count of their own.
 */
export function countStalls(): number {
  const video = document.querySelector('video') as (HTMLVideoElement & { onairStalls?: number; onairStallLog?: string[] }) | null;
  if (!video) throw new Error('no <video> on the page');
  if (video.onairStalls === undefined) {
    video.onairStalls = 0;
    video.onairStallLog = [];
    video.addEventListener('waiting', () => {
      if (video.currentTime <= 0) return;
      video.onairStalls! += 1;
      const b = video.buffered;
      const ahead = b.length ? b.end(b.length - 1) - video.currentTime : 0;
      const ranges = Array.from({ length: b.length }, (_, i) => `${b.start(i).toFixed(2)}-${b.end(i).toFixed(2)}`).join(' ');
      if (video.onairStallLog!.length < 20) {
        video.onairStallLog!.push(`at ${(performance.now() / 1000).toFixed(2)} s: t ${video.currentTime.toFixed(2)}, ahead ${ahead.toFixed(2)} s, buffered ${ranges}, rate ${video.playbackRate}, readyState ${video.readyState}, height ${video.videoHeight}`);
      }
    });
  }
  return video.onairStalls;
}

/**
 * Keeps every RTCPeerConnection the page's scripts make, for `inboundVideo`: a wrapper installed before the page's
 * own scripts run (on every navigation of this tab), so that the watch page needs no test hook.
 */
export async function recordPeerConnections(page: import('playwright-core').Page): Promise<void> {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    const made: RTCPeerConnection[] = [];
    Object.defineProperty(window, 'onairTestPeerConnections', { value: made });
    window.RTCPeerConnection = class extends Native {
      constructor(...args: ConstructorParameters<typeof RTCPeerConnection>) {
        super(...args);
        made.push(this);
      }
    };
  });
}

/** The `inbound-rtp` video stats of the page's latest RTCPeerConnection (see `recordPeerConnections`), if any. */
export async function inboundVideo(page: import('playwright-core').Page): Promise<Record<string, number> | undefined> {
  return page.evaluate(async () => {
    const made = (window as unknown as { onairTestPeerConnections?: RTCPeerConnection[] }).onairTestPeerConnections ?? [];
    const pc = made[made.length - 1];
    if (!pc) return undefined;
    let video: Record<string, number> | undefined;
    (await pc.getStats()).forEach((r: Record<string, unknown>) => {
      if (r['type'] === 'inbound-rtp' && r['kind'] === 'video') video = r as Record<string, number>;
    });
    return video;
  });
}

/** What the watch page shows: the playhead, the mean brightness of a presented frame, its mode and latency readout. */
export interface VideoSample {
  currentTime: number;
  duration: number;
  brightness: number;
  /** The `<video>`'s `data-mode`: live, offline, ended, replay or vod. */
  mode: string;
  /** Stalls since the first sample of this page (`countStalls`). */
  stalls: number;
  /** What the page saw at each of those stalls (the first 20): playhead, buffer ahead, ranges, rate. */
  stallLog: string[];
  /** The latency readout's unrounded seconds (hls.js's estimate; NaN while it shows none). */
  latency: number;
  /** The latency readout's text. */
  latencyText: string;
}

export async function sampleVideo(page: import('playwright-core').Page): Promise<VideoSample> {
  const stalls = await page.evaluate(countStalls);
  const stallLog = await page.evaluate(() => [...((document.querySelector('video') as { onairStallLog?: string[] } | null)?.onairStallLog ?? [])]);
  const sample = await page.evaluate(async () => {
    const video = document.querySelector('video')!;
    // Sample a frame that has been presented, not whatever the element holds between frames.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      video.requestVideoFrameCallback(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    const canvas = document.createElement('canvas');
    canvas.width = 64;
    canvas.height = 36;
    const context = canvas.getContext('2d')!;
    context.drawImage(video, 0, 0, 64, 36);
    const pixels = context.getImageData(0, 0, 64, 36).data;
    let sum = 0;
    for (let i = 0; i < pixels.length; i += 4) sum += pixels[i]! + pixels[i + 1]! + pixels[i + 2]!;
    const readout = document.getElementById('latency');
    return {
      currentTime: video.currentTime,
      duration: video.duration,
      brightness: sum / (pixels.length / 4) / 3,
      mode: video.dataset['mode'] ?? '',
      latency: Number(readout?.dataset['seconds'] ?? NaN),
      latencyText: readout?.textContent ?? '',
    };
  });
  return { ...sample, stalls, stallLog };
}

/** The watch page's mode (its `<video>`'s `data-mode`): live, offline, ended, replay or vod. */
export const watchMode = (page: import('playwright-core').Page): Promise<string | undefined> =>
  page.evaluate(() => document.querySelector('video')?.dataset['mode']);

/** Where the page's `<video>` is now, in seconds. */
export const playhead = (page: import('playwright-core').Page): Promise<number> => page.evaluate(() => document.querySelector('video')!.currentTime);

/** The page plays: its playhead moves on by `seconds` and a decoded frame is the programme's blue-grey, not black. */
export async function plays(page: import('playwright-core').Page, what: string, seconds = 1): Promise<void> {
  const from = await playhead(page);
  await waitFor(`${what} to play`, async () => (await playhead(page)) > from + seconds, 30_000, 250);
  const frame = await sampleVideo(page);
  assert.ok(frame.brightness > 40, `${what} shows a picture (brightness ${frame.brightness.toFixed(0)})`);
}
