import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { io as connect, type Socket } from 'socket.io-client';
import type { OnAirNode } from '../../server/node.js';
import { redisOptionsFromUrl } from '../../server/redis.js';
import { api, captureLog, isAlive, isRunning, publish, spawnNode, startTestNode, waitFor, within, type NodeProcess } from '../support/harness.js';

/*
 * The fault suite (`npm test -- faults`): each fault injected for real on loopback, then what the user sees and that
 * nothing was lost. One describe block per fault.
 */

/** The pid of the redis-server serving `<dataDir>/redis/redis.sock`, read from /proc (not its shell wrapper). */
function redisServerPid(dataDir: string): number | undefined {
  const socket = path.join(dataDir, 'redis', 'redis.sock');
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    // redis-server rewrites its title: `redis-server unixsocket:<path>` (its shell wrapper's argv[0] is /bin/sh).
    if (/(^|\/)redis-server( |$)/.test(argv[0] ?? '') && argv.join(' ').includes(socket)) return Number(entry);
  }
  return undefined;
}

/** The mediasoup worker processes whose parent is `parentPid`. */
function mediasoupWorkersOf(parentPid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parentPid && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('mediasoup-worker')) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}


function killQuietly(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

function metricValue(text: string, series: string): number | undefined {
  const escaped = series.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const match = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text);
  return match ? Number(match[1]) : undefined;
}

const openClients = new Set<Socket>();

