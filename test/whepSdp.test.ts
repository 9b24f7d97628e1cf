import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { types as ms } from 'mediasoup';
import * as ortc from 'mediasoup/node/lib/ortc.js';
import { supportedRtpCapabilities } from 'mediasoup/node/lib/supportedRtpCapabilities.js';
import type { Page } from 'playwright-core';
import sdpTransform from 'sdp-transform';
import {
  buildWhepAnswer, parseWhepOffer, routerMediaCodecsFor, useOfferHeaderExtensionIds, WhepSdpError, type RouterHeaderExtensionId, type WhepAnswerInput,
  type WhepOffer,
} from '../webrtc-edge/whepSdp.js';
import { launchChromium } from './support/browser.js';

/**
 * What Chromium 156 (Debian, headless) offers for `addTransceiver('video' | 'audio', { direction: 'recvonly' })`,
 * taken verbatim (one host candidate kept): the fast path. The Chromium suite below makes fresh ones.
 */
const CHROMIUM_OFFER = `
v=0
o=- 7222630033699015467 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 35 36 37 38 102 103 104 107 108 109 114 115 116 117 39 40 41 42 43 44 45 46 47 48 118 119 120 49
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:2531776196 1 udp 2113937151 ca31b0ea-1099-491f-a5d4-0f056611c8c3.local 56267 typ host generation 0 network-cost 999
a=ice-ufrag:YIn/
a=ice-pwd:iQwpREVWTp5MOmbl+rvLECKm
a=ice-options:trickle
a=fingerprint:sha-256 91:8B:29:5E:84:11:EC:76:3E:24:B7:D0:FC:39:8E:E2:8E:DB:67:07:B7:65:A8:D6:1D:62:B2:DC:65:12:7D:F8
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 urn:3gpp:video-orientation
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=recvonly
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
a=rtpmap:35 VP9/90000
a=rtcp-fb:35 goog-remb
a=rtcp-fb:35 transport-cc
a=rtcp-fb:35 ccm fir
a=rtcp-fb:35 nack
a=rtcp-fb:35 nack pli
a=fmtp:35 profile-id=1
a=rtpmap:36 rtx/90000
a=fmtp:36 apt=35
a=rtpmap:37 VP9/90000
a=rtcp-fb:37 goog-remb
a=rtcp-fb:37 transport-cc
a=rtcp-fb:37 ccm fir
a=rtcp-fb:37 nack
a=rtcp-fb:37 nack pli
a=fmtp:37 profile-id=3
a=rtpmap:38 rtx/90000
a=fmtp:38 apt=37
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
a=rtpmap:41 H264/90000
a=rtcp-fb:41 goog-remb
a=rtcp-fb:41 transport-cc
a=rtcp-fb:41 ccm fir
a=rtcp-fb:41 nack
a=rtcp-fb:41 nack pli
a=fmtp:41 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=f4001f
a=rtpmap:42 rtx/90000
a=fmtp:42 apt=41
a=rtpmap:43 H264/90000
a=rtcp-fb:43 goog-remb
a=rtcp-fb:43 transport-cc
a=rtcp-fb:43 ccm fir
a=rtcp-fb:43 nack
a=rtcp-fb:43 nack pli
a=fmtp:43 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=f4001f
a=rtpmap:44 rtx/90000
a=fmtp:44 apt=43
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:47 AV1/90000
a=rtcp-fb:47 goog-remb
a=rtcp-fb:47 transport-cc
a=rtcp-fb:47 ccm fir
a=rtcp-fb:47 nack
a=rtcp-fb:47 nack pli
a=fmtp:47 level-idx=5;profile=1;tier=0
a=rtpmap:48 rtx/90000
a=fmtp:48 apt=47
a=rtpmap:118 red/90000
a=rtpmap:119 rtx/90000
a=fmtp:119 apt=118
a=rtpmap:120 ulpfec/90000
a=rtpmap:49 flexfec-03/90000
a=rtcp-fb:49 goog-remb
a=rtcp-fb:49 transport-cc
a=fmtp:49 repair-window=10000000
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:YIn/
a=ice-pwd:iQwpREVWTp5MOmbl+rvLECKm
a=ice-options:trickle
a=fingerprint:sha-256 91:8B:29:5E:84:11:EC:76:3E:24:B7:D0:FC:39:8E:E2:8E:DB:67:07:B7:65:A8:D6:1D:62:B2:DC:65:12:7D:F8
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
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
`.trimStart().replace(/\n/g, '\r\n');

