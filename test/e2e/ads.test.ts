import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium } from '../support/browser.js';
import { decodeFirstFrame } from '../support/ffprobe.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';
import { tusCreate, tusPatch } from '../support/tus.js';

type Rgb = { r: number; g: number; b: number };

/** The programme is a flat blue-grey (0x336699); the ad is flat red: a decoded frame says which one it is. */
const isAd = (c: Rgb): boolean => c.r > 150 && c.g < 90 && c.b < 90;
const isProgramme = (c: Rgb): boolean => c.b > 120 && c.r < 100;

/** Mean colour of the first frame of an init + media segment, decoded by ffmpeg. */
async function meanColour(init: Buffer, media: Buffer): Promise<Rgb> {
  const rgb = await decodeFirstFrame(Buffer.concat([init, media]), { width: 64, height: 36 }, 'rgb24');
  const sum = { r: 0, g: 0, b: 0 };
  for (let i = 0; i < rgb.length; i += 3) {
    sum.r += rgb[i]!;
    sum.g += rgb[i + 1]!;
    sum.b += rgb[i + 2]!;
  }
  const n = rgb.length / 3;
  return { r: sum.r / n, g: sum.g / n, b: sum.b / n };
}

const codecsOf = (multivariant: string): string[] => [...multivariant.matchAll(/CODECS="([^"]+)"/g)].map((m) => m[1]!);

async function bytes(url: string): Promise<Buffer> {
  const response = await fetch(url);
  assert.equal(response.status, 200, url);
  return Buffer.from(await response.arrayBuffer());
}

