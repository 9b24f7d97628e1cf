/**
 * A WHEP viewer in Node (draft-ietf-wish-whep) on werift, the pure-TypeScript WebRTC stack: recvonly video and audio,
 * the offer POSTed as application/sdp, the answer applied, RTP counted per kind. It stands in for many browsers at
 * once (fan-out tests) and, unlike Chromium, lets the test choose its RTP header extension ids.
 *
 * mediasoup only estimates a viewer's bandwidth (and so only picks simulcast layers by it) when the consumer
 * negotiated transport-wide-cc (or abs-send-time with REMB). A stock mediasoup 3.12 worker sends on its fixed ids
 * (supportedRtpCapabilities.ts), so only an offer on those ids gets them; OnAir's patched worker sends on the offer's
 * (webrtc-edge/README.md), which `extensionIds` chooses. werift numbers its configured extensions itself (1, 2, …
 * across audio then video); the ids are therefore set on the transceivers, which werift then offers as they are.
 *
 * werift's own transport-cc feedback (0.24) cannot drive that estimate: mediasoup discards every one of its packets
 * ("not enough space for small deltas": the RTCP length is rounded down instead of padded, and missing sequence
 * numbers are reported as received), and it only counts packets of the SSRCs it knows, so mediasoup's bandwidth probes
 * (the probator SSRC) would go unacknowledged. This client therefore takes transport-cc out of the answer it gives
 * werift and writes the feedback itself, for every packet of the transport, as a browser does.
 */
import { randomInt } from 'node:crypto';
import {
  RTCPeerConnection, RTCRtpHeaderExtensionParameters, RTP_EXTENSION_URI, useFIR, useH264, useNACK, useOPUS, usePLI, useVP8,
  useREMB, useTWCC, type RtcpPacket, type RtpHeader, type RtpPacket,
} from 'werift';

/** mediasoup 3.12's header extension ids (node_modules/mediasoup/node/lib/supportedRtpCapabilities.js). */
export const MEDIASOUP_EXTENSION_IDS = {
  mid: 1,
  absSendTime: 4,
  transportWideCc: 5,
} as const;

/** Chromium's ids for the same extensions (its video-first offers: test/whepSdp.test.ts CHROMIUM_OFFER). */
export const CHROMIUM_EXTENSION_IDS = {
  mid: 9,
  absSendTime: 2,
  transportWideCc: 4,
} as const;

export interface ExtensionIds {
  mid: number;
  absSendTime: number;
  transportWideCc: number;
}

export interface WhepClientOptions {
  /** Ask for audio too (a second recvonly transceiver); default true. */
  audio?: boolean;
  /**
   * Offer transport-wide-cc (video) and abs-send-time on mediasoup's ids, with `transport-cc` and `goog-remb` feedback,
   * so that mediasoup runs its bandwidth estimation for this viewer (werift answers with transport-cc feedback);
   * default true. False offers only the MID extension, as a viewer mediasoup cannot estimate.
   */
  congestionControl?: boolean;
  /** Bound on the POST and on each step of the offer; default 15 s. */
  timeoutMs?: number;
  /** Ask for video (a recvonly transceiver); default true. False with `audio` makes an audio-only viewer. */
  video?: boolean;
  /** The video codec offered: H.264 (what OnAir sends) or VP8 alone (the "no codec in common" case); default h264. */
  videoCodec?: 'h264' | 'vp8';
  /** The payload type the H.264 entry is offered on (browsers differ: each set makes a viewer router of its own). */
  h264PayloadType?: number;
  /** The header-extension ids offered; default mediasoup's ({@link MEDIASOUP_EXTENSION_IDS}). */
  extensionIds?: ExtensionIds;
}

export interface WhepClientStats {
  videoPackets: number;
  audioPackets: number;
  /** Payload bytes of video RTP. */
  videoBytes: number;
  videoSsrcs: Set<number>;
  /** Video packets that start an IDR or carry an SPS (H.264 NAL 5 or 7, alone, in STAP-A or starting an FU-A). */
  keyframes: number;
  /** Picture size from the last SPS received: which simulcast layer is arriving. */
  lastSpsSize: { width: number; height: number } | undefined;
}

