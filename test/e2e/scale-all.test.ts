import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { io as connect, type Socket } from 'socket.io-client';
import { freePort, nginxMissing, startNginx, type RunningNginx } from '../../bench/support/nginx.js';
import type { OnAirNode } from '../../server/node.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../server/redis.js';
import { launchChromium, sampleVideo } from '../support/browser.js';
import { api, publish, spawnNode, startTestNode, waitFor, within, type NodeProcess } from '../support/harness.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { startS3Server, type S3TestServer } from '../support/s3server.js';
import { connectWhep } from '../support/whepClient.js';

/*
 * Issue #17's all-roles run on loopback: one redis-server, one PostgreSQL and one Swift (S3) shared by two origins
 * (A in this process, B a process of its own), two edges (E1 in this process, E2 a process), Debian's nginx with
 * deploy/nginx/onair.conf in front of E1, and two VOD workers (processes). Origin B and edge E2 are SIGKILLed midway:
 * the other path (nginx → E1 → A) must not notice. Each step is what a viewer or a publisher sees.
 *
 *   publisher ─RTMP─► A ◄─LL-HLS, pipe─ E1 ◄─ nginx ◄─ Chromium page "front"
 *                     ▲ └──────LL-HLS──── E2 ◄─ Chromium page "direct"
 *              B (chat only)        W1, W2 (VOD jobs from the queue)
 */

const CONF = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../deploy/nginx/onair.conf');
const ADMIN_TOKEN = 'scale-all-admin-token-0123456789abcdef';
const STEP_MS = 60_000;

/** The shipped conf with the upstream, listen port and cache path made local to this test (as in scale-nginx). */
async function renderConf(upstreamPort: number, listenPort: number, cacheDir: string): Promise<string> {
  const conf = await readFile(CONF, 'utf8');
  const rendered = conf
    .replace(/^(\s*)server 127\.0\.0\.1:8080;/m, `$1server 127.0.0.1:${upstreamPort};`)
    .replace(/^(\s*)listen 80;/m, `$1listen 127.0.0.1:${listenPort};`)
    .replace('/var/cache/nginx/onair', cacheDir);
  assert.ok(rendered.includes(`127.0.0.1:${upstreamPort}`) && rendered.includes(`127.0.0.1:${listenPort}`), 'the template lines are found');
  return rendered;
}

const openSockets = new Set<Socket>();

/** A chat client joined to the stream's room on the node at `baseUrl`. */
async function chatClient(baseUrl: string, streamId: string, name: string): Promise<Socket> {
  const socket = connect(`${baseUrl}/chat`, { transports: ['websocket'], forceNew: true, reconnection: false });
  openSockets.add(socket);
  await within(`a chat connection to ${baseUrl}`, new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  }), 10_000);
  const joined = await socket.timeout(5000).emitWithAck('join', { streamId, name });
  assert.equal(joined.ok, true, `join on ${baseUrl}: ${JSON.stringify(joined)}`);
  return socket;
}

/** Resolves with the first comment `socket` receives whose text is `text`. */
function arrives(socket: Socket, text: string, what: string): Promise<{ text: string }> {
  return within(what, new Promise((resolve) => {
    const listener = (comment: { text: string }): void => {
      if (comment.text !== text) return;
      socket.off('comment', listener);
      resolve(comment);
    };
    socket.on('comment', listener);
  }), 10_000);
}

async function send(socket: Socket, text: string): Promise<void> {
  const answer = await socket.timeout(5000).emitWithAck('comment', { text });
  assert.equal(answer.ok, true, `comment: ${JSON.stringify(answer)}`);
}

/** The page plays: its playhead moves on by `seconds` and a presented frame is not black. */
async function plays(page: Page, what: string, seconds = 2): Promise<void> {
  await waitFor(`${what} to start`, async () => (await sampleVideo(page)).currentTime > 0.5, 40_000, 500);
  const from = (await sampleVideo(page)).currentTime;
  await waitFor(`${what} to play ${seconds} s`, async () => (await sampleVideo(page)).currentTime > from + seconds, 30_000, 500);
  const frame = await sampleVideo(page);
  assert.ok(frame.brightness > 20, `${what} shows a picture (brightness ${frame.brightness.toFixed(0)})`);
}