/** mediasoup-shaped transport parameters (3.12: candidates carry `ip`), as `webRtcTransport.*` gives them. */
const TRANSPORT = {
  iceParameters: { usernameFragment: 'k3pt9ezq1mk5fb5r', password: 'y8q5b1ha1f2kq3hfm6t0v6x3tdq9gqxs', iceLite: true },
  iceCandidates: [
    { foundation: 'udpcandidate', priority: 1076302079, ip: '127.0.0.1', protocol: 'udp', port: 44444, type: 'host', tcpType: undefined },
    { foundation: 'tcpcandidate', priority: 1076276479, ip: '127.0.0.1', protocol: 'tcp', port: 44444, type: 'host', tcpType: 'passive' },
  ],
  dtlsParameters: {
    role: 'auto',
    fingerprints: [
      { algorithm: 'sha-1', value: '3E:41:7C:0C:7A:63:0F:65:8A:12:1D:43:9A:1F:55:63:4B:CC:D8:A5' },
      { algorithm: 'sha-256', value: 'E5:F5:CA:A7:2D:93:E6:16:AC:21:09:9F:23:51:62:8C:D0:66:E9:0C:22:54:2B:82:0C:DF:E0:C5:2C:7E:CD:53' },
    ],
  },
} satisfies Omit<WhepAnswerInput, 'offer' | 'consumers'>;

function clone<T>(value: T): T {
  return structuredClone(value);
}

/** A consumer's rtpParameters as mediasoup 3.12 makes them for this section, given the router's payload types. */
function fakeConsumer(mid: string, kind: ms.MediaKind, pts: { media: number; rtx?: number }): WhepAnswerInput['consumers'][number] {
  const rtpParameters: ms.RtpParameters = kind === 'video'
    ? {
      mid,
      codecs: [
        {
          mimeType: 'video/H264', payloadType: pts.media, clockRate: 90000,
          parameters: { 'packetization-mode': 1, 'profile-level-id': '42e01f', 'level-asymmetry-allowed': 1 },
          rtcpFeedback: [{ type: 'nack' }, { type: 'nack', parameter: 'pli' }, { type: 'ccm', parameter: 'fir' }, { type: 'goog-remb' }],
        },
        ...(pts.rtx === undefined ? [] : [{ mimeType: 'video/rtx', payloadType: pts.rtx, clockRate: 90000, parameters: { apt: pts.media }, rtcpFeedback: [] }]),
      ],
      headerExtensions: [],
      encodings: [{ ssrc: 111_111_111, ...(pts.rtx === undefined ? {} : { rtx: { ssrc: 111_111_112 } }) }],
      rtcp: { cname: 'onair-test', reducedSize: true, mux: true },
    }
    : {
      mid,
      codecs: [{ mimeType: 'audio/opus', payloadType: pts.media, clockRate: 48000, channels: 2, parameters: { useinbandfec: 1 }, rtcpFeedback: [] }],
      headerExtensions: [],
      encodings: [{ ssrc: 222_222_222 }],
      rtcp: { cname: 'onair-test', reducedSize: true, mux: true },
    };
  return { mid, kind, rtpParameters };
}

/**
 * `transport.consume({ producerId, rtpCapabilities: offer.rtpCapabilities, mid })` without a worker: mediasoup's own
 * ortc functions, from router codecs and an ffmpeg-like plain-RTP producer to the consumer's rtpParameters. With
 * `extensionIds`, the router takes them before the producer is made, as `WebRtcEdge` does with a patched worker.
 */
function consumeWithMediasoup(
  offer: WhepOffer, mediaCodecs: ms.RtpCodecCapability[], mid: string, kind: ms.MediaKind, extensionIds?: RouterHeaderExtensionId[],
): WhepAnswerInput['consumers'][number] {
  const routerCaps = ortc.generateRouterRtpCapabilities(clone(mediaCodecs));
  if (extensionIds) useOfferHeaderExtensionIds(routerCaps, extensionIds);
  const producer: ms.RtpParameters = kind === 'video'
    ? { codecs: [{ mimeType: 'video/H264', payloadType: 101, clockRate: 90000, parameters: { 'packetization-mode': 1, 'profile-level-id': '42e01f' } }], encodings: [{ ssrc: 0x4f4e0001 }], rtcp: { cname: 'ffmpeg' } }
    : { codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 }], encodings: [{ ssrc: 0x4f4e0080 }], rtcp: { cname: 'ffmpeg' } };
  ortc.validateRtpParameters(producer);
  const mapping = ortc.getProducerRtpParametersMapping(producer, routerCaps);
  const consumable = ortc.getConsumableRtpParameters(kind, producer, routerCaps, mapping);
  const caps = clone(offer.rtpCapabilities);
  ortc.validateRtpCapabilities(caps);
  assert.ok(ortc.canConsume(consumable, caps), `mediasoup can consume ${kind} with the offer's capabilities`);
  const rtpParameters = ortc.getConsumerRtpParameters({ consumableRtpParameters: consumable, remoteRtpCapabilities: caps, pipe: false, enableRtx: kind === 'video' });
  rtpParameters.mid = mid;
  return { mid, kind, rtpParameters };
}

