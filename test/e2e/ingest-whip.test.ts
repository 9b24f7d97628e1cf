import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { descendantProcesses } from '../../bench/support/procfs.js';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, plays, signInStudio, watchMode } from '../support/browser.js';
import { api, metric, publish, startTestNode, waitFor } from '../support/harness.js';
import { whipDrop, whipPublish, whipState } from '../support/whip.js';
import { connectWhep, whepPlays } from '../support/whepClient.js';

const run = promisify(execFile);

type StreamView = { status: string; stats?: { eventId: string; publishing: boolean; input: { width?: number; height?: number } } };
/** The WHIP bridges' ffmpegs under this process (their input is an SDP data URL). */
function bridgeFfmpegs(): number[] {
  return descendantProcesses(process.pid).filter((p) => p.comm === 'ffmpeg')
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').includes('data:application/sdp');
      } catch {
        return false; // gone since the listing
      }
    }).map((p) => p.pid);
}

/** OBS's WHIP offer shape (libdatachannel): session-level ICE and DTLS, audio first, one codec per section. */
const OBS_SHAPED = [
  'v=0', 'o=rtc 3126455418 0 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0 1', 'a=setup:actpass', 'a=ice-ufrag:Wq7b',
  'a=ice-pwd:0nOpcdS1zLTqUHx3cPNr8Ouz',
  'a=fingerprint:sha-256 0B:6D:55:D2:8F:0C:D3:1C:5E:08:AB:61:F7:E7:A0:8D:9E:CC:2B:1E:10:50:4E:DB:0E:EB:34:50:7F:A1:11:20',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=sendonly', 'a=ssrc:3487139150 cname:obs', 'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2',
  'm=video 9 UDP/TLS/RTP/SAVPF 96 97', 'c=IN IP4 0.0.0.0', 'a=mid:1', 'a=sendonly', 'a=ssrc:2861352003 cname:obs', 'a=rtcp-mux',
  'a=rtpmap:96 H264/90000', 'a=fmtp:96 profile-level-id=42e01f;packetization-mode=1', 'a=rtpmap:97 rtx/90000', 'a=fmtp:97 apt=96', '',
].join('\r\n');

/** The UDP sockets a process holds (its fds' inodes looked up in /proc/net/udp): local address and port. */
function udpSocketsOf(pid: number): { address: string; port: number }[] {
  const inodes = new Set(readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
    } catch {
      return undefined;
    }
  }).filter((inode): inode is string => inode !== undefined));
  return readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1).map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length > 9 && inodes.has(fields[9]!))
    .map((fields) => {
      const [hex, port] = fields[1]!.split(':') as [string, string];
      const address = [3, 2, 1, 0].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join('.');
      return { address, port: parseInt(port, 16) };
    });
}

const view = async (node: OnAirNode, id: string): Promise<StreamView> => (await api(node, 'GET', `/api/streams/${id}`)).body;

/**
 * WHIP ingest (issue #20, RFC 9725): a Chromium publisher with a fake camera and microphone, H.264 + opus, into the
 * same ingest as RTMP: the ladder, LL-HLS, WebRTC viewers, the reconnect grace, the replay; RTMP's refusals.
 */
