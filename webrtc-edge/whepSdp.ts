/**
 * SDP ↔ mediasoup for WHEP (draft-ietf-wish-whep): the viewer offers, the edge answers. Pure functions, no I/O.
 *
 * The offer is read into what mediasoup takes (remote ICE and DTLS parameters, RTP capabilities to consume with);
 * the answer is written from what mediasoup gives (the WebRtcTransport's ICE-lite parameters and candidates, each
 * consumer's RTP parameters). Every m-section of the offer gets one in the answer, in the same order (RFC 3264 §6);
 * those we cannot serve are answered with port 0.
 */
import sdpTransform from 'sdp-transform';
import type { MediaDescription, SessionDescription } from 'sdp-transform';
import type { types as ms } from 'mediasoup';

/** An offer we cannot answer at all; `reason` says why in words a person understands (it goes back to the client). */
export class WhepSdpError extends Error {
  readonly reason: string;
  /** True when the offer is well formed but names none of the codecs OnAir sends. */
  readonly noCommonCodec: boolean;

  constructor(reason: string, noCommonCodec = false) {
    super(`unusable WHEP offer: ${reason}`);
    this.name = 'WhepSdpError';
    this.reason = reason;
    this.noCommonCodec = noCommonCodec;
  }
}

/** What OnAir sends over WebRTC, for the message of an offer with no codec in common. */
export const WHEP_SENDS = 'OnAir sends H.264 constrained baseline (packetization-mode=1, profile-level-id 42e01f) video and opus/48000/2 audio';

/** One audio or video m-section of the offer, in offer order. */
export interface WhepMedia {
  /** Position of the m-section in the offer (0-based), and so in the answer. */
  index: number;
  /** `a=mid`; the consumer for this section is created with it (`transport.consume({ mid })`). */
  mid: string;
  kind: ms.MediaKind;
  /** True when the section is answered with port 0 and gets no consumer. */
  rejected: boolean;
  /** Rejected because it offers none of the codecs OnAir sends for its kind. */
  noCommonCodec?: true;
  /** Why a rejected section is rejected. */
  reason?: string;
}

/** Every m-section of the offer as the answer must echo it, including those that are not audio or video. */
export interface WhepOfferSection {
  index: number;
  /** The `m=` media type: audio, video, application… */
  type: string;
  /** Absent only on a section the offer itself disabled (port 0) without an `a=mid`. */
  mid: string | undefined;
  /** `m=` proto and fmt list, echoed on a rejected section (RFC 8829 §5.3.1). */
  protocol: string;
  formats: string;
  rejected: boolean;
  reason?: string;
}

export interface WhepOffer {
  /** The viewer's ICE credentials (we are ICE-lite: they check the STUN requests the viewer sends us). */
  iceParameters: { usernameFragment: string; password: string };
  /** The viewer's DTLS fingerprint and role, for `webRtcTransport.connect({ dtlsParameters })`. */
  dtlsParameters: ms.DtlsParameters;
  /** The audio and video m-sections, in offer order. */
  media: WhepMedia[];
  /** All m-sections, in offer order, as the answer echoes them. */
  sections: WhepOfferSection[];
  /**
   * What the viewer can receive, for `router.canConsume()` / `transport.consume()`: H.264 with packetization-mode 1
   * (every profile offered) with its RTX, and opus, on the offer's payload types; the header extensions mediasoup can
   * send, on the offer's ids.
   */
  rtpCapabilities: ms.RtpCapabilities;
}

/** One consumer of the answer: `consumer.rtpParameters` of a consumer made for `mid`. */
export interface WhepAnswerConsumer {
  mid: string;
  kind: ms.MediaKind;
  rtpParameters: ms.RtpParameters;
  /** The `a=msid` track id; default `<kind>-<mid>`. */
  trackId?: string;
}

export interface WhepAnswerInput {
  offer: WhepOffer;
  /** `webRtcTransport.iceParameters`. */
  iceParameters: ms.IceParameters;
  /** `webRtcTransport.iceCandidates` (mediasoup's are host candidates; 3.12 names the address `ip`). */
  iceCandidates: (ms.IceCandidate | (Omit<ms.IceCandidate, 'ip'> & { address: string }))[];
  /** `webRtcTransport.dtlsParameters`: its fingerprints. The role we take follows from the offer, not from this. */
  dtlsParameters: ms.DtlsParameters;
  /** One per m-section that is served; an accepted m-section without one is answered with port 0. */
  consumers: WhepAnswerConsumer[];
  /** The `a=msid` stream id shared by audio and video, so that the viewer plays them in sync; default `onair`. */
  streamId?: string;
  /** The `o=` session id; default derived from the transport's ICE credentials. */
  sessionId?: string;
}

