import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { types as ms } from 'mediasoup';
import * as ortc from 'mediasoup/node/lib/ortc.js';
import sdpTransform from 'sdp-transform';
import { baselineVideo, ffmpegSdp, whipFfmpegArgs } from '../ingest/WhipIngest.js';
import { buildWhipAnswer, parseWhipOffer, whipRouterCodecs, type WhipAnswerInput } from '../webrtc-edge/whipSdp.js';
import { WhepSdpError } from '../webrtc-edge/whepSdp.js';

/**
 * What Chromium 156 (Debian, headless) offers for a fake camera and microphone added as `sendonly` transceivers,
 * without codec preferences (every codec it can send), taken verbatim with one host candidate per section kept.
 */
const CHROMIUM_OFFER = `
v=0
o=- 3732913732961968696 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 34430425-b73f-4c5b-9e49-95475278a469
m=audio 43655 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 192.0.2.2
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:2495643033 1 udp 2122194687 192.0.2.2 43655 typ host generation 0 network-id 1
a=ice-ufrag:/Ylp
a=ice-pwd:yBfTzd13dWKsSo6Eo6E3KQuU
a=ice-options:trickle
a=fingerprint:sha-256 61:D7:A8:F7:46:7B:D2:BD:D2:68:C3:BB:E7:1B:E2:B9:B2:ED:C2:41:67:2D:E3:3D:F5:4D:A8:46:61:50:F6:58
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendonly
a=msid:34430425-b73f-4c5b-9e49-95475278a469 f3c6becc-47a4-4f58-9ec1-8c752a69eaa0
a=rtcp-mux
a=rtcp-rsize
a=rtcp-xr:rcvr-rtt=all
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1836791625 cname:X+kduTSsJDrGENJq
a=ssrc:1836791625 msid:34430425-b73f-4c5b-9e49-95475278a469 f3c6becc-47a4-4f58-9ec1-8c752a69eaa0
m=video 44780 UDP/TLS/RTP/SAVPF 96 97 102 103 104 107 108 109 114 115 116 117 39 40 45 46 98 99 100 101 118 119 120
c=IN IP4 192.0.2.2
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:2495643033 1 udp 2122194687 192.0.2.2 44780 typ host generation 0 network-id 1
a=ice-ufrag:/Ylp
a=ice-pwd:yBfTzd13dWKsSo6Eo6E3KQuU
a=ice-options:trickle
a=fingerprint:sha-256 61:D7:A8:F7:46:7B:D2:BD:D2:68:C3:BB:E7:1B:E2:B9:B2:ED:C2:41:67:2D:E3:3D:F5:4D:A8:46:61:50:F6:58
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendonly
a=msid:34430425-b73f-4c5b-9e49-95475278a469 12d8f73a-59de-494a-8efd-74bb94963fca
a=rtcp-mux
a=rtcp-rsize
a=rtcp-xr:rcvr-rtt=all
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 goog-remb
a=rtcp-fb:104 transport-cc
a=rtcp-fb:104 ccm fir
a=rtcp-fb:104 nack
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=104
a=rtpmap:108 H264/90000
a=rtcp-fb:108 goog-remb
a=rtcp-fb:108 transport-cc
a=rtcp-fb:108 ccm fir
a=rtcp-fb:108 nack
a=rtcp-fb:108 nack pli
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:114 H264/90000
a=rtcp-fb:114 goog-remb
a=rtcp-fb:114 transport-cc
a=rtcp-fb:114 ccm fir
a=rtcp-fb:114 nack
a=rtcp-fb:114 nack pli
a=fmtp:114 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:115 rtx/90000
a=fmtp:115 apt=114
a=rtpmap:116 H264/90000
a=rtcp-fb:116 goog-remb
a=rtcp-fb:116 transport-cc
a=rtcp-fb:116 ccm fir
a=rtcp-fb:116 nack
a=rtcp-fb:116 nack pli
a=fmtp:116 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:39 H264/90000
a=rtcp-fb:39 goog-remb
a=rtcp-fb:39 transport-cc
a=rtcp-fb:39 ccm fir
a=rtcp-fb:39 nack
a=rtcp-fb:39 nack pli
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f
a=rtpmap:40 rtx/90000
a=fmtp:40 apt=39
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=rtcp-fb:100 goog-remb
a=rtcp-fb:100 transport-cc
a=rtcp-fb:100 ccm fir
a=rtcp-fb:100 nack
a=rtcp-fb:100 nack pli
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:118 red/90000
a=rtpmap:119 rtx/90000
a=fmtp:119 apt=118
a=rtpmap:120 ulpfec/90000
a=ssrc-group:FID 2525595113 3574770890
a=ssrc:2525595113 cname:X+kduTSsJDrGENJq
a=ssrc:2525595113 msid:34430425-b73f-4c5b-9e49-95475278a469 12d8f73a-59de-494a-8efd-74bb94963fca
a=ssrc:3574770890 cname:X+kduTSsJDrGENJq
a=ssrc:3574770890 msid:34430425-b73f-4c5b-9e49-95475278a469 12d8f73a-59de-494a-8efd-74bb94963fca
`.trimStart();

