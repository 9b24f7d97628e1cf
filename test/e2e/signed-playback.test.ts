import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { playbackTokenExpiry, signPlaybackToken, verifyPlaybackToken } from '../../lib/signing.js';
import type { OnAirNode } from '../../server/node.js';
import { inboundVideo, launchChromium, plays, playhead, recordPeerConnections, sampleVideo, watchMode } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

const SIGNING_KEY = 'signed-playback-test-key-0123456789';

const tokenOf = (url: string): string => new URL(url, 'http://x').searchParams.get('token') ?? '';

async function refused(url: string, init?: RequestInit): Promise<string | undefined> {
  const response = await fetch(url, init);
  const text = await response.text();
  assert.equal(response.status, 403, `${new URL(url).pathname}: ${text}`);
  return (JSON.parse(text) as { error?: { code?: string } }).error?.code;
}

/** ffmpeg as a classic player reads every fragment of a playlist or manifest; what it says about HTTP errors. */
function readThrough(url: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('ffmpeg', ['-hide_banner', '-nostdin', '-v', 'warning', '-i', url, '-map', '0', '-c', 'copy', '-f', 'null', '-'], { timeout: 30_000 },
      (error, _stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stderr }));
  });
}

describe('a playback token carried over to what it leads to', () => {
  test('keeps the expiry of a valid token for the same id, and is nothing for another id, an expired or a forged token', () => {
    const now = 1_800_000_000;
    const token = signPlaybackToken(SIGNING_KEY, 'stream000001', now + 60);
    assert.equal(playbackTokenExpiry(SIGNING_KEY, 'stream000001', token, now), now + 60);
    assert.equal(playbackTokenExpiry(SIGNING_KEY, 'stream000002', token, now), undefined);
    assert.equal(playbackTokenExpiry(SIGNING_KEY, 'stream000001', token, now + 61), undefined);
    assert.equal(playbackTokenExpiry('another-key', 'stream000001', token, now), undefined);
    assert.equal(playbackTokenExpiry(SIGNING_KEY, 'stream000001', [token], now), undefined);
    assert.equal(playbackTokenExpiry(SIGNING_KEY, 'stream000001', `${now + 3600}.${token.split('.')[1]}`, now), undefined);
  });
});