function answerFor(offer: WhepOffer, consumers: WhepAnswerInput['consumers']): string {
  return buildWhepAnswer({ offer, ...TRANSPORT, consumers });
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof WhepSdpError, `expected a WhepSdpError, got ${String(error)}`);
    assert.ok(error.message.includes(error.reason));
    return error.reason;
  }
  assert.fail('expected a WhepSdpError');
}

/** The offer with its lines passed through `edit` (return undefined to drop a line). */
function edit(sdp: string, change: (line: string) => string | undefined): string {
  return sdp.split('\r\n').map(change).filter((l): l is string => l !== undefined).join('\r\n');
}

describe('parseWhepOffer reads a Chromium recvonly offer', () => {
  const offer = parseWhepOffer(CHROMIUM_OFFER);

  test('it finds the mids, kinds, ICE credentials, fingerprint, and makes the viewer the DTLS client', () => {
    assert.deepEqual(offer.media, [
      { index: 0, mid: '0', kind: 'video', rejected: false },
      { index: 1, mid: '1', kind: 'audio', rejected: false },
    ]);
    assert.deepEqual(offer.iceParameters, { usernameFragment: 'YIn/', password: 'iQwpREVWTp5MOmbl+rvLECKm' });
    assert.deepEqual(offer.dtlsParameters, {
      role: 'client',
      fingerprints: [{ algorithm: 'sha-256', value: '91:8B:29:5E:84:11:EC:76:3E:24:B7:D0:FC:39:8E:E2:8E:DB:67:07:B7:65:A8:D6:1D:62:B2:DC:65:12:7D:F8' }],
    });
  });

  test('its capabilities are H.264 packetization-mode 1 with RTX, and opus, on the offer\'s payload types', () => {
    const codecs = offer.rtpCapabilities.codecs!;
    const h264 = codecs.filter((c) => c.mimeType === 'video/H264');
    assert.deepEqual(h264.map((c) => [c.preferredPayloadType, c.parameters['profile-level-id']]), [[102, '42001f'], [108, '42e01f'], [116, '4d001f'], [41, 'f4001f']]);
    assert.ok(h264.every((c) => c.parameters['packetization-mode'] === 1 && c.clockRate === 90000));
    assert.deepEqual(h264.find((c) => c.preferredPayloadType === 108)!.rtcpFeedback, [
      { type: 'goog-remb' }, { type: 'transport-cc' }, { type: 'ccm', parameter: 'fir' }, { type: 'nack' }, { type: 'nack', parameter: 'pli' },
    ]);
    const rtx = codecs.filter((c) => c.mimeType === 'video/rtx');
    assert.deepEqual(rtx.map((c) => [c.preferredPayloadType, c.parameters.apt]), [[103, 102], [109, 108], [117, 116], [42, 41]]);
    assert.deepEqual(codecs.filter((c) => c.kind === 'audio'), [{
      kind: 'audio', mimeType: 'audio/opus', preferredPayloadType: 111, clockRate: 48000, channels: 2,
      parameters: { minptime: 10, useinbandfec: 1 }, rtcpFeedback: [{ type: 'transport-cc' }],
    }]);
    assert.equal(codecs.length, 9, 'no VP8, VP9, AV1, packetization-mode 0, red, ulpfec, G.711…');
    ortc.validateRtpCapabilities(clone(offer.rtpCapabilities));
  });

  test('its header extensions are those mediasoup can send, on the offer\'s ids', () => {
    const ids = (kind: string) => offer.rtpCapabilities.headerExtensions!.filter((e) => e.kind === kind).map((e) => `${e.preferredId} ${e.uri}`);
    assert.deepEqual(ids('video'), [
      '1 urn:ietf:params:rtp-hdrext:toffset',
      '2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
      '3 urn:3gpp:video-orientation',
      '4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
      '9 urn:ietf:params:rtp-hdrext:sdes:mid',
    ]);
    assert.deepEqual(ids('audio'), [
      '14 urn:ietf:params:rtp-hdrext:ssrc-audio-level',
      '2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
      '9 urn:ietf:params:rtp-hdrext:sdes:mid',
    ]);
    // Every one of them is one a mediasoup router can send to a consumer of that kind.
    for (const ext of offer.rtpCapabilities.headerExtensions!) {
      const supported = supportedRtpCapabilities.headerExtensions!.find((s) => s.kind === ext.kind && s.uri === ext.uri);
      assert.ok(supported && (supported.direction === 'sendrecv' || supported.direction === 'sendonly'), ext.uri);
      assert.equal(ext.direction, 'sendrecv');
    }
  });

  test('a=setup:passive makes the viewer the DTLS server, and the answer a=setup:active', () => {
    const passive = parseWhepOffer(CHROMIUM_OFFER.replaceAll('a=setup:actpass', 'a=setup:passive'));
    assert.equal(passive.dtlsParameters.role, 'server');
    const answer = answerFor(passive, [fakeConsumer('0', 'video', { media: 108, rtx: 109 })]);
    assert.match(answer, /\r\na=setup:active\r\n/);
    assert.equal(parseWhepOffer(CHROMIUM_OFFER.replaceAll('a=setup:actpass', 'a=setup:active')).dtlsParameters.role, 'client');
  });
});

