import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';
import { connectWhep, MEDIASOUP_EXTENSION_IDS, type WhepClient } from '../support/whepClient.js';

/** A WHEP player in the page (the pattern of webrtc.test.ts): recvonly audio + video, the answer applied. */
async function startPageWhep(page: Page, url: string): Promise<{ status: number; location: string | null }> {
  return page.evaluate(async (whepUrl) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    const response = await fetch(whepUrl, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription!.sdp });
    if (response.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    (window as unknown as { whep: RTCPeerConnection }).whep = pc;
    return { status: response.status, location: response.headers.get('location') };
  }, url);
}

async function pageFramesDecoded(page: Page): Promise<number> {
  return page.evaluate(async () => {
    const pc = (window as unknown as { whep: RTCPeerConnection }).whep;
    let frames = 0;
    (await pc.getStats()).forEach((report: { type: string; kind?: string; framesDecoded?: number }) => {
      if (report.type === 'inbound-rtp' && report.kind === 'video') frames = report.framesDecoded ?? 0;
    });
    return frames;
  });
}

/** The WHEP answer's video section. */
function videoSection(sdp: string): string {
  return sdp.split(/\r\n(?=m=)/).find((s) => s.startsWith('m=video')) ?? '';
}

const CLIENTS = 50;
const BATCH = 5;

