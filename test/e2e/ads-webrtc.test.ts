import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { inboundVideo, launchChromium, recordPeerConnections } from '../support/browser.js';
import { api, captureLog, childrenOf, publish, startTestNode, waitFor } from '../support/harness.js';
import { tusCreate, tusPatch } from '../support/tus.js';
import { whipPublish } from '../support/whip.js';

/** What the page recorded: the mean colour of the shown frame every 100 ms, and when each frame was presented. */
interface Recording {
  samples: { at: number; r: number; g: number; b: number }[];
  frames: number[];
}

/** The ad is flat red; the programme is testsrc2 (moving colour bars, nowhere near a flat red on average). */
const isAd = (c: { r: number; g: number; b: number }): boolean => c.r > 150 && c.g < 90 && c.b < 90;

/** The longest time without a newly presented frame within [from, to] (wall clock, ms). */
function longestFreeze(frames: number[], from: number, to: number): number {
  const inside = frames.filter((t) => t >= from && t <= to);
  let longest = inside.length === 0 ? to - from : Math.max(inside[0]! - from, to - inside[inside.length - 1]!);
  for (let i = 1; i < inside.length; i++) longest = Math.max(longest, inside[i]! - inside[i - 1]!);
  return longest;
}

/** A 6-second red spot with a tone, made now, uploaded and marked as an ad; its video id once it is ready. */
async function uploadRedSpot(node: OnAirNode, dir: string): Promise<string> {
  const file = path.join(dir, 'spot.mp4');
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'color=c=red:size=426x240:rate=25:duration=6', '-f', 'lavfi', '-i', 'sine=f=660:duration=6',
    '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', '-movflags', '+faststart', file]);
  const data = await readFile(file);
  const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'spot.mp4', title: 'Red spot' });
  assert.equal(created.status, 201, created.body);
  await tusPatch(created.url!, node.adminToken, data, 0);
  const videoId = created.url!.split('/').pop()!;
  await waitFor('the spot to be processed', async () => (await api(node, 'GET', `/api/videos/${videoId}`)).body.status === 'ready', 90_000, 250);
  assert.equal((await api(node, 'PATCH', `/api/videos/${videoId}`, { body: { ad: true } })).status, 200);
  return videoId;
}

/**
 * The page records what it shows from now on: the mean colour of the middle of the picture every 100 ms (wall clock,
 * the same machine's as the node's), and the time of every presented frame.
 */
