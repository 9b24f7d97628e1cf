import { randomInt, randomUUID } from 'node:crypto';
import dgram from 'node:dgram';
import type { types as ms } from 'mediasoup';
import type { Logger } from '../lib/log.js';
import { spawnTied, type TiedProcess } from '../lib/tiedProcess.js';
import { buildWhipAnswer, whipRouterCodecs, type WhipOffer, type WhipTrack } from '../webrtc-edge/whipSdp.js';
import { createFlvReader } from './nms.js';
import type { PublishSession } from './PublishSession.js';
import { REFUSAL_CODES, type Refusal, type RtmpIngest } from './RtmpIngest.js';

/** Where a WHIP publisher's transport lives: a router on a worker with a WebRtcServer (`WebRtcEdge.publishRouter`). */
export interface WhipPlace {
  publishRouter(mediaCodecs: ms.RtpCodecCapability[]): Promise<{ router: ms.Router; webRtcServer: ms.WebRtcServer }>;
}

export interface WhipIngestOptions {
  ingest: RtmpIngest;
  place: () => WhipPlace | undefined;
  ffmpegPath: string;
  log: Logger;
  /** A publisher whose media has not made a usable source this long after the answer is let go. */
  startTimeoutMs?: number;
  /** ICE disconnected this long (no consent from the publisher) ends the publish. */
  disconnectedMs?: number;
}

/** Why a WHIP publish was refused: the RTMP refusal's catalogued code, so both paths say the same. */
export class WhipRefusal extends Error {
  readonly code: (typeof REFUSAL_CODES)[keyof typeof REFUSAL_CODES] | 'ONAIR_ERR_WEBRTC_DISABLED';
  readonly detail: string | undefined;

  constructor(code: WhipRefusal['code'], detail?: string) {
    super(detail ?? code);
    this.name = 'WhipRefusal';
    this.code = code;
    this.detail = detail;
  }
}

interface Publish {
  id: string;
  streamId: string;
  session: PublishSession;
  router: ms.Router;
  ffmpeg: TiedProcess | undefined;
  timers: NodeJS.Timeout[];
  videoConsumer: ms.Consumer | undefined;
  ended: boolean;
}

const START_TIMEOUT_MS = 15_000;
const DISCONNECTED_MS = 5_000;
/**
 * A WebRTC encoder sends a keyframe when asked (PLI), not on a schedule: asking this often keeps the ingest's GOP
 * cache (a restarted ladder starts from its keyframe) a few seconds long, as an RTMP encoder's keyframe interval does.
 */
const KEYFRAME_INTERVAL_MS = 2_000;
/** Until the source is known, keyframes are asked for this often (ffmpeg needs one to learn the picture size). */
const START_KEYFRAME_INTERVAL_MS = 500;
/** WHIP offers being set up at once, every stream together (each holds a router until it is answered). */
const MAX_PENDING = 16;

/**
 * WHIP ingest (RFC 9725, issue #20). The publisher's H.264 and opus arrive on a mediasoup WebRtcTransport; plain-RTP
 * consumers hand them to one ffmpeg per publish, which copies the video and transcodes opus to AAC into FLV on its
 * stdout; those FLV packets feed a `PublishSession` from `RtmpIngest.publishFrom`. From there a WHIP publish is an RTMP
 * publish: the same refusals, ladder, LL-HLS, WebRTC, recording, cues and reconnect grace.
 */
export class WhipIngest {
  readonly #options: WhipIngestOptions;
  readonly #log: Logger;
  readonly #publishes = new Map<string, Publish>();
  #pending = 0;
  #closed = false;

  constructor(options: WhipIngestOptions) {
    this.#options = options;
    this.#log = options.log;
  }

  get count(): number {
    return this.#publishes.size;
  }

