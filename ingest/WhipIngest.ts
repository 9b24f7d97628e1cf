import { randomInt, randomUUID } from 'node:crypto';
import dgram from 'node:dgram';
import type { types as ms } from 'mediasoup';
import type { Logger } from '../lib/log.js';
import { spawnTied, type TiedProcess } from '../lib/tiedProcess.js';
import { buildWhipAnswer, WhepSdpError, whipRouterCodecs, type WhipOffer, type WhipTrack } from '../webrtc-edge/index.js';
import { feedSession } from './flvFeed.js';
import type { PublishSession, RtpPassthrough } from './PublishSession.js';
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
  /** ICE disconnected, or no media received, this long ends the publish. */
  disconnectedMs?: number;
  /** Called when a bridge ffmpeg that died is replaced (for `onair_child_restarts_total`). */
  onBridgeRestart?: () => void;
  /**
   * WebRTC viewers get the publisher's own H.264 and opus (one layer, no re-encode) instead of the ladder's simulcast
   * layers (`ONAIR_WHIP_PASSTHROUGH`, default true).
   */
  passthrough?: boolean;
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
  remoteAddress: string;
  /** The ingest's session: a new one after each bridge restart (as after a publisher's reconnect). */
  session: PublishSession;
  router: ms.Router;
  producers: { track: WhipTrack; producer: ms.Producer }[];
  /** The publisher's own media for the WebRTC viewers; undefined when the ladder's layers serve them. */
  passthrough: RtpPassthrough | undefined;
  /** Asks the publisher for a keyframe through a consumer of its video, spaced (every asker goes through it). */
  askKeyFrame: (through: ms.Consumer) => void;
  bridge: Bridge | undefined;
  /** When the bridge's ffmpeg was restarted lately (bounded: see MAX_BRIDGE_RESTARTS). */
  restarts: number[];
  /** Set while ICE is disconnected: the publish ends when it fires. */
  disconnected: NodeJS.Timeout | undefined;
  /** Reads the transport's received bytes: a publisher whose media stopped is gone. */
  watchdog: NodeJS.Timeout | undefined;
  ended: boolean;
}

/** The plain-RTP legs and the ffmpeg of one session. */
interface Bridge {
  session: PublishSession;
  ffmpeg: TiedProcess | undefined;
  transports: ms.PlainTransport[];
  timers: NodeJS.Timeout[];
  closed: boolean;
}

const START_TIMEOUT_MS = 15_000;
const WATCHDOG_INTERVAL_MS = 1_000;
const DISCONNECTED_MS = 5_000;
/**
 * A WebRTC encoder sends a keyframe when asked (PLI), not on a schedule: asking this often keeps the ingest's GOP
 * cache (a restarted ladder starts from its keyframe) a few seconds long, as an RTMP encoder's keyframe interval does.
 */
const KEYFRAME_INTERVAL_MS = 2_000;
/** Until the source is known, keyframes are asked for this often (ffmpeg needs one to learn the picture size). */
const START_KEYFRAME_INTERVAL_MS = 500;
/** Keyframes for viewers' losses (their PLIs) are asked for at most this often. */
const LOSS_KEYFRAME_GAP_MS = 1_000;
/**
 * Keyframe requests reach the publisher at most this often: libwebrtc ignores a PLI that comes within 300 ms of the
 * one before (its minimum keyframe interval), and mediasoup asks again only a second later.
 */
const KEYFRAME_REQUEST_GAP_MS = 350;
/** WHIP offers being set up at once, every stream together (each holds a router until it is answered). */
const MAX_PENDING = 16;
/** The bridge's ffmpeg is restarted (the publisher sees nothing) at most this often in BRIDGE_RESTART_WINDOW_MS. */
const MAX_BRIDGE_RESTARTS = 3;
const BRIDGE_RESTART_WINDOW_MS = 60_000;