describe('parseWhepOffer refuses offers it cannot answer, with a reason', () => {
  test('text that is not SDP', () => {
    for (const body of ['', 'hello', '{"type":"offer"}', '<html></html>', 'v=1\r\n']) assert.match(reasonOf(() => parseWhepOffer(body)), /not an SDP offer/);
  });

  test('an SDP without m-sections', () => {
    assert.match(reasonOf(() => parseWhepOffer('v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n')), /no m-sections/);
  });

  test('an offer without a DTLS fingerprint', () => {
    const sdp = edit(CHROMIUM_OFFER, (l) => (l.startsWith('a=fingerprint:') ? undefined : l));
    assert.match(reasonOf(() => parseWhepOffer(sdp)), /no a=fingerprint/);
    const bogus = CHROMIUM_OFFER.replaceAll('a=fingerprint:sha-256 91:8B', 'a=fingerprint:md5 91:8B');
    assert.match(reasonOf(() => parseWhepOffer(bogus)), /not a fingerprint we can check/);
  });

  test('an offer without ICE credentials', () => {
    const sdp = edit(CHROMIUM_OFFER, (l) => (l.startsWith('a=ice-ufrag:') ? undefined : l));
    assert.match(reasonOf(() => parseWhepOffer(sdp)), /no a=ice-ufrag/);
  });

  test('an offer without BUNDLE', () => {
    const sdp = edit(CHROMIUM_OFFER, (l) => (l.startsWith('a=group:BUNDLE') ? undefined : l));
    assert.match(reasonOf(() => parseWhepOffer(sdp)), /no a=group:BUNDLE/);
  });

  test('an offer with neither H.264 packetization-mode 1 nor opus', () => {
    const sdp = CHROMIUM_OFFER.replaceAll('packetization-mode=1', 'packetization-mode=0').replace('opus/48000/2', 'L16/48000/2');
    const reason = reasonOf(() => parseWhepOffer(sdp));
    assert.match(reason, /nothing in the offer can be served/);
    assert.match(reason, /m-section 0 \(video, mid 0\): no H\.264 with packetization-mode=1 is offered/);
    assert.match(reason, /m-section 1 \(audio, mid 1\): no opus\/48000\/2 is offered/);
  });

  test('an offer whose every m-section only sends', () => {
    const sdp = CHROMIUM_OFFER.replaceAll('a=recvonly', 'a=sendonly');
    assert.match(reasonOf(() => parseWhepOffer(sdp)), /it is sendonly: the viewer must receive/);
  });

  test('an offer that leaves no DTLS role to us', () => {
    assert.match(reasonOf(() => parseWhepOffer(CHROMIUM_OFFER.replaceAll('a=setup:actpass', 'a=setup:holdconn'))), /a=setup:holdconn/);
  });
});

