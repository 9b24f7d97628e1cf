import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { createLogger } from '../lib/log.js';
import { Audience, sessionKey, type AudienceOptions } from '../server/Audience.js';
import { redisOptionsFromUrl, startEmbeddedRedis, type EmbeddedRedis } from '../server/redis.js';

const session = (id: string): Record<string, string> => ({ 'x-playback-session-id': id, 'user-agent': 'hls.js test' });

describe('the audience across processes (server/Audience.ts, real redis-server)', { timeout: 60_000 }, () => {
  let dir: string;
  let server: EmbeddedRedis;
  const clients: Redis[] = [];
  const log = createLogger({ level: 'silent' });
  let stream = 0;
  let stopped = false;
  const nextStream = (): string => `stream${String(++stream).padStart(6, '0')}`;
  const audience = (nodeId: string, options: Partial<AudienceOptions> = {}): Audience => {
    const redis = new Redis({ ...redisOptionsFromUrl(server.url), maxRetriesPerRequest: 1 });
    clients.push(redis);
    return new Audience({ redis, nodeId, log, webrtcViewers: () => 0, addViews: async () => {}, ...options });
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-audience-'));
    server = await startEmbeddedRedis({ dataDir: dir });
  });

  after(async () => {
    for (const client of clients) client.disconnect();
    if (!stopped) await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('two processes: each counts its own LL-HLS sessions and WebRTC viewers, and each sees the sum', async () => {
    const id = nextStream();
    const a = audience('node-a');
    const b = audience('node-b', { webrtcViewers: (s) => (s === id ? 1 : 0) });
    await a.begin(id);
    for (const s of ['viewer-0001', 'viewer-0002', 'viewer-0003']) a.llhls(id, session(s), '10.0.0.1');
    for (const s of ['viewer-0004', 'viewer-0005']) b.llhls(id, session(s), '10.0.0.2');
    b.webrtcJoined(id, 'whep-session-1');
    a.counts(id);
    b.counts(id);
    await a.tick();
    await b.tick();
    await a.tick();
    const expected = { current: 6, peak: 6, total: 6, byProtocol: { llhls: 5, webrtc: 1 } };
    assert.deepEqual(a.counts(id), expected);
    assert.deepEqual(b.counts(id), expected);
  });

  test('a session is one viewer however often it asks; without a session id, address and user agent tell players apart', async () => {
    const id = nextStream();
    const a = audience('node-a');
    for (let i = 0; i < 20; i += 1) a.llhls(id, session('same-session-01'), '10.0.0.1');
    a.llhls(id, { 'user-agent': 'VLC/3.0.18' }, '10.0.0.9');
    a.llhls(id, { 'user-agent': 'VLC/3.0.18' }, '10.0.0.9');
    a.llhls(id, { 'user-agent': 'Lavf/59.27.100' }, '10.0.0.9');
    // A malformed session id (too long, odd characters) is no session id: the address and agent count instead.
    a.llhls(id, { 'x-playback-session-id': '<script>'.repeat(20), 'user-agent': 'VLC/3.0.18' }, '10.0.0.9');
    a.counts(id);
    await a.tick();
    assert.deepEqual(a.counts(id).byProtocol, { llhls: 3, webrtc: 0 });
    assert.equal(a.counts(id).total, 3);
    assert.equal(sessionKey({ 'x-playback-session-id': '<script>'.repeat(20), 'user-agent': 'VLC/3.0.18' }, '10.0.0.9'),
      sessionKey({ 'user-agent': 'VLC/3.0.18' }, '10.0.0.9'));
  });

  test('sessions that stop asking drop out after the window; the peak and the total stay', async () => {
    const id = nextStream();
    const a = audience('node-a', { windowMs: 300 });
    a.llhls(id, session('leaving-00001'), '10.0.0.1');
    a.llhls(id, session('leaving-00002'), '10.0.0.1');
    a.counts(id);
    await a.tick();
    assert.equal(a.counts(id).current, 2);
    await new Promise((resolve) => setTimeout(resolve, 400));
    await a.tick();
    assert.deepEqual(a.counts(id), { current: 0, peak: 2, total: 2, byProtocol: { llhls: 0, webrtc: 0 } });
  });

  test('a process that dies (no close, no more ticks) stops counting within seconds', async () => {
    const id = nextStream();
    const a = audience('node-a');
    const dead = audience('node-dead');
    a.llhls(id, session('alive-000001'), '10.0.0.1');
    dead.llhls(id, session('ghost-000001'), '10.0.0.2');
    dead.llhls(id, session('ghost-000002'), '10.0.0.2');
    dead.counts(id);
    await dead.tick();
    a.counts(id);
    await a.tick();
    assert.equal(a.counts(id).current, 3);
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    a.llhls(id, session('alive-000001'), '10.0.0.1');
    await a.tick();
    assert.equal(a.counts(id).current, 1, 'the dead process\'s entry expired');
    assert.equal(a.counts(id).peak, 3);
  });

  test('a new event starts from zero; a continued one does not', async () => {
    const id = nextStream();
    const a = audience('node-a');
    a.llhls(id, session('first-event-1'), '10.0.0.1');
    a.own(id);
    await a.tick();
    assert.equal(a.counts(id).total, 1);
    await a.begin(id);
    a.llhls(id, session('second-event'), '10.0.0.1');
    await a.tick();
    // The first event's session still watches (within the window): it counts now, but the total is the new event's.
    assert.equal(a.counts(id).total, 1);
    const final = await a.end(id);
    assert.equal(final?.current, 2);
  });

  test('bounded: sessions past the cap per stream are not tracked', async () => {
    const id = nextStream();
    const a = audience('node-a', { maxSessionsPerStream: 100 });
    for (let i = 0; i < 150; i += 1) a.llhls(id, session(`capped-${String(i).padStart(6, '0')}`), '10.0.0.1');
    a.counts(id);
    await a.tick();
    assert.equal(a.counts(id).byProtocol.llhls, 100);
    assert.equal(a.localLlhlsSessions >= 100, true);
  });

  test('video views: a session counts once; views the database refused are added at a later tick', async () => {
    const added = new Map<string, number>();
    let refuse = true;
    const a = audience('node-a', {
      addViews: async (views) => {
        if (refuse) throw new Error('database away');
        for (const [videoId, count] of views) added.set(videoId, (added.get(videoId) ?? 0) + count);
      },
    });
    a.video('video0000000001', session('replay-viewer1'), '10.0.0.1');
    a.video('video0000000001', session('replay-viewer1'), '10.0.0.1');
    a.video('video0000000001', session('replay-viewer2'), '10.0.0.1');
    await a.tick();
    assert.equal(added.size, 0, 'the database refused: nothing added yet');
    // The same session again after the refusal: still the same view.
    a.video('video0000000001', session('replay-viewer1'), '10.0.0.1');
    refuse = false;
    await a.tick();
    assert.deepEqual([...added], [['video0000000001', 2]]);
    await a.tick();
    assert.deepEqual([...added], [['video0000000001', 2]], 'added once');
  });

  test('Redis away: a tick neither throws nor invents counts (the last known stay)', async () => {
    const id = nextStream();
    const a = audience('node-a');
    a.llhls(id, session('outage-viewer'), '10.0.0.1');
    a.counts(id);
    await a.tick();
    assert.equal(a.counts(id).current, 1);
    await server.stop();
    stopped = true;
    a.llhls(id, session('outage-viewer2'), '10.0.0.1');
    await a.tick();
    assert.equal(a.counts(id).current, 1, 'the last known counts, not zero');
  });
});
