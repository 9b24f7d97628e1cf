import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../server/redis.js';
import { signPlaybackToken } from '../../lib/signing.js';
import { launchChromium, sampleVideo } from '../support/browser.js';
import { api, publish, spawnNode, startTestNode, waitFor, type NodeProcess } from '../support/harness.js';
import { connectWhep } from '../support/whepClient.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';

/**
 * Scale-out on loopback: one redis-server and one PostgreSQL shared by two origins (A a real process, SIGKILLed; B in
 * this process) and one edge (ONAIR_ROLE=edge). The edge finds the stream through Redis and relays its LL-HLS.
 */

const ADMIN_TOKEN = 'scale-edge-admin-token-0123456789';
/** Signed playback: the edge checks viewers' tokens and signs its own requests to the origin with the shared key. */
const SIGNING_KEY = 'scale-edge-signing-key-0123456789';
const COMMON = {
  ONAIR_ADMIN_TOKEN: ADMIN_TOKEN,
  ONAIR_PLAYBACK_SIGNING_KEY: SIGNING_KEY,
  // WebRTC on every node: an edge's WHEP viewers are fed from the origin over one PipeTransport.
  ONAIR_WEBRTC_LAYERS: '144',
  ONAIR_WEBRTC_WORKERS: '1',
  ONAIR_CLUSTER_SECRET: 'scale-edge-cluster-secret-0123456789abcdef',
  ONAIR_LADDER: '240',
  ONAIR_RECONNECT_GRACE_SEC: '5',
};

interface Remote { httpUrl: string; adminToken: string }

/** The playlist's next blocking request, as a player computes it: the part after the last one listed. */
function nextDirectives(playlist: string): { msn: number; part: number } {
  const lines = playlist.split('\n');
  let msn = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(playlist)![1]);
  let parts = 0;
  for (const line of lines) {
    if (line.startsWith('#EXT-X-SKIP:')) msn += Number(/SKIPPED-SEGMENTS=(\d+)/.exec(line)![1]);
    else if (line.startsWith('#EXT-X-PART:')) parts++;
    else if (line.startsWith('#EXTINF:')) {
      msn++;
      parts = 0;
    }
  }
  return { msn, part: parts };
}

/** The viewer's playback token, added to every /live URL `get` asks for. */
let viewerToken = '';

async function get(url: string): Promise<{ status: number; text: string; body: Buffer; headers: Headers }> {
  if (url.includes('/live/') && viewerToken) url += `${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(viewerToken)}`;
  const response = await fetch(url, { signal: AbortSignal.timeout(15_000) });
  const body = Buffer.from(await response.arrayBuffer());
  return { status: response.status, text: body.toString('utf8'), body, headers: response.headers };
}