/**
 * The shape of OBS 30's WHIP offer (libdatachannel): session-level ICE and DTLS, audio first, one codec per section,
 * SSRCs without RTX, no header extensions.
 */
const OBS_OFFER = [
  'v=0', 'o=rtc 3126455418 0 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0 1', 'a=group:LS 0 1', 'a=msid-semantic:WMS *',
  'a=setup:actpass', 'a=ice-ufrag:Wq7b', 'a=ice-pwd:0nOpcdS1zLTqUHx3cPNr8Ouz', 'a=ice-options:ice2,trickle',
  'a=fingerprint:sha-256 0B:6D:55:D2:8F:0C:D3:1C:5E:08:AB:61:F7:E7:A0:8D:9E:CC:2B:1E:10:50:4E:DB:0E:EB:34:50:7F:A1:11:20',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=sendonly', 'a=ssrc:3487139150 cname:obs-cname',
  'a=ssrc:3487139150 msid:obs obs-audio', 'a=msid:obs obs-audio', 'a=rtcp-mux', 'a=rtpmap:111 opus/48000/2',
  'a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1',
  'm=video 9 UDP/TLS/RTP/SAVPF 96', 'c=IN IP4 0.0.0.0', 'a=mid:1', 'a=sendonly', 'a=ssrc:2861352003 cname:obs-cname',
  'a=ssrc:2861352003 msid:obs obs-video', 'a=msid:obs obs-video', 'a=rtcp-mux', 'a=rtpmap:96 H264/90000', 'a=rtcp-fb:96 nack',
  'a=rtcp-fb:96 nack pli', 'a=rtcp-fb:96 goog-remb', 'a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1',
  '',
].join('\r\n');

/** What mediasoup's router would make of the codecs, and whether a producer with these parameters maps onto them. */
function producerMaps(rtpParameters: ms.RtpParameters, mediaCodecs: ms.RtpCodecCapability[]): void {
  const routerCapabilities = ortc.generateRouterRtpCapabilities(mediaCodecs);
  ortc.validateRtpParameters(rtpParameters);
  const mapping = ortc.getProducerRtpParametersMapping(rtpParameters, routerCapabilities);
  assert.ok(mapping.codecs.length > 0);
}

const fakeTransport: Omit<WhipAnswerInput, 'offer'> = {
  iceParameters: { usernameFragment: 'onairufrag00', password: 'onairpassword00000000000000', iceLite: true },
  iceCandidates: [{ foundation: 'udpcandidate', priority: 1076302079, ip: '127.0.0.1', protocol: 'udp', port: 40000, type: 'host' } as WhipAnswerInput['iceCandidates'][number]],
  dtlsParameters: { role: 'auto', fingerprints: [{ algorithm: 'sha-256', value: 'AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99' }] },
};

