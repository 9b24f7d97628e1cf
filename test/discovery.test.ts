import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { createLogger } from '../lib/log.js';
import { nextPart } from '../ll-hls-packager/index.js';
import { StreamDirectory } from '../server/discovery.js';
import { EventHandovers } from '../server/handover.js';
import { redisOptionsFromUrl, startEmbeddedRedis, type EmbeddedRedis } from '../server/redis.js';
import { waitFor } from './support/harness.js';

describe('discovery: origins register their live streams in Redis with a lease (real redis-server)', { timeout: 30_000 }, () => {
  let dir: string;
  let server: EmbeddedRedis;
  const clients: Redis[] = [];
  const log = createLogger({ level: 'silent' });
  const directory = (options: { leaseMs?: number; refreshMs?: number } = {}): StreamDirectory => {
    const redis = new Redis(redisOptionsFromUrl(server.url));
    clients.push(redis);
    return new StreamDirectory({ redis, log, cacheMs: 0, ...options });
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-disc-'));
    server = await startEmbeddedRedis({ dataDir: dir });
  });

  after(async () => {
    for (const client of clients) client.disconnect();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('a registration is found, refreshed past its lease while held, and gone at the end of the event', async () => {
    const origin = directory({ leaseMs: 400, refreshMs: 100 });
    const edge = directory();
    await origin.register('s1', { internalUrl: 'http://10.0.0.5:8080', eventId: 'e1', since: 1 });
    assert.deepEqual(await edge.lookup('s1'), { internalUrl: 'http://10.0.0.5:8080', eventId: 'e1', since: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.ok(await edge.lookup('s1'), 'still there after 2.5 leases: refreshed');
    await origin.unregister('s1');
    assert.equal(await edge.lookup('s1'), undefined);
    await origin.close();
  });

  test('an origin that stops refreshing (dies) drops out within its lease', async () => {
    // A dead origin refreshes nothing: here, a directory whose first refresh would come after a minute.
    const died = directory({ leaseMs: 300, refreshMs: 60_000 });
    const edge = directory();
    const start = Date.now();
    await died.register('s3', { internalUrl: 'http://b:1', eventId: 'e', since: 1 });
    assert.ok(await edge.lookup('s3'));
    await waitFor('the lease to lapse', async () => (await edge.lookup('s3')) === undefined, 2_000, 20);
    assert.ok(Date.now() - start < 1_000, `lapsed after ${Date.now() - start} ms (lease 300 ms)`);
  });

  test('a stream that moved to another origin keeps its registration when the old origin ends its event', async () => {
    const a = directory();
    const b = directory();
    await a.register('s4', { internalUrl: 'http://a:1', eventId: 'e1', since: 1 });
    await b.register('s4', { internalUrl: 'http://b:1', eventId: 'e2', since: 2 });
    await a.unregister('s4');
    assert.equal((await directory().lookup('s4'))?.internalUrl, 'http://b:1');
    await a.close();
    await b.close();
  });

  test('hand-over records: written, read by another origin, released only by the origin that holds the event; malformed ones read as none', async () => {
    const redis = new Redis(redisOptionsFromUrl(server.url));
    clients.push(redis);
    const records = new EventHandovers({ redis, log, ttlMs: 2_000 });
    const record = { eventId: 'e1', startedAt: 5, origin: 'http://10.0.0.5:8080', renditions: { '240p': { mediaSequence: 12, discontinuitySequence: 3 } } };
    await records.write('h1', record, true);
    assert.deepEqual(await records.read('h1'), record);
    await records.write('h1', { ...record, startedAt: 6 }); // within a second of the last write: not written
    assert.equal((await records.read('h1'))?.startedAt, 5);
    // The event moved to another origin: a late segment of the old one does not take the record back.
    const other = new EventHandovers({ redis, log, ttlMs: 2_000 });
    await other.write('h1', { ...record, origin: 'http://10.0.0.6:8080' }, true);
    await new Promise((resolve) => setTimeout(resolve, 1_050));
    await records.write('h1', { ...record, startedAt: 7 });
    assert.equal((await records.read('h1'))?.origin, 'http://10.0.0.6:8080');
    await records.release('h1', 'e1', 'http://10.0.0.5:8080');
    assert.ok(await records.read('h1'), 'the old origin cannot remove it');
    await other.release('h1', 'e1', 'http://10.0.0.6:8080');
    await records.write('h1', record, true);
    await records.release('h1', 'e1', 'http://10.0.0.6:8080');
    assert.ok(await records.read('h1'), 'another origin cannot remove it');
    await records.release('h1', 'e1', 'http://10.0.0.5:8080');
    assert.equal(await records.read('h1'), undefined);
    assert.equal(await records.read('../x'), undefined);
    for (const raw of ['not json', '{"eventId":"e","startedAt":1,"origin":"file:///etc","renditions":{}}',
      '{"eventId":"e","startedAt":1,"origin":"http://a","renditions":{"240p":{"mediaSequence":-1,"discontinuitySequence":0}}}',
      '{"eventId":"e","startedAt":1,"origin":"http://a","renditions":{"../x":{"mediaSequence":1,"discontinuitySequence":0}}}']) {
      await redis.set('onair:event:h2', raw);
      assert.equal(await records.read('h2'), undefined, raw);
    }
    await records.write('h3', record, true);
    await waitFor('the record to lapse past its TTL', async () => (await records.read('h3')) === undefined, 5_000, 100);
  });

  test('concurrent lookups of one stream (a crowd on an edge when the cache expires) are one read of Redis', async () => {
    const origin = directory();
    await origin.register('s9', { internalUrl: 'http://10.0.0.9:8080', eventId: 'e9', since: 1 });
    const edge = directory();
    const gets = async (): Promise<number> => {
      const info = await clients[0]!.info('commandstats');
      return Number(/cmdstat_get:calls=(\d+)/.exec(info)?.[1] ?? 0);
    };
    const before = await gets();
    const found = await Promise.all(Array.from({ length: 50 }, () => edge.lookup('s9')));
    assert.ok(found.every((f) => f?.eventId === 'e9'));
    assert.equal((await gets()) - before, 1, 'one GET for 50 concurrent lookups');
    await origin.close();
  });

  test('malformed ids and entries read as "not live"', async () => {
    const edge = directory();
    assert.equal(await edge.lookup('../../etc'), undefined);
    await clients[0]!.set('onair:live:s5', '{"internalUrl":"file:///etc/passwd","eventId":"e","since":1}');
    assert.equal(await edge.lookup('s5'), undefined);
    await clients[0]!.set('onair:live:s6', 'not json');
    assert.equal(await edge.lookup('s6'), undefined);
  });
});

test('nextPart: the part after the last one a playlist lists (what a player blocks on)', () => {
  const playlist = ['#EXTM3U', '#EXT-X-MEDIA-SEQUENCE:7', '#EXT-X-PART:DURATION=0.2,URI="x-p1.m4s"', '#EXTINF:2.0,', 'x-s7.m4s',
    '#EXT-X-PART:DURATION=0.2,URI="x-p11.m4s"', '#EXT-X-PART:DURATION=0.2,URI="x-p12.m4s"', '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="x-p13.m4s"'].join('\n');
  assert.deepEqual(nextPart(playlist), { msn: 8, part: 2 });
  assert.deepEqual(nextPart('#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n#EXTINF:2.0,\nx-s7.m4s'), { msn: 8, part: 0 });
  assert.equal(nextPart('not a playlist'), undefined);
});
