import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { webrtcAdArgs, WebRtcAds, type WebRtcFeed } from '../cues/index.js';
import { createLogger } from '../lib/log.js';
import type { AdMedia, AdRendition } from '../lib/media/ads.js';
import type { Cue } from '../lib/media/cues.js';
import { planLadder, rtpFeed, type RtpFeed, type RtpTargets } from '../live-transcoder/index.js';
import { captureLog, waitFor } from './support/harness.js';

const targets = (base: number): RtpTargets => ({
  videoPorts: [base, base + 2], audioPort: base + 4, videoSsrcs: [0x4f4e0001, 0x4f4e0002], audioSsrc: 0x4f4e0080,
  videoPayloadType: 102, audioPayloadType: 111,
});
const plan = planLadder({ width: 854, height: 480, fps: 30, videoCodec: 'h264', audioCodec: 'aac' },
  { heights: [480, 240], passthrough: false, gopMs: 2000, webrtcHeights: [480, 240] });
const live = rtpFeed(plan, targets(30000))!;

/** The value after each occurrence of `flag`. */
const valuesOf = (args: string[], flag: string): string[] => args.flatMap((arg, i) => (arg === flag ? [args[i + 1]!] : []));

describe('webrtcAdArgs: the ads, concatenated at real time, encoded as the live WebRTC feed', () => {
  const ad = rtpFeed(plan, targets(50000))!;
  const args = webrtcAdArgs({ feed: ad, inputs: 2, hasAudio: true, encoder: 'libx264', x264Preset: 'ultrafast', vaapiDevice: '' });

  test('one fMP4 pipe per ad, concatenated and paced by realtime filters (no -re)', () => {
    assert.deepEqual(valuesOf(args, '-i'), ['pipe:3', 'pipe:4']);
    assert.ok(!args.includes('-re'));
    const graph = valuesOf(args, '-filter_complex')[0]!;
    assert.match(graph, /^\[0:v:0\]\[0:a:0\]\[1:v:0\]\[1:a:0\]concat=n=2:v=1:a=1\[cv\]\[ca\];\[cv\]realtime,split=2\[r0\]\[r1\]/);
    assert.match(graph, /\[ca\]arealtime,aresample=async=1\[aout\]/);
    assert.match(graph, new RegExp(`\\[r1\\]scale=${live.video[1]!.layer.width}:${live.video[1]!.layer.height}:`));
  });

  test('the same SSRCs, payload types and encoder settings as the live feed, to the ad ports', () => {
    assert.deepEqual(valuesOf(args, '-ssrc'), ['1330511873', '1330511874', '1330512000']);
    assert.deepEqual(valuesOf(args, '-payload_type'), ['102', '102', '111']);
    assert.deepEqual(args.filter((a) => a.startsWith('rtp://')), [
      'rtp://127.0.0.1:50000?pkt_size=1200', 'rtp://127.0.0.1:50002?pkt_size=1200', 'rtp://127.0.0.1:50004?pkt_size=1200',
    ]);
    assert.deepEqual(valuesOf(args, '-profile:v'), ['baseline', 'baseline']);
    assert.deepEqual(valuesOf(args, '-map'), ['[w0]', '[w1]', '[aout]']);
    assert.ok(!args.includes('-af'), 'the graph resamples the audio');
  });

  test('without audio: video only', () => {
    const silent = webrtcAdArgs({ feed: ad, inputs: 1, hasAudio: false, encoder: 'libx264', x264Preset: 'ultrafast', vaapiDevice: '' });
    assert.match(valuesOf(silent, '-filter_complex')[0]!, /^\[0:v:0\]concat=n=1:v=1:a=0\[cv\];/);
    assert.deepEqual(valuesOf(silent, '-map'), ['[w0]', '[w1]']);
  });
});

describe('WebRtcAds: an ad ffmpeg that cannot run leaves the viewers on the programme, with a warning', () => {
  const rendition = (): AdRendition => ({
    init: { data: Buffer.from('init'), tracks: [{ trackId: 1, kind: 'video', timescale: 90000, codec: 'avc1.42c01e', width: 854, height: 480 }] },
    fragments: [{ data: Buffer.from('frag'), sequenceNumber: 1, durationMs: 2000, tracks: [], independent: true } as never],
    durationMs: 2000,
  });
  const media: AdMedia = { id: 'ad1', durationMs: 2000, renditions: new Map([['480p', rendition()], ['240p', rendition()]]) };
  const cue = (): Cue => ({
    id: 'ad-x', kind: 'ad', eventId: 1, requestedAt: Date.now(), plannedDurationMs: 4000, startDate: Date.now(), startPts: 0n,
    endDate: undefined, endPts: undefined,
  });

  test('a binary that does not exist: switch asked, then back to live, ONAIR_ERR_AD_WEBRTC_FEED logged', async () => {
    const log = captureLog();
    const feeds: WebRtcFeed[] = [];
    const ads = new WebRtcAds({
      streamId: 's1', ffmpegPath: '/nonexistent/ffmpeg', encoder: 'libx264', x264Preset: 'ultrafast', vaapiDevice: '',
      adInputs: () => Promise.resolve(targets(50000)), useFeed: (feed) => feeds.push(feed),
      log: createLogger({ level: 'warn', destination: log.stream }),
    });
    ads.start(cue(), [media], live);
    await waitFor('the fallback', () => feeds.includes('live'), 5000, 10);
    assert.deepEqual(feeds, ['ad', 'live']);
    await waitFor('the warning', () => log.text().includes('ONAIR_ERR_AD_WEBRTC_FEED'), 2000, 10);
    assert.match(log.text(), /ENOENT/);
    assert.equal(ads.playing, false);
    ads.close();
  });

  test('no ads, or no WebRTC feed: nothing is started, the viewers are never switched', async () => {
    const feeds: WebRtcFeed[] = [];
    let asked = 0;
    const ads = new WebRtcAds({
      streamId: 's1', ffmpegPath: '/nonexistent/ffmpeg', encoder: 'libx264', x264Preset: 'ultrafast', vaapiDevice: '',
      adInputs: () => { asked += 1; return Promise.resolve(targets(50000)); }, useFeed: (feed) => feeds.push(feed),
      log: createLogger({ level: 'silent' }),
    });
    ads.start(cue(), [], live);
    ads.start(cue(), [media], undefined as RtpFeed | undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(feeds, []);
    assert.equal(asked, 0);
    ads.close();
  });
});