  /**
   * Takes a parsed offer for a stream whose key was checked; answers with the SDP answer and the id of the publish
   * (for its `DELETE`). Throws `WhipRefusal` when the stream takes no publisher now.
   */
  async publish(streamId: string, offer: WhipOffer, remoteAddress: string): Promise<{ id: string; answer: string }> {
    const place = this.#options.place();
    if (!place || this.#closed) throw new WhipRefusal('ONAIR_ERR_WEBRTC_DISABLED', 'WHIP needs WebRTC on this node (ONAIR_WEBRTC_LAYERS)');
    if (this.#pending >= MAX_PENDING) throw new WhipRefusal('ONAIR_ERR_PUBLISH_NO_CAPACITY', `${MAX_PENDING} WHIP offers are being set up`);
    // Refused early (no router made) when someone publishes already; `publishFrom` decides for good below.
    if (this.#options.ingest.publisher(streamId)) throw new WhipRefusal('ONAIR_ERR_PUBLISH_BUSY');
    this.#pending += 1;
    let router: ms.Router | undefined;
    try {
      const placed = await place.publishRouter(whipRouterCodecs(offer));
      router = placed.router;
      const transport = await router.createWebRtcTransport({ webRtcServer: placed.webRtcServer, enableUdp: true, enableTcp: true, preferUdp: true });
      await transport.connect({ dtlsParameters: offer.dtlsParameters });
      const producers: { track: WhipTrack; producer: ms.Producer }[] = [];
      for (const track of [offer.video, offer.audio]) {
        if (track) producers.push({ track, producer: await transport.produce({ kind: track.kind, rtpParameters: track.rtpParameters }) });
      }
      const answer = buildWhipAnswer({
        offer, iceParameters: transport.iceParameters, iceCandidates: transport.iceCandidates, dtlsParameters: transport.dtlsParameters,
      });
      const taken = this.#options.ingest.publishFrom(streamId, remoteAddress);
      if (!('id' in taken)) throw new WhipRefusal(REFUSAL_CODES[(taken as Refusal).reason], (taken as Refusal).detail);
      const publish: Publish = {
        id: randomUUID(), streamId, session: taken, router, ffmpeg: undefined, timers: [], videoConsumer: undefined, ended: false,
      };
      this.#publishes.set(publish.id, publish);
      this.#watch(publish, transport);
      void this.#bridge(publish, producers).catch((error: unknown) => this.#end(publish, `the bridge to ffmpeg failed: ${(error as Error).message}`));
      return { id: publish.id, answer };
    } catch (error) {
      router?.close();
      throw error;
    } finally {
      this.#pending -= 1;
    }
  }

  /** The publisher's `DELETE`: the publish ends, and its event waits out the reconnect grace. */
  end(streamId: string, id: string): boolean {
    const publish = this.#publishes.get(id);
    if (!publish || publish.streamId !== streamId) return false;
    this.#end(publish, 'the publisher sent DELETE');
    return true;
  }

  close(): void {
    this.#closed = true;
    for (const publish of [...this.#publishes.values()]) this.#end(publish, 'the node is closing');
  }

  #watch(publish: Publish, transport: ms.WebRtcTransport): void {
    const { session } = publish;
    // The operator ended the stream (or deleted it): the publisher is cut off, as an RTMP socket is.
    session.once('close', () => this.#end(publish, 'the publish session closed'));
    session.on('unsupported', (message) => this.#end(publish, `unsupported: ${message}`));
    session.once('source', () => this.#log.info({ streamId: publish.streamId, source: session.source }, 'WHIP publisher\'s media arrives'));
    const start = setTimeout(() => {
      if (!session.source) this.#end(publish, `no usable media within ${this.#options.startTimeoutMs ?? START_TIMEOUT_MS} ms`);
    }, this.#options.startTimeoutMs ?? START_TIMEOUT_MS);
    publish.timers.push(start);
    let disconnected: NodeJS.Timeout | undefined;
    transport.on('icestatechange', (state) => {
      clearTimeout(disconnected);
      if (state === 'disconnected') {
        const ms = this.#options.disconnectedMs ?? DISCONNECTED_MS;
        disconnected = setTimeout(() => this.#end(publish, `ICE disconnected for ${ms} ms`), ms);
        publish.timers.push(disconnected);
      }
    });
    transport.on('dtlsstatechange', (state) => {
      if (state === 'failed' || state === 'closed') this.#end(publish, `DTLS ${state}`);
    });
    // The router goes with its worker (a SIGKILLed mediasoup worker): the publisher has to come back.
    transport.observer.once('close', () => this.#end(publish, 'the media transport closed'));
  }

  /** Plain-RTP consumers to a new ffmpeg, whose FLV feeds the session. */
  async #bridge(publish: Publish, producers: { track: WhipTrack; producer: ms.Producer }[]): Promise<void> {
    const { router, session } = publish;
    const legs: { kind: ms.MediaKind; port: number; consumer: ms.Consumer }[] = [];
    const capabilities = router.rtpCapabilities;
    // ffmpeg reads plain RTP: no RTX, no header extensions it would not use.
    const plainCapabilities: ms.RtpCapabilities = { codecs: (capabilities.codecs ?? []).filter((c) => !c.mimeType.toLowerCase().endsWith('/rtx')), headerExtensions: [] };
    for (const { track, producer } of producers) {
      const plain = await router.createPlainTransport({ listenIp: '127.0.0.1', rtcpMux: false, comedia: false });
      const port = await freeRtpPort();
      await plain.connect({ ip: '127.0.0.1', port, rtcpPort: port + 1 });
      const consumer = await plain.consume({ producerId: producer.id, rtpCapabilities: plainCapabilities, paused: true });
      legs.push({ kind: track.kind, port, consumer });
    }
    if (publish.ended) return;
    const sdp = ffmpegSdp(legs.map(({ kind, port, consumer }) => ({ kind, port, codec: consumer.rtpParameters.codecs[0]! })));
    const hasAudio = legs.some((leg) => leg.kind === 'audio');
    const ffmpeg = spawnTied(this.#options.ffmpegPath, whipFfmpegArgs(sdp, hasAudio));
    publish.ffmpeg = ffmpeg;
    const read = createFlvReader((packet) => session.handlePacket(packet));
    ffmpeg.stdout.on('data', (chunk: Buffer) => {
      try {
        session.received(chunk.length);
        read(chunk);
      } catch (error) {
        this.#end(publish, `ffmpeg's FLV could not be read: ${(error as Error).message}`);
      }
    });
    session.on('flow', (flowing) => (flowing ? ffmpeg.stdout.resume() : ffmpeg.stdout.pause()));
    let stderr = '';
    ffmpeg.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-2000);
    });
    ffmpeg.on('exit', (code, signal) => {
      if (!publish.ended) this.#end(publish, `ffmpeg exited (${code ?? signal}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    });
    for (const { consumer } of legs) await consumer.resume();
    const video = legs.find((leg) => leg.kind === 'video')?.consumer;
    publish.videoConsumer = video;
    if (!video) return;
    // Asked at once and then on an interval; quickly until ffmpeg has what it needs to start.
    const ask = (): void => void video.requestKeyFrame().catch(() => undefined);
    ask();
    const starting = setInterval(() => (session.source ? clearInterval(starting) : ask()), START_KEYFRAME_INTERVAL_MS);
    const steady = setInterval(ask, KEYFRAME_INTERVAL_MS);
    publish.timers.push(starting, steady);
  }

  #end(publish: Publish, reason: string): void {
    if (publish.ended) return;
    publish.ended = true;
    this.#publishes.delete(publish.id);
    for (const timer of publish.timers) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    publish.ffmpeg?.stdin.end();
    publish.router.close();
    this.#log.info({ streamId: publish.streamId, reason }, 'WHIP publisher gone');
    this.#options.ingest.leave(publish.session);
  }
}

/** ffmpeg's SDP for the plain-RTP legs (RTCP on port + 1). */
export function ffmpegSdp(legs: { kind: ms.MediaKind; port: number; codec: ms.RtpCodecParameters }[]): string {
  const lines = ['v=0', 'o=- 0 0 IN IP4 127.0.0.1', 's=onair-whip', 'c=IN IP4 127.0.0.1', 't=0 0'];
  for (const { kind, port, codec } of legs) {
    const [, name] = codec.mimeType.split('/');
    lines.push(`m=${kind} ${port} RTP/AVP ${codec.payloadType}`);
    lines.push(`a=rtpmap:${codec.payloadType} ${name}/${codec.clockRate}${kind === 'audio' && codec.channels ? `/${codec.channels}` : ''}`);
    const parameters = Object.entries(codec.parameters ?? {});
    if (parameters.length > 0) lines.push(`a=fmtp:${codec.payloadType} ${parameters.map(([k, v]) => `${k}=${v}`).join(';')}`);
    lines.push('a=recvonly');
  }
  return `${lines.join('\r\n')}\r\n`;
}

/**
 * The bridge's ffmpeg: the SDP as a data URL (no file to clean up), H.264 copied, opus to AAC (FLV and the ladder
 * take AAC), FLV on stdout. No probing beyond what the SDP leaves open (the picture size, from the first keyframe).
 */
export function whipFfmpegArgs(sdp: string, hasAudio: boolean): string[] {
  return [
    '-hide_banner', '-loglevel', 'warning', '-nostdin',
    '-protocol_whitelist', 'data,udp,rtp',
    '-fflags', '+nobuffer+genpts',
    '-analyzeduration', '1000000',
    '-f', 'sdp', '-i', `data:application/sdp;base64,${Buffer.from(sdp).toString('base64')}`,
    '-map', '0:v:0', ...(hasAudio ? ['-map', '0:a:0', '-c:a', 'aac', '-b:a', '128k', '-ar', '48000'] : []),
    '-c:v', 'copy',
    '-f', 'flv', '-flvflags', 'no_duration_filesize', 'pipe:1',
  ];
}

/**
 * An even UDP port whose next one is free too, on 127.0.0.1, for one RTP leg (ffmpeg binds both). Taken below the
 * ephemeral range, so that no socket the kernel numbers takes it before ffmpeg binds; a port taken meanwhile all the
 * same makes ffmpeg exit, and the publisher retries.
 */
async function freeRtpPort(): Promise<number> {
  for (let attempt = 0; attempt < 32; attempt += 1) {
    const port = 2 * randomInt(10_000, 16_000);
    const sockets: dgram.Socket[] = [];
    try {
      for (const p of [port, port + 1]) {
        const socket = dgram.createSocket('udp4');
        sockets.push(socket);
        await new Promise<void>((resolve, reject) => {
          socket.once('error', reject);
          socket.bind(p, '127.0.0.1', () => resolve());
        });
      }
      return port;
    } catch {
      // Taken: another.
    } finally {
      for (const socket of sockets) {
        try {
          socket.close();
        } catch {
          // Never bound.
        }
      }
    }
  }
  throw new Error('no free UDP port pair for the WHIP bridge');
}
