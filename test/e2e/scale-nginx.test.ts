import assert from 'node:assert/strict';
import { chmod, readFile, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { io as connect, type Socket } from 'socket.io-client';
import { freePort, nginxMissing, startNginx, type RunningNginx } from '../../bench/support/nginx.js';
import type { OnAirNode } from '../../server/node.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../server/redis.js';
import { launchChromium, playhead } from '../support/browser.js';
import { api, publish, startTestNode, waitFor, within } from '../support/harness.js';
import { connectWhep } from '../support/whepClient.js';

/*
 * deploy/nginx/onair.conf for real: Debian's nginx on loopback in front of OnAir node A (the upstream), node B beside
 * it on the same redis-server. Viewers come from distinct loopback addresses (127.0.0.3, .4 …) so that per-address
 * limits can tell them apart; nginx reaches OnAir from 127.0.0.1, the one proxy the nodes trust.
 */

const CONF = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../deploy/nginx/onair.conf');

/** The shipped conf with the upstream, listen port and cache path made local to this test. */
async function renderConf(upstreamPort: number, listenPort: number, cacheDir: string): Promise<string> {
  const conf = await readFile(CONF, 'utf8');
  const rendered = conf
    .replace(/^(\s*)server 127\.0\.0\.1:8080;/m, `$1server 127.0.0.1:${upstreamPort};`)
    .replace(/^(\s*)listen 80;/m, `$1listen 127.0.0.1:${listenPort};`)
    .replace('/var/cache/nginx/onair', cacheDir);
  assert.notEqual(rendered, conf);
  assert.ok(rendered.includes(`127.0.0.1:${upstreamPort}`) && rendered.includes(`127.0.0.1:${listenPort}`), 'the template lines are found');
  return rendered;
}

/** A GET (or other method) over HTTP/1.1 from a chosen local address. */
function request(url: string, options: { method?: string; localAddress?: string; headers?: Record<string, string>; body?: string } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return within(`${options.method ?? 'GET'} ${url}`, new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: options.method ?? 'GET',
      agent: false,
      headers: options.headers ?? {},
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => { body += chunk; }).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end(options.body);
  }), 15_000);
}

const openClients = new Set<Socket>();

function chatClient(baseUrl: string, localAddress: string): Promise<Socket> {
  const socket = connect(`${baseUrl}/chat`, {
    transports: ['websocket'], forceNew: true, reconnection: false, localAddress,
  } as Parameters<typeof connect>[1]);
  openClients.add(socket);
  return within('a chat connection', new Promise<Socket>((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (error) => {
      socket.close();
      reject(error);
    });
  }), 10_000);
}

async function join(socket: Socket, streamId: string, name: string): Promise<void> {
  const response = await socket.timeout(5000).emitWithAck('join', { streamId, name });
  assert.equal(response.ok, true, `join: ${JSON.stringify(response)}`);
}

const comment = (socket: Socket, text: string): Promise<any> => socket.timeout(5000).emitWithAck('comment', { text });