export const RTP_PROTOCOLS = new Set(['UDP/TLS/RTP/SAVPF', 'TCP/DTLS/RTP/SAVPF', 'UDP/TLS/RTP/SAVP', 'TCP/DTLS/RTP/SAVP']);
export const FINGERPRINT_ALGORITHMS = new Set(['sha-1', 'sha-224', 'sha-256', 'sha-384', 'sha-512']);
/** RFC 8839 §5.4: ice-char = ALPHA / DIGIT / "+" / "/"; ufrag 4–256, pwd 22–256 characters. */
export const ICE_UFRAG = /^[A-Za-z0-9+/]{4,256}$/;
export const ICE_PWD = /^[A-Za-z0-9+/]{22,256}$/;
export const FINGERPRINT_VALUE = /^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$/;

/**
 * Header extensions a mediasoup 3.12 router can send to a consumer, per kind: its supportedRtpCapabilities entries
 * whose direction is sendrecv or sendonly (transport-wide-cc is receive-only for audio). Others are left out of the
 * capabilities, so mediasoup never sends them.
 */
const SENDABLE_HEADER_EXTENSIONS: Record<ms.MediaKind, ReadonlySet<string>> = {
  audio: new Set([
    'urn:ietf:params:rtp-hdrext:sdes:mid',
    'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
    'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
    'http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time',
  ]),
  video: new Set([
    'urn:ietf:params:rtp-hdrext:sdes:mid',
    'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
    'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
    'http://tools.ietf.org/html/draft-ietf-avtext-framemarking-07',
    'urn:ietf:params:rtp-hdrext:framemarking',
    'urn:3gpp:video-orientation',
    'urn:ietf:params:rtp-hdrext:toffset',
    'http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time',
  ]),
};

// sdp-transform turns every all-digit token into a number (a=mid:0 → 0, a=ice-ufrag:1234 → 1234); read them back
// as the strings they were.
export function text(value: unknown): string | undefined {
  return value === undefined || value === null ? undefined : String(value);
}

function describe(section: { index: number; type: string; mid: string | undefined }): string {
  return `m-section ${section.index} (${section.type}${section.mid === undefined ? '' : `, mid ${section.mid}`})`;
}

/** RTP codecs of one m-section, by payload type, as mediasoup codec capabilities. */
export function sectionCodecs(kind: ms.MediaKind, media: MediaDescription): Map<number, ms.RtpCodecCapability> {
  const codecs = new Map<number, ms.RtpCodecCapability>();
  for (const rtp of media.rtp) {
    // RTP's payload type is 7 bits (RFC 3550 §5.1): anything else names no codec a packet can carry.
    if (!Number.isInteger(rtp.payload) || rtp.payload < 0 || rtp.payload > 127) continue;
    const codec: ms.RtpCodecCapability = {
      kind,
      mimeType: `${kind}/${rtp.codec}`,
      preferredPayloadType: rtp.payload,
      clockRate: rtp.rate ?? 0,
      parameters: {},
      rtcpFeedback: [],
    };
    if (kind === 'audio') codec.channels = rtp.encoding === undefined ? 1 : Number(rtp.encoding);
    codecs.set(rtp.payload, codec);
  }
  for (const fmtp of media.fmtp) {
    const codec = codecs.get(fmtp.payload);
    if (!codec) continue;
    const parameters: Record<string, string | number> = {};
    for (const [key, value] of Object.entries(sdpTransform.parseParams(fmtp.config))) parameters[key] = value ?? '';
    // An all-digit profile-level-id (e.g. 420029) must stay the hex string it is.
    if (parameters['profile-level-id'] !== undefined) parameters['profile-level-id'] = String(parameters['profile-level-id']);
    if (parameters['apt'] !== undefined) parameters['apt'] = Number(parameters['apt']);
    codec.parameters = parameters;
  }
  for (const fb of media.rtcpFb ?? []) {
    const feedback: ms.RtcpFeedback = fb.subtype ? { type: fb.type, parameter: fb.subtype } : { type: fb.type };
    const targets = String(fb.payload) === '*' ? [...codecs.values()] : [codecs.get(Number(fb.payload))];
    for (const codec of targets) codec?.rtcpFeedback?.push({ ...feedback });
  }
  return codecs;
}