/**
 * WHIP ingest (RFC 9725, issue #20). The publisher's H.264 and opus arrive on a mediasoup WebRtcTransport; plain-RTP
 * consumers hand them to one ffmpeg per publish, which copies the video and transcodes opus to AAC into FLV on its
 * stdout; those FLV packets feed a `PublishSession` from `RtmpIngest.publishFrom`. From there a WHIP publish is an RTMP
 * publish: the same refusals, ladder, LL-HLS, recording, cues and reconnect grace. Its WebRTC viewers get its own
 * media (`rtpPassthrough`, unless `passthrough: false`): the session carries it, and the live event sends it to the
 * stream's WebRTC input instead of the ladder's layers.
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
   * (for its `DELETE`). Throws `WhipRefusal` when the stream takes no publisher now, `WhepSdpError` when mediasoup
   * refuses what the offer describes.
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
        if (!track) continue;
        try {
          producers.push({ track, producer: await transport.produce({ kind: track.kind, rtpParameters: track.rtpParameters }) });
        } catch (error) {
          // mediasoup checks what the parser let through (a payload type, an SSRC used twice…): the offer's fault.
          throw new WhepSdpError(`the media server cannot take the ${track.kind} of this offer: ${(error as Error).message}`);
        }
      }
      const answer = buildWhipAnswer({
        offer, iceParameters: transport.iceParameters, iceCandidates: transport.iceCandidates, dtlsParameters: transport.dtlsParameters,
      });
      const askKeyFrame = keyFrameAsker();
      const passthrough = this.#options.passthrough === false || !baselineVideo(offer) ? undefined : rtpPassthrough(router, producers, askKeyFrame);
      const taken = this.#options.ingest.publishFrom(streamId, remoteAddress, { passthrough });
      if (!('id' in taken)) throw new WhipRefusal(REFUSAL_CODES[(taken as Refusal).reason], (taken as Refusal).detail);
      const publish: Publish = {
        id: randomUUID(), streamId, remoteAddress, session: taken, router, producers, passthrough, askKeyFrame, bridge: undefined, restarts: [],
        disconnected: undefined, watchdog: undefined, ended: false,
      };
      this.#publishes.set(publish.id, publish);
      this.#watch(publish, transport);
      this.#attach(publish, taken);
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

  /** The publisher's transport: its end is the publish's. */
  #watch(publish: Publish, transport: ms.WebRtcTransport): void {
    transport.on('icestatechange', (state) => {
      clearTimeout(publish.disconnected);
      if (state === 'disconnected') {
        const ms = this.#options.disconnectedMs ?? DISCONNECTED_MS;
        publish.disconnected = setTimeout(() => this.#end(publish, `ICE disconnected for ${ms} ms`), ms);
      }
    });
    // mediasoup 3.12 has no ICE consent timeout for UDP: a publisher that vanishes (no DTLS close) is seen here, by
    // its media stopping, before ffmpeg's own input timeout would make the bridge look dead.
    const silentMs = this.#options.disconnectedMs ?? DISCONNECTED_MS;
    let bytes = -1;
    let lastGrowth = Date.now();
    publish.watchdog = setInterval(() => {
      transport.getStats().then(([stats]) => {
        const received = stats?.bytesReceived ?? 0;
        if (received !== bytes) {
          bytes = received;
          lastGrowth = Date.now();
        } else if (bytes > 0 && Date.now() - lastGrowth >= silentMs) {
          this.#end(publish, `no media from the publisher for ${silentMs} ms`);
        }
      }, () => undefined);
    }, WATCHDOG_INTERVAL_MS);
    transport.on('dtlsstatechange', (state) => {
      if (state === 'failed' || state === 'closed') this.#end(publish, `DTLS ${state}`);
    });
    // The router goes with its worker (a SIGKILLed mediasoup worker): the publisher has to come back.
    transport.observer.once('close', () => this.#end(publish, 'the media transport closed'));
  }

  /**
   * A session for the publish: its events, and a bridge to feed it. The operator ending the stream closes the session,
   * and so the publish; a bridge that dies is replaced with a new session (a reconnect within the grace, unseen by the
   * publisher), a few times a minute at most.
   */
  #attach(publish: Publish, session: PublishSession): void {
    publish.session = session;
    const bridge: Bridge = { session, ffmpeg: undefined, transports: [], timers: [], closed: false };
    // A replaced bridge's session closes too (it is left for the new one): that is no end of the publish.
    const current = (): boolean => !publish.ended && !bridge.closed;
    session.once('close', () => current() && this.#end(publish, 'the publish session closed'));
    session.on('unsupported', (message) => current() && this.#end(publish, `unsupported: ${message}`));
    session.once('source', () => this.#log.info({ streamId: publish.streamId, source: session.source }, 'WHIP publisher\'s media arrives'));
    const startTimeoutMs = this.#options.startTimeoutMs ?? START_TIMEOUT_MS;
    bridge.timers.push(setTimeout(() => {
      if (current() && !session.source) this.#end(publish, `no usable media within ${startTimeoutMs} ms`);
    }, startTimeoutMs));
    publish.bridge = bridge;
    this.#bridge(publish, bridge).catch((error: unknown) => {
      if (current()) this.#end(publish, `the bridge to ffmpeg failed: ${(error as Error).message}`);
    });
  }

  /** Plain-RTP consumers to a new ffmpeg, whose FLV feeds the bridge's session. */
  async #bridge(publish: Publish, bridge: Bridge): Promise<void> {
    const { router } = publish;
    const { session } = bridge;
    const legs: { kind: ms.MediaKind; port: number; consumer: ms.Consumer }[] = [];
    const plainCapabilities = plainRtpCapabilities(router);
    for (const { track, producer } of publish.producers) {
      const plain = await router.createPlainTransport({ listenIp: '127.0.0.1', rtcpMux: false, comedia: false });
      bridge.transports.push(plain);
      if (bridge.closed) return closeBridge(bridge);
      const port = await freeRtpPort();
      await plain.connect({ ip: '127.0.0.1', port, rtcpPort: port + 1 });
      const consumer = await plain.consume({ producerId: producer.id, rtpCapabilities: plainCapabilities, paused: true });
      legs.push({ kind: track.kind, port, consumer });
    }
    if (bridge.closed) return closeBridge(bridge);
    const sdp = ffmpegSdp(legs.map(({ kind, port, consumer }) => ({ kind, port, codec: consumer.rtpParameters.codecs[0]! })));
    const hasAudio = legs.some((leg) => leg.kind === 'audio');
    const ffmpeg = spawnTied(this.#options.ffmpegPath, whipFfmpegArgs(sdp, hasAudio));
    bridge.ffmpeg = ffmpeg;
    // A spawn that fails (EAGAIN, EMFILE) is a bridge that died: never an uncaught error.
    ffmpeg.once('error', (error) => this.#bridgeDied(publish, bridge, `ffmpeg could not start: ${error.message}`));
    // A bridge that cannot be read, or whose ffmpeg exits, is ours to replace, not the publisher's doing.
    feedSession(ffmpeg, session, (reason) => this.#bridgeDied(publish, bridge, reason));
    for (const { consumer } of legs) await consumer.resume();
    const video = legs.find((leg) => leg.kind === 'video')?.consumer;
    if (!video || bridge.closed) return;
    // Asked at once and then on an interval; quickly until ffmpeg has what it needs to start.
    const ask = (): void => publish.askKeyFrame(video);
    ask();
    const starting = setInterval(() => (session.source ? clearInterval(starting) : ask()), START_KEYFRAME_INTERVAL_MS);
    const steady = setInterval(ask, KEYFRAME_INTERVAL_MS);
    bridge.timers.push(starting, steady);
  }

  /** The bridge's ffmpeg is gone while the publisher is not: a new session and bridge, as after a reconnect. */
  #bridgeDied(publish: Publish, bridge: Bridge, reason: string): void {
    if (bridge.closed || publish.ended || publish.bridge !== bridge) return;
    closeBridge(bridge);
    const now = Date.now();
    publish.restarts = publish.restarts.filter((at) => now - at < BRIDGE_RESTART_WINDOW_MS);
    if (publish.restarts.length >= MAX_BRIDGE_RESTARTS) {
      this.#end(publish, `${reason}; ${MAX_BRIDGE_RESTARTS} restarts within ${BRIDGE_RESTART_WINDOW_MS / 1000} s, no more`);
      return;
    }
    publish.restarts.push(now);
    this.#options.onBridgeRestart?.();
    this.#log.warn({ streamId: publish.streamId, reason, code: 'ONAIR_ERR_WHIP_BRIDGE' }, 'WHIP bridge died: restarted');
    this.#options.ingest.leave(bridge.session);
    const taken = this.#options.ingest.publishFrom(publish.streamId, publish.remoteAddress, { passthrough: publish.passthrough });
    if (!('id' in taken)) {
      this.#end(publish, `the stream took another publisher while the bridge restarted (${(taken as Refusal).reason})`);
      return;
    }
    this.#attach(publish, taken);
  }

  #end(publish: Publish, reason: string): void {
    if (publish.ended) return;
    publish.ended = true;
    this.#publishes.delete(publish.id);
    clearTimeout(publish.disconnected);
    clearInterval(publish.watchdog);
    if (publish.bridge) closeBridge(publish.bridge);
    publish.router.close();
    this.#log.info({ streamId: publish.streamId, reason }, 'WHIP publisher gone');
    this.#options.ingest.leave(publish.session);
  }
}