// `npm test` installs nginx, Swift and PostgreSQL (scripts/setup.mjs); under CI this suite never skips.
describe('scale: two origins, two edges, nginx and two VOD workers on one Redis, PostgreSQL and S3 (#17)', { timeout: 420_000, skip: process.env.CI ? false : nginxMissing(false) }, () => {
  let postgres: TestPostgres;
  let s3: S3TestServer;
  let redis: EmbeddedRedis;
  let root: string;
  let nginx: RunningNginx;
  let front: string;
  const abort = new AbortController();
  const inProcess: Awaited<ReturnType<typeof startTestNode>>[] = [];
  const forked: NodeProcess[] = [];
  let a: OnAirNode;
  let e1: OnAirNode;
  let originB: NodeProcess;
  let edgeE2: NodeProcess;
  let urlB: string;
  let urlE2: string;
  const workers: NodeProcess[] = [];
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let frontPage: Page;
  let publisher: ReturnType<typeof publish> | undefined;
  let streamId: string;
  let publishedAt = 0;
  let whep: Awaited<ReturnType<typeof connectWhep>> | undefined;
  let shared: Record<string, string>;

  /** `node dist/server/main.js` with a role, on loopback; resolves with its HTTP URL (none for a worker). */
  const fork = async (name: string, env: Record<string, string>): Promise<{ proc: NodeProcess; url: string }> => {
    const proc = spawnNode({
      ...shared, ONAIR_DATA_DIR: path.join(root, name), ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0',
      ONAIR_WEBRTC_PORT: '0', ONAIR_HWACCEL: 'none', ONAIR_X264_PRESET: 'ultrafast', ONAIR_LOG_LEVEL: 'warn', ...env,
    });
    forked.push(proc);
    if (env['ONAIR_ROLE'] === 'worker') {
      await proc.waitForStdout(/VOD worker ready/, 60_000);
      return { proc, url: '' };
    }
    await proc.waitForStdout(/OnAir is on air/, 60_000);
    const [, url] = await proc.waitForStdout(/Dashboard:\s+(\S+)\/studio/, 5_000);
    return { proc, url: url! };
  };

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'onair-scale-all-'));
    // nginx's workers drop to `nobody` when it runs as root: they must reach the cache below this dir.
    await chmod(root, 0o755);
    let redisDir: string;
    [postgres, s3, redis] = await Promise.all([
      startPostgres(),
      startS3Server({ bucket: 'onair-scale-all' }),
      (async () => {
        redisDir = path.join(root, 'redis');
        return startEmbeddedRedis({ dataDir: redisDir });
      })(),
    ]);
    shared = {
      ...s3.env,
      ONAIR_REDIS_URL: redis.url,
      ONAIR_DATABASE_URL: postgres.url,
      ONAIR_ADMIN_TOKEN: ADMIN_TOKEN,
      ONAIR_CLUSTER_SECRET: 'scale-all-cluster-secret-0123456789abcdef',
      ONAIR_LADDER: '240',
      ONAIR_WEBRTC_LAYERS: 'off',
      ONAIR_RECONNECT_GRACE_SEC: '2',
      ONAIR_TRUST_PROXY: '127.0.0.1',
      ONAIR_VOD_CONCURRENCY: '0',
      ONAIR_VOD_LADDER: '240',
      ONAIR_VOD_X264_PRESET: 'ultrafast',
      ONAIR_VOD_SEGMENT_SEC: '2',
    };
    // A and E1 carry WebRTC (the WHEP viewer of step 3 is on E1); B, E2 and the workers need none.
    const webrtc = { ONAIR_WEBRTC_LAYERS: '144', ONAIR_WEBRTC_WORKERS: '1' };
    inProcess.push(await startTestNode({ ...shared, ...webrtc, ONAIR_ROLE: 'origin' }, path.join(root, 'a')));
    inProcess.push(await startTestNode({ ...shared, ...webrtc, ONAIR_ROLE: 'edge' }, path.join(root, 'e1')));
    [a, e1] = inProcess.map((n) => n.node) as [OnAirNode, OnAirNode];
    const worker = { ONAIR_ROLE: 'worker', ONAIR_VOD_CONCURRENCY: '1', ONAIR_LOG_LEVEL: 'info' };
    const [b, e2, w1, w2] = await Promise.all([
      fork('b', { ONAIR_ROLE: 'origin' }), fork('e2', { ONAIR_ROLE: 'edge' }), fork('w1', worker), fork('w2', worker),
    ]);
    [originB, urlB, edgeE2, urlE2] = [b.proc, b.url, e2.proc, e2.url];
    workers.push(w1.proc, w2.proc);
    const port = await freePort();
    nginx = await startNginx({
      dir: path.join(root, 'nginx'), main: 'worker_processes 1;', ports: [port], timeoutMs: 400_000, signal: abort.signal,
      http: await renderConf(Number(new URL(e1.httpUrl).port), port, path.join(root, 'nginx', 'cache')),
    });
    front = `http://127.0.0.1:${port}`;
    chromium = await launchChromium();
  });

  after(async () => {
    for (const socket of openSockets) socket.close();
    await whep?.close().catch(() => undefined);
    publisher?.stop();
    await chromium?.close().catch(() => undefined);
    await nginx?.stop();
    abort.abort();
    for (const proc of forked) proc.kill('SIGKILL');
    await Promise.all(forked.map((p) => p.exited));
    const failures: unknown[] = [];
    for (const n of inProcess.reverse()) await n.close({ keepData: true }).catch((error: unknown) => failures.push(error));
    await redis?.stop();
    await Promise.all([postgres?.stop(), s3?.stop()]);
    if (root) await rm(root, { recursive: true, force: true });
    if (failures.length > 0) throw failures[0];
  });

  test('1. an OBS-like publish to origin A goes live, and the edges find it through Redis', { timeout: STEP_MS }, async () => {
    const created = await api(a, 'POST', '/api/streams', { body: { title: 'All roles' } });
    assert.equal(created.status, 201);
    streamId = created.body.id;
    publisher = publish(`${a.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, fps: 25 });
    publishedAt = Date.now();
    await waitFor('origin A to have segments', () => a.packager(streamId)?.ready, 40_000, 200);
    assert.equal((await e1.discovery.lookup(streamId, { fresh: true }))?.internalUrl, a.internalUrl);
    const onE2 = await (await fetch(`${urlE2}/api/streams/${streamId}`)).json();
    assert.equal(onE2.status, 'live', 'edge E2 sees it live in the shared database');
  });

  test('2. hls.js in Chromium plays /watch/:id through edge E2 directly and through nginx in front of E1', { timeout: 2 * STEP_MS }, async () => {
    const direct = await chromium.browser.newPage();
    frontPage = await chromium.browser.newPage();
    await Promise.all([direct.goto(`${urlE2}/watch/${streamId}`), frontPage.goto(`${front}/watch/${streamId}`)]);
    await plays(direct, 'the page on edge E2');
    await plays(frontPage, 'the page through nginx');
    assert.equal((await sampleVideo(frontPage)).mode, 'live');
    // The page on E2 has shown what it must; E2 dies in step 5 and a dead page's retries only cost CPU.
    await direct.close();
  });

  test('3. a WHEP viewer on edge E1 gets video and audio from origin A', { timeout: STEP_MS }, async () => {
    // Kept open through step 5: the kills must not reach it either.
    whep = await connectWhep(`${e1.httpUrl}/live/${streamId}/whep`, { timeoutMs: 15_000 });
    assert.equal(whep.status, 201, `WHEP on E1 answered ${whep.status}: ${whep.answer}`);
    await whep.waitFor('a keyframe and audio through edge E1', (s) => s.keyframes > 0 && s.audioPackets >= 10, 30_000);
  });

  test('4. a comment sent on edge E1 reaches clients on edge E2 and on origin B', { timeout: STEP_MS }, async () => {
    const [onE1, onE2, onB] = await Promise.all([
      chatClient(e1.httpUrl, streamId, 'One'), chatClient(urlE2, streamId, 'Two'), chatClient(urlB, streamId, 'Bee'),
    ]);
    const seen = [arrives(onE2, 'hello from E1', 'the comment on edge E2'), arrives(onB, 'hello from E1', 'the comment on origin B')];
    await send(onE1, 'hello from E1');
    await Promise.all(seen);
  });

  test('5. origin B and edge E2 SIGKILLed: nginx → E1 → A keeps playing without a stall, chat between E1 and A goes on', { timeout: STEP_MS }, async (t) => {
    const chatViewers = async (): Promise<number> => (await api(a, 'GET', `/api/streams/${streamId}`)).body.stats.chatViewers;
    // Step 4's three clients and the page through nginx, counted across the processes (exchanged once a second).
    const viewersBefore = await waitFor('4 chat viewers counted on origin A', async () => ((await chatViewers()) === 4 ? 4 : undefined), 10_000, 500)
      .catch(async (error: Error) => { throw new Error(`${error.message}: ${await chatViewers()}`); });
    const stallsBefore = (await sampleVideo(frontPage)).stalls;
    const whepBefore = whep!.stats();
    originB.kill('SIGKILL');
    edgeE2.kill('SIGKILL');
    await Promise.all([originB.exited, edgeE2.exited]);
    const killedAt = Date.now();
    // 10 s watched through nginx, once a second: the playhead moves on every time.
    let last = (await sampleVideo(frontPage)).currentTime;
    const seen: string[] = [];
    while (Date.now() - killedAt < 10_000) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const sample = await sampleVideo(frontPage);
      seen.push(sample.currentTime.toFixed(2));
      assert.ok(sample.currentTime > last, `the playhead through nginx stood still: ${seen.join(' → ')}`);
      last = sample.currentTime;
    }
    const after = await sampleVideo(frontPage);
    t.diagnostic(`through nginx after the kills: ${seen.join(' → ')}; stalls ${after.stalls - stallsBefore}`);
    assert.equal(after.stalls, stallsBefore, 'no stall');
    assert.ok(after.brightness > 20, 'still a picture');
    // The WHEP viewer on E1 went on receiving, keyframes included (one per 1 s GOP at least every few seconds).
    const whepAfter = whep!.stats();
    assert.ok(whepAfter.videoPackets > whepBefore.videoPackets + 100 && whepAfter.keyframes > whepBefore.keyframes && whepAfter.audioPackets > whepBefore.audioPackets + 100,
      `WHEP on E1 during the kills: ${whepBefore.videoPackets} → ${whepAfter.videoPackets} video, ${whepBefore.keyframes} → ${whepAfter.keyframes} keyframe packets`);
    await whep!.close();
    // What the streamer sees: the chat viewers held by the dead processes (one on B, one on E2) stop counting.
    await waitFor('the dead nodes\' chat viewers to drop out of the count', async () => (await chatViewers()) === viewersBefore - 2, 15_000, 500)
      .catch(async (error: Error) => { throw new Error(`${error.message}: ${viewersBefore} before the kills, ${await chatViewers()} now`); });
    t.diagnostic(`chat viewers on A ${viewersBefore} → ${viewersBefore - 2} within ${Date.now() - killedAt} ms of the kills (checked after the 10 s watch); WHEP on E1 +${whepAfter.videoPackets - whepBefore.videoPackets} video packets`);

    const [onE1, onA] = await Promise.all([chatClient(e1.httpUrl, streamId, 'Uno'), chatClient(a.httpUrl, streamId, 'Ay')]);
    const toA = arrives(onA, 'still here', 'the comment on origin A');
    await send(onE1, 'still here');
    await toA;
    const toE1 = arrives(onE1, 'and here', 'the comment on edge E1');
    await send(onA, 'and here');
    await toE1;
  });

  test('6. the publisher stops: the event ends, one VOD worker archives it to S3, and the replay plays through E1, nginx and a restarted E2', { timeout: 4 * STEP_MS }, async (t) => {
    publisher!.stop();
    const stoppedAt = Date.now();
    const ended = await waitFor('the event to end and its replay to be published', async () => {
      const view = (await api(e1, 'GET', `/api/streams/${streamId}`, { token: null })).body;
      return view.status !== 'live' && view.replay ? view : undefined;
    }, 40_000, 250);
    t.diagnostic(`replay published ${Date.now() - stoppedAt} ms after the publisher stopped`);
    const videoId: string = ended.replay.videoId;
    const video = await waitFor('a VOD worker to archive the event', async () => {
      const body = (await api(e1, 'GET', `/api/videos/${videoId}`)).body;
      assert.notEqual(body.status, 'failed', body.error);
      return body.kind === 'archive' && body.status === 'ready' ? body : undefined;
    }, 150_000, 500);
    t.diagnostic(`archived ${Date.now() - stoppedAt} ms after the publisher stopped: ${JSON.stringify(video.renditions)}`);
    const byWorker = workers.map((w) => w.stdout().split('\n').filter((line) => line.includes('"vod published"') && line.includes(videoId)).length);
    assert.deepEqual(byWorker.slice().sort(), [0, 1], `one worker published it: ${byWorker.join(', ')}`);
    const keys = await a.vod.storage.list(`videos/${videoId}`);
    assert.ok(keys.some((k) => k.endsWith('.m3u8')), 'the archive is in S3');
    // The whole event is archived: media from the publish (step 1) to the stop, within a few seconds of start-up.
    const publishedSec = (stoppedAt - publishedAt) / 1000;
    assert.ok(video.durationSec > publishedSec - 8 && video.durationSec <= publishedSec + 2, `archive lasts ${video.durationSec} s of ${publishedSec.toFixed(1)} s published`);
    // The comments sent on the edges and on origin A during the event are the replay's chat, from any node.
    const chat = (await api(e1, 'GET', `/api/videos/${videoId}/chat`, { token: null })).body;
    assert.deepEqual(chat.comments.map((c: { text: string }) => c.text), ['hello from E1', 'still here', 'and here']);

    const restarted = await fork('e2', { ONAIR_ROLE: 'edge' });
    const edges = { 'edge E1': e1.httpUrl, nginx: front, 'restarted edge E2': restarted.url };
    // The entry point names the current version (the archive now) and may be cached 5 s (`max-age=5`): nginx may
    // still hold the instant replay's, which the page through it loaded, for that long.
    let manifests: string[] = [];
    await waitFor('every path to serve the archive\'s manifest', async () => {
      manifests = await Promise.all(Object.values(edges).map(async (base) => {
        const response = await fetch(`${base}/vod/${videoId}/index.m3u8`);
        return `${response.status} ${await response.text()}`;
      }));
      return manifests.every((m) => m === manifests[0] && m.startsWith('200 #EXTM3U') && !m.includes('replay/'));
    }, 10_000, 500).catch((error: Error) => { throw new Error(`${error.message}: ${manifests.map((m) => m.slice(0, 300)).join('\n---\n')}`); });
    // The viewer who watched the live event through nginx is moved on to the replay by the page itself, no reload.
    await waitFor('the page through nginx to go on to the replay', async () => (await sampleVideo(frontPage)).mode === 'replay', 30_000, 500);
    await plays(frontPage, 'the replay through nginx (the same page)');
    for (const [what, base] of Object.entries(edges)) {
      const page = await chromium.browser.newPage();
      await page.goto(`${base}/watch/${streamId}`);
      await waitFor(`the replay on ${what}`, async () => (await sampleVideo(page)).mode === 'replay', 20_000, 500);
      await plays(page, `the replay through ${what}`);
      await page.close();
    }
  });
});