/** A counter's value from a node's /metrics (0 when the series is absent). */
async function metric(baseUrl: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('an edge relays LL-HLS from the origin that holds the stream (ONAIR_ROLE=edge)', { timeout: 240_000 }, () => {
  let postgres: TestPostgres;
  let redis: EmbeddedRedis;
  let redisDir: string;
  let dataDir: string;
  let originA: NodeProcess;
  let remoteA: Remote;
  let rtmpA: string;
  let originB: Awaited<ReturnType<typeof startTestNode>>;
  let edge: Awaited<ReturnType<typeof startTestNode>>;
  let edgeNode: OnAirNode;
  let publisher: ReturnType<typeof publish> | undefined;
  let streamId: string;
  let streamKey: string;

  before(async () => {
    postgres = await startPostgres();
    redisDir = await mkdtemp(path.join(os.tmpdir(), 'onair-se-'));
    redis = await startEmbeddedRedis({ dataDir: redisDir });
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-se-data-'));
    const shared = { ...COMMON, ONAIR_REDIS_URL: redis.url, ONAIR_DATABASE_URL: postgres.url };
    originA = spawnNode({
      ...shared, ONAIR_ROLE: 'origin', ONAIR_DATA_DIR: path.join(dataDir, 'a'), ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0',
      ONAIR_RTMP_PORT: '0', ONAIR_WEBRTC_PORT: '0', ONAIR_HWACCEL: 'none', ONAIR_X264_PRESET: 'ultrafast', ONAIR_VOD_CONCURRENCY: '0', ONAIR_LOG_LEVEL: 'warn',
    });
    await originA.waitForStdout(/OnAir is on air/, 60_000);
    const [, httpA] = await originA.waitForStdout(/Dashboard:\s+(\S+)\/studio/, 5_000);
    [, rtmpA] = (await originA.waitForStdout(/RTMP server:\s+(\S+)/, 5_000)) as [string, string];
    remoteA = { httpUrl: httpA!, adminToken: ADMIN_TOKEN };
    edge = await startTestNode({ ...shared, ONAIR_ROLE: 'edge' });
    edgeNode = edge.node;
    const created = await api(remoteA as OnAirNode, 'POST', '/api/streams', { body: { title: 'Scale-out' } });
    assert.equal(created.status, 201);
    ({ id: streamId, streamKey } = created.body);
    viewerToken = signPlaybackToken(SIGNING_KEY, streamId, Math.floor(Date.now() / 1000) + 3600);
    publisher = publish(`${rtmpA}/${streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('origin A to serve the stream', async () => (await get(`${remoteA.httpUrl}/live/${streamId}/240p/index.m3u8`)).status === 200, 40_000, 250);
    // Started while the stream is live on A: its start-up recovery must leave A's live stream alone.
    originB = await startTestNode({ ...shared, ONAIR_ROLE: 'origin' });
  });

  after(async () => {
    publisher?.stop();
    originA?.kill('SIGKILL');
    await originA?.exited;
    // Everything is stopped even when a close fails; the first failure is reported.
    const failures: unknown[] = [];
    await edge?.close().catch((error: unknown) => failures.push(new Error(`edge: ${(error as Error).message}`)));
    await originB?.close().catch((error: unknown) => failures.push(new Error(`origin B: ${(error as Error).message}`)));
    await redis?.stop();
    await postgres?.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(redisDir, { recursive: true, force: true });
    if (failures.length > 0) throw failures[0];
  });

  test('the edge is playback-only: no RTMP listener, and it reads streams from the shared database', async () => {
    assert.equal(edgeNode.rtmpPort, 0, 'an edge does not listen for RTMP');
    const view = await api(edgeNode, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(view.status, 200);
    assert.equal(view.body.status, 'live', 'still live: origin B started after it and left it alone (A holds it)');
    assert.match(view.body.playback.hls, new RegExp(`^${edgeNode.publicUrl}/live/${streamId}/index.m3u8`));
    const found = await edgeNode.discovery.lookup(streamId);
    assert.ok(found, 'origin A registered the stream in Redis');
    assert.equal(found.internalUrl, remoteA.httpUrl);
  });

  test('the stream view on the edge carries the live figures of the origin that holds the event (the watch page reads its ad break there)', async () => {
    const onOrigin = await api(remoteA as OnAirNode, 'GET', `/api/streams/${streamId}`, { token: null });
    const onEdge = await api(edgeNode, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(onEdge.status, 200);
    assert.ok(onEdge.body.stats, 'the edge shows the live event\'s stats');
    assert.equal(onEdge.body.stats.eventId, onOrigin.body.stats.eventId);
    assert.equal(onEdge.body.stats.publishing, true);
    assert.equal(onEdge.body.stats.adBreak, null, 'no break on air (the field the watch page reads)');
    assert.equal(onEdge.body.stats.webrtc?.sessions, undefined, 'never the WebRTC session ids (capabilities)');
  });

  test('multivariant, blocking media playlists (full and delta), parts and hinted parts are byte-identical to the origin\'s', async () => {
    const edgeUrl = `${edgeNode.httpUrl}/live/${streamId}`;
    const originUrl = `${remoteA.httpUrl}/live/${streamId}`;
    await waitFor('the edge to serve the stream', async () => (await get(`${edgeUrl}/240p/index.m3u8`)).status === 200, 15_000, 250);
    // A complete segment listed (not only the first parts): the byte checks below cover inits, parts and segments.
    await waitFor('a complete segment at the edge', async () => /-s\d+\.m4s/.test((await get(`${edgeUrl}/240p/index.m3u8`)).text), 15_000, 250);
    await waitFor('identical multivariant playlists', async () => {
      const [e, o] = await Promise.all([get(`${edgeUrl}/index.m3u8`), get(`${originUrl}/index.m3u8`)]);
      return e.status === 200 && e.text === o.text && e.headers.get('content-type') === o.headers.get('content-type');
    }, 10_000, 300);
    for (const skip of ['', '&_HLS_skip=YES']) {
      // Both ask for the next part before it exists: both park and both are answered when it arrives.
      await waitFor(`identical blocking playlists${skip}`, async () => {
        const latest = (await get(`${originUrl}/240p/index.m3u8`)).text;
        const { msn, part } = nextDirectives(latest);
        const query = `?_HLS_msn=${msn}&_HLS_part=${part}${skip}`;
        const [e, o] = await Promise.all([get(`${edgeUrl}/240p/index.m3u8${query}`), get(`${originUrl}/240p/index.m3u8${query}`)]);
        assert.equal(e.status, 200, e.text);
        assert.equal(e.headers.get('cache-control'), o.headers.get('cache-control'));
        return e.text === o.text;
      }, 15_000, 0);
    }
    const unsigned = await fetch(`${edgeUrl}/240p/index.m3u8`);
    const unsignedAtOrigin = await fetch(`${originUrl}/240p/index.m3u8`);
    assert.equal(unsigned.status, 403);
    assert.equal(await unsigned.text(), await unsignedAtOrigin.text(), 'the same refusal as the origin\'s');
    const playlist = (await get(`${edgeUrl}/240p/index.m3u8`)).text;
    assert.ok(playlist.includes(`?token=${encodeURIComponent(viewerToken)}`), 'URIs carry the viewer\'s own token');
    const uris = playlist.split('\n').flatMap((line) => [...line.matchAll(/URI="([^"?]+)/g)].map((m) => m[1]!))
      .concat(playlist.split('\n').filter((line) => !line.startsWith('#') && line.includes('.m4s')).map((line) => line.split('?')[0]!));
    assert.ok(uris.some((u) => /-p\d+\.m4s/.test(u)) && uris.some((u) => /-s\d+\.m4s/.test(u)) && uris.some((u) => /init/.test(u)), uris.join(' '));
    for (const uri of new Set(uris)) {
      if (playlist.includes(`PRELOAD-HINT:TYPE=PART,URI="${uri}"`)) continue;
      const [e, o] = await Promise.all([get(`${edgeUrl}/240p/${uri}`), get(`${originUrl}/240p/${uri}`)]);
      assert.equal(e.status, o.status, uri);
      assert.ok(e.body.equals(o.body), `${uri}: the same bytes`);
    }
    // A request for the hinted part waits for it.
    const hinted = /PRELOAD-HINT:TYPE=PART,URI="([^"?]+)/.exec((await get(`${edgeUrl}/240p/index.m3u8`)).text)![1]!;
    const e = await get(`${edgeUrl}/240p/${hinted}`);
    assert.equal(e.status, 200);
    assert.ok(e.body.equals((await get(`${originUrl}/240p/${hinted}`)).body), 'the hinted part, once it came, is the origin\'s');
  });

  test('50 viewers blocking on the edge cost the origin one request per new part', async (t) => {
    const edgeUrl = `${edgeNode.httpUrl}/live/${streamId}/240p`;
    const before = { playlist: await metric(remoteA.httpUrl, 'onair_llhls_requests_total', 'kind="blocking"'), part: await metric(remoteA.httpUrl, 'onair_llhls_requests_total', 'kind="part"') };
    const newestPart = async (): Promise<number> => Math.max(...[...(await get(`${edgeUrl}/index.m3u8`)).text.matchAll(/-p(\d+)\.m4s/g)].map((m) => Number(m[1])));
    const firstPart = await newestPart();
    const rounds = 5;
    for (let round = 0; round < rounds; round++) {
      const { msn, part } = nextDirectives((await get(`${edgeUrl}/index.m3u8`)).text);
      const answers = await Promise.all(Array.from({ length: 50 }, () => get(`${edgeUrl}/index.m3u8?_HLS_msn=${msn}&_HLS_part=${part}`)));
      assert.ok(answers.every((a) => a.status === 200 && a.text === answers[0]!.text), 'every viewer got the same playlist');
      const newest = [...answers[0]!.text.matchAll(/#EXT-X-PART:[^\n]*URI="([^"?]+)/g)].pop()![1]!;
      const parts = await Promise.all(Array.from({ length: 50 }, () => get(`${edgeUrl}/${newest}`)));
      assert.ok(parts.every((p) => p.status === 200 && p.body.equals(parts[0]!.body)), 'every viewer got the part');
    }
    const after = { playlist: await metric(remoteA.httpUrl, 'onair_llhls_requests_total', 'kind="blocking"'), part: await metric(remoteA.httpUrl, 'onair_llhls_requests_total', 'kind="part"') };
    const newParts = (await newestPart()) - firstPart;
    t.diagnostic(`5 rounds x 50 viewers (playlist + part), ${newParts} new parts: origin saw ${after.playlist - before.playlist} blocking playlist and ${after.part - before.part} part requests`);
    // The relay's own subscription asks once per new part; the 500 viewer requests add nothing to that (a couple
    // more at the edges of the window: requests in flight when it opened or closed).
    assert.ok(after.playlist - before.playlist <= newParts + 3, `blocking playlist requests at the origin: ${after.playlist - before.playlist} for ${newParts} new parts`);
    assert.ok(after.part - before.part <= newParts + 3, `part requests at the origin: ${after.part - before.part} for ${newParts} new parts`);
    assert.ok(await metric(edgeNode.httpUrl, 'onair_edge_upstream_requests_total', 'kind="blocking"') > 0);
    assert.equal(await metric(edgeNode.httpUrl, 'onair_edge_streams', ''), 1);
  });

  test('hls.js in Chromium plays /watch/:id through the edge', { timeout: 90_000 }, async () => {
    const chromium = await launchChromium();
    try {
      const page: Page = await chromium.browser.newPage();
      await page.goto(`${edgeNode.httpUrl}/watch/${streamId}?token=${encodeURIComponent(viewerToken)}`);
      await waitFor('playback to start on the edge', async () => (await sampleVideo(page)).currentTime > 1, 40_000, 500);
      const start = await sampleVideo(page);
      await waitFor('5 s more of playback', async () => (await sampleVideo(page)).currentTime > start.currentTime + 5, 20_000, 500);
      assert.ok((await sampleVideo(page)).brightness > 20, 'the picture is not black');
    } finally {
      await chromium.close();
    }
  });

  test('a WHEP viewer on the edge is fed from origin A (found through discovery) over one pipe', { timeout: 60_000 }, async () => {
    const url = `${edgeNode.httpUrl}/live/${streamId}/whep?token=${encodeURIComponent(viewerToken)}`;
    const viewers = [await connectWhep(url), await connectWhep(url)];
    try {
      for (const viewer of viewers) {
        assert.equal(viewer.status, 201, `WHEP on the edge answered ${viewer.status}: ${viewer.answer}`);
        await viewer.waitFor('a keyframe and audio through the edge', (s) => s.keyframes > 0 && s.audioPackets >= 10, 30_000);
      }
      assert.equal(await metric(remoteA.httpUrl, 'onair_webrtc_pipes', ''), 1, 'two viewers on the edge, one pipe on the origin');
    } finally {
      await Promise.all(viewers.map((v) => v.close()));
    }
  });

  test('origin A killed: its registration lapses within the lease and the edge answers cleanly; on origin B the edge follows', { timeout: 90_000 }, async (t) => {
    const edgeUrl = `${edgeNode.httpUrl}/live/${streamId}/240p/index.m3u8`;
    const prefixA = /URI="([a-z0-9]+)-p/.exec((await get(edgeUrl)).text)![1];
    const eventId = (await api(remoteA as OnAirNode, 'GET', `/api/streams/${streamId}`)).body.stats.eventId as string;
    const lastMsnA = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec((await get(`${remoteA.httpUrl}/live/${streamId}/240p/index.m3u8`)).text)![1]);
    originA.kill('SIGKILL');
    await originA.exited;
    publisher?.stop();
    const killedAt = Date.now();
    // Until the lease lapses the edge may still know origin A: a viewer gets an answer (503 with Retry-After or
    // 404), promptly, never a hang.
    await waitFor('the registration to lapse', async () => (await edgeNode.discovery.lookup(streamId, { fresh: true })) === undefined, 15_000, 200);
    t.diagnostic(`registration lapsed ${Date.now() - killedAt} ms after SIGKILL`);
    assert.ok(Date.now() - killedAt <= 12_000, `lapsed after ${Date.now() - killedAt} ms`);
    const askedAt = Date.now();
    const gone = await get(`${edgeUrl}?_HLS_msn=100000&_HLS_part=0`);
    assert.ok(gone.status === 404 || gone.status === 503, `status ${gone.status}`);
    assert.ok(Date.now() - askedAt < 8_000);
    if (gone.status === 503) assert.ok(gone.headers.get('retry-after'));
    publisher = publish(`${originB.node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('the edge to follow the stream to origin B', async () => {
      const r = await get(edgeUrl);
      const prefix = /URI="([a-z0-9]+)-p/.exec(r.text)?.[1];
      return r.status === 200 && prefix !== undefined && prefix !== prefixA && prefix === originB.node.packager(streamId)?.uriPrefix;
    }, 40_000, 500);
    t.diagnostic(`the edge served origin B's playlist ${Date.now() - killedAt} ms after origin A was killed`);
    assert.equal((await edgeNode.discovery.lookup(streamId, { fresh: true }))?.internalUrl, originB.node.httpUrl);
    // Within the grace: the event A held goes on at B (#17), its numbering continued.
    assert.equal((await api(originB.node, 'GET', `/api/streams/${streamId}`)).body.stats.eventId, eventId, 'the same event goes on at B');
    assert.ok(Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec((await get(edgeUrl)).text)![1]) > lastMsnA, 'the media sequence continues');
    // A comes back (same data dir): the recording it left is a piece of the event that went on at B, stored beside
    // the event's sources, not archived as an event of its own.
    originA = spawnNode({
      ...COMMON, ONAIR_REDIS_URL: redis.url, ONAIR_DATABASE_URL: postgres.url, ONAIR_ROLE: 'origin', ONAIR_DATA_DIR: path.join(dataDir, 'a'), ONAIR_HOST: '127.0.0.1',
      ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_WEBRTC_PORT: '0', ONAIR_HWACCEL: 'none', ONAIR_X264_PRESET: 'ultrafast', ONAIR_VOD_CONCURRENCY: '0', ONAIR_LOG_LEVEL: 'warn',
    });
    await originA.waitForStdout(/OnAir is on air/, 60_000);
    const sourcesA = path.join(dataDir, 'a', 'storage', 'sources', eventId);
    await waitFor('the restarted origin A to store its piece', async () => (await readdir(sourcesA).catch(() => [])).some((f) => /^piece-\d{15}-source-\d+\.flv$/.test(f)), 20_000, 250);
    assert.equal((await api(originB.node, 'GET', `/api/streams/${streamId}`)).body.status, 'live', 'A\'s restart did not end the event');
    assert.equal(await originB.node.vod.catalog.get(eventId), undefined, 'nor archived it as a video of its own');
  });
});