function chatClient(node: OnAirNode): Promise<Socket> {
  const socket = connect(`${node.httpUrl}/chat`, { transports: ['websocket'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 500 });
  openClients.add(socket);
  return within('a chat connection', new Promise<Socket>((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  }), 10_000);
}

async function join(socket: Socket, streamId: string, name: string): Promise<void> {
  const response = await socket.timeout(5000).emitWithAck('join', { streamId, name });
  assert.equal(response.ok, true, `join: ${JSON.stringify(response)}`);
}

/** Posts from `from` until a comment reaches `to` (resubscription takes a moment after a reconnection). */
async function commentCrosses(from: Socket, to: Socket, label: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; Date.now() < deadline; i++) {
    const text = `${label} ${i}`;
    const arrived = within('the comment', new Promise<void>((resolve) => {
      const listener = (c: { text: string }): void => {
        if (c.text !== text) return;
        to.off('comment', listener);
        resolve();
      };
      to.on('comment', listener);
    }), 1000).then(() => true, () => false);
    const sent = await from.timeout(2000).emitWithAck('comment', { text }).catch(() => undefined);
    if (sent?.ok && (await arrived)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`no comment crossed ${label} within ${timeoutMs} ms`);
}

describe('fault: the embedded redis-server is killed', { timeout: 120_000 }, () => {
  let started: Awaited<ReturnType<typeof startTestNode>>;
  let node: OnAirNode;
  const log = captureLog();

  before(async () => {
    started = await startTestNode({
      ONAIR_LADDER: '240',
      ONAIR_WEBRTC_LAYERS: 'off',
      // A VOD worker in the node: its blocking connection must come back too.
      ONAIR_VOD_CONCURRENCY: '1',
      ONAIR_CHAT_COMMENT_LIMIT: '100/1s',
      ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: '10000/1s',
    }, undefined, { logDestination: log.stream, logLevel: 'info' });
    node = started.node;
  });

  after(async () => {
    for (const socket of openClients) socket.close();
    openClients.clear();
    // Bounded: a node that cannot stop fails here instead of hanging the file.
    await within('the node to close', started.close(), 20_000);
  });

  test('a SIGKILLed redis-server is restarted on its own: ready again in seconds, its data and queued jobs kept, chat and jobs work', { timeout: 90_000 }, async () => {
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Redis fault' } });
    assert.equal(created.status, 201);
    const { id: streamId, streamKey } = created.body as { id: string; streamKey: string };
    const publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 320, height: 240, fps: 15 });
    const client = new Redis({ ...redisOptionsFromUrl(`unix://${path.join(started.dataDir, 'redis', 'redis.sock')}`), lazyConnect: true });
    client.on('error', () => {});
    try {
      await waitFor('the stream to be live', async () => (await api(node, 'GET', `/api/streams/${streamId}`)).body?.status === 'live', 20_000);
      const alice = await chatClient(node);
      const bob = await chatClient(node);
      await join(alice, streamId, 'Alice');
      await join(bob, streamId, 'Bob');
      await commentCrosses(alice, bob, 'before the fault', 5_000);

      // Written before the fault: a plain key and a queued (delayed) job.
      await client.connect();
      await client.set('onair:test:fault', 'kept');
      await node.vod.queue.scheduleCleanup('videos/fault-test', 3_600_000);
      assert.equal((await node.vod.queue.counts())['delayed'], 1);
      assert.equal((await api(node, 'GET', '/readyz', { token: null })).status, 200);

      const pid = redisServerPid(started.dataDir);
      assert.ok(pid !== undefined, 'the embedded redis-server is found in /proc');
      process.kill(pid, 'SIGKILL');

      const down = await waitFor('/readyz to say redis is down', async () => {
        const ready = await api(node, 'GET', '/readyz', { token: null });
        return ready.status === 503 ? ready : undefined;
      }, 5_000, 20);
      assert.equal(down.body.checks.redis, false);

      const killedAt = Date.now();
      const up = await waitFor('/readyz to be 200 again', async () => {
        const ready = await api(node, 'GET', '/readyz', { token: null });
        return ready.status === 200 ? ready : undefined;
      }, 5_000, 100);
      assert.equal(up.body.checks.redis, true);
      assert.deepEqual(down.body.degraded, ['redis'], 'readiness lists what is degraded');
      assert.deepEqual(up.body.degraded, []);
      const newPid = redisServerPid(started.dataDir);
      assert.ok(newPid !== undefined && newPid !== pid, 'a new redis-server runs');
      assert.ok(Date.now() - killedAt < 5_000);
      assert.match(log.text(), /redis exited unexpectedly; restarting it/);
      assert.match(log.text(), /redis restarted/);

      const metrics = (await api(node, 'GET', '/metrics', { token: null })).body as string;
      assert.equal(metricValue(metrics, 'onair_child_restarts_total{child="redis"}'), 1, metrics.split('\n').filter((l) => l.includes('restart')).join('\n'));

      // Nothing lost: the key and the queued job are back from the append-only file.
      assert.equal(await waitFor('the test client to reconnect', () => client.get('onair:test:fault').catch(() => undefined), 5_000), 'kept');
      const counts = await within('the job counts', node.vod.queue.counts(), 5_000);
      assert.equal(counts['delayed'], 1, JSON.stringify(counts));
      // BullMQ works again: a job queued now is taken and done by the node's worker.
      const worker = node.vod.worker!.worker;
      const done = within('the worker to complete a job queued after the restart', new Promise<void>((resolve) => {
        const listener = (job: { id?: string }): void => {
          if (job.id !== 'cleanup-videos-fault-after') return;
          worker.off('completed', listener);
          resolve();
        };
        worker.on('completed', listener);
      }), 10_000);
      await within('a job to be queued', node.vod.queue.scheduleCleanup('videos/fault-after', 0), 5_000);
      await done;
      assert.equal((await node.vod.queue.counts())['failed'], 0);
      // The chat works again, both ways.
      await commentCrosses(alice, bob, 'after the fault A→B', 10_000);
      await commentCrosses(bob, alice, 'after the fault B→A', 10_000);
      assert.equal((await api(node, 'GET', `/api/streams/${streamId}`)).body?.status, 'live');
      // Deleted, not ended: no archive job for the worker to run while the node closes.
      assert.equal((await api(node, 'DELETE', `/api/streams/${streamId}`)).status, 204);
    } finally {
      publisher.stop();
      client.disconnect();
    }
  });
});

