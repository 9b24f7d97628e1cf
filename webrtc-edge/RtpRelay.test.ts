import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { isH264Keyframe, RtpRelay, type RelayInput } from './RtpRelay.js';

// ---------------------------------------------------------------------------------------------------------------
// RTP packets as ffmpeg's rtp muxer sends them (H.264 per RFC 6184, Opus)
// ---------------------------------------------------------------------------------------------------------------

const VIDEO_SSRC = 0x11111111;
const AUDIO_SSRC = 0x22222222;

function rtp(ssrc: number, seq: number, ts: number, payload: Buffer, options: { csrcs?: number; extensionWords?: number } = {}): Buffer {
  const csrcs = options.csrcs ?? 0;
  const ext = options.extensionWords;
  const header = Buffer.alloc(12 + csrcs * 4 + (ext === undefined ? 0 : 4 + ext * 4));
  header[0] = 0x80 | (ext === undefined ? 0 : 0x10) | csrcs;
  header[1] = 102;
  header.writeUInt16BE(seq & 0xffff, 2);
  header.writeUInt32BE(ts >>> 0, 4);
  header.writeUInt32BE(ssrc >>> 0, 8);
  if (ext !== undefined) {
    header.writeUInt16BE(0xbede, 12 + csrcs * 4);
    header.writeUInt16BE(ext, 14 + csrcs * 4);
  }
  return Buffer.concat([header, payload]);
}

/** NAL unit headers: nal_ref_idc 3 and the type. */
const SPS = Buffer.from([0x67, 0x42, 0xe0, 0x1f]);
const PPS = Buffer.from([0x68, 0xce, 0x3c, 0x80]);
const IDR = Buffer.from([0x65, 0x88, 0x84, 0x00]);
const SLICE = Buffer.from([0x41, 0x9a, 0x02, 0x00]);

function stapA(...nals: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from([0x78]), ...nals.flatMap((n) => [Buffer.from([n.length >> 8, n.length & 0xff]), n])]);
}

function fuA(nal: Buffer, position: 'start' | 'middle' | 'end'): Buffer {
  const indicator = (nal[0]! & 0xe0) | 28;
  const header = (position === 'start' ? 0x80 : position === 'end' ? 0x40 : 0) | (nal[0]! & 0x1f);
  return Buffer.concat([Buffer.from([indicator, header]), nal.subarray(1)]);
}

const OPUS = Buffer.from([0xfc, 0xff, 0xfe]);

describe('isH264Keyframe: where a decoder can start, read from the RTP payload', () => {
  test('single NAL units: SPS and IDR start a keyframe; PPS and other slices do not', () => {
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, SPS)), true);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, IDR)), true);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, PPS)), false);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, SLICE)), false);
  });

  test('STAP-A: a keyframe when any aggregated unit is an SPS or an IDR', () => {
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, stapA(SPS, PPS))), true);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, stapA(PPS, IDR))), true);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, stapA(PPS, SLICE))), false);
    // A size running past the packet ends the walk, with no throw.
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, Buffer.from([0x78, 0x00, 0x40, 0x41]))), false);
  });

  test('FU-A: only the first fragment of an IDR', () => {
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, fuA(IDR, 'start'))), true);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, fuA(IDR, 'middle'))), false);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, fuA(IDR, 'end'))), false);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, fuA(SLICE, 'start'))), false);
  });

  test('CSRCs and a header extension are skipped; short or foreign packets are not keyframes', () => {
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, SPS, { csrcs: 2, extensionWords: 1 })), true);
    assert.equal(isH264Keyframe(rtp(VIDEO_SSRC, 1, 0, SLICE, { csrcs: 1, extensionWords: 2 })), false);
    assert.equal(isH264Keyframe(Buffer.alloc(12)), false);
    assert.equal(isH264Keyframe(Buffer.from([0x80, 96])), false);
    // An extension length that runs past the end of the packet.
    const broken = rtp(VIDEO_SSRC, 1, 0, Buffer.alloc(0), { extensionWords: 0 });
    broken.writeUInt16BE(200, 14);
    assert.equal(isH264Keyframe(broken), false);
  });
});