describe('parseWhipOffer reads a publisher\'s sendonly offer', () => {
  test('Chromium, every codec offered: H.264 packetization-mode 1 constrained baseline with its RTX, and opus, on the offer\'s payload types and SSRCs', () => {
    const offer = parseWhipOffer(CHROMIUM_OFFER);
    assert.deepEqual(offer.iceParameters, { usernameFragment: '/Ylp', password: 'yBfTzd13dWKsSo6Eo6E3KQuU' });
    assert.equal(offer.dtlsParameters.role, 'client', 'the publisher is the DTLS client (actpass)');
    const video = offer.video.rtpParameters;
    assert.equal(offer.video.mid, '1');
    assert.deepEqual(video.codecs.map((c) => [c.mimeType, c.payloadType]), [['video/H264', 108], ['video/rtx', 109]]);
    assert.equal(video.codecs[0]!.parameters['profile-level-id'], '42e01f');
    assert.deepEqual(video.encodings, [{ ssrc: 2525595113, rtx: { ssrc: 3574770890 } }]);
    assert.equal(video.rtcp?.cname, 'X+kduTSsJDrGENJq');
    assert.ok(video.headerExtensions?.some((e) => e.uri.endsWith('transport-wide-cc-extensions-01') && e.id === 3), 'transport-cc on the offer\'s id');
    assert.ok(!video.headerExtensions?.some((e) => e.uri.endsWith('playout-delay')), 'extensions mediasoup does not read are left out');
    const audio = offer.audio!.rtpParameters;
    assert.deepEqual(audio.codecs.map((c) => [c.mimeType, c.payloadType]), [['audio/opus', 111]]);
    assert.deepEqual(audio.encodings, [{ ssrc: 1836791625 }]);
    const codecs = whipRouterCodecs(offer);
    producerMaps(video, codecs);
    producerMaps(audio, codecs);
  });

  test('OBS (libdatachannel): session-level ICE and DTLS, audio first, no RTX, no extensions', () => {
    const offer = parseWhipOffer(OBS_OFFER);
    assert.equal(offer.iceParameters.usernameFragment, 'Wq7b');
    assert.equal(offer.audio?.mid, '0');
    assert.equal(offer.video.mid, '1');
    assert.deepEqual(offer.video.rtpParameters.codecs.map((c) => c.payloadType), [96]);
    assert.deepEqual(offer.video.rtpParameters.encodings, [{ ssrc: 2861352003 }]);
    producerMaps(offer.video.rtpParameters, whipRouterCodecs(offer));
    producerMaps(offer.audio!.rtpParameters, whipRouterCodecs(offer));
  });

  test('a publisher that sends no audio is taken (video alone)', () => {
    const videoOnly = CHROMIUM_OFFER.replace('a=group:BUNDLE 0 1', 'a=group:BUNDLE 1').replace(/m=audio [^]*?(?=m=video)/, '');
    const offer = parseWhipOffer(videoOnly);
    assert.equal(offer.audio, undefined);
    assert.equal(offer.sections.length, 1);
  });
});

describe('parseWhipOffer refuses what the ladder cannot take, with a reason', () => {
  const refused = (sdp: string, reason: RegExp): void => {
    assert.throws(() => parseWhipOffer(sdp), (error: unknown) => error instanceof WhepSdpError && reason.test(error.reason));
  };
  test('VP8 only: no H.264 with packetization-mode 1, what OnAir takes is named', () => {
    refused(OBS_OFFER.replace('a=rtpmap:96 H264/90000', 'a=rtpmap:96 VP8/90000'), /H\.264 \(packetization-mode=1\)[^]*no H\.264/);
  });
  test('H.264 packetization-mode 0 only', () => {
    refused(OBS_OFFER.replace('packetization-mode=1', 'packetization-mode=0'), /no H\.264 with packetization-mode=1/);
  });
  test('a recvonly video section: a viewer\'s offer sent to the publish URL', () => {
    refused(OBS_OFFER.replace(/(m=video[^]*?)a=sendonly/, '$1a=recvonly'), /the publisher must send/);
  });
  test('not SDP, no BUNDLE, no fingerprint, no m-section', () => {
    refused('hello', /not an SDP offer/);
    refused(OBS_OFFER.replace('a=group:BUNDLE 0 1\r\n', ''), /BUNDLE/);
    refused(OBS_OFFER.replace(/a=fingerprint:.*\r\n/, ''), /fingerprint/);
    refused('v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n', /sendonly video/);
  });
});