export interface WhepClient {
  peer: RTCPeerConnection;
  /** Status of the POST: 201 when the session was created. */
  status: number;
  /** The `Location` header (the session URL to DELETE), null on a failed POST. */
  location: string | null;
  /** The last path part of `location` (what the edge calls the session id). */
  sessionId: string | undefined;
  /** The SDP answer (201) or the error body. */
  answer: string;
  /** The offer as POSTed. */
  offer: string;
  /** Calls `cb` for every video RTP packet received; returns the unsubscribe function. */
  onVideoRtp(cb: (packet: RtpPacket) => void): () => void;
  /** Calls `cb` for every audio RTP packet received; returns the unsubscribe function. */
  onAudioRtp(cb: (packet: RtpPacket) => void): () => void;
  stats(): WhepClientStats;
  /** Resolves once `predicate(stats)` holds after a received packet (or already holds); rejects after `timeoutMs`. */
  waitFor(what: string, predicate: (stats: WhepClientStats) => boolean, timeoutMs: number): Promise<WhepClientStats>;
  /** DELETE of the session (when there is one), then the peer closed. Idempotent. */
  close(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 15_000;

function ext(id: number, uri: string): RTCRtpHeaderExtensionParameters {
  return new RTCRtpHeaderExtensionParameters({ id, uri });
}

async function within<T>(what: string, promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`WHEP client: timed out after ${timeoutMs} ms (${what})`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Connects a werift viewer to a WHEP endpoint. Resolves once the answer is applied (media follows ICE and DTLS). */
export async function connectWhep(url: string, options: WhepClientOptions = {}): Promise<WhepClient> {
  const audio = options.audio ?? true;
  const wantVideo = options.video ?? true;
  const congestionControl = options.congestionControl ?? true;
  const videoCodec = options.videoCodec === 'vp8'
    ? useVP8({ rtcpFeedback: [useNACK(), usePLI()] })
    : useH264({
      rtcpFeedback: congestionControl ? [useNACK(), usePLI(), useFIR(), useREMB(), useTWCC()] : [useNACK(), usePLI(), useFIR()],
      ...(options.h264PayloadType === undefined ? {} : { payloadType: options.h264PayloadType }),
    });
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  const ids = options.extensionIds ?? MEDIASOUP_EXTENSION_IDS;
  const videoExtensions = congestionControl
    ? [ext(ids.mid, RTP_EXTENSION_URI.sdesMid), ext(ids.absSendTime, RTP_EXTENSION_URI.absSendTime),
      ext(ids.transportWideCc, RTP_EXTENSION_URI.transportWideCC)]
    : [ext(ids.mid, RTP_EXTENSION_URI.sdesMid)];
  const audioExtensions = congestionControl
    ? [ext(ids.mid, RTP_EXTENSION_URI.sdesMid), ext(ids.absSendTime, RTP_EXTENSION_URI.absSendTime)]
    : [ext(ids.mid, RTP_EXTENSION_URI.sdesMid)];

  const peer = new RTCPeerConnection({
    // Loopback only, no STUN server to wait for; one transport for both m-sections (mediasoup answers with BUNDLE).
    iceServers: [],
    iceUseIpv6: false,
    iceAdditionalHostAddresses: ['127.0.0.1'],
    bundlePolicy: 'max-bundle',
    codecs: { ...(wantVideo ? { video: [videoCodec] } : {}), ...(audio ? { audio: [useOPUS()] } : {}) },
    // werift renumbers these (it only keeps their URIs for negotiation); the ids offered are the transceivers' below.
    headerExtensions: { video: videoExtensions.map((e) => ext(0, e.uri)), audio: audioExtensions.map((e) => ext(0, e.uri)) },
  });

  const stats: WhepClientStats = {
    videoPackets: 0, audioPackets: 0, videoBytes: 0, videoSsrcs: new Set(), keyframes: 0, lastSpsSize: undefined,
  };
  const videoListeners = new Set<(packet: RtpPacket) => void>();
  const audioListeners = new Set<(packet: RtpPacket) => void>();
  const waiters = new Set<() => void>();
  peer.onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((packet) => {
      if (track.kind === 'video') {
        stats.videoPackets += 1;
        stats.videoBytes += packet.payload.length;
        stats.videoSsrcs.add(packet.header.ssrc);
        const nal = h264Inspect(packet.payload);
        if (nal.keyframe) stats.keyframes += 1;
        if (nal.sps) stats.lastSpsSize = spsSize(nal.sps) ?? stats.lastSpsSize;
        for (const listener of videoListeners) listener(packet);
      } else {
        stats.audioPackets += 1;
        for (const listener of audioListeners) listener(packet);
      }
      for (const waiter of waiters) waiter();
    });
  });

  if (wantVideo) {
    const video = peer.addTransceiver('video', { direction: 'recvonly' });
    video.headerExtensions = videoExtensions;
  }
  if (audio) {
    const transceiver = peer.addTransceiver('audio', { direction: 'recvonly' });
    transceiver.headerExtensions = audioExtensions;
  }

  let deleted = false;
  let location: string | null = null;
  const stopFeedback: (() => void)[] = [];
  const close = async (): Promise<void> => {
    for (const stop of stopFeedback.splice(0)) stop();
    if (!deleted && location !== null) {
      deleted = true;
      const target = new URL(location, url);
      await fetch(target, { method: 'DELETE', signal: AbortSignal.timeout(timeoutMs) }).then((r) => r.arrayBuffer()).catch(() => undefined);
    }
    await within('closing the peer', peer.close(), timeoutMs).catch(() => undefined);
  };

  try {
    await within('creating the offer', peer.setLocalDescription(await peer.createOffer()), timeoutMs);
    const offer = peer.localDescription!.sdp;
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp' },
      body: offer,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const answer = await response.text();
    location = response.status === 201 ? response.headers.get('location') : null;
    if (response.status === 201) {
      // werift would answer transport-cc with feedback mediasoup rejects (see the top of this file): ours instead.
      const ownFeedback = congestionControl && /^a=rtcp-fb:\d+ transport-cc\r?$/m.test(answer);
      const forWerift = ownFeedback ? answer.replace(/^a=rtcp-fb:\d+ transport-cc\r?\n/gm, '') : answer;
      await within('applying the answer', peer.setRemoteDescription({ type: 'answer', sdp: forWerift }), timeoutMs);
      if (ownFeedback) {
        for (const dtls of peer.dtlsTransports) {
          const feedback = new TransportCcFeedback(ids.transportWideCc, (packet) => {
            if (dtls.state === 'connected') void dtls.sendRtcp([{ serialize: () => packet } as unknown as RtcpPacket]).catch(() => undefined);
          });
          dtls.onRtp.subscribe((packet) => feedback.received(packet.header));
          stopFeedback.push(() => feedback.stop());
        }
      }
    } else {
      await within('closing the peer', peer.close(), timeoutMs).catch(() => undefined);
    }
    const sessionId = location === null ? undefined : new URL(location, url).pathname.split('/').pop();
    return {
      peer,
      status: response.status,
      location,
      sessionId,
      answer,
      offer,
      onVideoRtp(cb) {
        videoListeners.add(cb);
        return () => videoListeners.delete(cb);
      },
      onAudioRtp(cb) {
        audioListeners.add(cb);
        return () => audioListeners.delete(cb);
      },
      stats: () => ({ ...stats, videoSsrcs: new Set(stats.videoSsrcs) }),
      waitFor(what, predicate, waitMs) {
        if (predicate(stats)) return Promise.resolve({ ...stats, videoSsrcs: new Set(stats.videoSsrcs) });
        let check: () => void = () => {};
        const met = new Promise<WhepClientStats>((resolve) => {
          check = () => {
            if (!predicate(stats)) return;
            waiters.delete(check);
            resolve({ ...stats, videoSsrcs: new Set(stats.videoSsrcs) });
          };
          waiters.add(check);
        });
        return within(what, met, waitMs).finally(() => waiters.delete(check));
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/** What one H.264 RTP payload (RFC 6184) starts: an IDR or SPS, and the SPS itself when a packet holds a whole one. */
export function h264Inspect(payload: Buffer): { keyframe: boolean; sps: Buffer | undefined } {
  if (payload.length < 2) return { keyframe: false, sps: undefined };
  const type = payload[0]! & 0x1f;
  if (type === 5) return { keyframe: true, sps: undefined };
  if (type === 7) return { keyframe: true, sps: payload };
  if (type === 24) {
    // STAP-A (§5.7.1): 16-bit size, then the NAL unit, repeated.
    let keyframe = false;
    let sps: Buffer | undefined;
    for (let at = 1; at + 2 < payload.length;) {
      const size = payload.readUInt16BE(at);
      const unit = payload.subarray(at + 2, at + 2 + size);
      const inner = unit[0] === undefined ? 0 : unit[0] & 0x1f;
      if (inner === 5 || inner === 7) keyframe = true;
      if (inner === 7) sps = unit;
      at += 2 + size;
    }
    return { keyframe, sps };
  }
  if (type === 28) {
    // FU-A (§5.8): the start bit and the original NAL type are in the FU header.
    const start = (payload[1]! & 0x80) !== 0;
    const inner = payload[1]! & 0x1f;
    return { keyframe: start && (inner === 5 || inner === 7), sps: undefined };
  }
  return { keyframe: false, sps: undefined };
}

/** Picture size from an SPS NAL unit (H.264 §7.3.2.1.1); undefined for what this small reader does not handle. */
export function spsSize(nal: Buffer): { width: number; height: number } | undefined {
  // Drop emulation-prevention bytes (00 00 03 → 00 00).
  const bytes: number[] = [];
  for (let i = 1; i < nal.length; i++) {
    if (i >= 3 && nal[i] === 3 && nal[i - 1] === 0 && nal[i - 2] === 0) continue;
    bytes.push(nal[i]!);
  }
  let bit = 0;
  const u = (n: number): number => {
    let value = 0;
    for (let i = 0; i < n; i++, bit++) {
      const byte = bytes[bit >> 3];
      if (byte === undefined) throw new RangeError('SPS ends early');
      value = value * 2 + ((byte >> (7 - (bit & 7))) & 1);
    }
    return value;
  };
  const ue = (): number => {
    let zeros = 0;
    while (u(1) === 0) zeros++;
    return 2 ** zeros - 1 + u(zeros);
  };
  const se = (): number => {
    const k = ue();
    return k % 2 === 0 ? -(k / 2) : (k + 1) / 2;
  };
  try {
    const profileIdc = u(8);
    u(16); // constraint flags, reserved bits, level_idc
    ue(); // seq_parameter_set_id
    let chromaFormatIdc = 1;
    if ([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].includes(profileIdc)) {
      chromaFormatIdc = ue();
      if (chromaFormatIdc === 3) u(1);
      ue(); // bit_depth_luma_minus8
      ue(); // bit_depth_chroma_minus8
      u(1);
      if (u(1) === 1) return undefined; // scaling matrices: not needed for our Baseline layers
    }
    ue(); // log2_max_frame_num_minus4
    const pocType = ue();
    if (pocType === 0) ue();
    else if (pocType === 1) {
      u(1);
      se();
      se();
      const cycle = ue();
      for (let i = 0; i < cycle; i++) se();
    }
    ue(); // max_num_ref_frames
    u(1);
    const widthMbs = ue() + 1;
    const heightMapUnits = ue() + 1;
    const frameMbsOnly = u(1);
    if (frameMbsOnly === 0) u(1);
    u(1); // direct_8x8_inference_flag
    let crop = { left: 0, right: 0, top: 0, bottom: 0 };
    if (u(1) === 1) crop = { left: ue(), right: ue(), top: ue(), bottom: ue() };
    const cropX = chromaFormatIdc === 0 || chromaFormatIdc === 3 ? 1 : 2;
    const cropY = (chromaFormatIdc === 1 ? 2 : 1) * (2 - frameMbsOnly);
    return {
      width: widthMbs * 16 - cropX * (crop.left + crop.right),
      height: (2 - frameMbsOnly) * heightMapUnits * 16 - cropY * (crop.top + crop.bottom),
    };
  } catch {
    return undefined;
  }
}

/**
 * Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1) for every RTP
 * packet of a transport that carries a transport-wide sequence number, whatever its SSRC, every 100 ms (libwebrtc's
 * default interval). Packets missing from a reported range are reported as not received; late ones are dropped.
 */
class TransportCcFeedback {
  readonly #extensionId: number;
  readonly #send: (packet: Buffer) => void;
  readonly #senderSsrc = randomInt(1, 0xffffffff);
  /** Arrival times (µs, monotonic) by unwrapped sequence number, not yet reported. */
  readonly #arrivals = new Map<number, number>();
  readonly #timer: NodeJS.Timeout;
  #highest: number | undefined;
  /** First sequence number the next feedback reports. */
  #next: number | undefined;
  #feedbackCount = 0;

  constructor(extensionId: number, send: (packet: Buffer) => void) {
    this.#extensionId = extensionId;
    this.#send = send;
    this.#timer = setInterval(() => this.#flush(), 100);
    this.#timer.unref();
  }

  received(header: RtpHeader): void {
    const extension = header.extensions.find((e) => e.id === this.#extensionId);
    if (!extension || extension.payload.length < 2) return;
    const arrival = Number(process.hrtime.bigint() / 1000n);
    const wrapped = extension.payload.readUInt16BE(0);
    // Unwrap the 16-bit number to the one nearest the highest seen.
    const sequence = this.#highest === undefined ? wrapped : this.#highest + (((wrapped - this.#highest) << 16) >> 16);
    if (this.#highest === undefined || sequence > this.#highest) this.#highest = sequence;
    if (this.#next !== undefined && sequence < this.#next) return;
    this.#arrivals.set(sequence, arrival);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #flush(): void {
    if (this.#arrivals.size === 0 || this.#highest === undefined) return;
    const lowest = Math.min(...this.#arrivals.keys());
    // After a long silence (or at the start) report from the first packet we have, not across a huge gap.
    const base = this.#next === undefined || lowest - this.#next > 1000 ? lowest : this.#next;
    const last = Math.min(this.#highest, base + 0xfffe);
    // 64 ms reference time (signed 24 bits on the wire) and 250 µs delta ticks (256 ticks per reference unit).
    const firstArrival = this.#arrivals.get(lowest)!;
    const reference = Math.floor(firstArrival / 64_000);
    let previousTicks = reference * 256;
    const statuses: number[] = [];
    const deltas: Buffer[] = [];
    for (let sequence = base; sequence <= last; sequence++) {
      const arrival = this.#arrivals.get(sequence);
      if (arrival === undefined) {
        statuses.push(0);
        continue;
      }
      const ticks = Math.floor(arrival / 250);
      const delta = Math.max(-32_768, Math.min(32_767, ticks - previousTicks));
      previousTicks += delta;
      if (delta >= 0 && delta <= 255) {
        statuses.push(1);
        deltas.push(Buffer.from([delta]));
      } else {
        statuses.push(2);
        const large = Buffer.alloc(2);
        large.writeInt16BE(delta);
        deltas.push(large);
      }
    }
    for (let sequence = base; sequence <= last; sequence++) this.#arrivals.delete(sequence);
    this.#next = last + 1;

    // Run-length chunks (§3.1.3): T=0, 2-bit status, 13-bit run length.
    const chunks: Buffer[] = [];
    for (let i = 0; i < statuses.length;) {
      let run = 1;
      while (i + run < statuses.length && statuses[i + run] === statuses[i] && run < 0x1fff) run++;
      const chunk = Buffer.alloc(2);
      chunk.writeUInt16BE((statuses[i]! << 13) | run);
      chunks.push(chunk);
      i += run;
    }
    const fixed = Buffer.alloc(16);
    fixed.writeUInt32BE(this.#senderSsrc, 0);
    fixed.writeUInt32BE(0, 4); // media source SSRC: unused by transport-cc (the sequence numbers are transport-wide)
    fixed.writeUInt16BE(base & 0xffff, 8);
    fixed.writeUInt16BE(statuses.length, 10);
    fixed.writeUIntBE(reference & 0xffffff, 12, 3);
    fixed.writeUInt8(this.#feedbackCount, 15);
    this.#feedbackCount = (this.#feedbackCount + 1) & 0xff;
    let body = Buffer.concat([fixed, ...chunks, ...deltas]);
    // RFC 3550 §6.4.1: pad to 32 bits, the last padding octet counting the padding, and the P bit set.
    const padding = (4 - (body.length % 4)) % 4;
    if (padding > 0) {
      const pad = Buffer.alloc(padding);
      pad[padding - 1] = padding;
      body = Buffer.concat([body, pad]);
    }
    const header = Buffer.alloc(4);
    header.writeUInt8(0x80 | (padding > 0 ? 0x20 : 0) | 15, 0); // V=2, P, FMT=15 (transport-cc)
    header.writeUInt8(205, 1); // RTPFB
    header.writeUInt16BE((header.length + body.length) / 4 - 1, 2);
    this.#send(Buffer.concat([header, body]));
  }
}

/**
 * What a WebRTC viewer of a live stream sees: a werift viewer POSTs to its WHEP URL and gets a keyframe (and audio,
 * unless `audio` is false) within 15 s, then leaves. Throws with what it got otherwise.
 */
export async function whepPlays(httpUrl: string, streamId: string, options: { audio?: boolean } = {}): Promise<void> {
  const viewer = await connectWhep(`${httpUrl}/live/${streamId}/whep`, { congestionControl: false });
  try {
    if (viewer.status !== 201) throw new Error(`WHEP POST answered ${viewer.status}: ${viewer.answer}`);
    await viewer.waitFor('a keyframe over WebRTC', (s) => s.keyframes > 0 && (options.audio === false || s.audioPackets > 0), 15_000);
  } finally {
    await viewer.close();
  }
}
