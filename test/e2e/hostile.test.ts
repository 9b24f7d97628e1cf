import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { io as connectChat, type Socket } from 'socket.io-client';
import type { OnAirNode } from '../../server/node.js';
import { startEmbeddedRedis } from '../../server/redis.js';
import { api, publish, startTestNode, waitFor, within } from '../support/harness.js';
import { chunks, command, MessageType, rawRtmp, type RawRtmp } from '../support/rtmpClient.js';
import { fuzzRtmp, makePublishCorpus } from '../support/rtmpFuzz.js';
import { connectWhep, type WhepClient } from '../support/whepClient.js';

/**
 * Hostile input (issue #13): each attack is tried against one node that serves a live stream and a chat. Every test
 * asserts what the attacker sees (a closed socket, a coded 4xx/429/503) and that the stream published before the
 * attack keeps advancing its playlist and a chat client keeps chatting.
 */

const MiB = 1024 * 1024;

interface Bystanders {
  node: OnAirNode;
  streamId: string;
  /** The media playlist of the live stream's only rendition. */
  playlistUrl: string;
  chat: Socket;
  listener: Socket;
}

function lastMsn(playlist: string): number {
  const sequence = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(playlist)?.[1] ?? NaN);
  const segments = playlist.split('\n').filter((line) => line.startsWith('#EXTINF')).length;
  return sequence + segments - 1;
}

/** The live stream is still advancing (a new segment arrives) and chat still goes round between two clients. */
async function assertUnharmed(b: Bystanders, what: string): Promise<void> {
  const before = lastMsn(await (await fetch(b.playlistUrl)).text());
  // rfc8216bis §6.2.5.2: blocks until the next segment is complete.
  const response = await fetch(`${b.playlistUrl}?_HLS_msn=${before + 1}`);
  assert.equal(response.status, 200, `${what}: the live playlist still answers`);
  assert.ok(lastMsn(await response.text()) >= before + 1, `${what}: the live stream advanced`);
  const text = `still here after ${what} ${Math.random().toString(36).slice(2)}`;
  const heard = within(`${what}: the other chat client hears a comment`, new Promise<void>((resolve) => {
    const listen = (payload: { text: string }): void => {
      if (payload.text !== text) return;
      b.listener.off('comment', listen);
      resolve();
    };
    b.listener.on('comment', listen);
  }), 5000);
  const ack = await b.chat.timeout(5000).emitWithAck('comment', { text });
  assert.equal(ack.ok, true, `${what}: the comment was taken: ${JSON.stringify(ack)}`);
  await heard;
}

async function joinChat(node: OnAirNode, streamId: string, name: string): Promise<Socket> {
  const socket = connectChat(`${node.httpUrl}/chat`, { transports: ['websocket'], reconnection: false });
  const ack = await socket.timeout(5000).emitWithAck('join', { streamId, name });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  return socket;
}

async function closedWithin(client: RawRtmp, ms: number, what: string): Promise<void> {
  await within(`${what}: the server closes the connection`, client.closed, ms);
}