function startRecording(page: Page): Promise<void> {
  return page.evaluate(() => {
    const video = document.querySelector('video')!;
    const canvas = document.createElement('canvas');
    canvas.width = 32;
    canvas.height = 18;
    const context = canvas.getContext('2d', { willReadFrequently: true })!;
    const recording: Recording = { samples: [], frames: [] };
    (window as unknown as { recording: Recording }).recording = recording;
    const onFrame = (): void => {
      recording.frames.push(Date.now());
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    setInterval(() => {
      context.drawImage(video, 0, 0, 32, 18);
      const pixels = context.getImageData(0, 0, 32, 18).data;
      let r = 0; let g = 0; let b = 0;
      for (let y = 4; y < 14; y++) {
        for (let x = 10; x < 22; x++) {
          const i = (y * 32 + x) * 4;
          r += pixels[i]!; g += pixels[i + 1]!; b += pixels[i + 2]!;
        }
      }
      recording.samples.push({ at: Date.now(), r: r / 120, g: g / 120, b: b / 120 });
    }, 100);
  });
}

/**
 * What the viewer saw of a break from `start` to `end` (wall clock, ms): the ad within a second of the start and only
 * the ad until the end, the programme back within 1.5 s of it, and no freeze over 1 s on either switch.
 */
function assertBreakSeen({ samples, frames }: Recording, start: number, end: number): void {
  const ads = samples.filter(isAd);
  assert.ok(ads.length > 0, `the WebRTC viewer saw the ad (${samples.length} samples, none red)`);
  const firstAd = ads[0]!.at;
  const lastAd = ads[ads.length - 1]!.at;
  console.log(`# break ${new Date(start).toISOString()} + ${end - start} ms; the ad shows from ${firstAd - start} ms to ${lastAd - end} ms after its end`);
  assert.ok(firstAd >= start - 200, `the ad shows no earlier than the break (${firstAd - start} ms)`);
  assert.ok(firstAd <= start + 1000, `the ad shows within 1 s of the break's start (${firstAd - start} ms)`);
  // Every sample from a second into the break until its end is the ad.
  const during = samples.filter((s) => s.at >= firstAd && s.at <= end);
  assert.ok(during.every(isAd), `only the ad during the break: ${JSON.stringify(during.filter((s) => !isAd(s)).slice(0, 3))}`);
  assert.ok(lastAd >= end - 300, `the ad shows until the break's end (${lastAd - end} ms)`);
  assert.ok(lastAd <= end + 1500, `the programme is back within 1.5 s of the break's end (${lastAd - end} ms)`);
  assert.ok(samples.filter((s) => s.at > end + 1500).length >= 10 && !samples.some((s) => s.at > end + 1500 && isAd(s)), 'the programme after it');
  const freezeIn = longestFreeze(frames, start - 1000, start + 2000);
  const freezeOut = longestFreeze(frames, end - 1000, end + 2500);
  console.log(`# longest gap between presented frames: ${freezeIn} ms around the start, ${freezeOut} ms around the end`);
  assert.ok(freezeIn <= 1000, `no freeze over 1 s into the ad (${freezeIn} ms)`);
  assert.ok(freezeOut <= 1000, `no freeze over 1 s back to the programme (${freezeOut} ms)`);
}

describe('ads on WebRTC: a real-time viewer sees the ad during an ad break, on the HLS break\'s boundaries', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let media: string;
  let adVideoId: string;
  let streamId: string;
  let publisher: ReturnType<typeof publish>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  const log = captureLog();

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '240', ONAIR_WEBRTC_WORKERS: '1', ONAIR_RECONNECT_GRACE_SEC: '0',
      ONAIR_VOD_CONCURRENCY: '1',
    }, undefined, { logDestination: log.stream }));
    media = await mkdtemp(path.join(os.tmpdir(), 'onair-ad-rtc-'));
    adVideoId = await uploadRedSpot(node, media);
    const stream = await api(node, 'POST', '/api/streams', { body: { title: 'Real-time show with ads' } });
    streamId = stream.body.id;
    publisher = publish(`${node.rtmpUrl}/${stream.body.streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('the ad to be packaged for the stream', async () => (await api(node, 'GET', `/api/streams/${streamId}`)).body.stats?.ads?.length > 0, 60_000, 250);
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    chromium = await launchChromium();
  });

  after(async () => {
    await chromium?.close();
    publisher?.stop();
    await close?.();
    if (media) await rm(media, { recursive: true, force: true });
  });

  const recording = (): Promise<Recording> => page.evaluate(() => (window as unknown as { recording: Recording }).recording);

  test('programme, then the ad within a second of the break\'s start, then the programme again after its end, no freeze', async () => {
    page = await chromium.browser.newPage();
    await recordPeerConnections(page);
    await page.goto(`${node.httpUrl}/watch/${streamId}?mode=webrtc`);
    await waitFor('frames decoded over WebRTC', async () => ((await inboundVideo(page))?.['framesDecoded'] ?? 0) >= 25, 30_000, 250);
    await startRecording(page);
    await waitFor('two seconds of programme', async () => (await recording()).samples.length >= 20, 10_000, 250);
    assert.ok(!(await recording()).samples.some(isAd), 'no ad before the break');

    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'ad', durationSec: 4 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.deepEqual(created.body.ads, [adVideoId]);
    const cue = () => node.packager(streamId)!.cues.find((c) => c.id === created.body.id)!;
    const end = await waitFor('the HLS break to end', () => cue().endDate, 20_000, 100);
    const start = cue().startDate!;
    // Three seconds of programme after the end.
    await waitFor('3 s after the break', () => Date.now() > end + 3000, 10_000, 100);
    const { samples, frames } = await recording();

    assertBreakSeen({ samples, frames }, start, end);
  });

  test('the ad\'s ffmpeg killed mid-break: the viewer is back on the programme within 2 s, a warning with its code', async () => {
    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'ad', durationSec: 6 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const cue = () => node.packager(streamId)!.cues.find((c) => c.id === created.body.id)!;
    await waitFor('the ad on the page', async () => (await recording()).samples.slice(-3).every(isAd), 10_000, 100);
    // The ad's ffmpeg is the node's ffmpeg child with the `realtime` filter (the live one reads FLV on stdin).
    const ad = childrenOf(process.pid).filter((c) => c.comm === 'ffmpeg')
      .find((c) => readFileSync(`/proc/${c.pid}/cmdline`, 'utf8').includes('realtime'));
    assert.ok(ad, 'one ad ffmpeg runs');
    process.kill(ad.pid, 'SIGKILL');
    const killedAt = Date.now();
    const back = await waitFor('the programme again', async () => {
      const samples = (await recording()).samples.filter((s) => s.at > killedAt);
      return samples.length >= 5 && samples.slice(-5).every((s) => !isAd(s)) ? samples.find((s) => !isAd(s))!.at : undefined;
    }, 5000, 100);
    console.log(`# programme back ${back - killedAt} ms after the ad's ffmpeg was killed`);
    assert.ok(back - killedAt <= 2000, `back within 2 s (${back - killedAt} ms)`);
    assert.equal(cue().endDate, undefined, 'the HLS break goes on');
    await waitFor('the warning', () => log.text().includes('ONAIR_ERR_AD_WEBRTC_FEED'), 5000, 100);
    const end = await waitFor('the HLS break to end', () => cue().endDate, 20_000, 100);
    await waitFor('1 s after the break', () => Date.now() > end + 1000, 10_000, 100);
    const { samples, frames } = await recording();
    assert.ok(!samples.some((s) => s.at > back && isAd(s)), 'no ad after the fallback');
    const freeze = longestFreeze(frames, killedAt, end + 1000);
    assert.ok(freeze <= 1500, `the picture moves on (longest gap ${freeze} ms)`);
  });
});