export function isRtx(codec: { mimeType: string }): boolean {
  return codec.mimeType.toLowerCase().endsWith('/rtx');
}

/** The codecs we serve from one m-section: H.264 packetization-mode 1 and its RTX (video), opus (audio). */
function servedCodecs(kind: ms.MediaKind, media: MediaDescription): ms.RtpCodecCapability[] {
  const all = [...sectionCodecs(kind, media).values()];
  if (kind === 'audio') {
    // mediasoup's opus is always 48000/2 (RFC 7587 §7).
    return all.filter((c) => c.mimeType.toLowerCase() === 'audio/opus' && c.clockRate === 48000 && c.channels === 2);
  }
  // Packetization-mode 0 (one NAL unit per packet) cannot carry our frames: only mode 1 (RFC 6184 §6.3).
  const h264 = all.filter((c) => c.mimeType.toLowerCase() === 'video/h264' && c.clockRate === 90000
    && Number(c.parameters?.['packetization-mode'] ?? 0) === 1);
  const payloadTypes = new Set(h264.map((c) => c.preferredPayloadType));
  const rtx = all.filter((c) => isRtx(c) && payloadTypes.has(c.parameters?.['apt']));
  return [...h264, ...rtx];
}

/**
 * The sendable header extensions of one m-section. `taken` holds the ids of the sections read before (one id names
 * one URI across a BUNDLE group, RFC 8285 §6): an id reused for another URI is left out, and so is one above 14, which
 * only the two-byte form can carry (the worker sends one-byte headers).
 */
function sectionHeaderExtensions(kind: ms.MediaKind, media: MediaDescription, taken: Map<number, string>): ms.RtpHeaderExtension[] {
  const extensions: ms.RtpHeaderExtension[] = [];
  for (const ext of media.ext ?? []) {
    if (ext['encrypt-uri'] || !SENDABLE_HEADER_EXTENSIONS[kind].has(ext.uri)) continue;
    // The viewer only sends this one (RFC 8285 §7): nothing for us to send with it.
    if (ext.direction === 'sendonly' || ext.direction === 'inactive') continue;
    if (!Number.isInteger(ext.value) || ext.value < 1 || ext.value > 14) continue;
    if ((taken.get(ext.value) ?? ext.uri) !== ext.uri) continue;
    taken.set(ext.value, ext.uri);
    // Direction from the viewer's side, as mediasoup-client's receive capabilities give it.
    extensions.push({ kind, uri: ext.uri, preferredId: ext.value, preferredEncrypt: false, direction: 'sendrecv' });
  }
  return extensions;
}

/** What every offer must have, WHEP or WHIP: one BUNDLE transport with its ICE credentials and DTLS fingerprint. */
export interface OfferTransport {
  session: SessionDescription;
  bundleMids: string[];
  iceParameters: { usernameFragment: string; password: string };
  dtlsParameters: ms.DtlsParameters;
}

/**
 * Parses an offer and reads its transport (RFC 8843 BUNDLE, RFC 8839 ICE, RFC 8842 DTLS role); throws
 * {@link WhepSdpError} with a reason when it has none we can use. `addMedia` says what the offerer should add when
 * the offer has no m-section at all.
 */