describe('m-sections that cannot be served are answered with port 0', () => {
  const withData = `${CHROMIUM_OFFER}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=sctp-port:5000\r\n`
    .replace('a=group:BUNDLE 0 1', 'a=group:BUNDLE 0 1 2');

  test('a data channel section', () => {
    const offer = parseWhepOffer(withData);
    assert.deepEqual(offer.sections.map((s) => [s.type, s.mid, s.rejected]), [['video', '0', false], ['audio', '1', false], ['application', '2', true]]);
    assert.equal(offer.media.length, 2, 'media lists audio and video only');
    const answer = sdpTransform.parse(answerFor(offer, [fakeConsumer('0', 'video', { media: 108, rtx: 109 }), fakeConsumer('1', 'audio', { media: 111 })]));
    assert.deepEqual(answer.groups, [{ type: 'BUNDLE', mids: '0 1' }]);
    const data = answer.media[2]!;
    assert.deepEqual([data.type, data.port, data.protocol, data.payloads, String(data.mid), data.direction], ['application', 0, 'UDP/DTLS/SCTP', 'webrtc-datachannel', '2', 'inactive']);
  });

  test('a video section without H.264 while audio is fine; a sendonly one; one the offer disabled', () => {
    const noH264 = parseWhepOffer(CHROMIUM_OFFER.replaceAll('packetization-mode=1', 'packetization-mode=0'));
    assert.deepEqual(noH264.media.map((m) => [m.kind, m.rejected, m.reason]), [['video', true, 'no H.264 with packetization-mode=1 is offered'], ['audio', false, undefined]]);
    const answer = answerFor(noH264, [fakeConsumer('1', 'audio', { media: 111 })]);
    assert.match(answer, /\r\nm=video 0 UDP\/TLS\/RTP\/SAVPF 96\r\nc=IN IP4 0\.0\.0\.0\r\na=mid:0\r\na=inactive\r\nm=audio 9 /);
    assert.match(answer, /\r\na=group:BUNDLE 1\r\n/);

    const sendonly = parseWhepOffer(CHROMIUM_OFFER.replace('a=recvonly', 'a=sendonly'));
    assert.deepEqual(sendonly.media.map((m) => m.rejected), [true, false]);
    const disabled = parseWhepOffer(CHROMIUM_OFFER.replace('m=audio 9 ', 'm=audio 0 '));
    assert.deepEqual(disabled.media.map((m) => [m.rejected, m.reason]), [[false, undefined], [true, 'the offer disabled it (port 0)']]);
    // …but port 0 with a=bundle-only (RFC 8843 §6) is live on the BUNDLE transport.
    const bundleOnly = parseWhepOffer(CHROMIUM_OFFER.replace('m=audio 9 ', 'm=audio 0 ').replace('a=mid:1\r\n', 'a=mid:1\r\na=bundle-only\r\n'));
    assert.deepEqual(bundleOnly.media.map((m) => m.rejected), [false, false]);
  });

  test('an accepted section for which the stream has no consumer (no audio track)', () => {
    const answer = sdpTransform.parse(answerFor(parseWhepOffer(CHROMIUM_OFFER), [fakeConsumer('0', 'video', { media: 108, rtx: 109 })]));
    assert.deepEqual(answer.media.map((m) => [m.type, m.port]), [['video', 9], ['audio', 0]]);
    assert.deepEqual(answer.groups?.map((g) => [g.type, String(g.mids)]), [['BUNDLE', '0']]);
  });
});