describe('WHIP ingest', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  let streamId: string;
  let streamKey: string;
  let whipUrl: string;
  /** The Location of the publish going on, as its publisher got it. */
  let location: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360', ONAIR_WEBRTC_LAYERS: '180', ONAIR_RECONNECT_GRACE_SEC: '6' }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'From a browser' } });
    ({ id: streamId, streamKey } = created.body);
    whipUrl = `${node.httpUrl}/live/${streamId}/whip`;
    chromium = await launchChromium({ fakeCamera: true });
    page = await chromium.browser.newPage();
    // A secure context on the node's origin (getUserMedia needs one; the POST is same-origin).
    await page.goto(`${node.httpUrl}/`);
  });

  after(async () => {
    await chromium?.close();
    await close?.();
  });

  test('the API and the studio give the WHIP URL beside the RTMP server, with a copy button', { timeout: 40_000 }, async () => {
    const stream = (await api(node, 'GET', `/api/streams/${streamId}`)).body;
    assert.equal(stream.ingest.whipUrl, whipUrl);
    const studio = await chromium.browser.newPage();
    try {
      await signInStudio(studio, node.httpUrl, node.adminToken, `?stream=${streamId}`);
      await studio.waitForSelector('#whip-row:not([hidden])', { timeout: 10_000 });
      assert.equal(await studio.textContent('#whip-url'), whipUrl);
      assert.ok(await studio.isVisible('#copy-whip-url'));
      assert.match((await studio.textContent('#obs-settings'))!, /Service "WHIP"[^]*Bearer Token = the stream key/);
    } finally {
      await studio.close();
    }
  });

  test('refusals: no key or another stream\'s key is 401, a VP8-only offer 400 with what OnAir takes, not SDP 415', async () => {
    const other = (await api(node, 'POST', '/api/streams', { body: { title: 'Another' } })).body;
    const noKey = await whipPublish(page, whipUrl, { key: undefined });
    assert.equal(noKey.status, 401);
    assert.equal(JSON.parse(noKey.body).error.code, 'ONAIR_ERR_PUBLISH_BAD_KEY');
    const wrongKey = await whipPublish(page, whipUrl, { key: other.streamKey });
    assert.equal(wrongKey.status, 401, 'a key is good for its own stream only');
    const vp8 = await whipPublish(page, whipUrl, { key: streamKey, videoCodec: 'vp8' });
    assert.equal(vp8.status, 400);
    const { error } = JSON.parse(vp8.body);
    assert.equal(error.code, 'ONAIR_ERR_WHIP_SDP');
    assert.match(error.message, /H\.264/);
    const text = await fetch(whipUrl, { method: 'POST', headers: { authorization: `Bearer ${streamKey}`, 'content-type': 'text/plain' }, body: 'v=0' });
    assert.equal(text.status, 415);
    assert.equal(node.packager(streamId), undefined, 'no refused offer started an event');
  });

  test('hostile offers cost only their sender: each is a coded 4xx, none a 500, and none starts an event', async () => {
    const target = (await api(node, 'POST', '/api/streams', { body: { title: 'Hostile' } })).body;
    const post = (body: string): Promise<Response> => fetch(`${node.httpUrl}/live/${target.id}/whip`, {
      method: 'POST', headers: { authorization: `Bearer ${target.streamKey}`, 'content-type': 'application/sdp' }, body,
    });
    const huge = await post(`v=0\r\n${'a=x\r\n'.repeat(20_000)}`);
    assert.equal(huge.status, 413, 'an offer is a few KB');
    const cases: [string, string][] = [
      ['garbage', 'v=0\r\n\u0000\u0001 not sdp'],
      ['an RTX stream on the media stream\'s own SSRC', OBS_SHAPED.replace('a=ssrc:2861352003 cname:obs', 'a=ssrc-group:FID 2861352003 2861352003\r\na=ssrc:2861352003 cname:obs')],
      ['a payload type outside 0–127', OBS_SHAPED.replaceAll(' 96', ' 300').replaceAll(':96 ', ':300 ')],
      ['an SSRC of 0 and one over 32 bits', OBS_SHAPED.replace('a=ssrc:2861352003', 'a=ssrc:0').replace('a=ssrc:3487139150', 'a=ssrc:99999999999')],
      ['the same mid twice', OBS_SHAPED.replace('a=mid:1', 'a=mid:0').replace('a=group:BUNDLE 0 1', 'a=group:BUNDLE 0')],
    ];
    for (const [what, sdp] of cases) {
      const response = await post(sdp);
      const body = await response.text();
      assert.equal(response.status, 400, `${what}: ${body}`);
      assert.equal(JSON.parse(body).error.code, 'ONAIR_ERR_WHIP_SDP', what);
    }
    const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
    assert.doesNotMatch(metrics, /onair_http_requests_total\{[^}]*status="5\d\d"/, 'no 5xx answered');
    assert.equal(node.packager(target.id), undefined, 'no event started');
  });

  test('Chromium publishes H.264 + opus: the stream goes live, its LL-HLS has the ladder\'s video and AAC, hls.js and a WHEP viewer play it', { timeout: 90_000 }, async () => {
    const result = await whipPublish(page, whipUrl, { key: streamKey });
    assert.equal(result.status, 201, result.body);
    assert.match(result.location ?? '', new RegExp(`^/live/${streamId}/whip/[0-9a-f-]{36}$`));
    assert.match(result.body, /a=recvonly/);
    await waitFor('the WHIP connection', async () => (await whipState(page)).state === 'connected', 15_000);
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 45_000);
    location = result.location!;
    const live = await view(node, streamId);
    assert.equal(live.status, 'live');
    assert.deepEqual([live.stats?.input.width, live.stats?.input.height], [640, 360], 'the camera\'s picture, read from its SPS');
    await waitFor('a complete segment', () => node.packager(streamId)?.playlist('360p')?.segments.some((s) => s.complete), 15_000, 100);
    const probe = await run('ffprobe', ['-hide_banner', '-v', 'error', '-show_entries', 'stream=codec_type,codec_name,height', '-of', 'csv=p=0',
      `${node.httpUrl}/live/${streamId}/index.m3u8`], { timeout: 20_000 });
    assert.match(probe.stdout, /h264,video,360/);
    assert.match(probe.stdout, /aac,audio/, 'opus became AAC');
    await whepPlays(node.httpUrl, streamId);
    // hls.js on the watch page plays it too.
    const watch = await chromium.browser.newPage();
    try {
      await watch.goto(`${node.httpUrl}/watch/${streamId}`);
      await plays(watch, 'hls.js on the watch page');
      assert.equal(await watchMode(watch), 'live');
    } finally {
      await watch.close();
    }
  });

  test('WebRTC viewers get the publisher\'s own media, no re-encode: its 640x360 (the ladder\'s layer is 180p), a keyframe on joining', { timeout: 60_000 }, async () => {
    // The ladder's ffmpeg encodes no WebRTC layer for a WHIP publisher: it sends no RTP (its HLS rungs go on).
    const ladders = descendantProcesses(process.pid).filter((p) => p.comm === 'ffmpeg').map((p) => {
      try {
        return readFileSync(`/proc/${p.pid}/cmdline`, 'utf8');
      } catch {
        return '';
      }
    }).filter((cmdline) => cmdline !== '' && !cmdline.includes('data:application/sdp'));
    assert.ok(ladders.length > 0, 'the ladder\'s ffmpeg runs');
    assert.ok(ladders.every((cmdline) => !cmdline.includes('rtp://')), 'no RTP output in the ladder');
    // Each viewer: the publisher's picture size in the SPS, one video SSRC, and its first keyframe soon after it
    // connects (~0.2 s: its keyframe request reaches the publisher; the bridge's own schedule is 2 s, and mediasoup holds a second
    // request back for 1 s).
    const firstKeyframeMs: number[] = [];
    for (let i = 0; i < 4; i += 1) {
      const viewer = await connectWhep(`${node.httpUrl}/live/${streamId}/whep`, { congestionControl: false });
      try {
        assert.equal(viewer.status, 201, viewer.answer);
        await viewer.waitFor('the connection', (s) => s.videoPackets > 0 || s.audioPackets > 0, 15_000);
        const connected = Date.now();
        await viewer.waitFor('a keyframe', (s) => s.keyframes > 0, 15_000);
        firstKeyframeMs.push(Date.now() - connected);
        await viewer.waitFor('the publisher\'s picture and sound', (s) => s.lastSpsSize !== undefined && s.audioPackets > 0, 15_000);
        assert.deepEqual(viewer.stats().lastSpsSize, { width: 640, height: 360 });
        assert.equal(viewer.stats().videoSsrcs.size, 1, 'one layer');
      } finally {
        await viewer.close();
      }
    }
    assert.ok(Math.max(...firstKeyframeMs) < 600, `first keyframe after the first packet: ${firstKeyframeMs.join(', ')} ms`);
  });

  test('while it publishes, a second WHIP publisher and an RTMP publisher on the key are refused as busy (409)', { timeout: 30_000 }, async () => {
    const second = await chromium.browser.newPage();
    try {
      await second.goto(`${node.httpUrl}/`);
      const busy = await whipPublish(second, whipUrl, { key: streamKey });
      assert.equal(busy.status, 409);
      assert.equal(JSON.parse(busy.body).error.code, 'ONAIR_ERR_PUBLISH_BUSY');
    } finally {
      await second.close();
    }
    const before = await metric(node, 'onair_publish_refused_total{reason="busy"}');
    const rtmp = publish(`${node.rtmpUrl}/${streamKey}`, { width: 320, height: 240, durationSec: 5 });
    await rtmp.exited;
    assert.match(rtmp.stderr(), /ONAIR_ERR_PUBLISH_BUSY/);
    assert.equal(await metric(node, 'onair_publish_refused_total{reason="busy"}'), before + 1);
  });

  test('the bridge\'s RTP ports are on loopback only: nobody on the network can feed a publish', () => {
    const [bridge] = bridgeFfmpegs();
    assert.ok(bridge, 'the bridge ffmpeg runs');
    const sockets = udpSocketsOf(bridge);
    assert.ok(sockets.length >= 2, `its UDP sockets: ${JSON.stringify(sockets)}`);
    for (const socket of sockets) assert.equal(socket.address, '127.0.0.1', `port ${socket.port} is bound to ${socket.address}`);
  });

  test('the bridge\'s ffmpeg SIGKILLed: another takes over, the publisher sees nothing, the same event goes on', { timeout: 60_000 }, async () => {
    const event = (await view(node, streamId)).stats?.eventId;
    const [bridge] = bridgeFfmpegs();
    assert.ok(bridge, 'the bridge ffmpeg runs');
    const segments = node.packager(streamId)!.playlist('360p')!.segments.length;
    process.kill(bridge, 'SIGKILL');
    await waitFor('another bridge ffmpeg', () => bridgeFfmpegs().some((pid) => pid !== bridge), 10_000);
    await waitFor('new segments after the kill', () => node.packager(streamId)!.playlist('360p')!.segments.length >= segments + 2, 30_000);
    const after = await view(node, streamId);
    assert.equal(after.stats?.eventId, event, 'the same event');
    assert.equal(after.stats?.publishing, true);
    assert.equal((await whipState(page)).state, 'connected', 'the publisher\'s connection never went');
    assert.equal(await metric(node, 'onair_child_restarts_total{child="whip-bridge"}'), 1);
    assert.equal(await metric(node, 'onair_whip_publishers'), 1);
  });

  test('a publisher whose network goes comes back within the grace: the same event goes on, WebRTC viewers stay', { timeout: 60_000 }, async () => {
    const event = (await view(node, streamId)).stats?.eventId;
    assert.ok(event);
    // A WebRTC viewer watching through it keeps its session: the publisher's new media reaches it on the same producers.
    const viewer = await connectWhep(`${node.httpUrl}/live/${streamId}/whep`, { congestionControl: false });
    assert.equal(viewer.status, 201, viewer.answer);
    await viewer.waitFor('a keyframe', (s) => s.keyframes > 0, 15_000);
    await whipDrop(page);
    // No DELETE: the media server sees ICE go quiet (consent, RFC 7675) and lets the publisher go.
    await waitFor('the publisher seen gone', async () => (await view(node, streamId)).stats?.publishing === false, 20_000);
    const again = await whipPublish(page, whipUrl, { key: streamKey });
    assert.equal(again.status, 201, again.body);
    location = again.location!;
    await waitFor('media again', async () => (await view(node, streamId)).stats?.input.width === 640, 20_000);
    assert.equal((await view(node, streamId)).stats?.eventId, event, 'the same event');
    try {
      const { keyframes } = viewer.stats();
      await viewer.waitFor('the returned publisher\'s keyframe, on the same session', (s) => s.keyframes > keyframes && s.lastSpsSize?.height === 360, 10_000);
      assert.equal(viewer.stats().videoSsrcs.size, 1, 'the same stream, renumbered to follow on');
    } finally {
      await viewer.close();
    }
  });

  test('DELETE ends the publish; after the grace the event ends and its replay is published', { timeout: 60_000 }, async () => {
    const ended = node.next('ended', 40_000);
    const archived = node.next('archived', 50_000);
    const publishUrl = `${node.httpUrl}${location}`;
    const wrong = await fetch(publishUrl, { method: 'DELETE' });
    assert.equal(wrong.status, 401, 'DELETE needs the key too');
    const deleted = await fetch(publishUrl, { method: 'DELETE', headers: { authorization: `Bearer ${streamKey}` } });
    assert.equal(deleted.status, 200);
    const again = await fetch(publishUrl, { method: 'DELETE', headers: { authorization: `Bearer ${streamKey}` } });
    assert.equal(again.status, 404);
    await ended;
    const [{ videoId }] = await archived;
    const replay = (await api(node, 'GET', `/api/videos/${videoId}`, { token: null })).body;
    assert.ok(replay.durationSec > 3, `the replay lasts ${replay.durationSec} s`);
    const watch = await chromium.browser.newPage();
    try {
      await watch.goto(`${node.httpUrl}/watch/${streamId}`);
      await waitFor('the page to offer the replay', async () => (await watchMode(watch)) === 'replay', 20_000, 250);
      await plays(watch, 'the replay');
    } finally {
      await watch.close();
    }
  });
});

describe('WHIP on a node without WebRTC', { timeout: 60_000 }, () => {
  test('the API gives no WHIP URL, and an offer is answered 503 ONAIR_ERR_WEBRTC_DISABLED', async () => {
    const { node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off' });
    try {
      const created = (await api(node, 'POST', '/api/streams', { body: { title: 'No WebRTC' } })).body;
      assert.equal(created.ingest.whipUrl, undefined);
      const response = await fetch(`${node.httpUrl}/live/${created.id}/whip`, {
        method: 'POST', headers: { authorization: `Bearer ${created.streamKey}`, 'content-type': 'application/sdp' }, body: OBS_SHAPED,
      });
      assert.equal(response.status, 503);
      assert.equal((await response.json()).error.code, 'ONAIR_ERR_WEBRTC_DISABLED');
    } finally {
      await close();
    }
  });
});
