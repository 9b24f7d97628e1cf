import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openDatabase, type Database } from '../server/db.js';
import { StreamStore } from '../server/streams.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';

interface Backend {
  name: 'sqlite' | 'postgres';
  /** Prepares the backend (temp dir or server); returns the options that open it. */
  setUp(): Promise<{ databaseUrl?: string; dataDir: string }>;
  tearDown(): Promise<void>;
}

function sqliteBackend(): Backend {
  let dir: string | undefined;
  return {
    name: 'sqlite',
    async setUp() {
      dir = await mkdtemp(path.join(os.tmpdir(), 'onair-streams-'));
      return { dataDir: dir };
    },
    async tearDown() {
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}

function postgresBackend(): Backend {
  let server: TestPostgres | undefined;
  let dir: string | undefined;
  return {
    name: 'postgres',
    async setUp() {
      dir = await mkdtemp(path.join(os.tmpdir(), 'onair-streams-'));
      server = await startPostgres();
      return { databaseUrl: server.url, dataDir: dir };
    },
    async tearDown() {
      await server?.stop();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Replaces one character of the secret so that the shape stays valid and only the hash differs. */
function withWrongSecret(streamKey: string): string {
  const last = streamKey.at(-1) === 'A' ? 'B' : 'A';
  return streamKey.slice(0, -1) + last;
}

for (const backend of [sqliteBackend(), postgresBackend()]) {
  describe(`StreamStore on ${backend.name}`, { timeout: 120_000 }, () => {
    let options: { databaseUrl?: string; dataDir: string };
    let database: Database;
    let store: StreamStore;

    before(async () => {
      options = await backend.setUp();
      database = await openDatabase(options);
      store = new StreamStore(database);
    }, { timeout: 90_000 });

    after(async () => {
      await database?.close();
      await backend.tearDown();
    }, { timeout: 30_000 });

    test('the database reports the dialect it was opened with', { timeout: 5_000 }, () => {
      assert.equal(database.dialect, backend.name);
    });

    test('a created stream is idle and its key verifies to the same stream', { timeout: 10_000 }, async () => {
      const before = Date.now();
      const { stream, streamKey } = await store.create({ title: 'Morning show', description: 'News and coffee' });
      assert.match(stream.id, /^[a-z0-9]{12}$/);
      assert.match(streamKey, new RegExp(`^${stream.id}_[A-Za-z0-9_-]{32}$`));
      assert.equal(stream.status, 'idle');
      assert.ok(stream.createdAt >= before);

      const verified = await store.verifyKey(streamKey);
      assert.deepEqual(verified, stream);
      assert.deepEqual(await store.get(stream.id), stream);
    });

    test('a record never carries the key or its hash', { timeout: 10_000 }, async () => {
      const { stream, streamKey } = await store.create({ title: 'Secretive' });
      const fetched = await store.get(stream.id);
      const verified = await store.verifyKey(streamKey);
      for (const record of [stream, fetched, verified]) {
        assert.deepEqual(Object.keys(record ?? {}).sort(), ['createdAt', 'description', 'id', 'status', 'title', 'updatedAt']);
        const text = JSON.stringify(record);
        assert.ok(!text.includes(streamKey.slice(13)));
      }
    });

    test('a wrong secret, a malformed key or an unknown id does not verify', { timeout: 10_000 }, async () => {
      const { stream, streamKey } = await store.create({ title: 'Guarded' });
      const secret = streamKey.slice(stream.id.length + 1);
      const unknownId = stream.id === 'aaaaaaaaaaaa' ? 'bbbbbbbbbbbb' : 'aaaaaaaaaaaa';
      const rejected = [
        withWrongSecret(streamKey),
        '',
        stream.id,
        `${stream.id}_`,
        `${stream.id}${secret}`,
        `${stream.id}_${secret}x`,
        `${stream.id}_${secret.slice(1)}`,
        `${stream.id.toUpperCase()}_${secret}`,
        `${stream.id}_${secret.slice(0, -1)}=`,
        `${stream.id} _${secret}`,
        `_${stream.id}_${secret}`,
        `${unknownId}_${secret}`,
        `${stream.id}_${'\u00e9'.repeat(32)}`,
      ];
      for (const key of rejected) {
        assert.equal(await store.verifyKey(key), undefined, `key ${JSON.stringify(key)} must not verify`);
      }
      assert.ok(await store.verifyKey(streamKey));
    });

    test('a secret that itself holds an underscore verifies (the key splits at the first one)', { timeout: 30_000 }, async () => {
      // About 1 secret in 2 holds a '_' among its 32 characters; a few tries find one.
      for (let i = 0; i < 50; i++) {
        const { stream, streamKey } = await store.create({ title: `underscore ${i}` });
        const secret = streamKey.slice(stream.id.length + 1);
        const found = secret.includes('_');
        if (found) assert.equal((await store.verifyKey(streamKey))?.id, stream.id);
        await store.delete(stream.id);
        if (found) return;
      }
      assert.fail('no secret with an underscore in 50 tries');
    });

    test('rotating the key makes the old one fail and the new one work', { timeout: 10_000 }, async () => {
      const { stream, streamKey: oldKey } = await store.create({ title: 'Rotating' });
      const newKey = await store.rotateKey(stream.id);
      assert.ok(newKey !== undefined);
      assert.notEqual(newKey, oldKey);
      assert.ok(newKey.startsWith(`${stream.id}_`));
      assert.equal(await store.verifyKey(oldKey), undefined);
      assert.equal((await store.verifyKey(newKey))?.id, stream.id);

      const newerKey = await store.rotateKey(stream.id);
      assert.ok(newerKey !== undefined);
      assert.equal(await store.verifyKey(newKey), undefined);
      assert.equal((await store.verifyKey(newerKey))?.id, stream.id);

      assert.equal(await store.rotateKey('zzzzzzzzzzzz'), undefined);
      assert.equal(await store.rotateKey('not an id'), undefined);
    });

    test('streams list newest first', { timeout: 10_000 }, async () => {
      const created = [];
      for (const title of ['first', 'second', 'third']) created.push((await store.create({ title })).stream);
      const listed = await store.list();
      const ids = listed.map((s) => s.id);
      const positions = created.map((s) => ids.indexOf(s.id));
      assert.ok(positions.every((p) => p >= 0));
      assert.ok(positions[2]! < positions[1]! && positions[1]! < positions[0]!, `positions ${positions.join(',')}`);
      for (let i = 1; i < listed.length; i++) assert.ok(listed[i - 1]!.createdAt >= listed[i]!.createdAt);
    });

    test('a deleted stream is gone, its key no longer verifies, and deleting again reports false', { timeout: 10_000 }, async () => {
      const { stream, streamKey } = await store.create({ title: 'Short-lived' });
      const eventId = await store.startEvent(stream.id);
      assert.ok(eventId);
      assert.equal(await store.delete(stream.id), true);
      assert.equal(await store.get(stream.id), undefined);
      assert.equal(await store.verifyKey(streamKey), undefined);
      assert.ok(!(await store.list()).some((s) => s.id === stream.id));
      assert.equal(await store.currentEvent(stream.id), undefined);
      assert.equal(await store.delete(stream.id), false);
      assert.equal(await store.delete('../../etc'), false);
    });

    test('setting the status updates the record and its updatedAt', { timeout: 10_000 }, async () => {
      const { stream } = await store.create({ title: 'Status' });
      assert.equal(await store.setStatus(stream.id, 'live'), true);
      const live = await store.get(stream.id);
      assert.equal(live?.status, 'live');
      assert.ok(live.updatedAt >= stream.updatedAt);
      assert.equal(await store.setStatus(stream.id, 'ended'), true);
      assert.equal((await store.get(stream.id))?.status, 'ended');
      assert.equal(await store.setStatus('zzzzzzzzzzzz', 'live'), false);
    });

    test('a live event starts, is current while open, and ends', { timeout: 10_000 }, async () => {
      const { stream } = await store.create({ title: 'Eventful' });
      assert.equal(await store.currentEvent(stream.id), undefined);

      const firstId = await store.startEvent(stream.id);
      const current = await store.currentEvent(stream.id);
      assert.equal(current?.id, firstId);
      assert.equal(current.streamId, stream.id);
      assert.equal(current.endedAt, null);
      assert.equal(typeof current.startedAt, 'number');

      assert.equal(await store.endEvent(firstId), true);
      assert.equal(await store.currentEvent(stream.id), undefined);
      assert.equal(await store.endEvent(firstId), false, 'an event ends once');

      const secondId = await store.startEvent(stream.id);
      assert.notEqual(secondId, firstId);
      assert.equal((await store.currentEvent(stream.id))?.id, secondId);
      await store.endEvent(secondId);

      const events = await store.listEvents(stream.id);
      assert.deepEqual(new Set(events.map((e) => e.id)), new Set([firstId, secondId]));
      for (const event of events) {
        assert.equal(typeof event.endedAt, 'number');
        assert.ok(event.endedAt! >= event.startedAt);
      }
    });

    test('times come back as numbers, not strings or bigints', { timeout: 10_000 }, async () => {
      const { stream } = await store.create({ title: 'Numbers' });
      const eventId = await store.startEvent(stream.id, 1_700_000_000_123);
      await store.endEvent(eventId, 1_700_000_004_567);
      const fetched = await store.get(stream.id);
      assert.equal(typeof fetched?.createdAt, 'number');
      assert.equal(typeof fetched?.updatedAt, 'number');
      assert.equal(fetched?.createdAt, stream.createdAt);
      const [event] = await store.listEvents(stream.id);
      assert.equal(event?.startedAt, 1_700_000_000_123);
      assert.equal(event?.endedAt, 1_700_000_004_567);

      const row = await database.db.selectFrom('streams').select(['created_at', 'key_version']).where('id', '=', stream.id).executeTakeFirstOrThrow();
      assert.equal(typeof row.created_at, 'number');
      assert.equal(typeof row.key_version, 'number');
      const { count } = await database.db
        .selectFrom('streams')
        .select((eb) => eb.fn.countAll<number>().as('count'))
        .executeTakeFirstOrThrow();
      assert.equal(typeof count, 'number');
    });

    test('an event is found by its id, past or current; an id of another shape is not looked up', { timeout: 10_000 }, async () => {
      const { stream } = await store.create({ title: 'Found' });
      const pastId = await store.startEvent(stream.id, 1_700_000_000_123);
      await store.endEvent(pastId);
      const currentId = await store.startEvent(stream.id, 1_700_000_009_000);
      assert.deepEqual(await store.event(pastId), { id: pastId, streamId: stream.id, startedAt: 1_700_000_000_123 });
      assert.deepEqual(await store.event(currentId), { id: currentId, streamId: stream.id, startedAt: 1_700_000_009_000 });
      assert.equal(await store.event('zzzzzzzzzzzzzzzz'), undefined, 'an unknown id');
      assert.equal(await store.event(stream.id), undefined, 'a stream id is not an event id');
      assert.equal(await store.event(`${pastId}' OR '1'='1`), undefined);
    });

    test('streams, keys and events survive closing and reopening the database', { timeout: 30_000 }, async () => {
      const { stream, streamKey } = await store.create({ title: 'Durable', description: 'survives restarts' });
      const rotatedKey = await store.rotateKey(stream.id);
      assert.ok(rotatedKey !== undefined);
      await store.setStatus(stream.id, 'live');
      const eventId = await store.startEvent(stream.id);
      const before = await store.get(stream.id);

      await database.close();
      await database.close(); // idempotent
      database = await openDatabase(options); // migrations run again: a no-op
      store = new StreamStore(database);

      assert.deepEqual(await store.get(stream.id), before);
      assert.equal(await store.verifyKey(streamKey), undefined);
      assert.equal((await store.verifyKey(rotatedKey))?.id, stream.id);
      assert.equal((await store.currentEvent(stream.id))?.id, eventId);
      assert.ok((await store.list()).some((s) => s.id === stream.id));
    });
  });
}