describe('WebRTC fan-out: Node (werift) viewers beside Chromium, many viewers over workers, simulcast by bandwidth', { timeout: 420_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  let whepUrl: string;
  const open = new Set<WhepClient>();

  const connect = async (options?: Parameters<typeof connectWhep>[1]): Promise<WhepClient> => {
    const client = await connectWhep(whepUrl, options);
    open.add(client);
    assert.equal(client.status, 201, `WHEP POST answered ${client.status}: ${client.answer}`);
    return client;
  };
  const disconnect = async (client: WhepClient): Promise<void> => {
    await client.close();
    open.delete(client);
  };

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '360', ONAIR_WEBRTC_LAYERS: '360,180', ONAIR_WEBRTC_WORKERS: '2',
      // Every viewer here comes from 127.0.0.1: the per-address caps (tested in the hostile group) would stop at 20.
      ONAIR_WHEP_MAX_SESSIONS_PER_ADDRESS: '1000', ONAIR_RATE_WHEP_PER_MIN: '0',
    }));
    assert.ok(node.edge, 'the WebRTC edge started');
    assert.equal(node.edge.workerCount, 2);
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'WebRTC fan-out' } });
    streamId = created.body.id;
    whepUrl = `${node.httpUrl}/live/${streamId}/whep`;
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
  });

  after(async () => {
    await Promise.all([...open].map((c) => c.close()));
    publisher?.stop();
    await close?.();
  });

  test('a Node WHEP client (werift) and Chromium on the same stream at once both receive media', async () => {
    const chromium = await launchChromium();
    try {
      const page = await chromium.browser.newPage();
      await page.goto(`${node.httpUrl}/healthz`);
      const [werift, browser] = await Promise.all([connect(), startPageWhep(page, `/live/${streamId}/whep`)]);
      assert.equal(browser.status, 201);
      assert.equal(node.edge!.viewers(streamId), 2);

      const received = await werift.waitFor('werift: 100 video packets with a keyframe and 50 audio packets',
        (s) => s.videoPackets >= 100 && s.keyframes > 0 && s.audioPackets >= 50, 30_000);
      assert.equal(received.videoSsrcs.size, 1, 'one video SSRC per consumer, whatever the layer');
      await waitFor('Chromium to decode 30 frames', async () => (await pageFramesDecoded(page)) >= 30, 30_000, 250);

      const sessions = node.edge!.sessionStats(streamId);
      assert.equal(sessions.length, 2);
      for (const s of sessions) assert.ok(['connected', 'completed'].includes(s.iceState), `ICE ${s.iceState}`);
      const { body } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
      assert.equal(body.stats.viewers, 2);

      await disconnect(werift);
      const response = await fetch(`${node.httpUrl}${browser.location}`, { method: 'DELETE' });
      assert.equal(response.status, 200);
      assert.equal(node.edge!.viewers(streamId), 0);
    } finally {
      await chromium.close();
    }
  });

  test(`${CLIENTS} Node consumers on 2 workers all receive media and are spread over both workers`, async (t) => {
    const edge = node.edge!;
    const clients: WhepClient[] = [];
    // The Chromium viewer above left a router (its payload types) on one worker: werift viewers on that worker need a
    // second router there, fed by a second pipe of the same producers. Batches arrive at once: they share new routers.
    // Small batches: each connect is an offer, an ICE check and a DTLS handshake in JavaScript on a 2-core machine.
    for (let i = 0; i < CLIENTS; i += BATCH) {
      const batch = await Promise.all(Array.from({ length: Math.min(BATCH, CLIENTS - i) }, () => connect({ congestionControl: false })));
      clients.push(...batch);
    }
    assert.equal(edge.viewers(streamId), CLIENTS);

    const started = Date.now();
    await Promise.all(clients.map((c, i) => c.waitFor(`viewer ${i}: 30 video packets and a keyframe`, (s) => s.videoPackets >= 30 && s.keyframes > 0, 60_000)));
    const allReceivingMs = Date.now() - started;
    for (const c of clients) assert.ok(c.stats().audioPackets > 0, 'audio too');

    const load = [...edge.load];
    assert.equal(load.length, 2);
    assert.equal(load[0]! + load[1]!, CLIENTS);
    for (const [worker, viewers] of load.entries()) {
      assert.ok(viewers > 0, `worker ${worker} has viewers (${load.join('/')})`);
      assert.ok(viewers <= CLIENTS * 0.6, `worker ${worker} holds ${viewers} of ${CLIENTS} (${load.join('/')})`);
    }
    const workers = new Set(edge.sessionStats(streamId).map((s) => s.worker));
    assert.deepEqual([...workers].sort(), [0, 1]);
    const { body } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(body.stats.viewers, CLIENTS);
    t.diagnostic(`all ${CLIENTS} receiving ${allReceivingMs} ms after the last connect; load ${load.join('/')}`);

    for (let i = 0; i < clients.length; i += BATCH) await Promise.all(clients.slice(i, i + BATCH).map((c) => disconnect(c)));
    assert.equal(edge.viewers(streamId), 0);
    assert.deepEqual([...edge.load], [0, 0]);
    const ended = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(ended.body.stats.viewers, 0);
  });

  test('a consumer limited to a low bitrate receives the low layer, and the top layer when unlimited', async () => {
    const edge = node.edge!;
    const client = await connect();
    const sessionId = client.sessionId!;
    // mediasoup estimates bandwidth only with transport-wide-cc on its own id (and transport-cc feedback): check both.
    const video = videoSection(client.answer);
    assert.match(video, new RegExp(`^a=extmap:${MEDIASOUP_EXTENSION_IDS.transportWideCc} http://www\\.ietf\\.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01$`, 'm'));
    assert.match(video, new RegExp(`^a=extmap:${MEDIASOUP_EXTENSION_IDS.absSendTime} http://www\\.webrtc\\.org/experiments/rtp-hdrext/abs-send-time$`, 'm'));
    assert.match(video, /^a=rtcp-fb:\d+ transport-cc$/m);

    const layer = (): number | undefined => edge.sessionStats(streamId).find((s) => s.sessionId === sessionId)?.spatialLayer;
    await client.waitFor('video with a keyframe', (s) => s.videoPackets > 0 && s.keyframes > 0, 30_000);
    await waitFor('the top layer at first (1 Mbit/s initial estimate)', () => layer() === 1, 30_000);
    await client.waitFor('an SPS of the top layer', (s) => s.lastSpsSize?.height === 360, 10_000);

    await edge.limitSession(streamId, sessionId, 250_000);
    await waitFor('the low layer under 250 kbit/s', () => layer() === 0, 30_000);
    const low = await client.waitFor('an SPS of the low layer (180 lines)', (s) => s.lastSpsSize?.height === 180, 10_000);
    assert.equal(low.lastSpsSize?.width, 320);

    await edge.limitSession(streamId, sessionId, 0);
    await waitFor('the top layer again once unlimited (the estimate climbs by probing)', () => layer() === 1, 45_000);
    await client.waitFor('an SPS of the top layer again', (s) => s.lastSpsSize?.height === 360, 10_000);
    await disconnect(client);
  });
});
