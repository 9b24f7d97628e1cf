import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

/** A node that takes one live stream: the second publisher is refused before media flows, and told why. */
describe('admission control: ONAIR_MAX_STREAMS', { timeout: 120_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  const streams: { id: string; key: string }[] = [];
  const publishers: ReturnType<typeof publish>[] = [];

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_MAX_STREAMS: '1', ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_RECONNECT_GRACE_SEC: '8',
    }));
    for (const title of ['First', 'Second']) {
      const created = await api(node, 'POST', '/api/streams', { body: { title } });
      assert.equal(created.status, 201);
      streams.push({ id: created.body.id, key: created.body.streamKey });
    }
  });

  after(async () => {
    for (const p of publishers) p.stop();
    await close();
  });

  const live = async (id: string): Promise<boolean> => (await api(node, 'GET', `/api/streams/${id}`)).body.status === 'live';
  const start = (key: string): ReturnType<typeof publish> => {
    const p = publish(`${node.rtmpUrl}/${key}`, { width: 320, height: 240, durationSec: 60 });
    publishers.push(p);
    return p;
  };

  test('a publish over the cap is refused with ONAIR_ERR_PUBLISH_NO_CAPACITY; the live stream goes on', async () => {
    const first = start(streams[0]!.key);
    await waitFor('the first stream live', () => live(streams[0]!.id), 20_000);
    const second = start(streams[1]!.key);
    assert.notEqual(await second.exited, 0, 'the second publisher fails');
    assert.match(second.stderr(), /ONAIR_ERR_PUBLISH_NO_CAPACITY/, `the publisher is told why: ${second.stderr()}`);
    assert.equal(await live(streams[1]!.id), false);
    const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
    assert.match(metrics, /onair_publish_refused_total\{reason="no-capacity"\} 1/);
    assert.equal(first.child.exitCode, null, 'the first publisher is still on air');
  });

  test('/readyz says what a full ladder costs here and how many more fit, measured from the running stream', async () => {
    // Known once the stream's ffmpeg has run 5 s at the full ladder.
    const capacity = await waitFor('the ladder\'s cost measured', async () => {
      const ready = await api(node, 'GET', '/readyz', { token: null });
      return ready.body.capacity?.streamCores !== undefined ? ready.body.capacity : undefined;
    }, 20_000, 500);
    assert.ok(capacity.cores >= 1 && capacity.idleCores >= 0 && capacity.idleCores <= capacity.cores, JSON.stringify(capacity));
    // A 240p rung from a 320x240 source: well under a core, and more than nothing.
    assert.ok(capacity.streamCores > 0.005 && capacity.streamCores < 1, JSON.stringify(capacity));
    assert.ok(Number.isInteger(capacity.spareStreams) && capacity.spareStreams >= 0, JSON.stringify(capacity));
    const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
    assert.match(metrics, /^onair_capacity_stream_cores 0\.\d+/m);
    assert.match(metrics, /^onair_capacity_spare_streams \d+/m);
  });

  test('the live stream\'s own publisher coming back within the grace is let in: its event is already counted', async () => {
    publishers[0]!.stop();
    await publishers[0]!.exited;
    const back = start(streams[0]!.key);
    // Refused, it would exit within a second or two; let in, it keeps publishing and the event stays live.
    const outcome = await Promise.race([back.exited.then(() => 'exited'), new Promise((resolve) => setTimeout(resolve, 5000, 'publishing'))]);
    assert.equal(outcome, 'publishing', back.stderr());
    assert.equal(await live(streams[0]!.id), true);
  });

  test('once the live stream ends, the other publisher is let in', async () => {
    const ended = await api(node, 'POST', `/api/streams/${streams[0]!.id}/end`);
    assert.ok(ended.status < 300, `end: ${ended.status}`);
    await waitFor('the first stream off air', async () => !(await live(streams[0]!.id)), 20_000);
    start(streams[1]!.key);
    await waitFor('the second stream live', () => live(streams[1]!.id), 20_000);
  });
});
