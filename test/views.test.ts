import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { signPlaybackToken, verifyPlaybackToken } from '../lib/signing.js';
import type { StreamRecord, StreamStatus } from '../server/streams.js';
import { streamView, type LiveEventView, type ViewSources } from '../server/views.js';

// The stream views of /api/streams, built without a node: what the API returns is this JSON, key for key.

const STREAM_ID = 'abcdefabcdef';
const EVENT_ID = 'eeeeeeeeeeeeeeee';
const KEY = 'k'.repeat(32);

function record(status: StreamStatus): StreamRecord {
  return { id: STREAM_ID, title: 'Show', description: '', status, createdAt: 1, updatedAt: 2 };
}

function liveEvent(overrides: Partial<LiveEventView> = {}): LiveEventView {
  return {
    streamId: STREAM_ID,
    eventId: EVENT_ID,
    startedAt: 1000,
    publisher: {
      source: { width: 1280, height: 720, fps: 30, videoCodec: 'h264', audioCodec: 'aac' },
      stats: { inBytes: 10, inKbps: 2500, inFps: 30 },
    },
    transcoder: {
      stats: {
        encoder: 'libx264', speed: 1.01, fps: 30, restarts: 0, generation: 1, pid: 1, backlogMs: 12.6, degraded: undefined,
        renditions: [{ name: '720p', width: 1280, height: 720, kbps: 2800, fps: 30, fragments: 4 }],
      },
    },
    packager: { ads: [], runningBreak: undefined, captions: false },
    ...overrides,
  };
}

function sources(overrides: Partial<ViewSources> = {}): ViewSources {
  return {
    publicUrl: () => 'https://tv.example',
    rtmpUrl: () => 'rtmp://tv.example:1935/live',
    playbackSigningKey: undefined,
    playbackTokenTtlSec: 3600,
    live: () => undefined,
    endWaiting: () => false,
    latestVideo: async () => undefined,
    edge: undefined,
    chatViewers: () => 3,
    audience: () => ({ current: 7, peak: 9, total: 12, byProtocol: { llhls: 5, webrtc: 2 } }),
    lastEndedEvent: async () => undefined,
    ...overrides,
  };
}