describe('hostile input: a stranger costs only their own connection', { timeout: 300_000 }, () => {
  let b: Bystanders;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let rtmpPort: number;

  before(async () => {
    const started = await startTestNode({
      ONAIR_LADDER: '240',
      ONAIR_RTMP_HANDSHAKE_TIMEOUT_MS: '2000',
      ONAIR_RTMP_RATE_WINDOW_MS: '1000',
      ONAIR_RTMP_MAX_UNAUTHENTICATED_PER_ADDRESS: '3',
      ONAIR_RTMP_MAX_CONNECTIONS_PER_ADDRESS: '6',
      ONAIR_WEBRTC_WORKERS: '1',
      ONAIR_WHEP_MAX_SESSIONS_PER_ADDRESS: '4',
      ONAIR_WHEP_MAX_CODEC_VARIANTS: '3',
      ONAIR_RATE_WHEP_PER_MIN: '40',
      ONAIR_RATE_STREAM_CREATE_PER_MIN: '10',
      ONAIR_RATE_UPLOAD_CREATE_PER_MIN: '3',
      ONAIR_RATE_CHAT_HISTORY_PER_MIN: '5',
      ONAIR_RATE_ADMIN_FAILURES_PER_MIN: '5',
      ONAIR_CHAT_BLOCKED_WORDS: 'spamword',
      ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS: '3',
      // The bystander comments after every attack: its own rate limits (tested in the chat group) are not the point here.
      ONAIR_CHAT_COMMENT_LIMIT: 'off', ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: 'off',
    });
    close = started.close;
    const node = started.node;
    rtmpPort = node.rtmpPort;
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Under attack' } });
    assert.equal(created.status, 201);
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240 });
    const multivariant = `${node.httpUrl}/live/${created.body.id}/index.m3u8`;
    const text = await waitFor('the multivariant playlist', async () => {
      const response = await fetch(multivariant);
      return response.status === 200 ? response.text() : undefined;
    }, 30_000, 250);
    const rendition = text.split('\n').find((line) => line.endsWith('.m3u8'))!;
    const playlistUrl = new URL(rendition, multivariant).href.replace(/\?.*$/, '');
    const chat = await joinChat(node, created.body.id, 'Regular');
    const listener = await joinChat(node, created.body.id, 'Listener');
    b = { node, streamId: created.body.id, playlistUrl, chat, listener };
    await assertUnharmed(b, 'start');
  });

  after(async () => {
    b?.chat.close();
    b?.listener.close();
    publisher?.stop();
    await close?.();
  });

  test('an RTMP connect without tcUrl closes that connection only', { timeout: 30_000 }, async () => {
    const client = await rawRtmp(rtmpPort);
    client.connect({ app: 'live' });
    await closedWithin(client, 5000, 'connect without tcUrl');
    await assertUnharmed(b, 'a connect without tcUrl');
  });

  test('an RTMP publish without a stream name closes that connection only', { timeout: 30_000 }, async () => {
    const client = await rawRtmp(rtmpPort);
    client.connect();
    client.publish(undefined);
    await closedWithin(client, 5000, 'publish without a name');
    await assertUnharmed(b, 'a publish without a stream name');
  });

  test('chunk headers declaring 16 MB messages on many chunk streams are refused before memory is reserved', { timeout: 30_000 }, async () => {
    const rssBefore = process.memoryUsage().rss;
    const client = await rawRtmp(rtmpPort);
    client.connect();
    // Each header declares 16 MB and sends 10 bytes of it: NMS would reserve 16 MB per chunk stream at once.
    const headers: Buffer[] = [];
    for (let cid = 10; cid < 60; cid++) {
      headers.push(chunks({ cid, type: MessageType.video, payload: Buffer.alloc(10), declaredLength: 16 * MiB - 1 }));
    }
    client.write(Buffer.concat(headers));
    await closedWithin(client, 5000, '16 MB declarations');
    // Under the per-type limit but many of them: the connection's buffer budget ends it.
    const second = await rawRtmp(rtmpPort);
    second.connect();
    const big: Buffer[] = [];
    for (let cid = 10; cid < 60; cid++) big.push(chunks({ cid, type: MessageType.video, payload: Buffer.alloc(10), declaredLength: 6 * MiB }));
    second.write(Buffer.concat(big));
    await closedWithin(second, 5000, '6 MB declarations on 50 chunk streams');
    // Tiny messages on more chunk streams than anyone needs.
    const third = await rawRtmp(rtmpPort);
    const many: Buffer[] = [];
    for (let cid = 10; cid < 300; cid++) many.push(chunks({ cid, type: MessageType.data, payload: Buffer.alloc(4) }));
    third.write(Buffer.concat(many));
    await closedWithin(third, 5000, '290 chunk streams');
    const grownMiB = (process.memoryUsage().rss - rssBefore) / MiB;
    assert.ok(grownMiB < 100, `RSS grew by ${grownMiB.toFixed(0)} MiB`);
    await assertUnharmed(b, 'oversized chunk headers');
  });

  test('a chunk size of 0 closes that connection only', { timeout: 30_000 }, async () => {
    const client = await rawRtmp(rtmpPort);
    const payload = Buffer.alloc(4);
    client.write(chunks({ cid: 2, type: MessageType.setChunkSize, payload }));
    client.connect();
    await closedWithin(client, 5000, 'chunk size 0');
    await assertUnharmed(b, 'a chunk size of 0');
  });

  test('random bytes after a valid handshake close that connection only', { timeout: 30_000 }, async () => {
    for (let i = 0; i < 20; i++) {
      const client = await rawRtmp(rtmpPort);
      client.connect();
      // A command whose AMF is cut and garbled, then noise.
      const garbled = command('connect', 1, { app: 'live', tcUrl: 'rtmp://x/live' }).subarray(0, 20 + i);
      client.write(chunks({ cid: 3, type: MessageType.invoke, payload: Buffer.concat([garbled, Buffer.from(Array.from({ length: 64 }, (_, k) => (k * 37 + i) & 0xff))]) }));
      client.socket.destroy();
    }
    await assertUnharmed(b, 'garbled commands');
  });

  test('300 fuzzed publishes (a real ffmpeg publish, mutated) cost the node nothing (short mode of the rtmp-fuzz bench)', { timeout: 90_000 }, async () => {
    const corpus = await makePublishCorpus(rtmpPort, 'not-a-valid-stream-key-0123456789');
    const rssBefore = process.memoryUsage().rss;
    const result = await fuzzRtmp({ port: rtmpPort, corpus, sessions: 300, concurrency: 8, seed: 13, sessionMs: 500 });
    assert.equal(result.sessions, 300);
    assert.ok(Object.keys(result.byMutation).length >= 5, JSON.stringify(result.byMutation));
    const grownMiB = (process.memoryUsage().rss - rssBefore) / MiB;
    assert.ok(grownMiB < 150, `RSS grew by ${grownMiB.toFixed(0)} MiB`);
    await waitFor('every fuzz connection gone', () => b.node.rtmpConnections().open <= 1, 5000, 50);
    await assertUnharmed(b, 'fuzzed publishes');
  });

  test('connections from one address past the caps are closed on accept; closing them frees the slots', { timeout: 30_000 }, async () => {
    const held: RawRtmp[] = [];
    for (let i = 0; i < 3; i++) held.push(await rawRtmp(rtmpPort));
    const fourth = await rawRtmp(rtmpPort, { handshake: false });
    await closedWithin(fourth, 2000, 'a fourth connection without a publish');
    for (const client of held) client.socket.destroy();
    await Promise.all(held.map((client) => client.closed));
    // The slots come back as soon as the server has seen the closes.
    const again = await waitFor('a connection accepted again', async () => {
      const client = await rawRtmp(rtmpPort).catch(() => undefined);
      return client;
    }, 5000, 100);
    again.socket.destroy();
    await assertUnharmed(b, 'too many connections');
  });

  test('a connection that never publishes is closed at the handshake deadline, trickle or not', { timeout: 30_000 }, async () => {
    const silent = await rawRtmp(rtmpPort);
    const trickling = await rawRtmp(rtmpPort);
    const started = Date.now();
    const trickle = setInterval(() => trickling.write(Buffer.from([0x03])), 200);
    try {
      await closedWithin(silent, 5000, 'a silent connection');
      await closedWithin(trickling, 5000, 'a trickling connection');
    } finally {
      clearInterval(trickle);
    }
    const took = Date.now() - started;
    assert.ok(took >= 1500, `closed after ${took} ms, not before the 2 s deadline`);
    await assertUnharmed(b, 'slow handshakes');
  });

  test('a publisher with a valid key that only trickles bytes is closed under the minimum bitrate', { timeout: 30_000 }, async () => {
    const created = await api(b.node, 'POST', '/api/streams', { body: { title: 'Trickle' } });
    const client = await rawRtmp(rtmpPort);
    client.connect();
    client.publish(created.body.streamKey);
    await waitFor('the publish accepted', () => client.received().includes('NetStream.Publish.Start'), 5000, 50);
    const trickle = setInterval(() => client.write(Buffer.from([0xc4])), 250);
    try {
      await closedWithin(client, 6000, 'a trickling publisher');
    } finally {
      clearInterval(trickle);
    }
    await api(b.node, 'DELETE', `/api/streams/${created.body.id}`);
    await assertUnharmed(b, 'a trickling publisher');
  });

  test('a blocked word hidden by a soft hyphen, a zero-width space or a Cyrillic look-alike is still refused', { timeout: 30_000 }, async () => {
    for (const text of ['buy spam\u00ADword now', 'buy spam\u200Bword now', 'buy sp\u0430mword now', 'buy SPAMWORD now']) {
      const ack = await b.chat.timeout(5000).emitWithAck('comment', { text });
      assert.equal(ack.ok, false, `${JSON.stringify(text)} was taken`);
      assert.equal(ack.error.code, 'ONAIR_ERR_CHAT_BLOCKED_WORD', JSON.stringify(ack));
    }
    await assertUnharmed(b, 'hidden blocked words');
  });

  test('chat connections from one address past the cap are refused at connect, with a code', { timeout: 30_000 }, async () => {
    // The cap is 3 and the bystanders hold 2 from this address.
    const third = await joinChat(b.node, b.streamId, 'Third');
    try {
      const fourth = connectChat(`${b.node.httpUrl}/chat`, { transports: ['websocket'], reconnection: false });
      const refusal = await within('the fourth connection refused', new Promise<{ code?: string }>((resolve) => {
        fourth.once('connect_error', (error: Error & { data?: { code?: string } }) => resolve(error.data ?? {}));
      }), 5000);
      fourth.close();
      assert.equal(refusal.code, 'ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS');
    } finally {
      third.close();
    }
    await assertUnharmed(b, 'too many chat connections');
  });

  const whepUrl = (): string => `${b.node.httpUrl}/live/${b.streamId}/whep`;

  async function closeAll(clients: WhepClient[]): Promise<void> {
    await Promise.all(clients.map((client) => client.close()));
  }

  test('a WHEP offer with no codec in common gets 422 saying what OnAir sends (VP8 alone, and VP8 with Opus)', { timeout: 60_000 }, async () => {
    for (const options of [{ videoCodec: 'vp8' as const, audio: false }, { videoCodec: 'vp8' as const }]) {
      const viewer = await connectWhep(whepUrl(), options);
      try {
        assert.equal(viewer.status, 422, viewer.answer);
        const error = JSON.parse(viewer.answer).error;
        assert.equal(error.code, 'ONAIR_ERR_WHEP_NO_MEDIA');
        assert.match(error.message, /H\.264.*opus/i);
      } finally {
        await viewer.close();
      }
    }
    assert.equal(b.node.edge!.viewers(b.streamId), 0);
    await assertUnharmed(b, 'offers with no codec in common');
  });

  test('audio-only and video-only WHEP offers are served', { timeout: 60_000 }, async () => {
    const audioOnly = await connectWhep(whepUrl(), { video: false });
    const videoOnly = await connectWhep(whepUrl(), { audio: false });
    try {
      assert.equal(audioOnly.status, 201, audioOnly.answer);
      assert.equal(videoOnly.status, 201, videoOnly.answer);
      await audioOnly.waitFor('audio RTP', (stats) => stats.audioPackets >= 10, 20_000);
      await videoOnly.waitFor('video RTP with a keyframe', (stats) => stats.keyframes >= 1, 20_000);
      assert.equal(audioOnly.stats().videoPackets, 0);
      assert.equal(videoOnly.stats().audioPackets, 0);
    } finally {
      await closeAll([audioOnly, videoOnly]);
    }
  });

  test('WHEP session ids are never public: strangers see counts, and only the Location ends a session', { timeout: 60_000 }, async () => {
    const viewer = await connectWhep(whepUrl());
    try {
      assert.equal(viewer.status, 201, viewer.answer);
      const publicView = await api(b.node, 'GET', `/api/streams/${b.streamId}`, { token: null });
      assert.equal(publicView.status, 200);
      assert.equal(publicView.body.stats.webrtc.viewers, 1);
      assert.ok(!JSON.stringify(publicView.body).includes(viewer.sessionId!), 'the public stream view names no session');
      const list = await api(b.node, 'GET', '/api/streams', { token: null });
      assert.ok(!JSON.stringify(list.body).includes(viewer.sessionId!), 'the public list names no session');
      const adminView = await api(b.node, 'GET', `/api/streams/${b.streamId}`);
      assert.ok(JSON.stringify(adminView.body).includes(viewer.sessionId!), 'the admin sees the sessions');
      // A guessed session id ends nothing.
      const guess = await fetch(`${whepUrl()}/${crypto.randomUUID()}`, { method: 'DELETE' });
      assert.equal(guess.status, 404);
      assert.equal((await guess.json()).error.code, 'ONAIR_ERR_WHEP_SESSION_NOT_FOUND');
      assert.equal(b.node.edge!.viewers(b.streamId), 1);
      const hangUp = await fetch(new URL(viewer.location!, whepUrl()), { method: 'DELETE' });
      assert.equal(hangUp.status, 200);
      assert.equal(b.node.edge!.viewers(b.streamId), 0);
    } finally {
      await viewer.close();
    }
  });

  test('viewer routers are bounded per stream and closed with their last viewer', { timeout: 90_000 }, async () => {
    const edge = b.node.edge!;
    assert.equal(edge.routerCount(b.streamId), 0, 'no router while nobody watches');
    const viewers: WhepClient[] = [];
    try {
      // Each H.264 payload type is a set of its own (browsers differ): three routers are allowed here.
      for (const payloadType of [100, 102, 104]) {
        const viewer = await connectWhep(whepUrl(), { h264PayloadType: payloadType });
        viewers.push(viewer);
        assert.equal(viewer.status, 201, viewer.answer);
      }
      assert.equal(edge.routerCount(b.streamId), 3);
      const fourth = await connectWhep(whepUrl(), { h264PayloadType: 106 });
      viewers.push(fourth);
      assert.equal(fourth.status, 503, fourth.answer);
      assert.equal(JSON.parse(fourth.answer).error.code, 'ONAIR_ERR_WHEP_BUSY');
      assert.equal(edge.routerCount(b.streamId), 3);
      await viewers[0]!.waitFor('video RTP', (stats) => stats.videoPackets >= 10, 20_000);
    } finally {
      await closeAll(viewers);
    }
    assert.equal(edge.routerCount(b.streamId), 0, 'the routers closed with their last viewer');
    const again = await connectWhep(whepUrl(), { h264PayloadType: 106 });
    try {
      assert.equal(again.status, 201, again.answer);
      await again.waitFor('video RTP on a fresh router', (stats) => stats.videoPackets >= 10, 20_000);
    } finally {
      await again.close();
    }
    await assertUnharmed(b, 'many codec variants');
  });

  test('WHEP sessions from one address past the cap get 503 with Retry-After', { timeout: 90_000 }, async () => {
    const viewers: WhepClient[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const viewer = await connectWhep(whepUrl(), { audio: false });
        viewers.push(viewer);
        assert.equal(viewer.status, 201, viewer.answer);
      }
      const response = await fetch(whepUrl(), { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: viewers[0]!.offer });
      assert.equal(response.status, 503);
      assert.ok(Number(response.headers.get('retry-after')) >= 1);
      assert.equal((await response.json()).error.code, 'ONAIR_ERR_WHEP_BUSY');
    } finally {
      await closeAll(viewers);
    }
    assert.equal(b.node.edge!.viewers(b.streamId), 0);
    await assertUnharmed(b, 'a WHEP session flood');
  });

  test('odd HTTP requests get coded 4xx answers, never a 500 or a crash', { timeout: 30_000 }, async () => {
    const base = b.node.httpUrl;
    const cases: { what: string; url: string; init?: RequestInit }[] = [
      { what: 'a bad percent-encoding', url: `${base}/live/%E0%A4%A/index.m3u8` },
      { what: 'a NUL in the path', url: `${base}/api/streams/%00` },
      { what: 'a path traversal', url: `${base}/vod/${'a'.repeat(16)}/..%2F..%2Fetc%2Fpasswd` },
      { what: 'an overlong id', url: `${base}/api/streams/${'x'.repeat(5000)}` },
      { what: 'a bogus HLS directive', url: `${b.playlistUrl}?_HLS_msn=-1&_HLS_part=abc` },
      { what: 'a far-future HLS directive', url: `${b.playlistUrl}?_HLS_msn=999999999` },
      { what: 'a bad Range', url: `${base}/vod/${'a'.repeat(16)}/index.m3u8`, init: { headers: { range: 'bytes=9-1,2-3' } } },
      { what: 'JSON that is an array', url: `${base}/api/streams`, init: { method: 'POST', headers: { authorization: `Bearer ${b.node.adminToken}`, 'content-type': 'application/json' }, body: '[1,2,3]' } },
      { what: 'JSON nested 10,000 deep', url: `${base}/api/streams`, init: { method: 'POST', headers: { authorization: `Bearer ${b.node.adminToken}`, 'content-type': 'application/json' }, body: '['.repeat(10_000) + ']'.repeat(10_000) } },
      { what: 'a WHEP offer that is not SDP', url: whepUrl(), init: { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF\r\n'.repeat(100) } },
      { what: 'a chat history window upside down', url: `${base}/api/videos/${'a'.repeat(16)}/chat?fromSec=50&toSec=-3` },
    ];
    for (const c of cases) {
      const response = await fetch(c.url, c.init);
      const text = await response.text();
      assert.ok(response.status >= 400 && response.status < 500, `${c.what}: ${response.status} ${text.slice(0, 200)}`);
      assert.match(JSON.parse(text).error.code, /^ONAIR_ERR_/, `${c.what}: a catalogued code`);
    }
    await assertUnharmed(b, 'odd HTTP requests');
  });

  /** Sends `request` until it is answered 429; returns that answer. */
  async function floodUntilLimited(what: string, request: () => Promise<Response>, most: number): Promise<Response> {
    for (let i = 0; i < most; i++) {
      const response = await request();
      if (response.status === 429) return response;
      await response.arrayBuffer();
    }
    assert.fail(`${what}: no 429 after ${most} requests`);
  }

  async function assertRateLimited(response: Response): Promise<void> {
    assert.equal(response.status, 429);
    const retryAfter = Number(response.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${response.headers.get('retry-after')}`);
    assert.equal((await response.json()).error.code, 'ONAIR_ERR_RATE_LIMITED');
  }

  test('WHEP offers, stream creations, upload creations and replay chat reads are rate-limited per address', { timeout: 60_000 }, async () => {
    const admin = { authorization: `Bearer ${b.node.adminToken}` };
    await assertRateLimited(await floodUntilLimited('WHEP offers', () => fetch(whepUrl(), {
      method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0\r\n',
    }), 60));
    await assertRateLimited(await floodUntilLimited('stream creations', () => fetch(`${b.node.httpUrl}/api/streams`, {
      method: 'POST', headers: { ...admin, 'content-type': 'application/json' }, body: JSON.stringify({ title: 'Flood' }),
    }), 20));
    await assertRateLimited(await floodUntilLimited('upload creations', () => fetch(`${b.node.httpUrl}/api/uploads`, {
      method: 'POST', headers: { ...admin, 'tus-resumable': '1.0.0' },
    }), 10));
    await assertRateLimited(await floodUntilLimited('replay chat reads', () => fetch(`${b.node.httpUrl}/api/videos/${'a'.repeat(16)}/chat`), 10));
    // Other routes are not limited by these: the stream view still answers.
    assert.equal((await api(b.node, 'GET', `/api/streams/${b.streamId}`, { token: null })).status, 200);
    await assertUnharmed(b, 'request floods');
  });

  // Last: the lockout holds for a minute for this address, the right token included.
  test('wrong admin tokens are throttled: 429 with Retry-After, the right token included, until the window ends', { timeout: 30_000 }, async () => {
    for (let i = 0; i < 5; i++) {
      const response = await api(b.node, 'GET', '/api/session', { token: `wrong-token-${i}-0123456789` });
      assert.equal(response.status, 403);
      assert.equal(response.body.error.code, 'ONAIR_ERR_FORBIDDEN');
    }
    const locked = await api(b.node, 'GET', '/api/session', { token: 'wrong-token-again-0123456789' });
    assert.equal(locked.status, 429);
    assert.equal(locked.body.error.code, 'ONAIR_ERR_RATE_LIMITED');
    assert.ok(Number(locked.headers.get('retry-after')) >= 1);
    const right = await api(b.node, 'GET', '/api/session');
    assert.equal(right.status, 429, 'guessing gains nothing during the lockout');
    const metrics = await (await fetch(`${b.node.httpUrl}/metrics`)).text();
    assert.match(metrics, /onair_rate_limited_total\{limit="admin-failures"\} [1-9]/);
    await assertUnharmed(b, 'wrong admin tokens');
  });
});

describe('a child whose output is garbage costs only its own run', { timeout: 120_000 }, () => {
  test('an ffmpeg that writes noise on every pipe OnAir reads and dies is restarted; the node stays up and bounded', { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-broken-ffmpeg-'));
    const fake = path.join(dir, 'ffmpeg');
    // fd 2 stderr, 3 progress, 4 the first rendition's fMP4 (live-transcoder/LiveTranscoder.ts): noise on each, then death.
    await writeFile(fake, [
      '#!/bin/sh',
      'head -c 2000000 /dev/urandom >&4 2>/dev/null',
      'head -c 300000 /dev/urandom >&3 2>/dev/null',
      "head -c 300000 /dev/zero | tr '\\0' x >&2",
      'exit 1',
      '',
    ].join('\n'), { mode: 0o755 });
    const { node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_FFMPEG: fake });
    let publisher: ReturnType<typeof publish> | undefined;
    try {
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Broken encoder' } });
      const rssBefore = process.memoryUsage().rss;
      publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240 });
      await waitFor('the broken ffmpeg restarted twice', () => (node.transcoder(created.body.id)?.restarts ?? 0) >= 2, 30_000, 100);
      const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
      assert.match(metrics, new RegExp(`onair_transcoder_restarts_total\\{stream="${created.body.id}"\\} [2-9]`));
      assert.equal((await fetch(`${node.httpUrl}/healthz`)).status, 200);
      const grownMiB = (process.memoryUsage().rss - rssBefore) / MiB;
      assert.ok(grownMiB < 100, `RSS grew by ${grownMiB.toFixed(0)} MiB`);
    } finally {
      publisher?.stop();
      await close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('rate limits hold across OnAir processes sharing one Redis', { timeout: 120_000 }, () => {
  test('wrong admin tokens sent to two nodes in turn are counted together; the lockout holds on both', { timeout: 60_000 }, async () => {
    const redisDir = await mkdtemp(path.join(os.tmpdir(), 'onair-shared-redis-'));
    const redis = await startEmbeddedRedis({ dataDir: redisDir });
    const env = { ONAIR_REDIS_URL: redis.url, ONAIR_RATE_ADMIN_FAILURES_PER_MIN: '4', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_ADMIN_TOKEN: 'shared-admin-token-0123456789' };
    const first = await startTestNode(env);
    const second = await startTestNode(env);
    try {
      // Two wrong tokens on each node: four in all, the limit.
      for (const node of [first.node, second.node, first.node, second.node]) {
        assert.equal((await api(node, 'GET', '/api/session', { token: 'guess-0123456789abcdef' })).status, 403);
      }
      for (const node of [first.node, second.node]) {
        const locked = await api(node, 'GET', '/api/session', { token: 'guess-0123456789abcdef' });
        assert.equal(locked.status, 429, 'each node alone saw only two');
        assert.equal(locked.body.error.code, 'ONAIR_ERR_RATE_LIMITED');
      }
    } finally {
      await first.close();
      await second.close();
      await redis.stop();
      await rm(redisDir, { recursive: true, force: true });
    }
  });
});
