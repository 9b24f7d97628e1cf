/**
 * SDP ↔ mediasoup for WHIP (RFC 9725): the publisher offers, OnAir answers. Pure functions, no I/O.
 *
 * The offer's sendonly video (H.264, packetization-mode 1) and audio (opus) become mediasoup producers' RTP parameters
 * on the offer's own payload types, SSRCs and header-extension ids (a producer takes what the publisher sends); the
 * answer is recvonly with the one codec chosen per section, its RTX, and the header extensions the worker reads.
 */
import type { MediaDescription } from 'sdp-transform';
import type { types as ms } from 'mediasoup';
import {
  candidateLines, FINGERPRINT_ALGORITHMS, isRtx, readOfferTransport, rejectedSectionLines, rtpmap, RTP_PROTOCOLS, sectionCodecs,
  stableSessionId, text, WhepSdpError, type WhepAnswerInput, type WhepOfferSection,
} from './whepSdp.js';

/** What OnAir takes over WHIP, for the message of an offer with nothing usable. */
export const WHIP_TAKES = 'OnAir takes H.264 (packetization-mode=1) video and opus/48000/2 audio over WHIP';

/** Header extensions a mediasoup 3.12 producer reads, per kind (its supportedRtpCapabilities, receive side). */
const RECEIVABLE_HEADER_EXTENSIONS: Record<ms.MediaKind, ReadonlySet<string>> = {
  audio: new Set([
    'urn:ietf:params:rtp-hdrext:sdes:mid',
    'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
    'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
    'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  ]),
  video: new Set([
    'urn:ietf:params:rtp-hdrext:sdes:mid',
    'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
    'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
    'urn:3gpp:video-orientation',
    'urn:ietf:params:rtp-hdrext:toffset',
  ]),
};

/** One sendonly audio or video m-section of the offer that OnAir takes. */
export interface WhipTrack {
  index: number;
  mid: string;
  kind: ms.MediaKind;
  /** The producer's RTP parameters: the chosen codec (and its RTX) on the offer's payload types. */
  rtpParameters: ms.RtpParameters;
}

export interface WhipOffer {
  iceParameters: { usernameFragment: string; password: string };
  dtlsParameters: ms.DtlsParameters;
  /** All m-sections, in offer order, as the answer echoes them. */
  sections: WhepOfferSection[];
  video: WhipTrack;
  audio: WhipTrack | undefined;
}

/** H.264 profiles in the order we take them: constrained baseline first (what every encoder and player handles). */
function profileRank(codec: ms.RtpCodecCapability): number {
  const profile = String(codec.parameters?.['profile-level-id'] ?? '420010').slice(0, 4).toLowerCase();
  const order = ['42e0', '4200', '4d00', '6400'];
  const rank = order.indexOf(profile);
  return rank === -1 ? order.length : rank;
}

/** The codec (and its RTX) the section's producer uses, or why there is none. */
function chooseCodec(kind: ms.MediaKind, media: MediaDescription): { codec: ms.RtpCodecCapability; rtx?: ms.RtpCodecCapability } | string {
  const all = [...sectionCodecs(kind, media).values()];
  if (kind === 'audio') {
    const opus = all.find((c) => c.mimeType.toLowerCase() === 'audio/opus' && c.clockRate === 48000 && c.channels === 2);
    return opus ? { codec: opus } : 'no opus/48000/2 is offered';
  }
  const h264 = all.filter((c) => c.mimeType.toLowerCase() === 'video/h264' && c.clockRate === 90000
    && Number(c.parameters?.['packetization-mode'] ?? 0) === 1);
  // Stable sort: among equal profiles, the offer's order (its preference) decides.
  const codec = [...h264].sort((a, b) => profileRank(a) - profileRank(b))[0];
  if (!codec) return 'no H.264 with packetization-mode=1 is offered (OBS: choose the x264 or a hardware H.264 encoder)';
  const rtx = all.find((c) => isRtx(c) && Number(c.parameters?.['apt']) === codec.preferredPayloadType);
  return rtx ? { codec, rtx } : { codec };
}

const isSsrc = (value: number): boolean => Number.isInteger(value) && value > 0 && value <= 0xffffffff;

/**
 * The section's SSRCs (a=ssrc, and the RTX one of a=ssrc-group:FID) and CNAME, when it names them; a reason when one
 * is not a 32-bit SSRC (0 is taken by mediasoup for "none").
 */
function sectionSsrcs(media: MediaDescription): { ssrc?: number; rtxSsrc?: number; cname?: string } | string {
  const fid = (media.ssrcGroups ?? []).find((g) => g.semantics === 'FID');
  const grouped = fid ? String(fid.ssrcs).split(/\s+/).map(Number) : [];
  const listed = (media.ssrcs ?? []).map((line) => Number(line.id));
  const bad = [...grouped, ...listed].find((value) => !isSsrc(value));
  if (bad !== undefined) return `${bad} is not an SSRC (1 to 2^32 - 1)`;
  const [primary, repair] = grouped;
  const ssrc = primary ?? listed[0];
  const cname = (media.ssrcs ?? []).find((line) => Number(line.id) === ssrc && line.attribute === 'cname')?.value;
  return {
    ...(ssrc === undefined ? {} : { ssrc }),
    ...(repair === undefined ? {} : { rtxSsrc: repair }),
    ...(cname === undefined ? {} : { cname: String(cname) }),
  };
}

function toParameters(codec: ms.RtpCodecCapability): ms.RtpCodecParameters {
  return {
    mimeType: codec.mimeType,
    payloadType: codec.preferredPayloadType!,
    clockRate: codec.clockRate,
    ...(codec.channels === undefined ? {} : { channels: codec.channels }),
    parameters: codec.parameters ?? {},
    rtcpFeedback: (codec.rtcpFeedback ?? []).filter((fb) => ['nack', 'ccm', 'goog-remb', 'transport-cc'].includes(fb.type)),
  };
}

/**
 * Reads a WHIP offer. Throws {@link WhepSdpError} when nothing in it can be taken (no sendonly H.264 video): a
 * publish without video has nothing for the ladder. Audio is optional; other sections are answered with port 0.
 */
export function parseWhipOffer(sdp: string): WhipOffer {
  const { session, bundleMids, iceParameters, dtlsParameters } = readOfferTransport(sdp, 'add a sendonly video (and audio) transceiver');
  const sections: WhepOfferSection[] = [];
  const tracks: Partial<Record<ms.MediaKind, WhipTrack>> = {};
  const extensionIds = new Map<number, string>();
  let videoReason: string | undefined;

  session.media.forEach((m, index) => {
    const type = String(m.type);
    const mid = text(m.mid);
    const section: WhepOfferSection = { index, type, mid, protocol: String(m.protocol), formats: text(m.payloads) ?? '', rejected: true };
    sections.push(section);
    const kind: ms.MediaKind | undefined = type === 'audio' || type === 'video' ? type : undefined;
    const bundleOnly = m.bundleOnly !== undefined && mid !== undefined && bundleMids.includes(mid);
    let reason: string | undefined;
    if (m.port === 0 && !bundleOnly) reason = 'the offer disabled it (port 0)';
    else if (mid === undefined) throw new WhepSdpError(`m-section ${index} (${type}) has no a=mid, which BUNDLE requires (RFC 8843 §7.2)`);
    else if (sections.some((other) => other !== section && other.mid === mid)) throw new WhepSdpError(`a=mid:${mid} names two m-sections`);
    else if (!kind) reason = `${type} is not taken: WHIP here takes audio and video only`;
    else if (!bundleMids.includes(mid)) reason = 'it is not in the BUNDLE group';
    else if (!RTP_PROTOCOLS.has(section.protocol)) reason = `${section.protocol} is not DTLS-SRTP (UDP/TLS/RTP/SAVPF)`;
    else if (!['sendonly', 'sendrecv'].includes(m.direction ?? session.direction ?? 'sendrecv')) {
      reason = `it is ${m.direction ?? session.direction}: the publisher must send (sendonly)`;
    } else if (!m.rtcpMux) reason = 'it has no a=rtcp-mux, which the media server requires';
    else if (tracks[kind]) reason = `only one ${kind} m-section is taken`;
    if (reason === undefined && kind && mid !== undefined) {
      const chosen = chooseCodec(kind, m);
      const ssrcs = sectionSsrcs(m);
      if (typeof chosen === 'string') {
        reason = chosen;
      } else if (typeof ssrcs === 'string') {
        reason = ssrcs;
      } else {
        const { ssrc, rtxSsrc, cname } = ssrcs;
        const headerExtensions: ms.RtpHeaderExtensionParameters[] = [];
        for (const ext of m.ext ?? []) {
          if (ext['encrypt-uri'] || !RECEIVABLE_HEADER_EXTENSIONS[kind].has(ext.uri)) continue;
          if (!Number.isInteger(ext.value) || ext.value < 1 || ext.value > 14) continue;
          if ((extensionIds.get(ext.value) ?? ext.uri) !== ext.uri) continue;
          extensionIds.set(ext.value, ext.uri);
          headerExtensions.push({ uri: ext.uri, id: ext.value });
        }
        const withRtx = chosen.rtx !== undefined && (ssrc === undefined || rtxSsrc !== undefined);
        tracks[kind] = {
          index,
          mid,
          kind,
          rtpParameters: {
            mid,
            codecs: [toParameters(chosen.codec), ...(withRtx ? [toParameters(chosen.rtx!)] : [])],
            headerExtensions,
            // Without a=ssrc the producer finds the stream by its MID header extension.
            encodings: [{ ...(ssrc === undefined ? {} : { ssrc }), ...(withRtx && rtxSsrc !== undefined ? { rtx: { ssrc: rtxSsrc } } : {}) }],
            rtcp: { ...(cname === undefined ? {} : { cname }), reducedSize: m.rtcpRsize !== undefined },
          },
        };
      }
    }
    if (kind === 'video' && reason !== undefined && videoReason === undefined) videoReason = reason;
    section.rejected = reason !== undefined;
    if (reason !== undefined) section.reason = reason;
  });

  if (!tracks.video) {
    throw new WhepSdpError(`the offer has no video OnAir can take (${WHIP_TAKES})${videoReason ? `: ${videoReason}` : ''}`);
  }
  return { iceParameters, dtlsParameters, sections, video: tracks.video, audio: tracks.audio };
}

/** The router's media codecs for a WHIP publish: the offer's H.264 profile, and opus. */
export function whipRouterCodecs(offer: WhipOffer): ms.RtpCodecCapability[] {
  const video = offer.video.rtpParameters.codecs[0]!;
  const profile = String(video.parameters?.['profile-level-id'] ?? '42e01f');
  return [
    { kind: 'video', mimeType: 'video/H264', clockRate: 90000, parameters: { 'packetization-mode': 1, 'profile-level-id': profile, 'level-asymmetry-allowed': 1 } },
    { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
  ];
}

export interface WhipAnswerInput {
  offer: WhipOffer;
  iceParameters: ms.IceParameters;
  iceCandidates: WhepAnswerInput['iceCandidates'];
  dtlsParameters: ms.DtlsParameters;
}

/** Writes the SDP answer: ICE-lite, recvonly, one codec per taken section on the offer's payload type. */
export function buildWhipAnswer(input: WhipAnswerInput): string {
  const { offer } = input;
  const tracks = [offer.video, offer.audio].filter((t): t is WhipTrack => t !== undefined);
  const setup = offer.dtlsParameters.role === 'server' ? 'active' : 'passive';
  const fingerprints = input.dtlsParameters.fingerprints.filter((f) => FINGERPRINT_ALGORITHMS.has(f.algorithm.toLowerCase()));
  if (fingerprints.length === 0) throw new TypeError('the transport has no DTLS fingerprint');
  const lines = [
    'v=0',
    `o=- ${stableSessionId(input.iceParameters.usernameFragment + input.iceParameters.password)} 2 IN IP4 127.0.0.1`,
    's=-',
    't=0 0',
    'a=ice-lite',
    `a=group:BUNDLE ${[...tracks].sort((a, b) => a.index - b.index).map((t) => t.mid).join(' ')}`,
  ];
  for (const section of offer.sections) {
    const track = tracks.find((t) => t.index === section.index);
    if (!track) {
      lines.push(...rejectedSectionLines(section));
      continue;
    }
    const { codecs, headerExtensions } = track.rtpParameters;
    lines.push(
      `m=${track.kind} 9 ${section.protocol} ${codecs.map((c) => c.payloadType).join(' ')}`,
      'c=IN IP4 0.0.0.0',
      'a=rtcp:9 IN IP4 0.0.0.0',
      `a=ice-ufrag:${input.iceParameters.usernameFragment}`,
      `a=ice-pwd:${input.iceParameters.password}`,
      ...fingerprints.map((f) => `a=fingerprint:${f.algorithm.toLowerCase()} ${f.value.toUpperCase()}`),
      `a=setup:${setup}`,
      `a=mid:${track.mid}`,
      'a=recvonly',
      'a=rtcp-mux',
      ...(track.rtpParameters.rtcp?.reducedSize ? ['a=rtcp-rsize'] : []),
    );
    for (const codec of codecs) {
      lines.push(rtpmap(codec));
      const parameters = Object.entries(codec.parameters ?? {}).filter(([, v]) => v !== undefined);
      if (parameters.length > 0) lines.push(`a=fmtp:${codec.payloadType} ${parameters.map(([k, v]) => (v === '' ? k : `${k}=${v}`)).join(';')}`);
      for (const fb of codec.rtcpFeedback ?? []) lines.push(`a=rtcp-fb:${codec.payloadType} ${fb.type}${fb.parameter ? ` ${fb.parameter}` : ''}`);
    }
    for (const ext of headerExtensions ?? []) lines.push(`a=extmap:${ext.id} ${ext.uri}`);
    lines.push(...candidateLines(input.iceCandidates));
  }
  return `${lines.join('\r\n')}\r\n`;
}
