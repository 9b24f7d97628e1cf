import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RtpPacket } from 'werift';
import type { OnAirNode } from '../../server/node.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';
import { CHROMIUM_EXTENSION_IDS, connectWhep, type WhepClient } from '../support/whepClient.js';

/** The WHEP answer's video section. */
function videoSection(sdp: string): string {
  return sdp.split(/\r\n(?=m=)/).find((s) => s.startsWith('m=video')) ?? '';
}

/**
 * Issue #18: a viewer that offers header-extension ids other than mediasoup's (Chromium: mid 9, abs-send-time 2,
 * transport-wide-cc 4) gets them: the patched worker rewrites each consumer's packets to the ids it negotiated. werift
 * shows the bytes on the wire, and its transport-cc feedback (test/support/whepClient.ts) drives the layer choice.
 */
describe('WebRTC header-extension ids: a viewer on Chromium\'s ids gets transport-cc on them, and adapts', { timeout: 180_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let whepUrl: string;
  let streamId: string;
  let client: WhepClient | undefined;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '360,180', ONAIR_WEBRTC_WORKERS: '1' }));
    assert.ok(node.edge, 'the WebRTC edge started');
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'header-extension ids' } });
    streamId = created.body.id;
    whepUrl = `${node.httpUrl}/live/${streamId}/whep`;
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360, fps: 25 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
  });

  after(async () => {
    await client?.close();
    publisher?.stop();
    await close?.();
  });

  test('the answer keeps the offer\'s ids; packets carry a rising transport-wide sequence on id 4, abs-send-time on 2, MID on 9, nothing else', async () => {
    client = await connectWhep(whepUrl, { extensionIds: CHROMIUM_EXTENSION_IDS });
    assert.equal(client.status, 201, `WHEP POST answered ${client.status}: ${client.answer}`);
    const video = videoSection(client.answer);
    assert.match(video, /^a=extmap:4 http:\/\/www\.ietf\.org\/id\/draft-holmer-rmcat-transport-wide-cc-extensions-01$/m, 'transport-cc answered on id 4');
    assert.match(video, /^a=extmap:2 http:\/\/www\.webrtc\.org\/experiments\/rtp-hdrext\/abs-send-time$/m);
    assert.match(video, /^a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid$/m);
    assert.match(video, /^a=rtcp-fb:\d+ transport-cc$/m);
    const mid = /^a=mid:(\S+)$/m.exec(video)?.[1];

    const packets: RtpPacket['header'][] = [];
    const stop = client.onVideoRtp((packet) => {
      if (packets.length < 300) packets.push(packet.header);
    });
    try {
      await waitFor('300 video packets', () => packets.length >= 300, 30_000);
    } finally {
      stop();
    }
    const offered = new Set<number>(Object.values(CHROMIUM_EXTENSION_IDS));
    let rising = 0;
    let previous: number | undefined;
    for (const header of packets) {
      const ids = header.extensions.map((e) => e.id);
      assert.ok(ids.every((id) => offered.has(id)), `only offered ids on the wire, got ${ids.join(',')}`);
      const tcc = header.extensions.find((e) => e.id === CHROMIUM_EXTENSION_IDS.transportWideCc);
      assert.equal(tcc?.payload.length, 2, 'a 2-byte transport-wide sequence number on id 4');
      const abs = header.extensions.find((e) => e.id === CHROMIUM_EXTENSION_IDS.absSendTime);
      assert.equal(abs?.payload.length, 3, '3-byte abs-send-time on id 2');
      const midValue = header.extensions.find((e) => e.id === CHROMIUM_EXTENSION_IDS.mid)?.payload.toString();
      if (midValue !== undefined) assert.equal(midValue, mid, 'the MID on id 9 names the video section');
      const sequence = tcc!.payload.readUInt16BE(0);
      // Transport-wide: audio packets take numbers between video ones, so steps are positive, not always 1.
      if (previous !== undefined && ((sequence - previous) & 0xffff) > 0 && ((sequence - previous) & 0xffff) < 0x8000) rising += 1;
      previous = sequence;
    }
    assert.ok(rising >= packets.length - 3, `transport-wide sequence rises (${rising} of ${packets.length - 1} steps)`);
    assert.ok(packets.some((h) => h.extensions.some((e) => e.id === CHROMIUM_EXTENSION_IDS.mid)), 'the MID is sent');
  });

  test('limited to 250 kbit/s it gets the low layer, and the top layer again when unlimited', async () => {
    const edge = node.edge!;
    const sessionId = client!.sessionId!;
    const layer = (): number | undefined => edge.sessionStats(streamId).find((s) => s.sessionId === sessionId)?.spatialLayer;
    await waitFor('the top layer at first', () => layer() === 1, 30_000);
    await edge.limitSession(streamId, sessionId, 250_000);
    await waitFor('the low layer under 250 kbit/s (transport-cc estimate)', () => layer() === 0, 30_000);
    await client!.waitFor('an SPS of the low layer (180 lines)', (s) => s.lastSpsSize?.height === 180, 10_000);
    await edge.limitSession(streamId, sessionId, 0);
    await waitFor('the top layer again once unlimited', () => layer() === 1, 45_000);
    await client!.waitFor('an SPS of the top layer again', (s) => s.lastSpsSize?.height === 360, 10_000);
  });
});