describe('buildWhipAnswer', () => {
  test('ICE-lite, recvonly, the chosen codec and its RTX only, the offer\'s extension ids, every candidate', () => {
    const offer = parseWhipOffer(CHROMIUM_OFFER);
    const answer = sdpTransform.parse(buildWhipAnswer({ offer, ...fakeTransport }));
    assert.equal(answer.icelite, 'ice-lite');
    assert.equal(String(answer.groups?.[0]?.mids), '0 1');
    const [audio, video] = answer.media;
    assert.equal(video!.direction, 'recvonly');
    assert.equal(audio!.direction, 'recvonly');
    assert.equal(video!.setup, 'passive');
    assert.deepEqual(video!.rtp.map((r) => r.payload), [108, 109]);
    assert.deepEqual(audio!.rtp.map((r) => r.payload), [111]);
    assert.ok(video!.ext?.some((e) => e.value === 3 && e.uri.endsWith('transport-wide-cc-extensions-01')));
    assert.equal(video!.candidates?.[0]?.ip, '127.0.0.1');
    assert.equal(video!.endOfCandidates, 'end-of-candidates');
  });

  test('a section not taken is answered with port 0, in offer order', () => {
    const withData = OBS_OFFER.replace('a=group:BUNDLE 0 1', 'a=group:BUNDLE 0 1 2')
      + 'm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=sctp-port:5000\r\n';
    const answer = sdpTransform.parse(buildWhipAnswer({ offer: parseWhipOffer(withData), ...fakeTransport }));
    assert.deepEqual(answer.media.map((m) => [m.type, m.port]), [['audio', 9], ['video', 9], ['application', 0]]);
    assert.equal(String(answer.groups?.[0]?.mids), '0 1');
  });
});

describe('the bridge\'s ffmpeg', () => {
  test('its SDP names each leg\'s port and codec; RTCP goes to the next port', () => {
    const sdp = ffmpegSdp([
      { kind: 'video', port: 20000, codec: { mimeType: 'video/H264', payloadType: 125, clockRate: 90000, parameters: { 'packetization-mode': 1 } } },
      { kind: 'audio', port: 20002, codec: { mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 } },
    ]);
    const parsed = sdpTransform.parse(sdp);
    assert.deepEqual(parsed.media.map((m) => [m.type, m.port, m.rtp[0]?.codec]), [['video', 20000, 'H264'], ['audio', 20002, 'opus']]);
    assert.match(sdp, /a=rtpmap:100 opus\/48000\/2/);
    assert.match(sdp, /a=fmtp:125 packetization-mode=1/);
  });

  test('WebRTC viewers get the publisher\'s own video only when it is Baseline (what the viewers\' producers declare)', () => {
    assert.equal(baselineVideo(parseWhipOffer(OBS_OFFER)), true, 'constrained baseline (42e01f), as OBS and browsers offer');
    assert.equal(baselineVideo(parseWhipOffer(OBS_OFFER.replace('profile-level-id=42e01f', 'profile-level-id=42001f'))), true, 'baseline');
    // Main or High: the ladder's constrained-baseline layers serve the WebRTC viewers.
    assert.equal(baselineVideo(parseWhipOffer(OBS_OFFER.replace('profile-level-id=42e01f', 'profile-level-id=640c1f'))), false, 'high');
    assert.equal(baselineVideo(parseWhipOffer(OBS_OFFER.replace('profile-level-id=42e01f', 'profile-level-id=4d001f'))), false, 'main');
  });

  test('H.264 is copied (no re-encode before the ladder), opus becomes AAC, FLV on stdout; no audio options without audio', () => {
    const args = whipFfmpegArgs('v=0', true);
    assert.deepEqual(args.slice(args.indexOf('-c:v'), args.indexOf('-c:v') + 2), ['-c:v', 'copy']);
    assert.ok(args.includes('aac'));
    assert.deepEqual(args.slice(-5), ['-f', 'flv', '-flvflags', 'no_duration_filesize', 'pipe:1']);
    assert.ok(args.includes('data,udp,rtp'), 'only the protocols the SDP needs');
    assert.ok(args.indexOf('-localaddr') >= 0 && args.indexOf('-localaddr') < args.indexOf('-i'), 'its RTP ports bound to loopback');
    assert.equal(args[args.indexOf('-localaddr') + 1], '127.0.0.1');
    assert.ok(!whipFfmpegArgs('v=0', false).includes('aac'));
  });
});