describe('buildWhepAnswer writes what mediasoup sends', () => {
  const offer = parseWhepOffer(CHROMIUM_OFFER);

  test('an ICE-lite, sendonly answer with the consumer\'s codecs, SSRCs and the transport\'s candidates', () => {
    const sdp = answerFor(offer, [fakeConsumer('0', 'video', { media: 108, rtx: 109 }), fakeConsumer('1', 'audio', { media: 111 })]);
    assert.ok(sdp.endsWith('\r\n') && !/[^\r]\n/.test(sdp), 'CRLF line ends');
    assert.match(sdp, /^v=0\r\no=- \d+ 2 IN IP4 127\.0\.0\.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS onair\r\n/);
    const answer = sdpTransform.parse(sdp);
    const [video, audio] = answer.media;
    assert.ok(video && audio);
    assert.deepEqual([video.type, video.port, video.protocol, video.payloads, String(video.mid), video.direction, video.setup], ['video', 9, 'UDP/TLS/RTP/SAVPF', '108 109', '0', 'sendonly', 'passive']);
    assert.deepEqual([video.iceUfrag, video.icePwd, video.rtcpMux, video.rtcpRsize], ['k3pt9ezq1mk5fb5r', 'y8q5b1ha1f2kq3hfm6t0v6x3tdq9gqxs', 'rtcp-mux', 'rtcp-rsize']);
    assert.equal(sdp.match(/a=fingerprint:sha-1 3E:41/g)?.length, 2, 'every fingerprint in every section');
    assert.equal(sdp.match(/a=fingerprint:sha-256 E5:F5/g)?.length, 2);
    assert.deepEqual(video.rtp, [{ payload: 108, codec: 'H264', rate: 90000 }, { payload: 109, codec: 'rtx', rate: 90000 }]);
    assert.deepEqual(video.fmtp, [{ payload: 108, config: 'packetization-mode=1;profile-level-id=42e01f;level-asymmetry-allowed=1' }, { payload: 109, config: 'apt=108' }]);
    assert.deepEqual(video.rtcpFb?.map((f) => `${f.type} ${f.subtype ?? ''}`.trim()), ['nack', 'nack pli', 'ccm fir', 'goog-remb']);
    assert.deepEqual(video.ssrcGroups, [{ semantics: 'FID', ssrcs: '111111111 111111112' }]);
    assert.deepEqual(video.ssrcs?.map((s) => `${s.id} ${s.attribute}:${s.value}`), [
      '111111111 cname:onair-test', '111111111 msid:onair video-0', '111111112 cname:onair-test', '111111112 msid:onair video-0',
    ]);
    assert.deepEqual(video.msid, [{ id: 'onair', appdata: 'video-0' }]);
    assert.deepEqual(video.candidates, [
      { foundation: 'udpcandidate', component: 1, transport: 'udp', priority: 1076302079, ip: '127.0.0.1', port: 44444, type: 'host' },
      { foundation: 'tcpcandidate', component: 1, transport: 'tcp', priority: 1076276479, ip: '127.0.0.1', port: 44444, type: 'host', tcptype: 'passive' },
    ]);
    assert.equal(video.endOfCandidates, 'end-of-candidates');
    assert.deepEqual(audio.rtp, [{ payload: 111, codec: 'opus', rate: 48000, encoding: 2 }]);
    assert.deepEqual(audio.ssrcs?.map((s) => s.id), [222222222, 222222222]);
  });

  test('a consumer on a payload type the offer gives another codec is a wiring error, not an answer', () => {
    // A router made without the offer's payload types: opus 100, H.264 101, RTX 102 (Chromium: 101 is RTX for VP9).
    assert.throws(() => answerFor(offer, [fakeConsumer('0', 'video', { media: 101, rtx: 102 })]), {
      name: 'TypeError',
      message: /sends video\/H264 on payload type 101, which the offer does not use for it; the offer has video\/H264 on 102, 108, 116, 41: make the router with routerMediaCodecsFor\(offer\)/,
    });
    assert.throws(() => answerFor(offer, [fakeConsumer('1', 'audio', { media: 100 })]), { name: 'TypeError', message: /audio\/opus on payload type 100/ });
    assert.throws(() => answerFor(offer, [{ ...fakeConsumer('0', 'video', { media: 108 }), mid: '7' }]), /no accepted m-section has mid 7/);
    assert.throws(() => answerFor(offer, [{ ...fakeConsumer('1', 'video', { media: 108 }) }]), /is audio, the consumer is video/);
  });

  test('an RTX payload type the offer does not pair with the codec is left out, with generic NACK', () => {
    const sdp = answerFor(offer, [fakeConsumer('0', 'video', { media: 108, rtx: 100 })]);
    const video = sdpTransform.parse(sdp).media[0]!;
    assert.equal(String(video.payloads), '108');
    assert.equal(video.ssrcGroups, undefined);
    assert.deepEqual(video.ssrcs?.map((s) => s.id), [111111111, 111111111]);
    assert.deepEqual(video.rtcpFb?.map((f) => `${f.type} ${f.subtype ?? ''}`.trim()), ['nack pli', 'ccm fir', 'goog-remb']);
  });

  test('routerMediaCodecsFor gives a router the offer\'s payload types, RTX included, as mediasoup allocates them', () => {
    const { key, mediaCodecs } = routerMediaCodecsFor(offer);
    assert.equal(key, 'h264:108/109/42e01f;opus:111;ext:v9,2,4,-,-,3,1,-/a9,2,14,-');
    const routerCaps = ortc.generateRouterRtpCapabilities(clone(mediaCodecs));
    const pt = (mime: string) => routerCaps.codecs!.find((c) => c.mimeType.toLowerCase() === mime)?.preferredPayloadType;
    assert.deepEqual([pt('video/h264'), pt('video/rtx'), pt('audio/opus')], [108, 109, 111]);

    const consumers = [consumeWithMediasoup(offer, mediaCodecs, '0', 'video'), consumeWithMediasoup(offer, mediaCodecs, '1', 'audio')];
    const video = sdpTransform.parse(answerFor(offer, consumers)).media[0]!;
    assert.equal(video.payloads, '108 109');
    assert.equal(video.ssrcGroups?.[0]?.semantics, 'FID');
    assert.equal(video.ext, undefined, 'on mediasoup\'s own ids (a stock worker) none of Chromium\'s extensions is negotiated');

    // The same offer against a router with mediasoup's default payload types cannot be answered.
    const defaults: ms.RtpCodecCapability[] = [
      { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
      { kind: 'video', mimeType: 'video/H264', clockRate: 90000, parameters: { 'packetization-mode': 1, 'profile-level-id': '42e01f' } },
    ];
    assert.deepEqual(ortc.generateRouterRtpCapabilities(clone(defaults)).codecs!.map((c) => c.preferredPayloadType), [100, 101, 102]);
    assert.throws(() => answerFor(offer, [consumeWithMediasoup(offer, defaults, '0', 'video')]), TypeError);
  });

  test('on the offer\'s header-extension ids (patched worker) the consumer keeps transport-cc, and the answer says so', () => {
    const { mediaCodecs, headerExtensionIds } = routerMediaCodecsFor(offer);
    const video = consumeWithMediasoup(offer, mediaCodecs, '0', 'video', headerExtensionIds);
    const audio = consumeWithMediasoup(offer, mediaCodecs, '1', 'audio', headerExtensionIds);
    const ids = (c: WhepAnswerInput['consumers'][number]) => (c.rtpParameters.headerExtensions ?? []).map((e) => `${e.id} ${e.uri}`).sort();
    assert.deepEqual(ids(video), [
      '1 urn:ietf:params:rtp-hdrext:toffset',
      '2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
      '3 urn:3gpp:video-orientation',
      '4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
      '9 urn:ietf:params:rtp-hdrext:sdes:mid',
    ]);
    assert.deepEqual(ids(audio), [
      '14 urn:ietf:params:rtp-hdrext:ssrc-audio-level',
      '2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
      '9 urn:ietf:params:rtp-hdrext:sdes:mid',
    ]);
    // transport-cc drives mediasoup's bandwidth estimation (and so the simulcast layer); REMB goes with it.
    const h264 = video.rtpParameters.codecs.find((c) => c.mimeType === 'video/H264')!;
    assert.deepEqual(h264.rtcpFeedback?.map((f) => `${f.type} ${f.parameter ?? ''}`.trim()).sort(), ['ccm fir', 'nack', 'nack pli', 'transport-cc']);

    const answer = sdpTransform.parse(answerFor(offer, [video, audio]));
    assert.deepEqual(answer.media[0]!.ext?.map((e) => `${e.value} ${e.uri}`).sort(), ids(video));
    assert.deepEqual(answer.media[1]!.ext?.map((e) => `${e.value} ${e.uri}`).sort(), ids(audio));
    assert.ok(answer.media[0]!.rtcpFb?.some((f) => String(f.payload) === '108' && f.type === 'transport-cc'), 'a=rtcp-fb:108 transport-cc');
    assert.ok(!answer.media[0]!.rtcpFb?.some((f) => f.type === 'goog-remb'));
  });

  test('header-extension ids above 14, or one id offered for two URIs, are left out', () => {
    const sdp = edit(CHROMIUM_OFFER, (l) => {
      if (l === 'a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time') return 'a=extmap:15 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time';
      if (l === 'a=extmap:14 urn:ietf:params:rtp-hdrext:ssrc-audio-level') return 'a=extmap:4 urn:ietf:params:rtp-hdrext:ssrc-audio-level';
      return l;
    });
    const parsed = parseWhepOffer(sdp);
    const exts = parsed.rtpCapabilities.headerExtensions!.map((e) => `${e.kind} ${e.preferredId} ${e.uri}`);
    assert.ok(!exts.some((e) => e.includes('abs-send-time')), 'id 15 needs the two-byte form');
    assert.ok(!exts.some((e) => e.includes('ssrc-audio-level')), 'id 4 is transport-cc\'s already');
    assert.ok(exts.includes('audio 9 urn:ietf:params:rtp-hdrext:sdes:mid') && exts.includes('video 4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01'));
  });
});

interface ChromiumOfferOptions {
  dataChannel?: boolean;
  /** setCodecPreferences: only these mime types. */
  videoCodecs?: string[];
  audioCodecs?: string[];
  /** Wait for ICE gathering to finish, so that the offer carries host candidates. */
  gather?: boolean;
  bundlePolicy?: RTCBundlePolicy;
}

/** A fresh RTCPeerConnection in the page (window.pc) with recvonly video and audio transceivers; its offer. */
function chromiumOffer(page: Page, options: ChromiumOfferOptions = {}): Promise<string> {
  return page.evaluate(async (options) => {
    const w = window as unknown as { pc?: RTCPeerConnection };
    w.pc?.close();
    const pc = new RTCPeerConnection(options.bundlePolicy ? { bundlePolicy: options.bundlePolicy } : {});
    w.pc = pc;
    const video = pc.addTransceiver('video', { direction: 'recvonly' });
    const audio = pc.addTransceiver('audio', { direction: 'recvonly' });
    const only = (kind: 'video' | 'audio', mimeTypes: string[]) =>
      RTCRtpReceiver.getCapabilities(kind)!.codecs.filter((c) => mimeTypes.includes(c.mimeType));
    if (options.videoCodecs) video.setCodecPreferences(only('video', options.videoCodecs));
    if (options.audioCodecs) audio.setCodecPreferences(only('audio', options.audioCodecs));
    if (options.dataChannel) pc.createDataChannel('chat');
    await pc.setLocalDescription(await pc.createOffer());
    if (options.gather && pc.iceGatheringState !== 'complete') {
      await new Promise<void>((resolve) => pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      }));
    }
    return pc.localDescription!.sdp;
  }, options);
}