describe('fault: stopping after a dependency died', { timeout: 120_000 }, () => {
  let dataDir: string;
  const procs: NodeProcess[] = [];
  const leftovers: number[] = [];
  const publishers: ReturnType<typeof publish>[] = [];

  before(async () => {
    // Short: the redis socket path inside it must fit in 107 bytes.
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-f-'));
  });

  after(async () => {
    for (const proc of procs) proc.kill('SIGKILL');
    for (const publisher of publishers) publisher.stop();
    for (const pid of leftovers) killQuietly(pid);
    await rm(dataDir, { recursive: true, force: true });
  });

  /** `npm start` on `dir`, with a live event on it (its end at SIGTERM queues an archive job in Redis). */
  async function startLiveNodeProcess(dir: string, env: Record<string, string> = {}): Promise<{ proc: NodeProcess; redisPid: number; publisher: ReturnType<typeof publish> }> {
    const started = spawnNode({
      ONAIR_DATA_DIR: dir, ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_HWACCEL: 'none',
      ONAIR_X264_PRESET: 'ultrafast', ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_LOG_LEVEL: 'warn', ...env,
    });
    procs.push(started);
    const [, origin] = await started.waitForStdout(/Dashboard:\s+(\S+)\/studio/, 30_000);
    const [, rtmpUrl] = await started.waitForStdout(/RTMP server:\s+(\S+)/, 5_000);
    const redisPid = redisServerPid(dir);
    assert.ok(redisPid !== undefined, 'the embedded redis-server is found in /proc');
    leftovers.push(redisPid);
    const remote = { httpUrl: origin!, adminToken: (await readFile(path.join(dir, 'admin-token'), 'utf8')).trim() } as unknown as OnAirNode;
    const created = await api(remote, 'POST', '/api/streams', { body: { title: 'Stop after a fault' } });
    assert.equal(created.status, 201);
    const publisher = publish(`${rtmpUrl}/${created.body.streamKey}`, { width: 320, height: 240, fps: 15 });
    publishers.push(publisher);
    await waitFor('the stream to be live', async () => (await api(remote, 'GET', `/api/streams/${created.body.id}`)).body?.status === 'live', 20_000);
    return { proc: started, redisPid, publisher };
  }

  test('SIGTERM stops a node with a live event within 15 s after its redis-server was SIGKILLed', { timeout: 60_000 }, async () => {
    const dir = path.join(dataDir, 'k');
    const { proc, redisPid } = await startLiveNodeProcess(dir);
    process.kill(redisPid, 'SIGKILL');
    await waitFor('redis-server to be gone', () => !isRunning(redisPid), 5_000, 20);
    proc.kill('SIGTERM');
    const { code, signal } = await within('the node to exit after SIGTERM', proc.exited, 15_000);
    assert.equal(signal, null);
    assert.ok(code === 0 || code === 1, `exit code ${code}; stderr:\n${proc.stderr().slice(-2000)}`);
    await waitFor('no redis-server left behind', () => redisServerPid(dir) === undefined, 5_000);
  });

  test('SIGTERM stops a node with a live event within 15 s while its redis-server hangs (SIGSTOP)', { timeout: 60_000 }, async () => {
    const dir = path.join(dataDir, 's');
    const { proc, redisPid } = await startLiveNodeProcess(dir);
    process.kill(redisPid, 'SIGSTOP');
    try {
      proc.kill('SIGTERM');
      const { signal } = await within('the node to exit after SIGTERM', proc.exited, 15_000);
      assert.equal(signal, null);
      // close() gave up on what waited for Redis, and said so.
      assert.match(proc.stdout(), /close: a step ran out of time/);
      // The hung redis-server does not outlive the node.
      await waitFor('no redis-server left behind', () => !isRunning(redisPid), 5_000);
    } finally {
      killQuietly(redisPid, 'SIGCONT');
    }
  });

  test('SIGTERM stops a node with a live event within 15 s after its mediasoup workers and its redis-server were SIGKILLed', { timeout: 60_000 }, async () => {
    const dir = path.join(dataDir, 'm');
    const { proc, redisPid } = await startLiveNodeProcess(dir, { ONAIR_WEBRTC_LAYERS: '240', ONAIR_WEBRTC_PORT: '0' });
    const workers = mediasoupWorkersOf(proc.child.pid!);
    assert.ok(workers.length > 0, 'the node runs mediasoup workers');
    leftovers.push(...workers);
    for (const pid of [...workers, redisPid]) process.kill(pid, 'SIGKILL');
    await waitFor('the killed processes to be gone', () => [...workers, redisPid].every((pid) => !isRunning(pid)), 5_000, 20);
    proc.kill('SIGTERM');
    const { signal } = await within('the node to exit after SIGTERM', proc.exited, 15_000);
    assert.equal(signal, null);
    await waitFor('no redis-server left behind', () => redisServerPid(dir) === undefined, 5_000);
    await waitFor('no mediasoup worker left behind', () => mediasoupWorkersOf(proc.child.pid!).length === 0 && workers.every((pid) => !isRunning(pid)), 5_000);
  });
});
