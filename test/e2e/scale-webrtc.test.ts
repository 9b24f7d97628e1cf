import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { api, childrenOf, publish, spawnNode, startTestNode, waitFor } from '../support/harness.js';
import { connectWhep, type WhepClient } from '../support/whepClient.js';

/**
 * Issue #17, scope 3: an edge node's mediasoup takes each stream once from the origin over a PipeTransport (signalled
 * on the origin's authenticated internal route) and serves every WHEP viewer from its own workers.
 */

const SECRET = 'cluster-secret-for-the-scale-webrtc-test-0123456789';
/** The edge's pipe linger, shortened from 30 s for the test. */
const LINGER_MS = 3_000;
const LADDER = { ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '240,144', ONAIR_WEBRTC_WORKERS: '1', ONAIR_CLUSTER_SECRET: SECRET };

async function metric(node: OnAirNode, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** ms from the WHEP POST to its answer applied, to the first audio packet, and to the first video keyframe. */
async function joinTime(url: string, open: Set<WhepClient>): Promise<{ client: WhepClient; answer: number; audio: number; keyframe: number }> {
  const started = performance.now();
  const client = await connectWhep(url);
  const answer = Math.round(performance.now() - started);
  open.add(client);
  assert.equal(client.status, 201, `WHEP POST answered ${client.status}: ${client.answer}`);
  await client.waitFor('an audio packet', (s) => s.audioPackets > 0, 30_000);
  const audio = Math.round(performance.now() - started);
  await client.waitFor('a keyframe and 10 audio packets', (s) => s.keyframes > 0 && s.audioPackets >= 10, 30_000);
  return { client, answer, audio, keyframe: Math.round(performance.now() - started) };
}

const show = (j: { answer: number; audio: number; keyframe: number }): string => `answer ${j.answer} / audio ${j.audio} / keyframe ${j.keyframe} ms`;

describe('WebRTC edge across nodes: one pipe per stream from the origin', { timeout: 240_000 }, () => {
  let origin: OnAirNode;
  let edge: OnAirNode;
  const closers: (() => Promise<void>)[] = [];
  let publisher: ReturnType<typeof publish> | undefined;
  let streamId: string;
  const open = new Set<WhepClient>();
  /** Where the edge's origin lookup points (the discovery of issue #17 in a closure). */
  let originUrl: string;
  /** The origin's mediasoup workers (ingest and one viewer worker), told apart from the edge's by start order. */
  let originWorkers: number[];
  const mediasoupChildren = (): number[] => childrenOf(process.pid).filter((p) => p.comm.startsWith('mediasoup-work')).map((p) => p.pid);

  before(async () => {
    const o = await startTestNode(LADDER);
    origin = o.node;
    originUrl = origin.httpUrl;
    closers.push(o.close);
    originWorkers = mediasoupChildren();
    assert.equal(originWorkers.length, 2, 'the origin\'s ingest and viewer workers');
    const e = await startTestNode(LADDER, undefined, { wiring: { webrtcOrigin: async () => ({ internalUrl: originUrl }), webrtcPipeLingerMs: LINGER_MS } });
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
    t.diagnostic(`WHEP join from the POST: origin ${show(direct)}; edge, first viewer (opens the pipe) ${show(viaEdge)}; edge, second viewer ${show(warm)}`);
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

  test('the origin\'s ladder ffmpeg SIGKILLed: same layers, so the pipe and the edge viewers stay and media resumes', async () => {
    const transcoder = origin.transcoder(streamId)!;
    const discontinuity = transcoder.next('discontinuity', 20_000);
    process.kill(transcoder.pid!, 'SIGKILL');
    await discontinuity;
    // The old ffmpeg is gone: 100 more video packets (~2 s at 240p) with keyframes can only come from the new run.
    const marks = [...open].map((c) => c.stats());
    await Promise.all([...open].map((c, i) => c.waitFor('video and keyframes of the new ffmpeg run',
      (s) => s.videoPackets > marks[i]!.videoPackets + 100 && s.keyframes > marks[i]!.keyframes + 2 && s.audioPackets > marks[i]!.audioPackets + 50, 20_000)));
    assert.equal(edge.edge!.viewers(streamId), 3);
    assert.equal(origin.edge!.pipeCount, 1, 'the same pipe');
  });

  test('the origin\'s mediasoup workers SIGKILLed: the pipe goes with them, the edge ends its viewers\' sessions, a new POST pipes again', async (t) => {
    for (const pid of originWorkers) process.kill(pid, 'SIGKILL');
    const killedAt = Date.now();
    await waitFor('the edge to end its viewers\' sessions', () => edge.edge!.viewers(streamId) === 0, 10_000);
    for (const c of [...open]) {
      await c.close();
      open.delete(c);
    }
    const fresh = await waitFor('a new edge viewer', async () => {
      const c = await connectWhep(`${edge.httpUrl}/live/${streamId}/whep`);
      if (c.status === 201) return c;
      await c.close();
      return undefined;
    }, 15_000, 250);
    open.add(fresh);
    await fresh.waitFor('video and audio through the new pipe', (s) => s.keyframes > 0 && s.audioPackets >= 10, 15_000);
    t.diagnostic(`an edge viewer had video again ${Date.now() - killedAt} ms after the origin's workers were killed`);
    assert.equal(origin.edge!.pipeCount, 1, 'one new pipe');
  });

  test('the last edge viewer leaving: the pipe lingers (a viewer meanwhile reuses it), then the edge closes it at the origin', async () => {
    for (const c of [...open]) {
      await c.close();
      open.delete(c);
    }
    assert.equal(edge.edge!.viewers(streamId), 0);
    assert.equal(origin.edge!.pipeCount, 1, 'still open: lingering');
    const back = await joinTime(`${edge.httpUrl}/live/${streamId}/whep`, open);
    assert.equal(origin.edge!.pipeCount, 1, 'the same pipe serves the returning viewer');
    await back.client.close();
    open.delete(back.client);
    const leftAt = Date.now();
    await waitFor('the origin to close the pipe after the linger', () => origin.edge!.pipeCount === 0, LINGER_MS + 5_000);
    assert.ok(Date.now() - leftAt >= LINGER_MS - 500, 'not before the linger');
    assert.equal(edge.edge!.pulledCount, 0);
  });

  test('the stream ending on the origin ends the edge viewers\' sessions and the pipe', async () => {
    for (let i = 0; i < 2; i++) open.add(await connectWhep(`${edge.httpUrl}/live/${streamId}/whep`));
    await Promise.all([...open].map((c) => c.waitFor('media', (s) => s.keyframes > 0 && s.audioPackets >= 10, 30_000)));
    assert.equal(origin.edge!.pipeCount, 1);
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

  test('the origin process SIGKILLed: the edge gives the pipe up after 3 failed renewals and its viewers\' sessions end', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-origin-'));
    const proc = spawnNode({
      ...LADDER, ONAIR_DATA_DIR: dir, ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_WEBRTC_PORT: '0',
      ONAIR_HWACCEL: 'none', ONAIR_X264_PRESET: 'ultrafast', ONAIR_VOD_CONCURRENCY: '0', ONAIR_LOG_LEVEL: 'warn',
    });
    let killedPublisher: ReturnType<typeof publish> | undefined;
    try {
      const [, url] = await proc.waitForStdout(/Dashboard:\s+(\S+)\/studio/, 30_000);
      const [, rtmpUrl] = await proc.waitForStdout(/RTMP server:\s+(\S+)/, 5_000);
      const remote = { httpUrl: url!, adminToken: (await readFile(path.join(dir, 'admin-token'), 'utf8')).trim() } as unknown as OnAirNode;
      const created = await api(remote, 'POST', '/api/streams', { body: { title: 'origin to kill' } });
      killedPublisher = publish(`${rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
      originUrl = url!;
      const id: string = created.body.id;
      const client = await waitFor('an edge viewer of the new origin\'s stream', async () => {
        const c = await connectWhep(`${edge.httpUrl}/live/${id}/whep`);
        if (c.status === 201) return c;
        await c.close();
        return undefined;
      }, 30_000, 500);
      open.add(client);
      await client.waitFor('video and audio', (s) => s.keyframes > 0 && s.audioPackets >= 10, 30_000);
      proc.kill('SIGKILL');
      const killedAt = Date.now();
      await waitFor('the edge to end its viewers\' sessions', () => edge.edge!.viewers(id) === 0, 20_000);
      assert.equal(edge.edge!.pulledCount, 0, 'no stream pulled any more');
      const response = await fetch(`${edge.httpUrl}${client.location}`, { method: 'DELETE' });
      assert.equal(response.status, 404, 'the session is gone');
      assert.ok(Date.now() - killedAt < 15_000);
    } finally {
      killedPublisher?.stop();
      proc.kill('SIGKILL');
      await proc.exited;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