/** What mediasoup's PlainTransport would receive: every RTP packet the relay sends, parsed. */
interface Received {
  ssrc: number;
  seq: number;
  ts: number;
  payload: Buffer;
}

describe('RtpRelay: an explicit switch between the live feed and an ad feed, on keyframes, numbers continuous', () => {
  let relay: RtpRelay;
  let live: RelayInput[];
  let ad: RelayInput[];
  let sink: dgram.Socket;
  let sender: dgram.Socket;
  const received: Received[] = [];

  before(async () => {
    ({ relay, inputs: live } = await RtpRelay.create(2));
    relay.track([{ ssrc: VIDEO_SSRC, clockRate: 90000 }, { ssrc: AUDIO_SSRC, clockRate: 48000 }]);
    sink = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
    sink.on('message', (m) => {
      if (m.length < 12 || m[1] === 200) return;
      received.push({ ssrc: m.readUInt32BE(8), seq: m.readUInt16BE(2), ts: m.readUInt32BE(4), payload: m.subarray(12) });
    });
    relay.connect({ address: '127.0.0.1', port: sink.address().port });
    sender = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => sender.bind(0, '127.0.0.1', resolve));
    ad = await relay.adInputs();
  });

  after(() => {
    relay.close();
    sink.close();
    sender.close();
  });

  const send = (input: RelayInput, packet: Buffer): Promise<void> => new Promise((resolve, reject) => {
    sender.send(packet, input.port, '127.0.0.1', (error) => (error ? reject(error) : resolve()));
  });
  /** Sends and waits until the relay has handled it (a packet in, whether forwarded or dropped). */
  const through = async (input: RelayInput, packet: Buffer): Promise<void> => {
    const before = relay.packetsIn;
    await send(input, packet);
    const deadline = Date.now() + 2000;
    while (relay.packetsIn === before) {
      if (Date.now() > deadline) throw new Error('the relay did not take the packet');
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  };
  const last = (ssrc: number): Received => received.filter((r) => r.ssrc === ssrc).at(-1)!;
  const count = (): number => received.length;

  // Live: video from seq 1000 / ts 500000, audio from seq 7000 / ts 90000. Ad: numbered far away (another ffmpeg).
  let liveSeq = 1000;
  let liveTs = 500_000;
  let liveAudioSeq = 7000;
  let liveAudioTs = 90_000;
  let adSeq = 40_000;
  let adTs = 3_000_000_000;
  let adAudioSeq = 20_000;
  let adAudioTs = 1_000_000_000;
  const liveVideo = (payload: Buffer): Promise<void> => through(live[0]!, rtp(VIDEO_SSRC, liveSeq++, (liveTs += 3600), payload));
  const liveAudio = (): Promise<void> => through(live[1]!, rtp(AUDIO_SSRC, liveAudioSeq++, (liveAudioTs += 960), OPUS));
  const adVideo = (payload: Buffer): Promise<void> => through(ad[0]!, rtp(VIDEO_SSRC, adSeq++, (adTs += 3600), payload));
  const adAudio = (): Promise<void> => through(ad[1]!, rtp(AUDIO_SSRC, adAudioSeq++, (adAudioTs += 960), OPUS));

  test('before any switch: live passes as it is, the ad inputs are dropped', async () => {
    await liveVideo(SPS);
    await liveVideo(SLICE);
    await liveAudio();
    assert.equal(count(), 3);
    assert.equal(last(VIDEO_SSRC).seq, 1001);
    await adVideo(SPS);
    await adAudio();
    assert.equal(count(), 3, 'nothing from the ad inputs while live is in use');
    assert.equal(relay.source(VIDEO_SSRC), 'live');
  });

  test('use("ad"): live goes on until the ad\'s first keyframe; from it, the ad, renumbered to follow on', async () => {
    relay.use('ad');
    await adVideo(SLICE);
    await adAudio();
    assert.equal(count(), 3, 'no ad before its keyframe (video), nor its audio before the video switched');
    await liveVideo(SLICE);
    await liveAudio();
    assert.equal(count(), 5, 'the programme continues meanwhile');
    const videoBefore = last(VIDEO_SSRC);
    const audioBefore = last(AUDIO_SSRC);
    await adVideo(fuA(IDR, 'start'));
    assert.equal(relay.source(VIDEO_SSRC), 'ad');
    const first = last(VIDEO_SSRC);
    assert.deepEqual(first.payload, fuA(IDR, 'start'));
    assert.equal(first.seq, (videoBefore.seq + 1) & 0xffff, 'the sequence number follows on');
    const step = (first.ts - videoBefore.ts) >>> 0;
    assert.ok(step >= 1 && step < 90000, `the timestamp moves on by the time since (${step})`);
    await liveVideo(SLICE);
    assert.equal(last(VIDEO_SSRC).seq, first.seq, 'the programme is dropped from then on');
    await adVideo(SLICE);
    assert.equal(last(VIDEO_SSRC).seq, (first.seq + 1) & 0xffff);
    assert.equal((last(VIDEO_SSRC).ts - first.ts) >>> 0, 3600, 'the ad\'s own steps are kept');
    // Audio switches with the video: its next ad packet goes out, the live one no more.
    await adAudio();
    assert.equal(relay.source(AUDIO_SSRC), 'ad');
    assert.equal(last(AUDIO_SSRC).seq, (audioBefore.seq + 1) & 0xffff);
    await liveAudio();
    assert.equal(last(AUDIO_SSRC).seq, (audioBefore.seq + 1) & 0xffff, 'live audio dropped');
  });

  test('sender reports of the source not in use are dropped', async () => {
    let reports = 0;
    const onReport = (m: Buffer): void => { if (m[1] === 200) reports += 1; };
    sink.on('message', onReport);
    const sr = (ssrc: number, ts: number): Buffer => {
      const packet = Buffer.alloc(28);
      packet[0] = 0x80; packet[1] = 200; packet.writeUInt16BE(6, 2); packet.writeUInt32BE(ssrc, 4);
      packet.writeUInt32BE(ts >>> 0, 16);
      return packet;
    };
    await through({ port: live[0]!.port + 1 }, sr(VIDEO_SSRC, liveTs));
    await through({ port: ad[0]!.port + 1 }, sr(VIDEO_SSRC, adTs));
    await new Promise((resolve) => setTimeout(resolve, 20));
    sink.off('message', onReport);
    assert.equal(reports, 1, 'only the ad\'s report');
  });

  test('use("live"): back from the next live keyframe, video and audio, numbers still continuous', async () => {
    relay.use('live');
    const before = last(VIDEO_SSRC);
    await liveVideo(SLICE);
    await liveAudio();
    assert.equal(relay.source(VIDEO_SSRC), 'ad', 'no switch on a delta frame');
    await adVideo(SLICE);
    await liveVideo(stapA(SPS, PPS));
    assert.equal(relay.source(VIDEO_SSRC), 'live');
    assert.equal(last(VIDEO_SSRC).seq, (before.seq + 2) & 0xffff);
    await adVideo(SLICE);
    assert.equal(last(VIDEO_SSRC).seq, (before.seq + 2) & 0xffff, 'the ad is dropped from then on');
    const audioBefore = last(AUDIO_SSRC);
    await liveAudio();
    assert.equal(relay.source(AUDIO_SSRC), 'live');
    assert.equal(last(AUDIO_SSRC).seq, (audioBefore.seq + 1) & 0xffff);
    assert.equal(relay.switches, 2);
  });

  test('a switch waits at most `forceAfterMs` for a keyframe, then takes the next packet', async () => {
    relay.use('ad', { forceAfterMs: 100 });
    await adVideo(SLICE);
    assert.equal(relay.source(VIDEO_SSRC), 'live');
    await new Promise((resolve) => setTimeout(resolve, 120));
    const before = last(VIDEO_SSRC);
    await adVideo(SLICE);
    assert.equal(relay.source(VIDEO_SSRC), 'ad', 'forced');
    assert.equal(last(VIDEO_SSRC).seq, (before.seq + 1) & 0xffff);
    relay.use('live', { forceAfterMs: 100 });
    await new Promise((resolve) => setTimeout(resolve, 120));
    await liveVideo(SLICE);
    assert.equal(relay.source(VIDEO_SSRC), 'live');
  });

  test('bad packets never throw: short, other versions, unknown SSRCs from the ad inputs', async () => {
    await through(ad[0]!, Buffer.from([0x80]));
    await through(ad[0]!, rtp(0x33333333, 1, 1, SPS));
    await through(live[0]!, Buffer.from([0x00, 0x01, 0x02]));
    assert.ok(!received.some((r) => r.ssrc === 0x33333333), 'unknown SSRCs are not taken from the ad inputs');
    assert.deepEqual(await relay.adInputs(), ad, 'one set of ad inputs, whatever the calls');
  });
});