describe('ads on WebRTC for a WHIP publisher: its own media, one layer, switches to the ad and back (#20)', { timeout: 180_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let media: string;
  let streamId: string;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '240', ONAIR_WEBRTC_WORKERS: '1', ONAIR_RECONNECT_GRACE_SEC: '0', ONAIR_VOD_CONCURRENCY: '1',
    }));
    media = await mkdtemp(path.join(os.tmpdir(), 'onair-ad-whip-'));
    await uploadRedSpot(node, media);
    const stream = (await api(node, 'POST', '/api/streams', { body: { title: 'A browser\'s show with ads' } })).body;
    streamId = stream.id;
    chromium = await launchChromium({ fakeCamera: true });
    const publisher = await chromium.browser.newPage();
    await publisher.goto(`${node.httpUrl}/`);
    const published = await whipPublish(publisher, `${node.httpUrl}/live/${streamId}/whip`, { key: stream.streamKey });
    assert.equal(published.status, 201, published.body);
    await waitFor('the ad to be packaged for the stream', async () => (await api(node, 'GET', `/api/streams/${streamId}`)).body.stats?.ads?.length > 0, 60_000, 250);
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 45_000);
  });

  after(async () => {
    await chromium?.close();
    await close?.();
    if (media) await rm(media, { recursive: true, force: true });
  });

  test('the real-time viewer sees the publisher\'s 640x360, then the ad on the break\'s boundaries, then the publisher again', async () => {
    const page = await chromium.browser.newPage();
    await recordPeerConnections(page);
    await page.goto(`${node.httpUrl}/watch/${streamId}?mode=webrtc`);
    await waitFor('frames decoded over WebRTC', async () => ((await inboundVideo(page))?.['framesDecoded'] ?? 0) >= 25, 30_000, 250);
    assert.equal(await page.evaluate(() => document.querySelector('video')!.videoHeight), 360, 'the publisher\'s own picture, not the 240p layer');
    await startRecording(page);
    const recording = (): Promise<Recording> => page.evaluate(() => (window as unknown as { recording: Recording }).recording);
    await waitFor('two seconds of programme', async () => (await recording()).samples.length >= 20, 10_000, 250);
    assert.ok(!(await recording()).samples.some(isAd), 'no ad before the break');
    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'ad', durationSec: 4 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const cue = () => node.packager(streamId)!.cues.find((c) => c.id === created.body.id)!;
    const end = await waitFor('the HLS break to end', () => cue().endDate, 20_000, 100);
    await waitFor('3 s after the break', () => Date.now() > end + 3000, 10_000, 100);
    assertBreakSeen(await recording(), cue().startDate!, end);
    assert.equal(await page.evaluate(() => document.querySelector('video')!.videoHeight), 360, 'the publisher\'s picture again');
  });
});
