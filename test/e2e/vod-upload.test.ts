import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile, copyFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { probeDuration } from '../support/ffprobe.js';
import { api, startTestNode, waitFor } from '../support/harness.js';
import { vodBackends } from '../support/backends.js';
import { makeVideo, sha256, tusCreate, tusOffset, tusPatch, tusPatchInterrupted } from '../support/tus.js';


async function waitSettled(node: OnAirNode, id: string, timeoutMs = 120_000): Promise<any> {
  return waitFor(`video ${id} to finish processing`, async () => {
    const body = (await api(node, 'GET', `/api/videos/${id}`)).body;
    return body.status === 'processing' ? undefined : body;
  }, timeoutMs, 250);
}

/** Uploads a whole file in one PATCH; returns the video id. */
async function upload(node: OnAirNode, data: Buffer, metadata: Record<string, string>): Promise<string> {
  const created = await tusCreate(node.httpUrl, node.adminToken, data.length, metadata);
  assert.equal(created.status, 201, created.body);
  if (data.length > 0) assert.equal(await tusPatch(created.url!, node.adminToken, data, 0), data.length);
  return created.url!.split('/').pop()!;
}

const backends = vodBackends();

let media: string;
let source: Buffer;
let sourceSha: string;

before(async () => {
  media = await mkdtemp(path.join(os.tmpdir(), 'onair-upload-media-'));
  const file = path.join(media, 'show.mp4');
  makeVideo(file, { seconds: 10, megabytes: 20, faststart: true });
  source = await readFile(file);
  sourceSha = await sha256(source);
});

after(async () => {
  if (media) await rm(media, { recursive: true, force: true });
});

