import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { io as connect } from 'socket.io-client';
import type { OnAirNode } from '../../server/node.js';
import { probeDuration } from '../support/ffprobe.js';
import { api, childrenOf, isAlive, isRunning, publish, spawnNode, startTestNode, waitFor, within, type NodeProcess } from '../support/harness.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';

/** Processes whose command line mentions `text` (zombies have an empty command line and do not count). */
function processesMentioning(text: string): { pid: number; comm: string }[] {
  const found: { pid: number; comm: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.includes(text)) continue;
      found.push({ pid: Number(entry), comm: readFileSync(`/proc/${entry}/comm`, 'utf8').trim() });
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

/** The embedded redis-server of the node whose data dir is `dataDir`. */
function redisOf(dataDir: string): number {
  const servers = processesMentioning(dataDir).filter((p) => p.comm === 'redis-server');
  assert.equal(servers.length, 1, `one redis-server for ${dataDir}: ${JSON.stringify(servers)}`);
  return servers[0]!.pid;
}



/** What `npm start` prints (the HTTP origin, the RTMP server URL) and the admin token it keeps in the data dir. */
async function startNodeProcess(dataDir: string): Promise<{ proc: NodeProcess; remote: OnAirNode; rtmpUrl: string }> {
  const proc = spawnNode({
    ONAIR_DATA_DIR: dataDir,
    ONAIR_HOST: '127.0.0.1',
    ONAIR_HTTP_PORT: '0',
    ONAIR_RTMP_PORT: '0',
    ONAIR_HWACCEL: 'none',
    ONAIR_X264_PRESET: 'ultrafast',
    ONAIR_LADDER: '360',
    ONAIR_LOG_LEVEL: 'warn',
  });
  await proc.waitForStdout(/OnAir is on air/, 30_000);
  const [, dashboard] = await proc.waitForStdout(/Dashboard:\s+(\S+)\/studio/, 5_000);
  const [, rtmpUrl] = await proc.waitForStdout(/RTMP server:\s+(\S+)/, 5_000);
  // Not in the banner: stdout here is a pipe, not a terminal.
  const adminToken = (await readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim();
  // `api` needs only these two fields of a node.
  const remote = { httpUrl: dashboard!, adminToken } as unknown as OnAirNode;
  return { proc, remote, rtmpUrl: rtmpUrl! };
}

async function statusOf(node: OnAirNode, id: string): Promise<string | undefined> {
  return (await api(node, 'GET', `/api/streams/${id}`, { token: null })).body?.status;
}

async function tempDir(): Promise<string> {
  // Short: the redis socket path inside it must fit in 107 bytes.
  return mkdtemp(path.join(os.tmpdir(), 'onair-p-'));
}

describe('streams survive a restart', { timeout: 150_000 }, () => {
  test('on SQLite: the stream, its key and the admin token are still there after a restart', { timeout: 60_000 }, async () => {
    const first = await startTestNode({ ONAIR_LADDER: '360' });
    const created = await api(first.node, 'POST', '/api/streams', { body: { title: 'Evening news', description: 'At eight' } });
    assert.equal(created.status, 201);
    const { id, streamKey } = created.body;
    const adminToken = first.node.adminToken;
    await first.close({ keepData: true });

    const second = await startTestNode({ ONAIR_LADDER: '360' }, first.dataDir);
    let publisher: ReturnType<typeof publish> | undefined;
    try {
      assert.equal(second.node.adminToken, adminToken, 'the generated admin token is kept');
      assert.equal((await stat(path.join(first.dataDir, 'admin-token'))).mode & 0o777, 0o600, 'only its owner can read the token file');
      const { status, body } = await api(second.node, 'GET', `/api/streams/${id}`, { token: null });
      assert.equal(status, 200);
      assert.equal(body.title, 'Evening news');
      assert.equal(body.description, 'At eight');
      assert.equal(body.status, 'idle');
      publisher = publish(`${second.node.rtmpUrl}/${streamKey}`, { width: 640, height: 360 });
      await waitFor('the stream to go live with its old key', async () => (await statusOf(second.node, id)) === 'live', 20_000);
    } finally {
      publisher?.stop();
      await second.close();
    }
  });

  describe('on PostgreSQL', { timeout: 90_000 }, () => {
    let pg: TestPostgres;

    before(async () => {
      pg = await startPostgres();
    });

    after(async () => {
      await pg?.stop();
    });

    test('a node with a fresh data dir finds the stream another node created, and its key works', { timeout: 60_000 }, async () => {
      const first = await startTestNode({ ONAIR_DATABASE_URL: pg.url, ONAIR_LADDER: '360' });
      const created = await api(first.node, 'POST', '/api/streams', { body: { title: 'Kept in Postgres' } });
      assert.equal(created.status, 201);
      const { id, streamKey } = created.body;
      // Its data dir is removed: nothing of the stream can come from there.
      await first.close();

      const second = await startTestNode({ ONAIR_DATABASE_URL: pg.url, ONAIR_LADDER: '360' });
      let publisher: ReturnType<typeof publish> | undefined;
      try {
        assert.notEqual(second.dataDir, first.dataDir);
        const { status, body } = await api(second.node, 'GET', `/api/streams/${id}`, { token: null });
        assert.equal(status, 200);
        assert.equal(body.title, 'Kept in Postgres');
        assert.equal(body.status, 'idle');
        const listed = (await api(second.node, 'GET', '/api/streams', { token: null })).body.streams.map((s: { id: string }) => s.id);
        assert.ok(listed.includes(id));
        publisher = publish(`${second.node.rtmpUrl}/${streamKey}`, { width: 640, height: 360 });
        await waitFor('the stream to go live with its key', async () => (await statusOf(second.node, id)) === 'live', 20_000);
      } finally {
        publisher?.stop();
        await second.close();
      }
    });
  });
});

describe('the embedded redis-server lives and dies with its node', { timeout: 240_000 }, () => {
  test('a node killed with SIGKILL leaves no redis-server behind', { timeout: 45_000 }, async () => {
    const dir = await tempDir();
    let proc: NodeProcess | undefined;
    try {
      ({ proc } = await startNodeProcess(dir));
      const redisPid = redisOf(dir);
      proc.child.kill('SIGKILL');
      const { signal } = await within('the node to die', proc.exited, 10_000);
      assert.equal(signal, 'SIGKILL');
      await waitFor(`redis-server ${redisPid} to exit`, () => !isRunning(redisPid), 5_000, 50);
      await waitFor('nothing left running on the data dir', () => processesMentioning(dir).length === 0, 5_000, 50);
    } finally {
      proc?.child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a node stopped with SIGTERM exits 0 and stops its redis-server', { timeout: 45_000 }, async () => {
    const dir = await tempDir();
    let proc: NodeProcess | undefined;
    try {
      ({ proc } = await startNodeProcess(dir));
      const redisPid = redisOf(dir);
      proc.child.kill('SIGTERM');
      const { code, signal } = await within('the node to exit', proc.exited, 15_000);
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, proc.stderr());
      assert.ok(!isRunning(redisPid), 'redis-server stopped before the node exited');
      await waitFor('nothing left running on the data dir', () => processesMentioning(dir).length === 0, 5_000, 50);
    } finally {
      proc?.child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a stream that was live when its node died is ended at the next start; its recording becomes the replay, with its chat, and the archive', { timeout: 150_000 }, async () => {
    const dir = await tempDir();
    let proc: NodeProcess | undefined;
    let publisher: ReturnType<typeof publish> | undefined;
    try {
      const started = await startNodeProcess(dir);
      proc = started.proc;
      const created = await api(started.remote, 'POST', '/api/streams', { body: { title: 'Cut off' } });
      assert.equal(created.status, 201);
      const { id, streamKey } = created.body;
      publisher = publish(`${started.rtmpUrl}/${streamKey}`, { width: 640, height: 360 });
      await waitFor('the stream to go live', async () => (await statusOf(started.remote, id)) === 'live', 20_000);

      const transcoders = await waitFor('the node to start its ffmpeg', () => {
        const found = childrenOf(proc!.child.pid!).filter((c) => c.comm === 'ffmpeg');
        return found.length > 0 ? found : undefined;
      }, 10_000);
      assert.equal(transcoders.length, 1, 'one ffmpeg transcodes the live stream');
      // A viewer comments; the recording has a few segments on disk when the node dies.
      const chat = connect(`${started.remote.httpUrl}/chat`, { transports: ['websocket'], forceNew: true });
      try {
        await within('chat connect', new Promise((resolve) => chat.once('connect', () => resolve(undefined))), 10_000);
        assert.equal((await chat.timeout(5000).emitWithAck('join', { streamId: id, name: 'Ada' })).ok, true);
        assert.equal((await chat.timeout(5000).emitWithAck('comment', { text: 'still there?' })).ok, true);
      } finally {
        chat.close();
      }
      const recordings = path.join(dir, 'recordings');
      await waitFor('three segments recorded', async () => {
        const [eventId] = await readdir(recordings).catch(() => []);
        const journal = eventId ? await readFile(path.join(recordings, eventId, 'journal.jsonl'), 'utf8').catch(() => '') : '';
        return (journal.match(/"segment"/g)?.length ?? 0) >= 3;
      }, 30_000);
      proc.child.kill('SIGKILL');
      await within('the node to die', proc.exited, 10_000);
      publisher.stop();
      await waitFor('the dead node\'s redis-server to exit', () => processesMentioning(dir).length === 0, 5_000, 50);
      await waitFor('the dead node\'s ffmpeg to exit', () => !isRunning(transcoders[0]!.pid), 5_000, 50);

      const next = await startTestNode({ ONAIR_LADDER: '360', ONAIR_VOD_CONCURRENCY: '1' }, dir);
      try {
        const { body } = await api(next.node, 'GET', `/api/streams/${id}`, { token: null });
        assert.equal(body.status, 'ended');
        assert.equal(body.stats, undefined, 'no live stats for a stream nobody publishes');
        const events = await next.node.streams.listEvents(id);
        assert.equal(events.length, 1);
        assert.ok(events[0]!.endedAt !== null && events[0]!.endedAt >= events[0]!.startedAt, 'the event has an end');

        // Nothing of the event is lost: the recording it left becomes the replay at once, then the archive.
        const replay = await waitFor('the cut-off event\'s replay', async () => (await api(next.node, 'GET', `/api/streams/${id}`, { token: null })).body.replay, 20_000);
        assert.equal(replay.videoId, events[0]!.id);
        const video = (await api(next.node, 'GET', `/api/videos/${replay.videoId}`, { token: null })).body;
        assert.equal(video.source, id);
        assert.equal(video.title, 'Cut off');
        assert.ok(video.durationSec >= 5.5, `three segments or more: ${video.durationSec} s`);
        const played = await probeDuration(video.playback.hls);
        assert.ok(Math.abs(played - video.durationSec) < 1, `a player reads ${played} s of ${video.durationSec} s`);
        const kept = (await api(next.node, 'GET', `/api/videos/${replay.videoId}/chat`, { token: null })).body.comments;
        assert.deepEqual(kept.map((c: { text: string }) => c.text), ['still there?']);
        const archive = await waitFor('the archive of the cut-off event', async () => {
          const current = (await api(next.node, 'GET', `/api/videos/${replay.videoId}`)).body;
          assert.notEqual(current.status, 'failed', current.error);
          return current.status === 'ready' ? current : undefined;
        }, 90_000, 500);
        assert.equal(archive.kind, 'archive');
        assert.ok(archive.durationSec >= video.durationSec - 1, `the source covers what the ladder made: ${archive.durationSec} s vs ${video.durationSec} s`);
        assert.deepEqual(await readdir(recordings), [], 'the recording has left the node\'s disk');
      } finally {
        await next.close({ keepData: true });
      }
    } finally {
      publisher?.stop();
      proc?.child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