export function readOfferTransport(sdp: string, addMedia: string): OfferTransport {
  if (typeof sdp !== 'string' || !/^v=0\s*$/.test(sdp.trimStart().split(/\r\n|\r|\n/, 1)[0] ?? '')) {
    throw new WhepSdpError('the body is not an SDP offer (it must start with "v=0")');
  }
  let session: SessionDescription;
  try {
    session = sdpTransform.parse(sdp);
  } catch {
    throw new WhepSdpError('the SDP offer could not be parsed');
  }
  if (!Array.isArray(session.media) || session.media.length === 0) {
    throw new WhepSdpError(`the SDP offer has no m-sections: ${addMedia}`);
  }

  // RFC 8843: everything rides one transport, the BUNDLE group's; its first mid is the tag whose transport
  // attributes count (§7.3.1).
  const bundle = (session.groups ?? []).find((g) => g.type === 'BUNDLE');
  const bundleMids = (text(bundle?.mids) ?? '').split(/\s+/).filter(Boolean);
  if (bundleMids.length === 0) {
    throw new WhepSdpError('the SDP offer has no a=group:BUNDLE: all media must share one transport (RFC 8843)');
  }
  const tag = session.media.find((m) => text(m.mid) === bundleMids[0]);
  if (!tag) throw new WhepSdpError(`a=group:BUNDLE names mid ${bundleMids[0]}, but no m-section has that a=mid`);

  const usernameFragment = text(tag.iceUfrag ?? session.iceUfrag);
  const password = text(tag.icePwd ?? session.icePwd);
  if (usernameFragment === undefined || password === undefined) {
    throw new WhepSdpError('the SDP offer has no a=ice-ufrag / a=ice-pwd');
  }
  if (!ICE_UFRAG.test(usernameFragment) || !ICE_PWD.test(password)) {
    throw new WhepSdpError('a=ice-ufrag / a=ice-pwd are not valid ICE credentials (RFC 8839 §5.4)');
  }

  const fingerprint = tag.fingerprint ?? session.fingerprint;
  if (!fingerprint) throw new WhepSdpError('the SDP offer has no a=fingerprint: DTLS-SRTP needs the certificate fingerprint');
  const algorithm = String(fingerprint.type).toLowerCase();
  const value = String(fingerprint.hash);
  if (!FINGERPRINT_ALGORITHMS.has(algorithm) || !FINGERPRINT_VALUE.test(value)) {
    throw new WhepSdpError(`a=fingerprint:${fingerprint.type} ${fingerprint.hash} is not a fingerprint we can check`);
  }

  // RFC 8842 §5.3: an offerer says actpass (or active); we answer passive, so the offerer is the DTLS client. An
  // offerer that insists on passive gets an active answer and is the server.
  const setup = String(tag.setup ?? session.setup ?? 'actpass').toLowerCase();
  let role: ms.DtlsRole;
  if (setup === 'actpass' || setup === 'active') role = 'client';
  else if (setup === 'passive') role = 'server';
  else throw new WhepSdpError(`a=setup:${setup} leaves no DTLS role for us: use actpass`);
  return { session, bundleMids, iceParameters: { usernameFragment, password }, dtlsParameters: { role, fingerprints: [{ algorithm, value }] } };
}

/**
 * Reads a WHEP offer. Throws {@link WhepSdpError} when the offer cannot be answered at all; an m-section that cannot
 * be served (not audio/video, not receiving, no codec of ours, outside the BUNDLE group…) is marked rejected instead.
 */
export function parseWhepOffer(sdp: string): WhepOffer {
  const { session, bundleMids, iceParameters, dtlsParameters } = readOfferTransport(sdp, 'add a recvonly video (and audio) transceiver');
  const sections: WhepOfferSection[] = [];
  const media: WhepMedia[] = [];
  const codecs: ms.RtpCodecCapability[] = [];
  const headerExtensions: ms.RtpHeaderExtension[] = [];
  const extensionIds = new Map<number, string>();
  const served = new Set<ms.MediaKind>();

  session.media.forEach((m, index) => {
    const type = String(m.type);
    const mid = text(m.mid);
    const section: WhepOfferSection = {
      index, type, mid, protocol: String(m.protocol), formats: text(m.payloads) ?? '', rejected: true,
    };
    sections.push(section);
    const kind: ms.MediaKind | undefined = type === 'audio' || type === 'video' ? type : undefined;
    let reason: string | undefined;
    let noCommonCodec = false;
    // RFC 8843 §6: port 0 with a=bundle-only is a live section that rides the BUNDLE transport, not a disabled one.
    const bundleOnly = m.bundleOnly !== undefined && mid !== undefined && bundleMids.includes(mid);
    if (m.port === 0 && !bundleOnly) reason = 'the offer disabled it (port 0)';
    else if (mid === undefined) throw new WhepSdpError(`${describe(section)} has no a=mid, which BUNDLE requires (RFC 8843 §7.2)`);
    else if (!kind) reason = `${type} is not served: WHEP here sends audio and video only`;
    else if (!bundleMids.includes(mid)) reason = 'it is not in the BUNDLE group';
    else if (!RTP_PROTOCOLS.has(section.protocol)) reason = `${section.protocol} is not DTLS-SRTP (UDP/TLS/RTP/SAVPF)`;
    else if (!['recvonly', 'sendrecv'].includes(m.direction ?? session.direction ?? 'sendrecv')) {
      reason = `it is ${m.direction ?? session.direction}: the viewer must receive (recvonly)`;
    } else if (!m.rtcpMux) reason = 'it has no a=rtcp-mux, which the media server requires';
    else if (served.has(kind)) reason = `only one ${kind} m-section is served`;
    if (reason === undefined && kind) {
      const offered = servedCodecs(kind, m);
      if (offered.length === 0) {
        reason = kind === 'video' ? 'no H.264 with packetization-mode=1 is offered' : 'no opus/48000/2 is offered';
        noCommonCodec = true;
      } else {
        served.add(kind);
        codecs.push(...offered);
        headerExtensions.push(...sectionHeaderExtensions(kind, m, extensionIds));
      }
    }
    section.rejected = reason !== undefined;
    if (reason !== undefined) section.reason = reason;
    if (kind && mid !== undefined) {
      media.push(reason === undefined ? { index, mid, kind, rejected: false }
        : { index, mid, kind, rejected: true, reason, ...(noCommonCodec ? { noCommonCodec: true as const } : {}) });
    }
  });

  if (served.size === 0) {
    const why = sections.map((s) => `${describe(s)}: ${s.reason}`).join('; ');
    throw new WhepSdpError(`nothing in the offer can be served (H.264 packetization-mode=1 video, opus audio): ${why}`,
      media.length > 0 && media.some((m) => m.noCommonCodec));
  }

  return {
    iceParameters,
    dtlsParameters,
    media,
    sections,
    rtpCapabilities: { codecs, headerExtensions },
  };
}

