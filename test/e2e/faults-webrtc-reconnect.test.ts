import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { RtpRelay } from '../../webrtc-edge/RtpRelay.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';
import { connectWhep, type WhepClient } from '../support/whepClient.js';

/** How long after the new ffmpeg run starts a viewer must have video and audio again. */
const RESUME_MS = 5_000;

/** Signed distance from `a` to `b` on a circle of `modulo` (RTP sequence numbers, timestamps). */
function forward(a: number, b: number, modulo: number): number {
  const d = (b - a + modulo) % modulo;
  return d >= modulo / 2 ? d - modulo : d;
}

function rtp(ssrc: number, seq: number, ts: number): Buffer {
  const packet = Buffer.alloc(12 + 20);
  packet[0] = 0x80;
  packet[1] = 100;
  packet.writeUInt16BE(seq & 0xffff, 2);
  packet.writeUInt32BE(ts >>> 0, 4);
  packet.writeUInt32BE(ssrc, 8);
  return packet;
}

function senderReport(ssrc: number, ts: number): Buffer {
  const packet = Buffer.alloc(28);
  packet[0] = 0x80;
  packet[1] = 200;
  packet.writeUInt16BE(6, 2);
  packet.writeUInt32BE(ssrc, 4);
  packet.writeUInt32BE(ts >>> 0, 16);
  return packet;
}

describe('RtpRelay: ffmpeg restarts on the same SSRCs reach mediasoup as one continuous stream', () => {
  test('a new run\'s random numbering continues the last one; its timestamps move by the time between; sender reports follow', async () => {
    const { relay, inputs } = await RtpRelay.create(2);
    const sink = dgram.createSocket('udp4');
    const sender = dgram.createSocket('udp4');
    try {
      await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
      const received: Buffer[] = [];
      sink.on('message', (m) => received.push(m));
      relay.connect({ address: '127.0.0.1', port: sink.address().port });
      const audio = 0x4f4e0080;
      relay.track([{ ssrc: audio, clockRate: 48000 }]);
      const send = async (packet: Buffer, port: number): Promise<void> => {
        const count = received.length;
        await new Promise<void>((resolve, reject) => sender.send(packet, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
        await waitFor('the relayed packet', () => received.length > count, 2_000, 5);
      };
      const rtpPort = inputs[1]!.port;
      // First run: 65534, 65535, 0 (a wrap continues), then a report.
      for (const [i, seq] of [65534, 65535, 0].entries()) await send(rtp(audio, seq, 1_000_000 + 960 * i), rtpPort);
      await send(senderReport(audio, 1_000_000 + 960 * 2), rtpPort + 1);
      // A reordered packet stays where it was.
      await send(rtp(audio, 65535, 1_000_960), rtpPort);
      const restartAt = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Second run: ffmpeg draws new numbers.
      for (const i of [0, 1]) await send(rtp(audio, 12_345 + i, 77_000 + 960 * i), rtpPort);
      const gapMs = performance.now() - restartAt;
      await send(senderReport(audio, 77_960), rtpPort + 1);
      // An SSRC the relay was not told about passes untouched.
      await send(rtp(0x1234, 9, 99), rtpPort);

      const seqs = received.filter((m) => m[1] !== 200).map((m) => m.readUInt16BE(2));
      const stamps = received.filter((m) => m[1] !== 200).map((m) => m.readUInt32BE(4));
      assert.deepEqual(seqs, [65534, 65535, 0, 65535, 1, 2, 9]);
      assert.deepEqual(stamps.slice(0, 4), [1_000_000, 1_000_960, 1_001_920, 1_000_960]);
      const step = stamps[4]! - stamps[2]!;
      assert.ok(step >= 48 * 200 && step <= 48 * (gapMs + 50), `the timestamps moved ${step / 48} ms over a ${Math.round(gapMs)} ms gap`);
      assert.equal(stamps[5]! - stamps[4]!, 960, 'the new run keeps its own spacing');
      assert.equal(stamps[6], 99);
      const reports = received.filter((m) => m[1] === 200).map((m) => m.readUInt32BE(16));
      assert.deepEqual(reports, [1_001_920, stamps[5]], 'sender reports carry the timestamps as relayed');
      assert.equal(relay.restarts(audio), 1);
    } finally {
      relay.close();
      sink.close();
      sender.close();
    }
  });
});

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
      // werift takes any jump; a browser's SRTP context does not (its replay window refuses numbers behind the last
      // one, its rollover guess fails on jumps past 2^15): the numbers a viewer sees must continue.
      assert.ok(Math.abs(worstVideoJump) < 100 && Math.abs(worstAudioJump) < 100,
        `round ${round}: sequence numbers continue across the restart (largest jump: video ${worstVideoJump}, audio ${worstAudioJump})`);
      assert.equal(client.stats().videoSsrcs.size, 1, 'one video stream, as negotiated');
      assert.ok(resumed.keyframes > seen.keyframes);
    }
    assert.equal(node.edge!.viewers(streamId), 1, 'the same session throughout');
  });
});