describe('stream views', () => {
  test('a live stream: the keys in the order the API gives them; WebRTC and degradation are left out while off', async () => {
    const view = await streamView(sources({ live: () => liveEvent() }), record('live'), false);
    assert.equal(JSON.stringify(view), JSON.stringify({
      id: STREAM_ID, title: 'Show', description: '', status: 'live', createdAt: 1, updatedAt: 2,
      ingest: { rtmpUrl: 'rtmp://tv.example:1935/live' },
      playback: {
        hls: `https://tv.example/live/${STREAM_ID}/index.m3u8`,
        whep: `https://tv.example/live/${STREAM_ID}/whep`,
        watchPage: `https://tv.example/watch/${STREAM_ID}`,
      },
      stats: {
        eventId: EVENT_ID, startedAt: 1000, publishing: true,
        input: { kbps: 2500, fps: 30, width: 1280, height: 720, videoCodec: 'h264', audioCodec: 'aac' },
        encoder: { kind: 'libx264', speed: 1.01, fps: 30, restarts: 0, backlogMs: 13 },
        renditions: [{ name: '720p', width: 1280, height: 720, kbps: 2800, fps: 30, fragments: 4 }],
        viewers: 0, chatViewers: 3, audience: { current: 7, peak: 9, total: 12, byProtocol: { llhls: 5, webrtc: 2 } }, captions: false, ads: [], adBreak: null,
      },
    }));
  });

  test('during the reconnect grace: not publishing, no input figures; a degraded ladder and a running ad break are shown', async () => {
    const event = liveEvent({
      publisher: undefined,
      transcoder: { stats: { ...liveEvent().transcoder.stats, degraded: { level: 2, steps: ['drop-top', 'lower-fps'], reason: 'cpu', since: 0 } } },
      packager: {
        ads: [{ id: 'adadadadadad', durationMs: 15_000, renditions: new Map() }],
        runningBreak: { id: 'ad-1', kind: 'ad', eventId: 1, requestedAt: 0, plannedDurationMs: 30_000, startDate: 0, startPts: 0n, endDate: undefined, endPts: undefined },
        captions: true,
      },
    });
    const { stats } = await streamView(sources({ live: () => event }), record('live'), false);
    assert.equal(stats?.publishing, false);
    assert.deepEqual(stats?.input, { kbps: 0, fps: 0, width: undefined, height: undefined, videoCodec: undefined, audioCodec: undefined });
    assert.equal(JSON.stringify(stats?.input), '{"kbps":0,"fps":0}');
    assert.deepEqual(stats?.degraded, { step: 'lower-fps', steps: ['drop-top', 'lower-fps'], reason: 'cpu', since: '1970-01-01T00:00:00.000Z' });
    assert.deepEqual(stats?.ads, [{ videoId: 'adadadadadad', durationSec: 15 }]);
    assert.deepEqual(stats?.adBreak, { id: 'ad-1', startDate: '1970-01-01T00:00:00.000Z', plannedDurationSec: 30 });
    assert.equal(stats?.captions, true, 'the publisher\'s captions are shown while they come');
  });

  test('the WebRTC sessions (the capability to end them) are listed for the admin only', async () => {
    const session = { sessionId: 's1', worker: 1, iceState: 'connected', spatialLayer: 0 };
    const edge = { viewers: () => 1, sessionStats: () => [session] };
    const live = (): LiveEventView => liveEvent();
    const open = await streamView(sources({ live, edge }), record('live'), false);
    const admin = await streamView(sources({ live, edge }), record('live'), true);
    assert.deepEqual(open.stats?.webrtc, { viewers: 1 });
    assert.deepEqual(admin.stats?.webrtc, { viewers: 1, sessions: [session] });
    assert.equal(open.stats?.viewers, 1);
  });

  test('the ways in: RTMP always; RTMPS and WHIP (under the public origin, per stream) only while on', async () => {
    const on = await streamView(sources({ rtmpsUrl: () => 'rtmps://tv.example:1936/live', whip: () => true }), record('idle'), true);
    assert.deepEqual(on.ingest, {
      rtmpUrl: 'rtmp://tv.example:1935/live', rtmpsUrl: 'rtmps://tv.example:1936/live', whipUrl: `https://tv.example/live/${STREAM_ID}/whip`,
    });
    const off = await streamView(sources({ rtmpsUrl: () => undefined, whip: () => false }), record('idle'), true);
    assert.deepEqual(off.ingest, { rtmpUrl: 'rtmp://tv.example:1935/live' });
  });

  test('an event over on this node whose end waits for the database reads ended, in the status field\'s place', async () => {
    const view = await streamView(sources({ endWaiting: () => true }), record('live'), false);
    assert.deepEqual(Object.keys(view), ['id', 'title', 'description', 'status', 'createdAt', 'updatedAt', 'ingest', 'playback']);
    assert.equal(view.status, 'ended');
  });

  test('signing on: the admin gets fresh tokens, a viewer only the valid token it presented, carried to the replay', async () => {
    const latestVideo = async (): Promise<{ id: string; version: unknown }> => ({ id: 'vvvvvvvvvvvvvvvv', version: 1 });
    const signing = sources({ playbackSigningKey: KEY, latestVideo });
    const admin = await streamView(signing, record('ended'), true);
    const token = new URL(admin.playback.hls).searchParams.get('token');
    assert.ok(token && verifyPlaybackToken(KEY, STREAM_ID, token), 'the admin view carries a valid token');
    const replayToken = new URL(admin.replay!.hls).searchParams.get('token');
    assert.ok(replayToken && verifyPlaybackToken(KEY, 'vvvvvvvvvvvvvvvv', replayToken), 'the replay is signed for its video');

    const anonymous = await streamView(signing, record('ended'), false);
    assert.equal(anonymous.playback.hls, `https://tv.example/live/${STREAM_ID}/index.m3u8`, 'no token handed out');
    assert.equal(anonymous.replay?.hls, 'https://tv.example/vod/vvvvvvvvvvvvvvvv/index.m3u8');

    const expiresAtSec = Math.floor(Date.now() / 1000) + 60;
    const presented = signPlaybackToken(KEY, STREAM_ID, expiresAtSec);
    const viewer = await streamView(signing, record('ended'), false, presented);
    assert.equal(viewer.playback.watchPage, `https://tv.example/watch/${STREAM_ID}?token=${presented}`);
    assert.equal(viewer.replay?.hls, `https://tv.example/vod/vvvvvvvvvvvvvvvv/index.m3u8?token=${signPlaybackToken(KEY, 'vvvvvvvvvvvvvvvv', expiresAtSec)}`);
    const forged = await streamView(signing, record('ended'), false, signPlaybackToken('x'.repeat(32), STREAM_ID, expiresAtSec));
    assert.equal(forged.playback.watchPage, `https://tv.example/watch/${STREAM_ID}`, 'a token signed with another key is not carried');
  });
});