/** mediasoup 3.12's order of dynamic payload types (ortc.ts `DynamicPayloadTypes`), from which a router's RTX takes. */
const ROUTER_DYNAMIC_PAYLOAD_TYPES = [...Array.from({ length: 28 }, (_, i) => 100 + i), 96, 97, 98, 99];

/** One header extension of a viewer router: the id the offer gave `uri` for `kind`. */
export interface RouterHeaderExtensionId {
  kind: ms.MediaKind;
  uri: string;
  preferredId: number;
}

/** What a viewer router is made with: see {@link routerMediaCodecsFor}. */
export interface ViewerRouterSpec {
  /** Offers with the same key can share a router. */
  key: string;
  mediaCodecs: ms.RtpCodecCapability[];
  /** The offer's header-extension ids, for {@link useOfferHeaderExtensionIds} on the router's capabilities. */
  headerExtensionIds: RouterHeaderExtensionId[];
}

/**
 * `mediaCodecs` for a router whose payload types are this offer's, its header-extension ids, and a key naming both
 * (routers can be shared by every viewer whose offer has the same key, e.g. all of one browser version).
 *
 * A consumer sends on its router's payload types and the viewer decodes by its offer's, so they must agree. H.264
 * (the offer's packetization-mode=1 entry with `profileLevelId`'s profile) and opus take `preferredPayloadType` from
 * the offer. A router's RTX type cannot be set: mediasoup gives each video codec the first free dynamic type, so the
 * types before the offer's RTX one are taken by placeholder PCMU entries that nothing produces or consumes.
 */
export function routerMediaCodecsFor(offer: WhepOffer, profileLevelId = '42e01f'): ViewerRouterSpec {
  const codecs = offer.rtpCapabilities.codecs ?? [];
  const profile = profileLevelId.slice(0, 4).toLowerCase();
  const h264 = codecs.find((c) => c.mimeType.toLowerCase() === 'video/h264'
    && String(c.parameters?.['profile-level-id'] ?? '420010').slice(0, 4).toLowerCase() === profile);
  const rtx = h264 && codecs.find((c) => isRtx(c) && c.parameters?.['apt'] === h264.preferredPayloadType);
  const opus = codecs.find((c) => c.mimeType.toLowerCase() === 'audio/opus');

  const mediaCodecs: ms.RtpCodecCapability[] = [];
  if (opus) mediaCodecs.push({ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: opus.preferredPayloadType! });
  if (h264) {
    const taken = new Set([opus?.preferredPayloadType, h264.preferredPayloadType]);
    const rtxAt = rtx ? ROUTER_DYNAMIC_PAYLOAD_TYPES.indexOf(rtx.preferredPayloadType!) : -1;
    if (rtxAt >= 0 && !taken.has(rtx!.preferredPayloadType)) {
      for (const pt of ROUTER_DYNAMIC_PAYLOAD_TYPES.slice(0, rtxAt)) {
        if (!taken.has(pt)) mediaCodecs.push({ kind: 'audio', mimeType: 'audio/PCMU', clockRate: 8000, channels: 1, preferredPayloadType: pt });
      }
    }
    mediaCodecs.push({
      kind: 'video', mimeType: 'video/H264', clockRate: 90000, preferredPayloadType: h264.preferredPayloadType!,
      parameters: { 'packetization-mode': 1, 'profile-level-id': profileLevelId, 'level-asymmetry-allowed': 1 },
    });
  }
  const headerExtensionIds: RouterHeaderExtensionId[] = (offer.rtpCapabilities.headerExtensions ?? [])
    .filter((e) => e.preferredId !== undefined && SENDABLE_HEADER_EXTENSIONS[e.kind].has(e.uri))
    .map((e) => ({ kind: e.kind, uri: e.uri, preferredId: e.preferredId }));
  // The ids in the fixed order of the sendable URIs ('-': not offered): e.g. Chromium's `ext:v9,2,4,-,-,3,1,-/a9,2,14,-`.
  const idsOf = (kind: ms.MediaKind): string => [...SENDABLE_HEADER_EXTENSIONS[kind]]
    .map((uri) => headerExtensionIds.find((e) => e.kind === kind && e.uri === uri)?.preferredId ?? '-').join(',');
  const key = `h264:${h264?.preferredPayloadType ?? '-'}/${rtx?.preferredPayloadType ?? '-'}/${profileLevelId};opus:${opus?.preferredPayloadType ?? '-'}`
    + `;ext:v${idsOf('video')}/a${idsOf('audio')}`;
  return { key, mediaCodecs, headerExtensionIds };
}