describe('ad replacement: a catalog ad plays in every rendition during an ad break', { timeout: 300_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let media: string;
  let adVideoId: string;
  let streamId: string;
  let publisher: ReturnType<typeof publish>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  /** What the watch page reported as fatal playback errors (it logs them to the console). */
  const fatal: string[] = [];
  let breakId: string;
  let liveMaster: string;

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '360,240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_RECONNECT_GRACE_SEC: '0', ONAIR_VOD_CONCURRENCY: '1',
    }));
    // A 5-second red spot with a tone, 4:3 (the live ladder is 16:9: the ad is letterboxed, not stretched).
    media = await mkdtemp(path.join(os.tmpdir(), 'onair-ad-'));
    const file = path.join(media, 'spot.mp4');
    execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'color=c=red:size=480x360:rate=25:duration=5', '-f', 'lavfi', '-i', 'sine=f=660:duration=5',
      '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', '-movflags', '+faststart', file]);
    const data = await readFile(file);
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'spot.mp4', title: 'Red spot' });
    assert.equal(created.status, 201, created.body);
    await tusPatch(created.url!, node.adminToken, data, 0);
    adVideoId = created.url!.split('/').pop()!;
    await waitFor('the spot to be processed', async () => (await api(node, 'GET', `/api/videos/${adVideoId}`)).body.status === 'ready', 90_000, 250);
  });

  after(async () => {
    await chromium?.close();
    publisher?.stop();
    await close?.();
    if (media) await rm(media, { recursive: true, force: true });
  });

  test('the operator marks a catalog video as an ad: admin-only, and public lists leave it out', async () => {
    assert.equal((await api(node, 'PATCH', `/api/videos/${adVideoId}`, { body: { ad: true }, token: null })).status, 401);
    assert.equal((await api(node, 'PATCH', `/api/videos/${adVideoId}`, { body: { ad: 'yes' } })).status, 400);
    const marked = await api(node, 'PATCH', `/api/videos/${adVideoId}`, { body: { ad: true } });
    assert.equal(marked.status, 200, JSON.stringify(marked.body));
    assert.equal(marked.body.ad, true);
    const publicList = (await api(node, 'GET', '/api/videos', { token: null })).body;
    assert.ok(!publicList.videos.some((v: { id: string }) => v.id === adVideoId), 'an ad is not in the public catalog');
    const adminList = (await api(node, 'GET', '/api/videos')).body;
    assert.ok(adminList.videos.some((v: { id: string; ad: boolean }) => v.id === adVideoId && v.ad), 'the admin sees it, marked');
  });

  test('a live stream gets the ad packaged in its own ladder, and a player starts on the programme', async () => {
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Show with ads' } });
    streamId = created.body.id;
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360, videoSource: 'color=c=0x336699' });
    const ads = await waitFor('the ad to be packaged for the stream', async () => {
      const stats = (await api(node, 'GET', `/api/streams/${streamId}`)).body.stats;
      return stats?.ads?.length > 0 ? stats.ads : undefined;
    }, 60_000, 250);
    assert.equal(ads[0].videoId, adVideoId);
    assert.ok(ads[0].durationSec >= 4.5 && ads[0].durationSec <= 5.5, `ad duration ${ads[0].durationSec}`);
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    liveMaster = await (await fetch(`${node.httpUrl}/live/${streamId}/index.m3u8`)).text();

    chromium = await launchChromium();
    page = await chromium.browser.newPage();
    page.on('console', (message) => { if (message.text().includes('fatal playback error')) fatal.push(message.text()); });
    await page.goto(`${node.httpUrl}/watch/${streamId}`);
    await waitFor('hls.js to play', () => page.evaluate(() => document.querySelector('video')!.currentTime > 1), 30_000, 250);
    // The page records what it shows (playhead and mean colour) every 200 ms from now on.
    await page.evaluate(() => {
      const video = document.querySelector('video')!;
      const canvas = document.createElement('canvas');
      canvas.width = 32;
      canvas.height = 18;
      const context = canvas.getContext('2d', { willReadFrequently: true })!;
      const samples: { t: number; r: number; g: number; b: number }[] = [];
      (window as unknown as { samples: typeof samples }).samples = samples;
      setInterval(() => {
        context.drawImage(video, 0, 0, 32, 18);
        const pixels = context.getImageData(0, 0, 32, 18).data;
        let r = 0; let g = 0; let b = 0;
        // The middle of the picture: the letterbox bars of a 4:3 ad are black.
        for (let y = 4; y < 14; y++) {
          for (let x = 10; x < 22; x++) {
            const i = (y * 32 + x) * 4;
            r += pixels[i]!; g += pixels[i + 1]!; b += pixels[i + 2]!;
          }
        }
        samples.push({ t: video.currentTime, r: r / 120, g: g / 120, b: b / 120 });
      }, 200);
    });
    const first = await waitFor('a sample', () => page.evaluate(() => (window as unknown as { samples: Rgb[] }).samples[0]), 5000);
    assert.ok(isProgramme(first), `the programme shows first: ${JSON.stringify(first)}`);
  });

  test('an ad break: its segments in every rendition are the ad\'s, between two DISCONTINUITYs, then the programme again', async () => {
    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'ad', durationSec: 4 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.deepEqual(created.body.ads, [adVideoId]);
    breakId = created.body.id;
    const again = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'ad', durationSec: 4 } });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'ONAIR_ERR_AD_BREAK_RUNNING');

    for (const rendition of ['360p', '240p']) {
      const base = `${node.httpUrl}/live/${streamId}/${rendition}/`;
      const playlist = await waitFor(`${rendition}: the break to end`, async () => {
        const text = await (await fetch(`${base}index.m3u8`)).text();
        // Over, and the programme's first segment after it complete.
        const back = text.indexOf('#EXT-X-CUE-IN');
        return back > 0 && /\n[a-z0-9]+-s\d+\.m4s\n/.test(text.slice(back)) ? text : undefined;
      }, 30_000, 250);
      const lines = playlist.split('\n');
      const out = lines.indexOf('#EXT-X-CUE-OUT:DURATION=4.000');
      const back = lines.indexOf('#EXT-X-CUE-IN');
      assert.ok(out > 0 && back > out, `${rendition}: CUE-OUT then CUE-IN`);
      // Before the break's first segment: DISCONTINUITY, the ad's own init, its date, the DATERANGE, CUE-OUT.
      const before = lines.slice(out - 4, out);
      assert.equal(before[0], '#EXT-X-DISCONTINUITY', `${rendition}: ${before.join(' | ')}`);
      const adMap = /^#EXT-X-MAP:URI="([^"]+-ainit\d+\.mp4)"$/.exec(before[1]!)?.[1];
      assert.ok(adMap, `${rendition}: the ad's EXT-X-MAP: ${before[1]}`);
      assert.match(before[3]!, new RegExp(`^#EXT-X-DATERANGE:ID="${breakId}"`));
      // After it: DISCONTINUITY and the programme's init again, on the boundary CUE-IN marks.
      const after = lines.slice(back - 3, back);
      assert.equal(after[0], '#EXT-X-DISCONTINUITY', `${rendition}: ${after.join(' | ')}`);
      const liveMap = /^#EXT-X-MAP:URI="([^"]+-init\d+\.mp4)"$/.exec(after[1]!)?.[1];
      assert.ok(liveMap, `${rendition}: the programme's EXT-X-MAP: ${after[1]}`);

      const segmentsIn = (from: number, to: number): string[] => lines.slice(from, to).filter((l) => /^[a-z0-9]+-s\d+\.m4s$/.test(l));
      const adSegments = segmentsIn(out, back);
      assert.ok(adSegments.length >= 2, `${rendition}: ${adSegments.length} ad segments`);
      const adInit = await bytes(base + adMap);
      for (const segment of adSegments) {
        const colour = await meanColour(adInit, await bytes(base + segment));
        assert.ok(isAd(colour), `${rendition} ${segment} is the ad: ${JSON.stringify(colour)}`);
      }
      const [firstBack] = segmentsIn(back, lines.length);
      const colour = await meanColour(await bytes(base + liveMap), await bytes(base + firstBack!));
      assert.ok(isProgramme(colour), `${rendition}: the programme is back: ${JSON.stringify(colour)}`);
    }
  });

  test('hls.js keeps playing through both discontinuities: programme, ad, programme', async () => {
    const seen = await waitFor('the player to show the ad and then the programme again', () => page.evaluate(() => {
      const samples = (window as unknown as { samples: { t: number; r: number; g: number; b: number }[] }).samples;
      const ad = samples.findIndex((s) => s.r > 150 && s.g < 90 && s.b < 90);
      if (ad < 0) return undefined;
      const back = samples.findIndex((s, i) => i > ad && s.b > 120 && s.r < 100);
      if (back < 0) return undefined;
      const last = samples[samples.length - 1]!;
      // Still playing after the second discontinuity: the playhead has moved on by a second at least.
      return last.t > samples[back]!.t + 1 ? { adAt: samples[ad]!.t, backAt: samples[back]!.t, lastAt: last.t } : undefined;
    }), 45_000, 250);
    assert.ok(seen.backAt - seen.adAt >= 2, `the ad played for ${(seen.backAt - seen.adAt).toFixed(1)} s of playhead`);
    assert.deepEqual(fatal, []);
  });

  test('unmarking the ad: the stream drops it, and the next break carries the markers alone', async () => {
    const unmarked = await api(node, 'PATCH', `/api/videos/${adVideoId}`, { body: { ad: false } });
    assert.equal(unmarked.body.ad, false);
    await waitFor('the stream to drop the ad', async () => (await api(node, 'GET', `/api/streams/${streamId}`)).body.stats?.ads?.length === 0, 10_000, 100);
    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'ad', durationSec: 2 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.deepEqual(created.body.ads, []);
    const playlist = await (await fetch(`${node.httpUrl}/live/${streamId}/360p/index.m3u8`)).text();
    const lines = playlist.split('\n');
    const out = lines.findIndex((l) => l.startsWith('#EXT-X-DATERANGE') && l.includes(created.body.id));
    assert.ok(out > 0, 'the break is marked');
    assert.ok(!lines.slice(out - 4, out).includes('#EXT-X-DISCONTINUITY'), 'and the programme goes on under the markers');
  });

  test('the replay shows what the audience saw: the ad between two discontinuities', async () => {
    const archived = node.next('archived', 30_000);
    publisher.stop();
    const [{ videoId }] = await archived;
    const playlist = await (await fetch(`${node.httpUrl}/vod/${videoId}/replay/360p/index.m3u8`)).text();
    const maps = [...playlist.matchAll(/#EXT-X-MAP:URI="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(maps, ['init0.mp4', 'init1.mp4', 'init0.mp4'], 'programme, ad, programme');
    assert.equal(playlist.match(/#EXT-X-DISCONTINUITY\n/g)?.length, 2);
    // The replay's renditions are named by the programme's codecs, not the ad's.
    const replayMaster = await (await fetch(`${node.httpUrl}/vod/${videoId}/index.m3u8`)).text();
    assert.deepEqual(codecsOf(replayMaster), codecsOf(liveMaster));
  });
});
