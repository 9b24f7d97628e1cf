import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';
import { connectWhep, type WhepClient } from '../support/whepClient.js';

/**
 * Issue #17, scope 3: an edge node's mediasoup takes each stream once from the origin over a PipeTransport (signalled
 * on the origin's authenticated internal route) and serves every WHEP viewer from its own workers.
 */

const SECRET = 'cluster-secret-for-the-scale-webrtc-test-0123456789';
const LADDER = { ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '240,144', ONAIR_WEBRTC_WORKERS: '1', ONAIR_CLUSTER_SECRET: SECRET };

async function metric(node: OnAirNode, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** ms from the WHEP POST to the first video keyframe and 10 audio packets at the viewer. */
async function joinTime(url: string, open: Set<WhepClient>): Promise<{ client: WhepClient; ms: number }> {
  const started = performance.now();
  const client = await connectWhep(url);
  open.add(client);
  assert.equal(client.status, 201, `WHEP POST answered ${client.status}: ${client.answer}`);
  await client.waitFor('a keyframe and 10 audio packets', (s) => s.keyframes > 0 && s.audioPackets >= 10, 30_000);
  return { client, ms: Math.round(performance.now() - started) };
}

describe('WebRTC edge across nodes: one pipe per stream from the origin', { timeout: 240_000 }, () => {
  let origin: OnAirNode;
  let edge: OnAirNode;
  const closers: (() => Promise<void>)[] = [];
  let publisher: ReturnType<typeof publish> | undefined;
  let streamId: string;
  const open = new Set<WhepClient>();

  before(async () => {
    const o = await startTestNode(LADDER);
    origin = o.node;
    closers.push(o.close);
    const e = await startTestNode(LADDER, undefined, { wiring: { webrtcOrigin: async () => ({ internalUrl: origin.httpUrl }) } });
    edge = e.node;
    closers.push(e.close);
    const created = await api(origin, 'POST', '/api/streams', { body: { title: 'scale WebRTC' } });
    streamId = created.body.id;
    publisher = publish(`${origin.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('the stream to have segments', () => origin.packager(streamId)?.ready, 30_000);
  });

  after(async () => {
    await Promise.all([...open].map((c) => c.close()));
    publisher?.stop();
    for (const close of closers.reverse()) await close();
  });

  test('the internal pipe route needs the cluster secret: 401 without or with a wrong one, 404 on a node without one', async () => {
    const url = `${origin.httpUrl}/internal/webrtc/${streamId}/pipe`;
    const body = JSON.stringify({ ip: '127.0.0.1', port: 9 });
    for (const authorization of [undefined, 'Bearer wrong-secret', `Bearer ${SECRET}x`, SECRET]) {
      const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) }, body });
      assert.equal(response.status, 401, `authorization ${authorization === undefined ? 'absent' : 'wrong'}`);
      assert.equal((await response.json()).error.code, 'ONAIR_ERR_UNAUTHORIZED');
    }
    assert.equal(origin.edge!.pipeCount, 0, 'no pipe opened');
    const plain = await startTestNode({ ONAIR_WEBRTC_LAYERS: 'off' });
    try {
      const response = await fetch(`${plain.node.httpUrl}/internal/webrtc/${streamId}/pipe`, {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRET}` }, body,
      });
      assert.equal(response.status, 404);
      assert.equal((await response.json()).error.code, 'ONAIR_ERR_NOT_FOUND');
    } finally {
      await plain.close();
    }
  });

  test('a viewer on the edge receives video and audio through the pipe; join time edge vs origin', async (t) => {
    const direct = await joinTime(`${origin.httpUrl}/live/${streamId}/whep`, open);
    const viaEdge = await joinTime(`${edge.httpUrl}/live/${streamId}/whep`, open);
    const stats = await viaEdge.client.waitFor('100 video and 50 audio packets', (s) => s.videoPackets >= 100 && s.audioPackets >= 50, 30_000);
    assert.equal(stats.videoSsrcs.size, 1);
    assert.equal(edge.edge!.viewers(streamId), 1, 'the edge serves the viewer');
    assert.equal(origin.edge!.viewers(streamId), 1, 'the origin serves only its own viewer');
    assert.equal(origin.edge!.pipeCount, 1);
    // A second viewer on an edge whose pipe is open: the pipe is reused.
    const warm = await joinTime(`${edge.httpUrl}/live/${streamId}/whep`, open);
    t.diagnostic(`WHEP join (POST → keyframe + 10 audio packets): origin ${direct.ms} ms, edge first viewer (opens the pipe) ${viaEdge.ms} ms, edge second viewer ${warm.ms} ms`);
    await direct.client.close();
    open.delete(direct.client);
  });

  test('3 viewers on the edge take exactly one pipe on the origin', async () => {
    while (edge.edge!.viewers(streamId) < 3) {
      const client = await connectWhep(`${edge.httpUrl}/live/${streamId}/whep`);
      open.add(client);
      assert.equal(client.status, 201, client.answer);
    }
    await Promise.all([...open].map((c) => c.waitFor('a keyframe and audio', (s) => s.keyframes > 0 && s.audioPackets >= 10, 30_000)));
    assert.equal(edge.edge!.viewers(streamId), 3);
    assert.equal(origin.edge!.pipeCount, 1);
    assert.equal(await metric(origin, 'onair_webrtc_pipes'), 1);
    assert.equal(origin.edge!.viewers(streamId), 0, 'no viewer on the origin itself');
    // Simulcast came through the pipe: the edge's consumers pick a layer of their own, as on the origin.
    await waitFor('a spatial layer on every edge viewer', () => edge.edge!.sessionStats(streamId).every((v) => v.spatialLayer !== undefined), 10_000);
    const unknown = await fetch(`${edge.httpUrl}/live/zzzzzzzzzzzz/whep`, {
      method: 'POST', headers: { 'content-type': 'application/sdp' }, body: [...open][0]!.offer,
    });
    assert.equal(unknown.status, 404);
    assert.equal((await unknown.json()).error.code, 'ONAIR_ERR_STREAM_NOT_LIVE');
  });

  test('the stream ending on the origin ends the edge viewers\' sessions and the pipe', async () => {
    const locations = [...open].map((c) => c.location!);
    const ended = await api(origin, 'POST', `/api/streams/${streamId}/end`);
    assert.ok(ended.status < 300, `end answered ${ended.status}`);
    await waitFor('the edge to drop its viewers', () => edge.edge!.viewers(streamId) === 0, 15_000);
    await waitFor('the origin to close the pipe', () => origin.edge!.pipeCount === 0, 15_000);
    for (const location of locations) {
      const response = await fetch(`${edge.httpUrl}${location}`, { method: 'DELETE' });
      assert.equal(response.status, 404, 'the session is gone');
    }
    const again = await fetch(`${edge.httpUrl}/live/${streamId}/whep`, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: [...open][0]!.offer });
    assert.equal(again.status, 404);
    assert.equal((await again.json()).error.code, 'ONAIR_ERR_STREAM_NOT_LIVE');
    assert.equal(await metric(origin, 'onair_webrtc_pipes'), 0);
  });
});
