import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { io as connect, type Socket } from 'socket.io-client';
import type { OnAirNode } from '../../server/node.js';
import { vodBackends } from '../support/backends.js';
import { launchChromium, sampleVideo } from '../support/browser.js';
import { probeDuration } from '../support/ffprobe.js';
import { api, publish, startTestNode, waitFor, within } from '../support/harness.js';

const sample = (page: Page) => sampleVideo(page);


for (const backend of vodBackends()) describe(`a finished live event becomes a replay at once, then an archive (HLS + DASH) with its chat — ${backend.name}`, { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  let chat: Socket | undefined;
  let streamId: string;
  let videoId: string;
  let endedAt: number;
  let archivedAt: number;
  let streamView: { status: string; replay: { videoId: string } };
  let replayView: { kind: string; source: string; title: string; durationSec: number };

  before(async () => {
    await backend.start();
    ({ node, close } = await startTestNode({ ...backend.env(), ONAIR_LADDER: '360,240', ONAIR_RECONNECT_GRACE_SEC: '8', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_VOD_CONCURRENCY: '1' }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Archive show', description: 'replayed' } });
    streamId = created.body.id;
    const rtmp = `${node.rtmpUrl}/${created.body.streamKey}`;
    const ended = node.next('ended', 90_000);
    const archived = node.next('archived', 120_000);

    // First publish, with a comment while it is live.
    let publisher = publish(rtmp, { width: 640, height: 360, durationSec: 6 });
    await waitFor('the stream to be live', () => node.packager(streamId)?.ready, 30_000);
    chat = connect(`${node.httpUrl}/chat`, { transports: ['websocket'], forceNew: true });
    await within('chat connect', new Promise((resolve) => chat!.once('connect', () => resolve(undefined))), 10_000);
    assert.equal((await chat.timeout(5000).emitWithAck('join', { streamId, name: 'Ada' })).ok, true);
    const firstAck = await chat.timeout(5000).emitWithAck('comment', { text: 'first!' });
    assert.equal(firstAck.ok, true);
    await publisher.exited;
    // OBS drops, stays away 3 s (the outage this test is about: not a wait for anything), and comes back within the
    // grace period: the same event, a second source file, a discontinuity. A comment as soon as it is back on air.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    publisher = publish(rtmp, { width: 640, height: 360, durationSec: 6 });
    await waitFor('the second publish on air', () => node.packager(streamId)?.playlist('360p')?.segments.some((s, i) => i > 0 && s.discontinuity), 30_000);
    assert.equal((await chat.timeout(5000).emitWithAck('comment', { text: 'back!' })).ok, true);
    // A viewer who went back in the DVR window to where "first!" was written (1.5 s behind the edge, as assumed for
    // a viewer who does not say) comments on it, and says how far behind the live edge they are.
    const behindMs = Date.now() - firstAck.at + 1500;
    assert.equal((await chat.timeout(5000).emitWithAck('comment', { text: 'from the DVR', behindMs })).ok, true);
    await publisher.exited;
    await ended;
    endedAt = Date.now();
    [{ videoId }] = await archived;
    archivedAt = Date.now();
    // What a client sees at that moment (the archive job may replace the replay a few seconds later).
    streamView = (await api(node, 'GET', `/api/streams/${streamId}`, { token: null })).body;
    replayView = (await api(node, 'GET', `/api/videos/${videoId}`, { token: null })).body;
    chromium = await launchChromium();
    page = await chromium.browser.newPage();
  });

  after(async () => {
    chat?.close();
    await chromium?.close();
    // The backend's servers (Redis, PostgreSQL, Swift) stop even when the node's close fails: left running, they
    // would hold this file open until the runner's timeout.
    try {
      await close?.();
    } finally {
      await backend.stop();
    }
  });

  test('the replay is published within 10 s of the end, under the event id, and /watch/:id plays it', async () => {
    assert.ok(archivedAt - endedAt < 10_000, `replay published ${archivedAt - endedAt} ms after the end`);
    const stream = streamView;
    assert.equal(stream.status, 'ended');
    assert.equal(stream.replay.videoId, videoId);
    const video = replayView;
    assert.equal(video.kind, 'replay');
    assert.equal(video.source, streamId);
    assert.equal(video.title, 'Archive show');
    // Both publishes are in it, with a discontinuity between them.
    const variant = await (await fetch(`${node.httpUrl}/vod/${videoId}/replay/360p/index.m3u8`)).text();
    assert.match(variant, /#EXT-X-PLAYLIST-TYPE:VOD/);
    assert.match(variant, /#EXT-X-DISCONTINUITY/);
    assert.ok(video.durationSec > 9 && video.durationSec < 14, `replay lasts ${video.durationSec} s`);

    await page.goto(`${node.httpUrl}/watch/${streamId}`);
    await waitFor('the replay to play', async () => {
      const s = await sample(page);
      return s.mode === 'replay' && s.currentTime > 2;
    }, 30_000, 250);
    assert.ok(Date.now() - endedAt < 40_000);
    const s = await sample(page);
    assert.ok(s.brightness > 20, `the picture is not black (${s.brightness.toFixed(1)})`);
    assert.ok(s.duration > 9, `the player sees ${s.duration} s`);
  });

  test('the chat kept during the event comes back beside the replay, where its writers were in the picture', async () => {
    const replay = (await api(node, 'GET', `/api/videos/${videoId}/chat`, { token: null })).body;
    const byText = new Map((replay.comments as { text: string; offsetSec: number }[]).map((c) => [c.text, c]));
    assert.deepEqual([...byText.keys()].sort(), ['back!', 'first!', 'from the DVR']);
    const first = byText.get('first!');
    const back = byText.get('back!');
    const dvr = byText.get('from the DVR')!;
    // The first publish's media, up to the discontinuity, in the replay.
    const variant = await (await fetch(`${node.httpUrl}/vod/${videoId}/replay/360p/index.m3u8`)).text();
    const firstRun = variant.split('#EXT-X-DISCONTINUITY')[0]!;
    const firstRunSec = [...firstRun.matchAll(/#EXTINF:([\d.]+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    // Written just after the first picture came out: near the start, not seconds in (the transcoder's start-up and
    // the first segment's duration are not in the video).
    assert.ok(first!.offsetSec >= 0 && first!.offsetSec < 2, `first comment at ${first!.offsetSec} s`);
    // Written just after the publisher came back: just after the discontinuity, however long the publisher was away
    // (counted from the event's start it would be ~4 s later: the outage and the second start-up).
    assert.ok(back!.offsetSec >= firstRunSec && back!.offsetSec < firstRunSec + 2, `comment after the reconnect at ${back!.offsetSec} s; the second publish starts at ${firstRunSec} s`);
    // The DVR viewer's comment sits beside the picture they were watching, not where the live edge was.
    assert.ok(Math.abs(dvr.offsetSec - first!.offsetSec) < 0.1, `DVR comment at ${dvr.offsetSec} s, the moment it is about at ${first!.offsetSec} s`);
  });

  test('the archive job replaces the replay: HLS and DASH over the same segments, a poster and a storyboard', async () => {
    const video = await waitFor('the archive to be ready', async () => {
      const body = (await api(node, 'GET', `/api/videos/${videoId}`)).body;
      assert.notEqual(body.status, 'failed', body.error);
      return body.status === 'ready' ? body : undefined;
    }, 120_000, 500);
    assert.equal(video.kind, 'archive');
    assert.equal(video.progress, 100);
    assert.deepEqual(video.renditions.map((r: { height: number }) => r.height), [360, 240]);
    const hls = await probeDuration(video.playback.hls);
    const dash = await probeDuration(video.playback.dash);
    assert.ok(Math.abs(hls - video.durationSec) < 1.5, `HLS ${hls} s vs ${video.durationSec} s`);
    assert.ok(Math.abs(dash - video.durationSec) < 1.5, `DASH ${dash} s vs ${video.durationSec} s`);
    assert.ok(video.durationSec > 9, `archive lasts ${video.durationSec} s: both publishes`);

    const mpd = await (await fetch(video.playback.dash)).text();
    const master = await (await fetch(video.playback.hls)).text();
    const version = /<BaseURL>(a[a-z0-9]{8})\/<\/BaseURL>/.exec(mpd)?.[1];
    assert.ok(version, 'the MPD points into the archive version');
    assert.ok(master.includes(`${version}/media_0.m3u8`), 'HLS and DASH share the version folder');
    const media = await (await fetch(`${node.httpUrl}/vod/${videoId}/${version}/media_0.m3u8`)).text();
    assert.match(media, /seg-0-00001\.m4s/, 'HLS lists the DASH segments');

    const poster = await fetch(video.thumbnail);
    assert.equal(poster.headers.get('content-type'), 'image/jpeg');
    assert.deepEqual([...new Uint8Array(await poster.arrayBuffer()).subarray(0, 2)], [0xff, 0xd8]);
    const vtt = await (await fetch(video.thumbnails)).text();
    assert.match(vtt, /^WEBVTT/);
    const tile = /\n(a[a-z0-9]{8}\/storyboard\.jpg)#xywh=0,0,160,90/.exec(vtt);
    assert.ok(tile, vtt.slice(0, 300));
    assert.equal((await fetch(`${node.httpUrl}/vod/${videoId}/${tile[1]}`)).status, 200);

    // The replay's files stay a while for players that loaded them; the catalog points at the archive now.
    assert.equal((await fetch(`${node.httpUrl}/vod/${videoId}/replay/360p/index.m3u8`)).status, 200);
    const listed = (await api(node, 'GET', '/api/videos?q=archive', { token: null })).body;
    assert.deepEqual(listed.videos.map((v: { id: string }) => v.id), [videoId]);

    await page.reload();
    await waitFor('the archive to play', async () => {
      const s = await sample(page);
      return s.currentTime > 2 && s.brightness > 20;
    }, 30_000, 250);
  });
});