/**
 * Makes a viewer router send the header extensions on the offer's ids: in `routerCapabilities` (the object
 * `router.rtpCapabilities` returns, which mediasoup reads when a producer is made on the router) each entry the offer
 * has gets the offer's id, and the others go. Producers made afterwards (the pipes of `WebRtcEdge`) then offer the
 * viewer's ids to their consumers, mediasoup keeps mid, abs-send-time and transport-cc in each consumer (it keeps an
 * extension only on the same id), and with transport-cc the `transport-cc` feedback, which starts its bandwidth
 * estimation. Only for a worker built with our patch (`onair.headerExtensionIdRewrite` in `worker.dump()`): the stock
 * worker would send every packet on its fixed ids whatever the consumer says.
 */
export function useOfferHeaderExtensionIds(routerCapabilities: ms.RtpCapabilities, ids: readonly RouterHeaderExtensionId[]): void {
  const kept: ms.RtpHeaderExtension[] = [];
  for (const ext of routerCapabilities.headerExtensions ?? []) {
    const offered = ids.find((e) => e.kind === ext.kind && e.uri === ext.uri);
    if (offered) kept.push({ ...ext, preferredId: offered.preferredId });
  }
  routerCapabilities.headerExtensions = kept;
}

/**
 * An answer's m-section for one it does not take: RFC 8829 §5.3.1 / RFC 8843 §7.3.3, the offer's proto and a format
 * of the offer, port 0, out of the BUNDLE group.
 */
export function rejectedSectionLines(section: WhepOfferSection): string[] {
  const formats = section.formats.split(/\s+/).filter(Boolean)[0] ?? '0';
  return [`m=${section.type} 0 ${section.protocol} ${formats}`, 'c=IN IP4 0.0.0.0', ...(section.mid === undefined ? [] : [`a=mid:${section.mid}`]), 'a=inactive'];
}

/** The transport's host candidates (all of them: no trickle from an ICE-lite server), then end-of-candidates. */
export function candidateLines(candidates: WhepAnswerInput['iceCandidates']): string[] {
  const lines = candidates.map((candidate) => {
    const address = 'address' in candidate ? candidate.address : candidate.ip;
    const tcp = candidate.protocol === 'tcp' ? ' tcptype passive' : '';
    return `a=candidate:${candidate.foundation} 1 ${candidate.protocol} ${candidate.priority} ${address} ${candidate.port} typ host${tcp}`;
  });
  return [...lines, 'a=end-of-candidates'];
}

export function rtpmap(codec: ms.RtpCodecParameters): string {
  const [, name = codec.mimeType] = codec.mimeType.split('/');
  const channels = codec.mimeType.toLowerCase().startsWith('audio/') && (codec.channels ?? 1) > 1 ? `/${codec.channels}` : '';
  return `a=rtpmap:${codec.payloadType} ${name}/${codec.clockRate}${channels}`;
}

function h264ProfileIdc(parameters: Record<string, unknown> | undefined): string {
  // RFC 6184 §8.1: profile-level-id defaults to 420010 (Baseline); its first byte is profile_idc.
  return String(parameters?.['profile-level-id'] ?? '420010').slice(0, 2).toLowerCase();
}