/** What a plain-RTP receiver takes: the router's codecs but RTX, and no header extensions it would not use. */
function plainRtpCapabilities(router: ms.Router): ms.RtpCapabilities {
  return { codecs: (router.rtpCapabilities.codecs ?? []).filter((c) => !c.mimeType.toLowerCase().endsWith('/rtx')), headerExtensions: [] };
}

/**
 * The publisher's own media for the stream's WebRTC viewers (issue #20): plain-RTP consumers on its router sending to
 * the stream's WebRTC input (the edge's relay numbers them as its producers expect), and the viewers' keyframe requests
 * passed on to the publisher. Another target (a new event for the same publish) replaces the legs; the router's end
 * (the publish's) closes them.
 */
function rtpPassthrough(router: ms.Router, producers: readonly { track: WhipTrack; producer: ms.Producer }[], askKeyFrame: (through: ms.Consumer) => void): RtpPassthrough {
  let legs: { key: string; sending: Promise<{ audio: boolean }>; transports: ms.PlainTransport[]; video: ms.Consumer | undefined } | undefined;
  let lossAskedAt = 0;
  const open = async (current: NonNullable<typeof legs>, target: { videoPort: number; audioPort: number | undefined }): Promise<{ audio: boolean }> => {
    let audio = false;
    for (const { track, producer } of producers) {
      const port = track.kind === 'video' ? target.videoPort : target.audioPort;
      if (port === undefined || router.closed || legs !== current) continue;
      const plain = await router.createPlainTransport({ listenIp: '127.0.0.1', rtcpMux: false, comedia: false });
      current.transports.push(plain);
      // Replaced meanwhile (another target): the new legs send.
      if (legs !== current) {
        plain.close();
        break;
      }
      await plain.connect({ ip: '127.0.0.1', port, rtcpPort: port + 1 });
      const consumer = await plain.consume({ producerId: producer.id, rtpCapabilities: plainRtpCapabilities(router) });
      if (track.kind === 'video') current.video = consumer;
      else audio = true;
    }
    return { audio };
  };
  return {
    send(target) {
      const key = `${target.videoPort}|${target.audioPort ?? ''}`;
      if (legs?.key === key) return legs.sending;
      for (const transport of legs?.transports ?? []) transport.close();
      const current: NonNullable<typeof legs> = { key, sending: Promise.resolve({ audio: false }), transports: [], video: undefined };
      legs = current;
      current.sending = open(current, target).catch((error: unknown) => {
        // Not sending: the next `send` (a bridge's new session, the same target) tries again.
        for (const transport of current.transports) transport.close();
        if (legs === current) legs = undefined;
        throw error;
      });
      return current.sending;
    },
    requestKeyFrame(cause) {
      if (!legs?.video) return;
      if (cause === 'loss') {
        const now = Date.now();
        if (now - lossAskedAt < LOSS_KEYFRAME_GAP_MS) return;
        lossAskedAt = now;
      }
      askKeyFrame(legs.video);
    },
  };
}

