import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

/*
 * A node that stops (a deploy, SIGTERM) stops listening at once and gives requests in flight a moment to finish; one
 * that would not (a blocking LL-HLS reload parked for up to three target durations, a client that never reads) has its
 * connection cut, is named in the log, and the node's close goes on within its budget instead of failing on it.
 */
describe('close: requests still in flight do not hold the node', { timeout: 90_000 }, () => {
  test('a blocking playlist request parked at close is cut within the drain; close resolves cleanly and says what it cut', async () => {
    const lines: string[] = [];
    const logDestination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const { node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off' }, undefined, { logDestination });
    let publisher: ReturnType<typeof publish> | undefined;
    try {
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Close' } });
      publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 426, height: 240, audio: false });
      const playlist = await waitFor('the stream to have a segment', () => {
        const found = node.packager(created.body.id)?.playlist('240p');
        return found?.lastMediaSequence !== undefined ? found : undefined;
      }, 30_000);
      // Two segments ahead: the server holds it until then (~4 s here) or three target durations.
      const msn = playlist.lastMediaSequence! + 2;
      const parked = fetch(`${node.httpUrl}/live/${created.body.id}/240p/index.m3u8?_HLS_msn=${msn}`).then((r) => r.status, () => 'cut');
      await waitFor('the request to be parked', () => playlist.waiting > 0, 5_000, 20);

      const started = Date.now();
      await close();
      const tookMs = Date.now() - started;
      assert.ok(tookMs < 4_000, `close took ${tookMs} ms`);
      assert.ok(['cut', 503].includes(await parked as never), `the parked request was cut or refused: ${await parked}`);
      const named = lines.find((l) => l.includes('requests still in flight'));
      assert.ok(named, 'the log says requests were cut');
      assert.match(named, /GET \/live\/:id\/:rendition\/index\.m3u8/, 'by route (never a URL with its token)');
      assert.ok(!lines.some((l) => l.includes('a step ran out of time')), 'no close step ran out of time');
    } finally {
      publisher?.stop();
      await close().catch(() => undefined);
    }
  });
});