for (const backend of backends) {
  describe(`uploads become catalog videos — ${backend.name}`, { timeout: 300_000 }, () => {
    let node: OnAirNode;
    let dataDir: string;
    let close: (options?: { keepData?: boolean }) => Promise<void>;

    before(async () => {
      await backend.start();
      ({ node, dataDir, close } = await startTestNode({ ...backend.env(), ONAIR_WEBRTC_LAYERS: 'off', ONAIR_VOD_CONCURRENCY: '1' }));
    });

    after(async () => {
      try {
        await close?.();
      } finally {
        await backend.stop();
      }
    });

    test('a 20 MB upload cut twice, resumed on the same node and after a node restart, becomes a ready video whose source SHA-256 matches', async () => {
      assert.ok(source.length >= 19 * 1024 * 1024, `the test file is ${source.length} bytes`);
      const created = await tusCreate(node.httpUrl, node.adminToken, source.length, { filename: 'show.mp4', title: 'Holiday show', description: 'sun and sea', tags: 'travel,summer' });
      assert.equal(created.status, 201, created.body);
      const url = created.url!;
      const id = url.split('/').pop()!;
      // Declared: the video exists for the admin (processing, 0 %), not yet for the public.
      assert.equal((await api(node, 'GET', `/api/videos/${id}`)).body.status, 'processing');
      assert.equal((await api(node, 'GET', '/api/videos', { token: null })).body.videos.some((v: { id: string }) => v.id === id), false);

      // The line drops a third of the way; the client asks where the server is and resumes from there on the same
      // node; the line drops again.
      const settled = (after: number) => waitFor('the server to settle the cut upload', async () => {
        const offset = await tusOffset(url, node.adminToken).catch(() => 0);
        return offset > after ? offset : undefined;
      }, 10_000);
      await tusPatchInterrupted(url, node.adminToken, source, Math.floor(source.length / 3));
      const first = await settled(0);
      await tusPatchInterrupted(url, node.adminToken, source, Math.floor((source.length * 2) / 3), first);
      const kept = await settled(first);
      assert.ok(kept > first && kept < source.length, `offsets after the drops: ${first}, ${kept}`);

      // The node restarts (same data dir, same Redis and database): the upload resumes where the server says.
      await close({ keepData: true });
      ({ node, close } = await startTestNode({ ...backend.env(), ONAIR_WEBRTC_LAYERS: 'off', ONAIR_VOD_CONCURRENCY: '1' }, dataDir));
      const offset = await tusOffset(url.replace(/^http:\/\/[^/]+/, node.httpUrl), node.adminToken);
      assert.equal(offset, kept);
      assert.equal(await tusPatch(url.replace(/^http:\/\/[^/]+/, node.httpUrl), node.adminToken, source, offset), source.length);

      const progress = new Set<number>();
      const video = await waitFor('the video to be ready', async () => {
        const body = (await api(node, 'GET', `/api/videos/${id}`)).body;
        progress.add(body.progress);
        assert.notEqual(body.status, 'failed', body.error);
        return body.status === 'ready' ? body : undefined;
      }, 120_000, 200);
      assert.equal(video.progress, 100);
      assert.ok([...progress].every((p) => p >= 0 && p <= 100));
      assert.equal(video.source, 'upload');
      assert.equal(video.sourceSha256, sourceSha, 'the SHA-256 computed at hand-over is the file sent');
      assert.equal(video.sourceBytes, source.length);
      // And the stored bytes themselves hash the same.
      const stored = await node.vod.storage.get(`sources/${id}/source.mp4`);
      const chunks: Buffer[] = [];
      for await (const chunk of stored!.body) chunks.push(chunk as Buffer);
      assert.equal(await sha256(Buffer.concat(chunks)), sourceSha);

      assert.deepEqual(video.tags, ['travel', 'summer']);
      assert.ok(Math.abs(video.durationSec - 10) < 0.5, `duration ${video.durationSec}`);
      assert.ok(Math.abs(await probeDuration(video.playback.hls) - 10) < 1, 'HLS plays in ffprobe');
      assert.ok(Math.abs(await probeDuration(video.playback.dash) - 10) < 1, 'DASH plays in ffprobe');
      const poster = await fetch(video.thumbnail);
      assert.equal(poster.status, 200);
      assert.deepEqual([...new Uint8Array(await poster.arrayBuffer()).subarray(0, 2)], [0xff, 0xd8]);
      const vtt = await (await fetch(video.thumbnails)).text();
      assert.equal(vtt.split('\n').filter((l) => l.includes('-->')).length, 10, 'one storyboard tile per second of a 10 s video');
      // A ranged read of a segment, as players and CDNs do.
      const master = await (await fetch(video.playback.hls)).text();
      const version = /(a[a-z0-9]{8})\/media_0\.m3u8/.exec(master)![1];
      const ranged = await fetch(`${node.httpUrl}/vod/${id}/${version}/init-0.m4s`, { headers: { range: 'bytes=4-7' } });
      assert.equal(ranged.status, 206);
      assert.equal(Buffer.from(await ranged.arrayBuffer()).toString('latin1'), 'ftyp');
      // Nothing of the upload is left in the upload folder.
      assert.equal(await readFile(path.join(dataDir, 'uploads', id)).catch(() => 'gone'), 'gone');
    });

    test('garbage, truncated and zero-byte uploads end failed with a reason; nothing of them is listed or published, their source is kept', async () => {
      const cut = path.join(media, 'cut.mp4');
      await copyFile(path.join(media, 'show.mp4'), cut);
      await truncate(cut, Math.floor(source.length * 0.4)); // index first (faststart): it probes, then the media runs out
      const noIndex = path.join(media, 'noindex.mp4');
      makeVideo(noIndex, { seconds: 2, megabytes: 1, width: 320, height: 240 });
      await truncate(noIndex, 200_000); // index last: it is gone
      const garbage = Buffer.from('MZ this is not a video at all '.repeat(4000));
      const cases: [string, Buffer, RegExp][] = [
        ['garbage.mp4', garbage, /not a video OnAir can read/],
        ['empty.mp4', Buffer.alloc(0), /empty/],
        ['cut.mp4', await readFile(cut), /truncated|damaged/],
        ['noindex.mp4', await readFile(noIndex), /incomplete/],
      ];
      const ids = await Promise.all(cases.map(([filename, data]) => upload(node, data, { filename })));
      for (const [i, id] of ids.entries()) {
        const video = await waitSettled(node, id);
        assert.equal(video.status, 'failed', `${cases[i]![0]} should fail`);
        assert.match(video.error, cases[i]![2], `${cases[i]![0]}: ${video.error}`);
        assert.equal(video.playback.hls, null);
        assert.equal((await api(node, 'GET', `/api/videos/${id}`, { token: null })).status, 404, 'the public does not see failures');
        assert.deepEqual(await node.vod.storage.list(`videos/${id}`), [], 'no half-published output');
        // The source is kept (the user's file, maybe their only copy) until the admin deletes the video.
        assert.equal((await node.vod.storage.list(`sources/${id}`)).length, 1, 'the source is kept');
      }
      const listed = (await api(node, 'GET', '/api/videos?limit=100', { token: null })).body.videos.map((v: { id: string }) => v.id);
      assert.ok(ids.every((id) => !listed.includes(id)), 'the public catalog stays clean');
    });

    test('tus refuses without the admin token and with bad metadata, before any byte is stored', async () => {
      assert.equal((await tusCreate(node.httpUrl, null, 10, { title: 'x' })).status, 401);
      assert.equal((await tusCreate(node.httpUrl, 'wrong-token-wrong-token', 10, { title: 'x' })).status, 403);
      const bad = await tusCreate(node.httpUrl, node.adminToken, 10, { description: 'no title' });
      assert.equal(bad.status, 400);
      assert.match(bad.body, /title/);
    });

    test('the catalog lists newest first, searches title, description and tags, and pages with cursors', async () => {
      const catalog = node.vod.catalog;
      const base = Date.UTC(2030, 0, 1);
      const made: string[] = [];
      const rows = [
        { title: 'Morning news', description: 'headlines', tags: ['news'] },
        { title: 'Cooking with Ada', description: 'pasta from scratch', tags: ['food'] },
        { title: 'Évening concert', description: 'live music', tags: ['music', 'news'] },
        { title: 'Unlisted draft', description: 'not playable', tags: [] },
      ];
      for (const [i, row] of rows.entries()) {
        const video = await catalog.create({ ...row, source: 'upload', at: base + i * 1000 });
        if (i < 3) await catalog.publish(video.id, 'aaaaaaaaa', { kind: 'archive', durationMs: 1000, renditions: [], ready: true });
        made.push(video.id);
      }
      const ids = async (query: string, token: string | null = null): Promise<string[]> => (await api(node, 'GET', `/api/videos${query}`, { token })).body.videos.map((v: { id: string }) => v.id);
      assert.deepEqual((await ids('?q=news')), [made[2], made[0]], 'tags and titles, newest first');
      assert.deepEqual(await ids('?q=past'), [made[1]], 'a prefix of a description word');
      assert.deepEqual(await ids('?q=evening'), [made[2]], 'accents folded');
      assert.deepEqual(await ids('?q=cooking%20ada'), [made[1]], 'every word must match');
      assert.deepEqual(await ids('?q=draft'), [], 'an unplayable video is not public');
      assert.deepEqual(await ids('?q=draft', node.adminToken), [made[3]], 'the admin sees it');
      assert.deepEqual(await ids('?q=%22%20OR%20*'), [], 'search syntax in the query is text, not operators');

      const first = (await api(node, 'GET', '/api/videos?limit=2', { token: null })).body;
      assert.deepEqual(first.videos.map((v: { id: string }) => v.id), [made[2], made[1]]);
      const second = (await api(node, 'GET', `/api/videos?limit=2&cursor=${first.nextCursor}`, { token: null })).body;
      assert.equal(second.videos[0].id, made[0]);
      const bad = await api(node, 'GET', '/api/videos?cursor=bm9wZQ', { token: null });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'ONAIR_ERR_VALIDATION');
      assert.equal((await api(node, 'GET', '/api/videos?limit=1000', { token: null })).status, 400);
    });
  });
}