/**
 * Spaces the keyframe requests of one publisher (the bridge's schedule, the WebRTC viewers'): one per gap; one that
 * comes within it is asked at the gap's end, not dropped (a PLI libwebrtc ignores leaves mediasoup's request pending
 * for a second).
 */
function keyFrameAsker(): (through: ms.Consumer) => void {
  let askedAt = 0;
  /** The consumers a deferred request may go through (any open one reaches the same producer). */
  let deferred: Set<ms.Consumer> | undefined;
  const ask = (through: Iterable<ms.Consumer>): void => {
    deferred = undefined;
    askedAt = Date.now();
    for (const consumer of through) {
      if (consumer.closed) continue;
      void consumer.requestKeyFrame().catch(() => undefined);
      return;
    }
  };
  return (through) => {
    if (deferred) {
      deferred.add(through);
      return;
    }
    const wait = askedAt + KEYFRAME_REQUEST_GAP_MS - Date.now();
    if (wait <= 0) {
      ask([through]);
      return;
    }
    const waiting = new Set([through]);
    deferred = waiting;
    setTimeout(() => ask(waiting), wait).unref();
  };
}

/**
 * Whether the offer's video is H.264 Baseline (`profile-level-id` 42xx: constrained baseline as browsers send it), the
 * profile every WebRTC viewer decodes and the one the viewers' producers declare. Main or High goes through the
 * ladder's layers instead.
 */
export function baselineVideo(offer: WhipOffer): boolean {
  const codec = offer.video?.rtpParameters.codecs.find((c) => c.mimeType.toLowerCase() === 'video/h264');
  return String(codec?.parameters?.['profile-level-id'] ?? '').toLowerCase().startsWith('42');
}

function closeBridge(bridge: Bridge): void {
  bridge.closed = true;
  for (const timer of bridge.timers) {
    clearTimeout(timer);
    clearInterval(timer);
  }
  bridge.ffmpeg?.stdin.end();
  for (const transport of bridge.transports) transport.close();
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
    // Its RTP ports on loopback only: nobody on the network can feed a publish.
    '-localaddr', '127.0.0.1',
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