/** Whether the offer's codec on this payload type is the codec the consumer sends on it. */
function sameCodec(offered: ms.RtpCodecCapability, sent: ms.RtpCodecParameters): boolean {
  if (offered.mimeType.toLowerCase() !== sent.mimeType.toLowerCase() || offered.clockRate !== sent.clockRate) return false;
  if (offered.kind === 'audio' && offered.channels !== (sent.channels ?? 1)) return false;
  if (sent.mimeType.toLowerCase() === 'video/h264') {
    return Number(offered.parameters?.['packetization-mode'] ?? 0) === Number(sent.parameters?.['packetization-mode'] ?? 0)
      && h264ProfileIdc(offered.parameters) === h264ProfileIdc(sent.parameters);
  }
  if (isRtx(sent)) return Number(offered.parameters?.['apt']) === Number(sent.parameters?.['apt']);
  return true;
}

// FNV-1a: a stable o= session id for the same transport without reaching for randomness in a pure function.
export function stableSessionId(seed: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) hash = Math.imul(hash ^ seed.charCodeAt(i), 0x01000193) >>> 0;
  return String(hash * 1000 + 1);
}

/**
 * Writes the SDP answer: ICE-lite, one m-section per offered one in offer order, `sendonly` with each consumer's
 * codecs, header extensions and SSRCs, and the transport's candidates.
 *
 * A consumer sends on its router's payload types (mediasoup never rewrites them), and the viewer decodes by the
 * payload types of its own offer, so each media codec's payload type must be the one the offer gave that codec:
 * otherwise this throws a TypeError (the router's `mediaCodecs` need `preferredPayloadType` from the offer). An RTX
 * payload type the offer does not pair with that codec is left out of the answer together with generic NACK, so
 * the viewer asks for no retransmission it could not read. Header extensions whose id differs from the offer's are
 * left out too (mediasoup does not send those).
 */
export function buildWhepAnswer(input: WhepAnswerInput): string {
  const { offer } = input;
  const streamId = input.streamId ?? 'onair';
  const byMid = new Map<string, WhepAnswerConsumer>();
  for (const consumer of input.consumers) {
    const media = offer.media.find((m) => m.mid === consumer.mid);
    if (!media || media.rejected) throw new TypeError(`no accepted m-section has mid ${consumer.mid}`);
    if (media.kind !== consumer.kind) throw new TypeError(`m-section mid ${consumer.mid} is ${media.kind}, the consumer is ${consumer.kind}`);
    if (byMid.has(consumer.mid)) throw new TypeError(`two consumers for mid ${consumer.mid}`);
    // mediasoup puts rtpParameters.mid in the MID header extension: it must name this section.
    if (consumer.rtpParameters.mid !== undefined && consumer.rtpParameters.mid !== consumer.mid) {
      throw new TypeError(`the consumer for mid ${consumer.mid} was made with mid ${consumer.rtpParameters.mid}: consume({ mid })`);
    }
    byMid.set(consumer.mid, consumer);
  }
  const answered = offer.sections.map((s) => ({ section: s, consumer: s.mid === undefined || s.rejected ? undefined : byMid.get(s.mid) }));
  const bundled = answered.filter((a) => a.consumer).map((a) => a.section.mid!);
  if (bundled.length === 0) throw new TypeError('an answer needs at least one consumer');

  const setup = offer.dtlsParameters.role === 'server' ? 'active' : 'passive';
  const fingerprints = input.dtlsParameters.fingerprints.filter((f) => FINGERPRINT_ALGORITHMS.has(f.algorithm.toLowerCase()));
  if (fingerprints.length === 0) throw new TypeError('the transport has no DTLS fingerprint');

  const lines = [
    'v=0',
    `o=- ${input.sessionId ?? stableSessionId(input.iceParameters.usernameFragment + input.iceParameters.password)} 2 IN IP4 127.0.0.1`,
    's=-',
    't=0 0',
    'a=ice-lite',
    `a=group:BUNDLE ${bundled.join(' ')}`,
    `a=msid-semantic: WMS ${streamId}`,
  ];

  for (const { section, consumer } of answered) {
    if (!consumer) {
      lines.push(...rejectedSectionLines(section));
      continue;
    }
    lines.push(...answerSection(input, section, consumer, { setup, fingerprints, streamId }));
  }
  return `${lines.join('\r\n')}\r\n`;
}

