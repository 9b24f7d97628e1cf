import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../server/node.js';
import { api, publish, startTestNode, waitFor } from './support/harness.js';
import { connectWhep, type WhepClient } from './support/whepClient.js';

/** How long after the new ffmpeg run starts a viewer must have video and audio again. */
const RESUME_MS = 5_000;

/** Signed distance from `a` to `b` on a circle of `modulo` (RTP sequence numbers, timestamps). */
function forward(a: number, b: number, modulo: number): number {
  const d = (b - a + modulo) % modulo;
  return d >= modulo / 2 ? d - modulo : d;
}

describe('Faults: a WHEP viewer keeps video and audio across publisher reconnects, without a new offer', { timeout: 180_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  let streamKey: string;
  let viewer: WhepClient | undefined;

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '180', ONAIR_WEBRTC_WORKERS: '1', ONAIR_RECONNECT_GRACE_SEC: '20',
    }));
    assert.ok(node.edge, 'the WebRTC edge started');
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'reconnecting publisher' } });
    streamId = created.body.id;
    streamKey = created.body.streamKey;
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
  });

  after(async () => {
    await viewer?.close();
    publisher?.stop();
    await close?.();
  });

  test('after each of three reconnects the same session gets a keyframe and audio with advancing timestamps within 5 s', async (t) => {
    viewer = await connectWhep(`${node.httpUrl}/live/${streamId}/whep`, { congestionControl: false });
    assert.equal(viewer.status, 201, `WHEP POST answered ${viewer.status}: ${viewer.answer}`);
    const client = viewer;
    await client.waitFor('video with a keyframe and audio', (s) => s.videoPackets >= 20 && s.keyframes > 0 && s.audioPackets >= 25, 30_000);

    // What the viewer receives, as a player would use it: sequence numbers (SRTP and jitter buffers follow them),
    // keyframes, audio timestamps.
    let videoSeq: number | undefined;
    let audioSeq: number | undefined;
    let audioTs: number | undefined;
    let worstVideoJump = 0;
    let worstAudioJump = 0;
    let audioInOrder = 0;
    client.onVideoRtp((p) => {
      if (videoSeq !== undefined) { const j = forward(videoSeq, p.header.sequenceNumber, 65536); if (Math.abs(j) > Math.abs(worstVideoJump)) worstVideoJump = j; };
      videoSeq = p.header.sequenceNumber;
    });
    client.onAudioRtp((p) => {
      if (audioSeq !== undefined) { const j = forward(audioSeq, p.header.sequenceNumber, 65536); if (Math.abs(j) > Math.abs(worstAudioJump)) worstAudioJump = j; };
      audioSeq = p.header.sequenceNumber;
      // A timestamp that moved forward by less than 10 s: audio a player plays in order.
      const step = audioTs === undefined ? 960 : forward(audioTs, p.header.timestamp, 2 ** 32);
      audioInOrder = step > 0 && step < 48_000 * 10 ? audioInOrder + 1 : 0;
      audioTs = p.header.timestamp;
    });

    const transcoder = node.transcoder(streamId)!;
    for (const round of [1, 2, 3]) {
      publisher.stop();
      await publisher.exited;
      await waitFor('the node to see the drop', async () => (await api(node, 'GET', `/api/streams/${streamId}`, { token: null })).body.stats?.publishing === false, 10_000);
      const started = transcoder.next('start', 20_000);
      publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 426, height: 240, fps: 25 });
      const [{ generation }] = await started;
      const startedAt = Date.now();
      const seen = client.stats();
      worstVideoJump = 0;
      worstAudioJump = 0;
      audioInOrder = 0;
      const resumed = await client.waitFor(
        `round ${round}: a keyframe, video and 25 audio packets in order from the new ffmpeg run (generation ${generation})`,
        (s) => s.keyframes > seen.keyframes && s.videoPackets >= seen.videoPackets + 20 && audioInOrder >= 25,
        RESUME_MS,
      ).catch((error: Error) => {
        const now = client.stats();
        throw new Error(`${error.message}; since the restart: ${now.videoPackets - seen.videoPackets} video packets, `
          + `${now.keyframes - seen.keyframes} keyframe packets, ${now.audioPackets - seen.audioPackets} audio packets `
          + `(${audioInOrder} in order); largest sequence jump video ${worstVideoJump}, audio ${worstAudioJump}`);
      });
      t.diagnostic(`round ${round}: video and audio ${Date.now() - startedAt} ms after the new ffmpeg run started; `
        + `largest sequence jump seen: video ${worstVideoJump}, audio ${worstAudioJump}`);
      assert.equal(client.stats().videoSsrcs.size, 1, 'one video stream, as negotiated');
      assert.ok(resumed.keyframes > seen.keyframes);
    }
    assert.equal(node.edge!.viewers(streamId), 1, 'the same session throughout');
  });
});
