import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, plays } from '../support/browser.js';
import { api, startTestNode, waitFor } from '../support/harness.js';
import { makeVideo, tusCreate, tusPatch } from '../support/tus.js';

/** What the page keeps on this device (localStorage `onair.resume`). */
const stored = (page: Page): Promise<Record<string, { t: number; d: number; at: number }>> =>
  page.evaluate(() => JSON.parse(localStorage.getItem('onair.resume') ?? '{}'));
const currentTime = (page: Page): Promise<number> => page.evaluate(() => document.querySelector('video')!.currentTime);

describe('the watch page of a video: it starts without a round trip (#18), and a viewer who comes back is offered to resume (#19)', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  let media: string;
  let videoId: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_VOD_CONCURRENCY: '1' }));
    media = await mkdtemp(path.join(os.tmpdir(), 'onair-resume-'));
    const file = path.join(media, 'talk.mp4');
    makeVideo(file, { seconds: 60, megabytes: 2, width: 640, height: 360, faststart: true });
    const data = await readFile(file);
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'talk.mp4', title: 'A long talk' });
    assert.equal(created.status, 201, created.body);
    await tusPatch(created.url!, node.adminToken, data, 0);
    videoId = created.url!.split('/').pop()!;
    await waitFor('the video to be ready', async () => (await api(node, 'GET', `/api/videos/${videoId}`)).body.status === 'ready', 150_000, 500);
    chromium = await launchChromium();
    page = await chromium.browser.newPage();
  });

  after(async () => {
    await chromium?.close();
    await close?.();
    if (media) await rm(media, { recursive: true, force: true });
  });

  test('the video starts without asking the API first: the page carries its answer, preloads the playlist and shows the poster', async () => {
    const fresh = await chromium.browser.newPage();
    const requested: string[] = [];
    fresh.on('request', (request) => requested.push(new URL(request.url()).pathname));
    try {
      await fresh.goto(`${node.httpUrl}/watch/${videoId}`);
      await plays(fresh, 'the video');
      assert.equal(await fresh.textContent('#title'), 'A long talk');
      const playlist = requested.indexOf(`/vod/${videoId}/index.m3u8`);
      assert.ok(playlist >= 0, `the playlist was loaded: ${requested.join(', ')}`);
      assert.ok(!requested.includes(`/api/videos/${videoId}`), `no round trip to the API before playing: ${requested.join(', ')}`);
      const initiator = await fresh.evaluate((id) => (performance.getEntriesByType('resource') as PerformanceResourceTiming[])
        .find((e) => new URL(e.name).pathname === `/vod/${id}/index.m3u8`)?.initiatorType, videoId);
      assert.equal(initiator, 'link', 'the playlist came from the page\'s preload, while the scripts loaded');
      assert.match(await fresh.$eval('video', (v) => (v as HTMLVideoElement).poster), new RegExp(`/vod/${videoId}/poster\\.jpg$`));
    } finally {
      await fresh.close();
    }
  });

  test('first visit: no offer; the place it stops at is kept on the device', async () => {
    await page.goto(`${node.httpUrl}/watch/${videoId}`);
    await waitFor('playback', async () => (await currentTime(page)) > 1, 30_000, 250);
    assert.equal(await page.isVisible('#resume'), false, 'nothing to resume on a first visit');
    await page.evaluate(() => { const v = document.querySelector('video')!; v.currentTime = 31; });
    await waitFor('playing past 32 s', async () => (await currentTime(page)) > 32, 15_000, 250);
    await page.evaluate(() => document.querySelector('video')!.pause());
    const entry = await waitFor('the place kept', async () => (await stored(page))[videoId], 5000, 100);
    assert.ok(entry.t >= 32 && entry.t < 40, `kept at ${entry.t} s`);
    assert.ok(entry.d >= 59 && entry.d <= 61, `with its duration (${entry.d} s)`);
  });

  test('coming back: the page offers the place; Resume plays from there', async () => {
    const kept = (await stored(page))[videoId]!.t;
    await page.reload();
    await page.waitForSelector('#resume:not(.hidden)', { timeout: 15_000 });
    const shown = await page.textContent('#resume-at');
    assert.equal(shown, `0:${String(kept).padStart(2, '0')}`);
    // Playing the first seconds from 0 while the offer stands does not forget the place.
    await waitFor('a few seconds from the start', async () => (await currentTime(page)) > 6, 15_000, 250);
    await page.evaluate(() => window.dispatchEvent(new Event('pagehide')));
    assert.equal((await stored(page))[videoId]?.t, kept, 'the place is kept while the offer stands');
    await page.click('#resume-play');
    await waitFor('playing from the kept place', async () => (await currentTime(page)) >= kept, 10_000, 100);
    assert.ok((await currentTime(page)) < kept + 5, 'from there, not further');
    assert.equal(await page.isVisible('#resume'), false, 'the offer is gone');
  });

  test('Start over forgets the place; a video watched to its end is forgotten; the device keeps at most 50', async () => {
    await page.evaluate(() => document.querySelector('video')!.pause());
    await page.reload();
    await page.waitForSelector('#resume:not(.hidden)', { timeout: 15_000 });
    await page.click('#resume-restart');
    assert.equal((await stored(page))[videoId], undefined, 'Start over forgets it');
    await page.evaluate(() => { const v = document.querySelector('video')!; v.currentTime = 45; });
    await waitFor('kept again at 45 s and more', async () => {
      await page.evaluate(() => window.dispatchEvent(new Event('pagehide')));
      return ((await stored(page))[videoId]?.t ?? 0) >= 45;
    }, 10_000, 250);
    await page.evaluate(() => { const v = document.querySelector('video')!; v.currentTime = v.duration - 2; });
    await waitFor('the end', () => page.evaluate(() => document.querySelector('video')!.ended), 15_000, 250);
    assert.equal((await stored(page))[videoId], undefined, 'watched to its end: forgotten');

    // 60 other videos on this device already: after this one is kept, 50 remain, the least recent gone.
    await page.evaluate(() => {
      const entries: Record<string, { t: number; d: number; at: number }> = {};
      for (let i = 0; i < 60; i++) entries[`old${i}`] = { t: 100, d: 600, at: 1_000_000 + i };
      localStorage.setItem('onair.resume', JSON.stringify(entries));
      const v = document.querySelector('video')!;
      v.currentTime = 20;
    });
    await waitFor('kept with the others', async () => {
      await page.evaluate(() => window.dispatchEvent(new Event('pagehide')));
      return (await stored(page))[videoId] !== undefined;
    }, 10_000, 250);
    const all = await stored(page);
    assert.equal(Object.keys(all).length, 50);
    assert.equal(all['old0'], undefined, 'the least recently watched is forgotten');
    assert.ok(all['old59'], 'the most recent others stay');
  });
});
