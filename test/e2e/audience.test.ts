import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, plays } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

interface Audience {
  current: number;
  peak: number;
  total: number;
  byProtocol: { llhls: number; webrtc: number };
}

describe('the audience: every viewer counted, whatever the protocol (issue #19)', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let publisher: ReturnType<typeof publish>;
  let reader: ChildProcess | undefined;
  let streamId: string;
  const pages: Page[] = [];

  const audience = async (): Promise<Audience | undefined> => (await api(node, 'GET', `/api/streams/${streamId}`)).body.stats?.audience;
  /** Waits until the stream's audience is `expected` (current and by protocol), naming the last seen on failure. */
  const untilAudience = async (what: string, expected: { current: number; llhls: number; webrtc: number }, timeoutMs: number): Promise<Audience> => {
    let last: Audience | undefined;
    return waitFor(what, async () => {
      last = await audience();
      return last?.current === expected.current && last.byProtocol.llhls === expected.llhls && last.byProtocol.webrtc === expected.webrtc
        ? last : undefined;
    }, timeoutMs, 500).catch((error: Error) => { throw new Error(`${error.message}; last seen ${JSON.stringify(last)}`); });
  };
  const open = async (url: string): Promise<Page> => {
    const page = await chromium.browser.newPage();
    pages.push(page);
    await page.goto(url);
    return page;
  };

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360', ONAIR_WEBRTC_LAYERS: '360', ONAIR_WEBRTC_WORKERS: '1', ONAIR_RECONNECT_GRACE_SEC: '0' }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Counted' } });
    streamId = created.body.id;
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    chromium = await launchChromium();
  });

  after(async () => {
    reader?.kill('SIGKILL');
    publisher?.stop();
    await chromium?.close();
    await close?.();
  });

  test('two hls.js pages, a WebRTC page and ffmpeg reading the playlist are 4 viewers; the watch page shows the count', async () => {
    assert.deepEqual(await audience(), { current: 0, peak: 0, total: 0, byProtocol: { llhls: 0, webrtc: 0 } });
    const first = await open(`${node.httpUrl}/watch/${streamId}`);
    await plays(first, 'the first hls.js page');
    await plays(await open(`${node.httpUrl}/watch/${streamId}`), 'the second hls.js page');
    await open(`${node.httpUrl}/watch/${streamId}?mode=webrtc`);
    // A player that sends no session id (ffmpeg's HLS demuxer, like VLC or ffplay): told apart by address and agent.
    reader = spawn('ffmpeg', ['-v', 'error', '-nostdin', '-i', `${node.httpUrl}/live/${streamId}/index.m3u8`, '-t', '120', '-f', 'null', '-'], { stdio: 'ignore' });
    const counted = await untilAudience('4 viewers: 3 LL-HLS, 1 WebRTC', { current: 4, llhls: 3, webrtc: 1 }, 40_000);
    assert.equal(counted.peak, 4);
    assert.equal(counted.total, 4, 'each viewer once, however many playlists it asked for');
    await waitFor('the watch page to show 4 watching', async () => (await first.textContent('#watching-count')) === '4' && await first.isVisible('#watching'), 10_000, 250);
  });

  test('a viewer who leaves drops out; the peak and the total stay', async () => {
    await pages[1]!.close();
    const left = await untilAudience('3 viewers once the second page is gone', { current: 3, llhls: 2, webrtc: 1 }, 30_000);
    assert.equal(left.peak, 4);
    assert.equal(left.total, 4);
  });

  test('the broadcaster\'s own preview (the admin token) is not a viewer; a player without a session id is one', async () => {
    const url = `${node.httpUrl}/live/${streamId}/360p/index.m3u8`;
    for (let i = 0; i < 3; i += 1) {
      const response = await fetch(url, { headers: { authorization: `Bearer ${node.adminToken}` } });
      assert.equal(response.status, 200);
    }
    // Then one without: the counting path is the same, so this one must show up (the check above is not vacuous).
    assert.equal((await fetch(url)).status, 200);
    const counted = await untilAudience('the anonymous fetch counted, the admin\'s not', { current: 4, llhls: 3, webrtc: 1 }, 10_000);
    assert.equal(counted.total, 5);
  });

  test('the event ends: its peak and total are kept with it and shown after it', async () => {
    for (const page of pages.splice(0)) await page.close().catch(() => undefined);
    reader?.kill('SIGKILL');
    const ended = await api(node, 'POST', `/api/streams/${streamId}/end`);
    assert.equal(ended.status, 202);
    const last = await waitFor('the last event\'s audience in the stream view', async () => {
      const view = (await api(node, 'GET', `/api/streams/${streamId}`)).body;
      return view.lastEvent?.audience ? view : undefined;
    }, 30_000, 500);
    assert.equal(last.status, 'ended');
    assert.deepEqual(last.lastEvent.audience, { peak: 4, total: 5 }, 'at most 4 at once; 5 sessions in all');
    assert.equal(last.stats, undefined);
  });

  test('the replay counts views, one per playback session that plays', async () => {
    const replay = await waitFor('the replay', async () => (await api(node, 'GET', `/api/streams/${streamId}`)).body.replay, 30_000, 500);
    const videoId = String(replay.videoId);
    assert.equal((await api(node, 'GET', `/api/videos/${videoId}`)).body.views, 0);
    await plays(await open(`${node.httpUrl}/watch/${videoId}`), 'a replay page');
    await plays(await open(`${node.httpUrl}/watch/${videoId}`), 'another replay page');
    await waitFor('2 views', async () => (await api(node, 'GET', `/api/videos/${videoId}`)).body.views === 2, 15_000, 500)
      .catch(async (error: Error) => { throw new Error(`${error.message}: ${(await api(node, 'GET', `/api/videos/${videoId}`)).body.views}`); });
    // A watch page carries the video's playlists, asked of the node itself as the page is put together: a page that
    // is loaded and never plays (a link preview, a crawler) is no view. Three of them; two audience flushes later
    // (one a second), still 2.
    for (let i = 0; i < 3; i += 1) {
      const html = await (await fetch(`${node.httpUrl}/watch/${videoId}`)).text();
      assert.ok(html.includes('id="onair-playlists"'), 'the page carries the playlists');
    }
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    assert.equal((await api(node, 'GET', `/api/videos/${videoId}`)).body.views, 2, 'pages that never played counted no view');
  });
});