function answerSection(
  input: WhepAnswerInput,
  section: WhepOfferSection,
  consumer: WhepAnswerConsumer,
  shared: { setup: string; fingerprints: ms.DtlsFingerprint[]; streamId: string },
): string[] {
  const { kind, mid, rtpParameters } = consumer;
  const offered = new Map<number, ms.RtpCodecCapability>();
  for (const c of input.offer.rtpCapabilities.codecs ?? []) if (c.kind === kind && c.preferredPayloadType !== undefined) offered.set(c.preferredPayloadType, c);

  const media = rtpParameters.codecs.filter((c) => !isRtx(c));
  if (media.length === 0) throw new TypeError(`the consumer for mid ${mid} has no media codec`);
  for (const codec of media) {
    const same = offered.get(codec.payloadType);
    if (!same || !sameCodec(same, codec)) {
      const wanted = [...offered.values()].filter((c) => !isRtx(c) && c.mimeType.toLowerCase() === codec.mimeType.toLowerCase())
        .map((c) => c.preferredPayloadType).join(', ');
      throw new TypeError(`the consumer for mid ${mid} sends ${codec.mimeType} on payload type ${codec.payloadType}, `
        + `${same ? `which the offer gives ${same.mimeType}` : 'which the offer does not use for it'}; the offer has `
        + `${codec.mimeType} on ${wanted || 'no payload type'}: make the router with routerMediaCodecsFor(offer)`);
    }
  }
  const rtxCodecs = rtpParameters.codecs.filter((c) => isRtx(c) && offered.has(c.payloadType) && sameCodec(offered.get(c.payloadType)!, c));
  const encoding = rtpParameters.encodings?.[0];
  if (encoding?.ssrc === undefined) throw new TypeError(`the consumer for mid ${mid} has no SSRC`);
  const rtxSsrc = rtxCodecs.length > 0 ? encoding.rtx?.ssrc : undefined;
  const codecs = [...media, ...(rtxSsrc === undefined ? [] : rtxCodecs)];

  const lines = [
    `m=${kind} 9 ${section.protocol} ${codecs.map((c) => c.payloadType).join(' ')}`,
    'c=IN IP4 0.0.0.0',
    'a=rtcp:9 IN IP4 0.0.0.0',
    `a=ice-ufrag:${input.iceParameters.usernameFragment}`,
    `a=ice-pwd:${input.iceParameters.password}`,
    ...shared.fingerprints.map((f) => `a=fingerprint:${f.algorithm.toLowerCase()} ${f.value.toUpperCase()}`),
    `a=setup:${shared.setup}`,
    `a=mid:${mid}`,
    'a=sendonly',
    'a=rtcp-mux',
    'a=rtcp-rsize',
  ];
  for (const codec of codecs) {
    lines.push(rtpmap(codec));
    const parameters = Object.entries(codec.parameters ?? {}).filter(([, v]) => v !== undefined);
    if (parameters.length > 0) lines.push(`a=fmtp:${codec.payloadType} ${parameters.map(([k, v]) => (v === '' ? k : `${k}=${v}`)).join(';')}`);
    for (const fb of codec.rtcpFeedback ?? []) {
      // Without a readable RTX stream a generic NACK would ask for retransmissions the viewer cannot use.
      if (fb.type === 'nack' && !fb.parameter && rtxSsrc === undefined && kind === 'video') continue;
      lines.push(`a=rtcp-fb:${codec.payloadType} ${fb.type}${fb.parameter ? ` ${fb.parameter}` : ''}`);
    }
  }
  const offeredExtensions = (input.offer.rtpCapabilities.headerExtensions ?? []).filter((e) => e.kind === kind);
  for (const ext of rtpParameters.headerExtensions ?? []) {
    // RFC 8829 §5.3.1: an answered extension keeps the offer's id.
    if (offeredExtensions.some((e) => e.uri === ext.uri && e.preferredId === ext.id)) lines.push(`a=extmap:${ext.id} ${ext.uri}`);
  }

  const trackId = consumer.trackId ?? `${kind}-${mid}`;
  const cname = rtpParameters.rtcp?.cname ?? shared.streamId;
  lines.push(`a=msid:${shared.streamId} ${trackId}`);
  if (rtxSsrc !== undefined) lines.push(`a=ssrc-group:FID ${encoding.ssrc} ${rtxSsrc}`);
  for (const ssrc of rtxSsrc === undefined ? [encoding.ssrc] : [encoding.ssrc, rtxSsrc]) {
    lines.push(`a=ssrc:${ssrc} cname:${cname}`, `a=ssrc:${ssrc} msid:${shared.streamId} ${trackId}`);
  }
  lines.push(...candidateLines(input.iceCandidates));
  return lines;
}
