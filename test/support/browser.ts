import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { waitFor } from './harness.js';

/** Debian's Chromium, headless, with the flags this machine needs (closed network, no GPU, autoplay allowed). */
export async function launchChromium(): Promise<{ browser: BrowserContext; close(): Promise<void> }> {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'onair-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
    ],
    timeout: 30_000,
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

/** What the watch page shows: the playhead, the mean brightness of a presented frame, and its `window.onair` state. */
export interface VideoSample {
  currentTime: number;
  duration: number;
  brightness: number;
  mode: string;
  stalls: number;
  /** hls.js's `latency` (NaN without hls.js). */
  latency: number;
  /** The latency readout's text. */
  latencyText: string;
}

export async function sampleVideo(page: import('playwright-core').Page): Promise<VideoSample> {
  return page.evaluate(async () => {
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
    const onair = (window as unknown as { onair: { mode?: string; stalls: number; hls: { latency: number } | null } }).onair;
    return {
      currentTime: video.currentTime,
      duration: video.duration,
      brightness: sum / (pixels.length / 4) / 3,
      mode: onair.mode ?? 'live',
      stalls: onair.stalls,
      latency: onair.hls?.latency ?? NaN,
      latencyText: document.getElementById('latency')?.textContent ?? '',
    };
  });
}

/** Where the page's `<video>` is now, in seconds. */
export const playhead = (page: import('playwright-core').Page): Promise<number> => page.evaluate(() => document.querySelector('video')!.currentTime);

/** The page plays: its playhead moves on by `seconds` and a decoded frame is the programme's blue-grey, not black. */
export async function plays(page: import('playwright-core').Page, what: string, seconds = 1): Promise<void> {
  const from = await playhead(page);
  await waitFor(`${what} to play`, async () => (await playhead(page)) > from + seconds, 30_000, 250);
  const frame = await sampleVideo(page);
  assert.ok(frame.brightness > 40, `${what} shows a picture (brightness ${frame.brightness.toFixed(0)})`);
}