/** setRemoteDescription(answer) on the page's RTCPeerConnection: the error, or what it settled on. */
function chromiumTakesAnswer(page: Page, sdp: string): Promise<{ error?: string; signalingState?: string; directions?: Record<string, string | null> }> {
  return page.evaluate(async (sdp) => {
    const pc = (window as unknown as { pc: RTCPeerConnection }).pc;
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (error) {
      return { error: String(error) };
    }
    // Transceivers whose m-section was rejected are stopped and gone from getTransceivers().
    return { signalingState: pc.signalingState, directions: Object.fromEntries(pc.getTransceivers().map((t) => [t.mid, t.currentDirection])) };
  }, sdp);
}

describe('headless Chromium offers, and takes the answers', { timeout: 60_000 }, () => {
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;

  before(async () => {
    chromium = await launchChromium();
    page = await chromium.browser.newPage();
  });

  after(async () => {
    await chromium?.close();
  });

  test('its recvonly offer (with gathered candidates) parses, and it accepts the answer', async () => {
    const sdp = await chromiumOffer(page, { gather: true });
    const offer = parseWhepOffer(sdp);
    assert.deepEqual(offer.media.map((m) => [m.mid, m.kind, m.rejected]), [['0', 'video', false], ['1', 'audio', false]]);
    assert.equal(offer.iceParameters.usernameFragment, /a=ice-ufrag:(\S+)/.exec(sdp)![1]);
    assert.equal(offer.dtlsParameters.role, 'client');
    assert.equal(offer.dtlsParameters.fingerprints[0]!.value, /a=fingerprint:sha-256 (\S+)/.exec(sdp)![1]);
    const h264 = offer.rtpCapabilities.codecs!.find((c) => c.mimeType === 'video/H264' && c.parameters['profile-level-id'] === '42e01f');
    assert.ok(h264 && h264.parameters['packetization-mode'] === 1 && new RegExp(`a=rtpmap:${h264.preferredPayloadType} H264/90000`).test(sdp));
    assert.ok(offer.rtpCapabilities.codecs!.some((c) => c.mimeType === 'audio/opus' && c.clockRate === 48000 && c.channels === 2));

    const { mediaCodecs } = routerMediaCodecsFor(offer);
    const answer = answerFor(offer, [consumeWithMediasoup(offer, mediaCodecs, '0', 'video'), consumeWithMediasoup(offer, mediaCodecs, '1', 'audio')]);
    assert.match(answer, /a=ssrc-group:FID /);
    assert.deepEqual(await chromiumTakesAnswer(page, answer), { signalingState: 'stable', directions: { 0: 'recvonly', 1: 'recvonly' } });
  });

  test('it accepts the answer built from fake mediasoup parameters on its H.264 payload type, with RTX (max-bundle)', async () => {
    const offer = parseWhepOffer(await chromiumOffer(page, { bundlePolicy: 'max-bundle' }));
    const h264 = offer.rtpCapabilities.codecs!.find((c) => c.mimeType === 'video/H264' && c.parameters['profile-level-id'] === '42e01f')!;
    const rtx = offer.rtpCapabilities.codecs!.find((c) => c.mimeType === 'video/rtx' && c.parameters.apt === h264.preferredPayloadType)!;
    const opus = offer.rtpCapabilities.codecs!.find((c) => c.mimeType === 'audio/opus')!;
    const answer = answerFor(offer, [
      fakeConsumer('0', 'video', { media: h264.preferredPayloadType!, rtx: rtx.preferredPayloadType! }),
      fakeConsumer('1', 'audio', { media: opus.preferredPayloadType! }),
    ]);
    assert.deepEqual(await chromiumTakesAnswer(page, answer), { signalingState: 'stable', directions: { 0: 'recvonly', 1: 'recvonly' } });
  });

  test('it accepts port 0 for the data channel it offered, and for audio the stream lacks', async () => {
    const offer = parseWhepOffer(await chromiumOffer(page, { dataChannel: true }));
    assert.deepEqual(offer.sections.map((s) => [s.type, s.rejected]), [['video', false], ['audio', false], ['application', true]]);
    const { mediaCodecs } = routerMediaCodecsFor(offer);
    const answer = answerFor(offer, [consumeWithMediasoup(offer, mediaCodecs, '0', 'video')]);
    assert.match(answer, /\r\nm=audio 0 [^\r]+\r\nc=IN IP4 0\.0\.0\.0\r\na=mid:1\r\na=inactive\r\nm=application 0 UDP\/DTLS\/SCTP webrtc-datachannel\r\n/);
    assert.deepEqual(await chromiumTakesAnswer(page, answer), { signalingState: 'stable', directions: { 0: 'recvonly' } });
  });

  test('an offer limited to VP8 and PCMU is refused with a reason', async () => {
    const sdp = await chromiumOffer(page, { videoCodecs: ['video/VP8'], audioCodecs: ['audio/PCMU'] });
    assert.match(reasonOf(() => parseWhepOffer(sdp)), /nothing in the offer can be served.*no H\.264 with packetization-mode=1.*no opus/);
  });

  test('an offer limited to VP8 video still gets its opus audio', async () => {
    const offer = parseWhepOffer(await chromiumOffer(page, { videoCodecs: ['video/VP8'] }));
    assert.deepEqual(offer.media.map((m) => m.rejected), [true, false]);
    const answer = answerFor(offer, [consumeWithMediasoup(offer, routerMediaCodecsFor(offer).mediaCodecs, '1', 'audio')]);
    assert.deepEqual(await chromiumTakesAnswer(page, answer), { signalingState: 'stable', directions: { 1: 'recvonly' } });
  });
});
