import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, signInStudio } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';
import { makeVideo, tusCreate, tusPatch } from '../support/tus.js';

interface Received {
  url: string;
  event: string;
  deliveryId: string;
  timestamp: number;
  signature: string;
  body: string;
  answered: number;
  payload: { id: string; event: string; createdAt: string; data: Record<string, unknown> };
}

describe('webhooks: stream.live, stream.ended, video.ready, signed, retried, in order (issue #19)', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let receiver: http.Server;
  let receiverUrl: string;
  let media: string;
  let secret: string;
  let webhookId: string;
  let streamId: string;
  /** The receiver answers 503 this many more times, then 200. */
  let failures = 2;
  const received: Received[] = [];

  before(async () => {
    receiver = http.createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const answered = failures > 0 ? 503 : 200;
        if (failures > 0) failures -= 1;
        received.push({
          url: request.url ?? '',
          event: String(request.headers['x-onair-event']), deliveryId: String(request.headers['x-onair-delivery']),
          timestamp: Number(request.headers['x-onair-timestamp']), signature: String(request.headers['x-onair-signature']),
          body, answered, payload: JSON.parse(body) as Received['payload'],
        });
        response.writeHead(answered).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/onair`;
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_RECONNECT_GRACE_SEC: '0', ONAIR_VOD_CONCURRENCY: '1', ONAIR_WEBHOOK_BACKOFF_MS: '300',
    }));
    media = await mkdtemp(path.join(os.tmpdir(), 'onair-webhooks-'));
  });

  after(async () => {
    await close?.();
    receiver?.close();
    if (media) await rm(media, { recursive: true, force: true });
  });

  const delivered = (event: string): Received[] => received.filter((r) => r.event === event && r.answered === 200);

  test('the admin API: a webhook is made with a secret shown once; bad ones get coded errors; strangers get nothing', async () => {
    assert.equal((await fetch(`${node.httpUrl}/api/webhooks`)).status, 401);
    const bad = async (body: unknown): Promise<string> => {
      const response = await api(node, 'POST', '/api/webhooks', { body });
      assert.equal(response.status, 400, JSON.stringify(body));
      return String(response.body.error.code);
    };
    assert.equal(await bad({ url: 'ftp://example.test/x' }), 'ONAIR_ERR_VALIDATION');
    assert.equal(await bad({ url: receiverUrl, events: ['stream.exploded'] }), 'ONAIR_ERR_VALIDATION');
    assert.equal(await bad({ url: receiverUrl, secret: 'mine' }), 'ONAIR_ERR_VALIDATION');
    const created = await api(node, 'POST', '/api/webhooks', { body: { url: receiverUrl } });
    assert.equal(created.status, 201);
    assert.match(String(created.body.secret), /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(created.body.events, ['stream.live', 'stream.ended', 'video.ready', 'video.failed']);
    secret = created.body.secret;
    webhookId = created.body.id;
    const listed = await api(node, 'GET', '/api/webhooks');
    assert.deepEqual(listed.body.webhooks.map((w: { id: string }) => w.id), [webhookId]);
    assert.equal(JSON.stringify(listed.body).includes(secret), false, 'the secret is never shown again');
  });

  test('a receiver that fails, then recovers, gets stream.live then stream.ended, each signed, after retries', async () => {
    const stream = await api(node, 'POST', '/api/streams', { body: { title: 'Hooked' } });
    streamId = stream.body.id;
    const publisher = publish(`${node.rtmpUrl}/${stream.body.streamKey}`, { width: 426, height: 240 });
    try {
      await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
      assert.equal((await api(node, 'POST', `/api/streams/${streamId}/end`)).status, 202);
      await waitFor('stream.live and stream.ended delivered', () => delivered('stream.ended').length === 1, 30_000, 200);
    } finally {
      publisher.stop();
    }
    // The first two tries of stream.live were answered 503; stream.ended waited for it.
    const live = received.filter((r) => r.event === 'stream.live');
    assert.deepEqual(live.map((r) => r.answered), [503, 503, 200]);
    assert.equal(new Set(live.map((r) => r.deliveryId)).size, 1, 'the same delivery, tried again');
    const order = received.filter((r) => r.event.startsWith('stream.')).map((r) => `${r.event} ${r.answered}`);
    assert.deepEqual(order, ['stream.live 503', 'stream.live 503', 'stream.live 200', 'stream.ended 200']);
    for (const r of received) {
      const expected = `sha256=${createHmac('sha256', secret).update(`${r.timestamp}.${r.body}`).digest('hex')}`;
      assert.ok(timingSafeEqual(Buffer.from(r.signature), Buffer.from(expected)), `${r.event}: signature`);
      assert.ok(Math.abs(Date.now() / 1000 - r.timestamp) < 120, 'a recent timestamp');
      assert.equal(r.payload.event, r.event);
    }
    assert.equal(live[2]!.payload.data['streamId'], streamId);
    const ended = delivered('stream.ended')[0]!.payload.data;
    assert.equal(ended['streamId'], streamId);
    assert.equal(ended['eventId'], live[2]!.payload.data['eventId']);

    const log = await api(node, 'GET', `/api/webhooks/${webhookId}/deliveries`);
    assert.deepEqual(log.body.deliveries.map((d: { event: string; attempt: number; status: number }) => `${d.event} ${d.attempt} ${d.status}`).reverse().slice(0, 4),
      ['stream.live 1 503', 'stream.live 2 503', 'stream.live 3 200', 'stream.ended 1 200']);
  });

  test('video.ready when the event\'s archive and an upload are ready; video.failed for an upload that is no video', async () => {
    const file = path.join(media, 'clip.mp4');
    makeVideo(file, { seconds: 3, megabytes: 0.3, width: 320, height: 180, faststart: true });
    const data = await readFile(file);
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'clip.mp4', title: 'Clip' });
    await tusPatch(created.url!, node.adminToken, data, 0);
    const uploadId = created.url!.split('/').pop()!;
    const junk = Buffer.from('this is not a video, whatever its name says\n'.repeat(100));
    const refused = await tusCreate(node.httpUrl, node.adminToken, junk.length, { filename: 'junk.mp4', title: 'Junk' });
    await tusPatch(refused.url!, node.adminToken, junk, 0);
    const junkId = refused.url!.split('/').pop()!;
    await waitFor('video.ready for the archive and for the upload', () => delivered('video.ready').length >= 2, 150_000, 500);
    await waitFor('video.failed for the junk', () => delivered('video.failed').length >= 1, 60_000, 500);
    const failed = delivered('video.failed')[0]!.payload.data;
    assert.equal(failed['videoId'], junkId);
    assert.match(String(failed['reason']), /./);
    const ready = delivered('video.ready').map((r) => r.payload.data);
    assert.ok(ready.some((d) => d['source'] === streamId), `the event's archive: ${JSON.stringify(ready)}`);
    const upload = ready.find((d) => d['videoId'] === uploadId);
    assert.ok(upload, JSON.stringify(ready));
    assert.equal(upload['title'], 'Clip');
    assert.equal(upload['watchPage'], `${node.publicUrl}/watch/${uploadId}`);
  });

  test('the studio lists the webhook with its deliveries, the failed tries included', async () => {
    const chromium = await launchChromium();
    try {
      const studio = await chromium.browser.newPage();
      await signInStudio(studio, node.httpUrl, node.adminToken);
      await studio.waitForSelector(`#hooks li[data-id="${webhookId}"]`, { timeout: 10_000 });
      const lines = await studio.$$eval(`#hooks li[data-id="${webhookId}"] ol li`, (items) => items.map((li): [string, string] => [li.textContent ?? '', (li as HTMLElement).dataset['ok'] ?? '']));
      assert.ok(lines.some(([text, ok]) => /stream\.live · try 1 · 503/.test(text) && ok === 'false'), JSON.stringify(lines));
      assert.ok(lines.some(([text, ok]) => /stream\.live · try 3 · 200/.test(text) && ok === 'true'), JSON.stringify(lines));
      assert.ok(lines.some(([text]) => /video\.ready · try 1 · 200/.test(text)), JSON.stringify(lines));
    } finally {
      await chromium.close();
    }
  });

  test('a deleted webhook gets nothing more', async () => {
    assert.equal((await api(node, 'DELETE', `/api/webhooks/${webhookId}`)).status, 204);
    assert.equal((await api(node, 'DELETE', `/api/webhooks/${webhookId}`)).status, 404);
    // A second webhook, to another path of the receiver: once it has the next event, the deleted one would have too.
    const control = await api(node, 'POST', '/api/webhooks', { body: { url: `${receiverUrl}/control`, events: ['stream.live'] } });
    assert.equal(control.status, 201);
    const before = received.length;
    const stream = await api(node, 'POST', '/api/streams', { body: { title: 'Unhooked' } });
    const publisher = publish(`${node.rtmpUrl}/${stream.body.streamKey}`, { width: 426, height: 240 });
    try {
      await waitFor('the control webhook to get stream.live', () => received.slice(before).some((r) => r.url.endsWith('/control') && r.answered === 200), 30_000, 200);
    } finally {
      publisher.stop();
    }
    assert.deepEqual(received.slice(before).map((r) => r.url), ['/hooks/onair/control']);
  });
});