describe('RtpRelay.stamp: a sender that cannot choose its SSRC (a WHIP publisher\'s own media, issue #20)', () => {
  test('each input\'s RTP takes its SSRC and payload type (marker kept), its sender reports the SSRC; renumbering as for ffmpeg', async () => {
    const { relay, inputs } = await RtpRelay.create(2);
    const sink = dgram.createSocket('udp4');
    const sender = dgram.createSocket('udp4');
    try {
      relay.track([{ ssrc: VIDEO_SSRC, clockRate: 90000 }, { ssrc: AUDIO_SSRC, clockRate: 48000 }]);
      relay.stamp([{ ssrc: VIDEO_SSRC, payloadType: 101 }, { ssrc: AUDIO_SSRC, payloadType: 100 }]);
      await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
      await new Promise<void>((resolve) => sender.bind(0, '127.0.0.1', resolve));
      const got: Buffer[] = [];
      sink.on('message', (m) => got.push(m));
      relay.connect({ address: '127.0.0.1', port: sink.address().port });
      const send = async (port: number, packet: Buffer, expect: number): Promise<void> => {
        await new Promise<void>((resolve, reject) => sender.send(packet, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
        const deadline = Date.now() + 2000;
        while (got.length < expect) {
          if (Date.now() > deadline) throw new Error('nothing came through the relay');
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      };
      // A mediasoup consumer's numbering: its own SSRC and payload type, the marker bit on the frame's last packet.
      const video = rtp(0x5eed0001, 100, 1000, SPS);
      video.writeUInt8(0x80 | 125, 1);
      await send(inputs[0]!.port, video, 1);
      assert.equal(got[0]!.readUInt32BE(8), VIDEO_SSRC);
      assert.equal(got[0]!.readUInt8(1), 0x80 | 101, 'payload type 101, marker kept');
      await send(inputs[1]!.port, rtp(0x5eed0002, 7, 960, OPUS), 2);
      assert.equal(got[1]!.readUInt32BE(8), AUDIO_SSRC);
      assert.equal(got[1]!.readUInt8(1) & 0x7f, 100);
      const sr = Buffer.alloc(28);
      sr[0] = 0x80; sr[1] = 200; sr.writeUInt16BE(6, 2); sr.writeUInt32BE(0x5eed0001, 4); sr.writeUInt32BE(1000, 16);
      await send(inputs[0]!.port + 1, sr, 3);
      assert.equal(got[2]!.readUInt32BE(4), VIDEO_SSRC, 'the report speaks of the stamped SSRC (kept: it maps the clocks)');
      assert.equal(relay.restarts(VIDEO_SSRC), 0);
      // A new consumer (the publisher came back): other numbers on the same input, a new run renumbered to follow on.
      await send(inputs[0]!.port, rtp(0x5eed0003, 40_000, 9_000_000, SPS), 4);
      assert.equal(got[3]!.readUInt32BE(8), VIDEO_SSRC);
      assert.equal(got[3]!.readUInt16BE(2), 101);
      assert.equal(relay.restarts(VIDEO_SSRC), 1);
    } finally {
      relay.close();
      sink.close();
      sender.close();
    }
  });
});