/** `onair_http_requests_total` for one route and status on a node, read from its /metrics. */
async function requestCount(node: OnAirNode, method: string, route: string, status: number): Promise<number> {
  const text = (await api(node, 'GET', '/metrics')).body as string;
  const line = text.split('\n').find((l) => l.startsWith('onair_http_requests_total{')
    && l.includes(`method="${method}"`) && l.includes(`route="${route}"`) && l.includes(`status="${status}"`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

// `npm test` installs nginx (scripts/setup.mjs); only a bare `node scripts/test.mjs` outside CI may skip for want of it.
describe('scale: Debian nginx with deploy/nginx/onair.conf in front of OnAir', { timeout: 240_000, skip: process.env.CI ? false : nginxMissing(false) }, () => {
  let redis: EmbeddedRedis;
  let redisDir: string;
  let dataDir: string;
  let nginxDir: string;
  const nodes: Awaited<ReturnType<typeof startTestNode>>[] = [];
  let a: OnAirNode;
  let b: OnAirNode;
  let nginx: RunningNginx;
  let front: string;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  const abort = new AbortController();

  before(async () => {
    redisDir = await mkdtemp(path.join(os.tmpdir(), 'onair-scale-redis-'));
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-scale-'));
    nginxDir = await mkdtemp(path.join(os.tmpdir(), 'onair-scale-nginx-'));
    // nginx's workers drop to `nobody` when it runs as root: they must reach the cache below this dir.
    await chmod(nginxDir, 0o755);
    redis = await startEmbeddedRedis({ dataDir: redisDir });
    const env = {
      ONAIR_REDIS_URL: redis.url,
      ONAIR_LADDER: '240',
      ONAIR_TRUST_PROXY: '127.0.0.1',
      ONAIR_RATE_CHAT_HISTORY_PER_MIN: '3',
      ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS: '2',
      ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: '3/60s',
      ONAIR_CLUSTER_SECRET: 'scale-nginx-cluster-secret-0123456789abcdef',
    };
    nodes.push(await startTestNode(env, dataDir));
    // Node B: chat and API only (its WebRTC ports would not collide, but it needs none).
    nodes.push(await startTestNode({ ...env, ONAIR_WEBRTC_LAYERS: 'off' }, dataDir));
    [a, b] = nodes.map((n) => n.node) as [OnAirNode, OnAirNode];
    const port = await freePort();
    nginx = await startNginx({
      dir: nginxDir, main: 'worker_processes 1;', ports: [port], timeoutMs: 300_000, signal: abort.signal,
      http: await renderConf(Number(new URL(a.httpUrl).port), port, path.join(nginxDir, 'cache')),
    });
    front = `http://127.0.0.1:${port}`;
    const created = await api(a, 'POST', '/api/streams', { body: { title: 'Behind nginx' } });
    streamId = created.body.id;
    publisher = publish(`${a.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('the stream to have segments', () => a.packager(streamId)?.ready, 30_000);
  });

  after(async () => {
    for (const socket of openClients) socket.close();
    publisher?.stop();
    await nginx?.stop();
    abort.abort();
    for (const n of nodes) await n.close({ keepData: true }).catch(() => {});
    await redis?.stop();
    for (const dir of [dataDir, redisDir, nginxDir]) if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('30 identical blocking requests through nginx reach the origin as one; media is a cache HIT the second time', async (t) => {
    const master = await request(`${front}/live/${streamId}/index.m3u8`);
    assert.equal(master.status, 200, `${master.body} ${nginx.errorLog().slice(-600)}`);
    const rendition = master.body.split('\n').find((l) => l.endsWith('.m3u8') && !l.startsWith('#'))!;
    assert.ok(rendition, master.body);
    const mediaUrl = new URL(rendition, `${front}/live/${streamId}/index.m3u8`);
    const playlist = await request(mediaUrl.href);
    assert.equal(playlist.status, 200);
    const lines = playlist.body.split('\n');
    const sequence = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(playlist.body)![1]);
    const segments = lines.filter((l) => l.startsWith('#EXTINF')).length;
    // The first part of the segment after the open one: it surely blocks for a while.
    const msn = sequence + segments + 1;
    const route = '/live/:id/:rendition/index.m3u8';
    const before = await requestCount(a, 'GET', route, 200);
    const blocking = new URL(`?_HLS_msn=${msn}&_HLS_part=0`, mediaUrl);
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 30 }, () => request(blocking.href)));
    const waitedMs = Date.now() - started;
    for (const answer of answers) {
      assert.equal(answer.status, 200);
      assert.ok(answer.body.includes(`#EXT-X-PART`), 'a playlist');
      assert.equal(answer.body, answers[0]!.body, 'every viewer gets the same playlist');
    }
    assert.ok(waitedMs > 200, `the requests blocked (${waitedMs} ms)`);
    const statuses = answers.map((r) => String(r.headers['x-cache-status']));
    assert.equal(statuses.filter((s) => s === 'MISS').length, 1, statuses.join(','));
    const upstream = await waitFor('the origin to count the request', async () => (await requestCount(a, 'GET', route, 200)) - before, 5000);
    t.diagnostic(`30 blocking requests for msn ${msn} part 0: answered after ${waitedMs} ms, ${upstream} upstream request(s), cache status ${[...new Set(statuses)].map((s) => `${s}×${statuses.filter((x) => x === s).length}`).join(' ')}`);
    assert.equal(upstream, 1, 'one upstream request for 30 viewers');

    // Media: a part and the init section, twice each.
    const partUri = answers[0]!.body.split('\n').filter((l) => l.startsWith('#EXT-X-PART:')).map((l) => /URI="([^"]+)"/.exec(l)![1]!).at(-1)!;
    const initUri = /#EXT-X-MAP:URI="([^"]+)"/.exec(answers[0]!.body)![1]!;
    for (const uri of [partUri, initUri]) {
      const url = new URL(uri, mediaUrl).href;
      const first = await request(url);
      assert.equal(first.status, 200);
      assert.match(String(first.headers['cache-control']), /immutable/);
      const second = await request(url);
      assert.equal(second.headers['x-cache-status'], 'HIT', `${uri} the second time`);
    }
    // The node's own metrics are not exposed through the public face.
    assert.equal((await request(`${front}/metrics`)).status, 404);
    // Durations per route template; URLs that match no route share one label value, however many there are.
    for (let i = 0; i < 3; i++) assert.equal((await request(`${a.httpUrl}/no-such-${i}`)).status, 404);
    const metrics = (await api(a, 'GET', '/metrics')).body as string;
    assert.match(metrics, /onair_http_request_duration_seconds_bucket\{le="[^"]+",method="GET",route="\/live\/:id\/:rendition\/index\.m3u8",status="2xx"\}/);
    assert.ok(!metrics.includes('no-such-'), 'no URL in a label');
    assert.ok((await requestCount(a, 'GET', 'unmatched', 404)) >= 3);
  });

  test('hls.js in Chromium plays the live stream through nginx', async () => {
    const chromium = await launchChromium();
    try {
      const page = await chromium.browser.newPage();
      await page.goto(`${front}/watch/${streamId}`);
      await waitFor('playback through nginx', async () => (await playhead(page)) > 3, 45_000, 250);
    } finally {
      await chromium.close();
    }
  });

  test('behind nginx each viewer has its own HTTP limit; a spoofed X-Forwarded-For from an untrusted peer is ignored', async () => {
    const history = '/api/videos/aaaaaaaaaaaa/chat';
    for (let i = 0; i < 3; i++) assert.notEqual((await request(`${front}${history}`, { localAddress: '127.0.0.3' })).status, 429);
    const refused = await request(`${front}${history}`, { localAddress: '127.0.0.3' });
    assert.equal(refused.status, 429, 'the fourth from one viewer');
    assert.notEqual((await request(`${front}${history}`, { localAddress: '127.0.0.4' })).status, 429, 'another viewer through the same nginx');
    // 127.0.0.9 talks to node A directly: it is no proxy, so what it claims in X-Forwarded-For does not count.
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      statuses.push((await request(`${a.httpUrl}${history}`, { localAddress: '127.0.0.9', headers: { 'x-forwarded-for': `10.0.0.${i + 1}` } })).status);
    }
    assert.equal(statuses[3], 429, `spoofed addresses share the peer's limit: ${statuses.join(',')}`);
  });

  test('chat: a comment sent through nginx to node A reaches a client on node B; the per-address caps hold across both', async () => {
    const created = await api(a, 'POST', '/api/streams', { body: { title: 'Chat across nodes' } });
    const chatStream = created.body.id as string;
    const viaNginx = await chatClient(front, '127.0.0.3');
    const onB = await chatClient(b.httpUrl, '127.0.0.3');
    await join(viaNginx, chatStream, 'Front');
    await join(onB, chatStream, 'Beside');
    const arrived = within('the comment on node B', new Promise<any>((resolve) => onB.on('comment', resolve)), 10_000);
    assert.equal((await comment(viaNginx, 'through nginx')).ok, true);
    assert.equal((await arrived).text, 'through nginx');

    // 127.0.0.3 holds 2 connections (one per node): a third, through nginx, is refused; its neighbour is let in.
    await assert.rejects(chatClient(front, '127.0.0.3'), (error: Error & { data?: { code: string } }) => error.data?.code === 'ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS');
    const neighbour = await chatClient(front, '127.0.0.4');
    await join(neighbour, chatStream, 'Neighbour');

    // 3 comments per address per minute, counted over both nodes: one sent above, one more on each node, then no more.
    assert.equal((await comment(viaNginx, 'second')).ok, true);
    assert.equal((await comment(onB, 'third')).ok, true);
    assert.equal((await comment(onB, 'fourth'))?.error?.code, 'ONAIR_ERR_CHAT_RATE_LIMITED');
    assert.equal((await comment(viaNginx, 'fifth'))?.error?.code, 'ONAIR_ERR_CHAT_RATE_LIMITED');
    assert.equal((await comment(neighbour, 'next door')).ok, true);
  });

  test('node-to-node routes (/internal/) and /metrics are not reachable through nginx, only node to node', async () => {
    const pipe = `/internal/webrtc/${streamId}/pipe/00000000-0000-4000-8000-000000000000`;
    const direct = await request(`${a.httpUrl}${pipe}`, { localAddress: '127.0.0.6' });
    assert.equal(direct.status, 401, `node A itself answers the route (asks for the secret): ${direct.status} ${direct.body}`);
    for (const route of [pipe, '/metrics']) {
      const viaNginx = await request(`${front}${route}`, { localAddress: '127.0.0.6', headers: { authorization: 'Bearer scale-nginx-cluster-secret-0123456789abcdef' } });
      assert.equal(viaNginx.status, 404, `${route} through nginx: ${viaNginx.status}`);
      assert.doesNotMatch(viaNginx.body, /ONAIR_ERR/, `${route}: nginx answers, OnAir never sees the request`);
    }
  });

  test('WHEP through nginx: the session is created and deleted via its Location', async () => {
    const whep = await connectWhep(`${front}/live/${streamId}/whep`, { timeoutMs: 15_000 });
    try {
      assert.match(whep.location ?? '', new RegExp(`^/live/${streamId}/whep/[0-9a-f-]{36}$`));
      const deleted = await request(new URL(whep.location!, front).href, { method: 'DELETE', localAddress: '127.0.0.5' });
      assert.ok(deleted.status >= 200 && deleted.status < 300, `DELETE through nginx: ${deleted.status} ${deleted.body}`);
      const again = await request(new URL(whep.location!, front).href, { method: 'DELETE', localAddress: '127.0.0.5' });
      assert.equal(again.status, 404, 'the session is gone');
    } finally {
      await whep.close();
    }
  });
});