describe('signed playback end to end: with ONAIR_PLAYBACK_SIGNING_KEY the studio\'s watch link plays live, WebRTC and the replay', { timeout: 150_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let publisher: ReturnType<typeof publish> | undefined;
  let page: Page;
  let streamId: string;
  let otherId: string;
  let otherToken: string;
  let watchLink: string;
  let videoId: string;
  let replayHls: string;
  /** Every answer of 400 and above the watch page got (path and status; never the query, which holds the token). */
  const failures: string[] = [];

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_PLAYBACK_SIGNING_KEY: SIGNING_KEY, ONAIR_LADDER: '360', ONAIR_WEBRTC_LAYERS: '360', ONAIR_WEBRTC_WORKERS: '1', ONAIR_VOD_CONCURRENCY: '1',
    }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Members only' } });
    streamId = created.body.id;
    const other = await api(node, 'POST', '/api/streams', { body: { title: 'Another show' } });
    otherId = other.body.id;
    otherToken = tokenOf(other.body.playback.hls);
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360, videoSource: 'color=c=0x336699' });
    chromium = await launchChromium();
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
  });

  after(async () => {
    publisher?.stop();
    await chromium?.close();
    await close?.();
  });

  test('the studio hands out a watch link with a token for the stream', async () => {
    const studio = await chromium.browser.newPage();
    await studio.goto(`${node.httpUrl}/studio?stream=${streamId}`);
    await studio.fill('#token', node.adminToken);
    await studio.press('#token', 'Enter');
    const link = await studio.waitForSelector('#watch-link[href*="token="]', { timeout: 10_000 });
    watchLink = new URL((await link.getAttribute('href'))!, node.httpUrl).href;
    await studio.close();
    assert.equal(new URL(watchLink).pathname, `/watch/${streamId}`);
    assert.ok(verifyPlaybackToken(SIGNING_KEY, streamId, tokenOf(watchLink)), 'the link\'s token is valid for the stream');
  });

  test('the signed watch link plays the live stream over LL-HLS and, switched to real time, over WebRTC', async () => {
    page = await chromium.browser.newPage();
    await recordPeerConnections(page);
    page.on('response', (response) => {
      if (response.status() >= 400) failures.push(`${response.status()} ${new URL(response.url()).pathname}`);
    });
    await page.goto(watchLink);
    await plays(page, 'the live stream');
    assert.equal(await page.textContent('#badge'), 'Live');
    await page.waitForSelector('#chat[data-joined-as]', { timeout: 10_000 });
    await page.fill('#comment', 'signed hello');
    await page.press('#comment', 'Enter');
    await page.waitForSelector('#comments li:has-text("signed hello")', { timeout: 10_000 });

    await page.click('#realtime');
    await page.waitForURL(/mode=webrtc/, { timeout: 10_000 });
    assert.equal(tokenOf(page.url()), tokenOf(watchLink), 'the switch keeps the token');
    await waitFor('30 frames decoded over WebRTC', async () => ((await inboundVideo(page))?.['framesDecoded'] ?? 0) >= 30, 30_000, 250);
    await page.click('#realtime');
    await page.waitForURL((url) => !url.search.includes('mode=webrtc'), { timeout: 10_000 });
    await plays(page, 'the live stream back on LL-HLS');
    assert.deepEqual(failures, []);
  });

  test('without a token, or with another stream\'s, live playlists and WHEP are 403 ONAIR_ERR_PLAYBACK_FORBIDDEN', async () => {
    const whep = { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0\r\n' };
    for (const query of ['', `?token=${otherToken}`]) {
      assert.equal(await refused(`${node.httpUrl}/live/${streamId}/index.m3u8${query}`), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
      assert.equal(await refused(`${node.httpUrl}/live/${streamId}/360p/index.m3u8${query}`), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
      assert.equal(await refused(`${node.httpUrl}/live/${streamId}/whep${query}`, whep), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
    }
    // A viewer without a token is told so, once, instead of a player that retries for ever.
    const stranger = await chromium.browser.newPage();
    await stranger.goto(`${node.httpUrl}/watch/${streamId}`);
    await stranger.waitForSelector('#state:has-text("needs a valid playback token")', { timeout: 10_000 });
    await stranger.close();
    // And the other way round: this stream's token opens no other stream.
    const mine = `?token=${encodeURIComponent(tokenOf(watchLink))}`;
    assert.equal(await refused(`${node.httpUrl}/live/${otherId}/index.m3u8${mine}`), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
    assert.equal(await refused(`${node.httpUrl}/live/${otherId}/whep${mine}`, whep), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
  });

  test('the event ends: the same page moves to the replay and plays it with its chat, and nothing was refused', async () => {
    const archived = node.next('archived', 30_000);
    assert.equal((await api(node, 'POST', `/api/streams/${streamId}/end`)).status, 202);
    [{ videoId }] = await archived;
    await waitFor('the page to switch to the replay', async () => (await watchMode(page)) === 'replay', 30_000, 250);
    await plays(page, 'the replay').catch((error: Error) => { throw new Error(`${error.message}; refused: ${failures.join(', ')}`); });
    await page.waitForSelector('#comments[data-total]:not([data-total="0"])', { timeout: 10_000 });
    assert.equal(await page.textContent('#chat-title'), 'Chat replay');
    // The live playlists may answer 404/410 as the event ends; the player then moves on. Nothing else may fail.
    assert.deepEqual(failures.filter((f) => !/^(404|410) \/live\//.test(f)), []);
    await page.close();
  });

  test('a stream\'s token opens its replay only: the view signs the replay for its video, with the same expiry', async () => {
    const viewer = await api(node, 'GET', `/api/streams/${streamId}?token=${encodeURIComponent(tokenOf(watchLink))}`, { token: null });
    assert.equal(viewer.body.replay.videoId, videoId);
    replayHls = viewer.body.replay.hls;
    const token = tokenOf(replayHls);
    assert.ok(verifyPlaybackToken(SIGNING_KEY, videoId, token), 'the replay URL carries a token for the replay');
    assert.equal(token.split('.')[0], tokenOf(watchLink).split('.')[0], 'it expires with the token presented, never later');
    // A token for another stream, or none: the replay URL carries nothing.
    for (const query of ['', `?token=${encodeURIComponent(otherToken)}`]) {
      const stranger = await api(node, 'GET', `/api/streams/${streamId}${query}`, { token: null });
      assert.equal(tokenOf(stranger.body.replay.hls), '', JSON.stringify(stranger.body.replay));
    }
    const list = await api(node, 'GET', '/api/streams', { token: null });
    assert.ok(!JSON.stringify(list.body).includes('token='), 'the public list carries no token');
    const catalog = await api(node, 'GET', '/api/videos', { token: null });
    assert.ok(!JSON.stringify(catalog.body).includes('token='), 'the catalog carries no token');
  });

  test('the archive plays over HLS and DASH with the replay\'s token; without it, or with a stream\'s token, 403', async () => {
    await waitFor('the archive to be ready', async () => {
      const body = (await api(node, 'GET', `/api/videos/${videoId}`)).body;
      assert.notEqual(body.status, 'failed', body.error);
      return body.status === 'ready';
    }, 60_000, 500);
    const token = tokenOf(replayHls);
    const video = (await api(node, 'GET', `/api/videos/${videoId}?token=${encodeURIComponent(token)}`, { token: null })).body;
    assert.equal(tokenOf(video.playback.hls), token);
    assert.equal(tokenOf(video.playback.dash), token);
    for (const url of [video.playback.hls, video.playback.dash]) {
      const { code, stderr } = await readThrough(url);
      assert.equal(code, 0, stderr);
      assert.doesNotMatch(stderr, /HTTP error|403|Forbidden/i, `${new URL(url).pathname} reads through`);
    }
    const mpd = await (await fetch(video.playback.dash)).text();
    const templates = [...mpd.matchAll(/(?:initialization|media)="([^"]+)"/g)].map((m) => m[1]!);
    assert.ok(templates.length >= 2 && templates.every((t) => t.endsWith(`?token=${token}`)), templates.join(' '));

    const base = `${node.httpUrl}/vod/${videoId}`;
    for (const query of ['', `?token=${encodeURIComponent(otherToken)}`, `?token=${encodeURIComponent(tokenOf(watchLink))}`]) {
      assert.equal(await refused(`${base}/index.m3u8${query}`), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
      assert.equal(await refused(`${base}/manifest.mpd${query}`), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
      const view = (await api(node, 'GET', `/api/videos/${videoId}${query}`, { token: null })).body;
      assert.ok(!JSON.stringify(view).includes('token='), 'a view asked without the video\'s token carries none');
    }
  });

  test('the replay\'s watch page carries its playlists for the replay\'s token only, and plays from them', async () => {
    const token = encodeURIComponent(tokenOf(replayHls));
    const carries = async (query: string): Promise<boolean> =>
      (await (await fetch(`${node.httpUrl}/watch/${videoId}${query}`)).text()).includes('id="onair-playlists"');
    assert.equal(await carries(''), false, 'no token: the page carries no playlist');
    assert.equal(await carries(`?token=${encodeURIComponent(otherToken)}`), false, 'another stream\'s token: none either');
    assert.equal(await carries(`?token=${token}`), true, 'the replay\'s token: its playlists');
    const viewer = await chromium.browser.newPage();
    const refusedHere: string[] = [];
    const multivariant: string[] = [];
    viewer.on('response', (response) => {
      const { pathname } = new URL(response.url());
      if (response.status() >= 400) refusedHere.push(`${response.status()} ${pathname}`);
      if (pathname.endsWith('/index.m3u8')) multivariant.push(pathname);
    });
    try {
      await viewer.goto(`${node.httpUrl}/watch/${videoId}?token=${token}`);
      await plays(viewer, 'the replay, from the playlists its page carries');
      assert.deepEqual(refusedHere, [], 'every URI the carried playlists list has the token');
      assert.deepEqual(multivariant, [], 'the multivariant playlist came with the page');
    } finally {
      await viewer.close();
    }
  });
});
