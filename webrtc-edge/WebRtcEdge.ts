import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { types as ms } from 'mediasoup';
import { addressKey } from '../lib/address.js';
import { TypedEmitter } from '../lib/emitter.js';
import { defaultLimits } from '../lib/limits.js';
import { WHEP_LIMITS, type WhepLimits } from './limits.js';
import type { Logger } from '../lib/log.js';
import { loadMediasoup } from './loadMediasoup.js';
import { restartWithBackoff } from './restartWithBackoff.js';
import { RtpRelay, type RelayInput, type RelaySource } from './RtpRelay.js';
import { OriginClient, type PipeEndpoint, type PipeOffer } from './pipeProtocol.js';
import { useOfferHeaderExtensionIds, type RouterHeaderExtensionId } from './whepSdp.js';

type Mediasoup = typeof import('mediasoup');

export interface WebRtcEdgeOptions {
  /** mediasoup workers (one process each); default one per core. */
  workers?: number;
  /** Address the WebRtcServers listen on. */
  listenIp: string;
  /** Address put in ICE candidates (the public one behind NAT); default: the listen address. */
  announcedIp?: string | undefined;
  /** First UDP/TCP port: worker i listens on `port + i`; 0 picks free ports. */
  port: number;
  log: Logger;
  /** Session caps and router bounds (webrtc-edge/limits.ts); defaults when absent. */
  limits?: Partial<WhepLimits>;
  /**
   * A pulling edge (issue #17): where a stream not live on this node is live. A WHEP viewer of such a stream opens one
   * pipe from that origin (`clusterSecret` authenticates it), shared by every later viewer of the stream here.
   */
  origin?: OriginLookup | undefined;
  /** `ONAIR_CLUSTER_SECRET`: node-to-node calls carry it; without it this node neither feeds nor pulls pipes. */
  clusterSecret?: string | undefined;
  /** How long a pulled stream's pipe stays open after its last viewer here left; default 30 s. */
  pipeLingerMs?: number;
}

/** What ffmpeg must send, and where: one RTP destination per simulcast layer (low → high), one for audio. */
export interface EdgeRtpInputs {
  videoPorts: number[];
  audioPort: number;
  videoSsrcs: number[];
  audioSsrc: number;
  videoPayloadType: number;
  audioPayloadType: number;
}

/**
 * The simulcast layers (low → high) and audio sent for the current run: by the ladder's ffmpeg, or (one layer) by a
 * WHIP publisher whose own media the viewers get (issue #20).
 */
export interface EdgeProducerShape {
  layers: { ssrc: number; kbps: number }[];
  audio: boolean;
  /**
   * The sender can make a keyframe when asked (a WHIP publisher; ffmpeg cannot): a viewer's PLI (a new viewer, a
   * loss) reaches it through this, instead of waiting for a scheduled keyframe.
   */
  keyFrameRequest?: ((cause: 'join' | 'loss') => void) | undefined;
}

export interface ViewerStats {
  sessionId: string;
  worker: number;
  iceState: string;
  /** Spatial layer now sent (0 = lowest), for video. */
  spatialLayer: number | undefined;
}

/** A mediasoup worker's place in the edge: the ingest worker, or viewer worker `i` (its WebRtcServer's port index). */
export type EdgeWorkerRole = 'ingest' | number;

/** Where a stream not live on this node is live: the origin node's internal URL (undefined: nowhere). */
export type OriginLookup = (streamId: string) => Promise<{ internalUrl: string } | undefined>;

export type WebRtcEdgeEvents = {
  /** A replacement worker runs in place of a dead one (for viewer workers: with its WebRtcServer). */
  restart: [worker: EdgeWorkerRole];
  /** A WHEP viewer's session began on this node (the audience counts it). */
  viewer: [streamId: string, sessionId: string];
};

const VIDEO_PAYLOAD_TYPE = 101;
const AUDIO_PAYLOAD_TYPE = 100;
/** Upper bound on simulcast layers ffmpeg may send (relay inputs are bound up front). */
const MAX_LAYERS = 3;
/** A viewer whose ICE stays disconnected this long, or never connects, is dropped. */
const DISCONNECT_GRACE_MS = 10_000;
const CONNECT_TIMEOUT_MS = 30_000;
/** Delays before successive attempts to start a replacement worker; the last one repeats. */
const RESTART_BACKOFF_MS = [0, 500, 1000, 2000, 5000];
/** How long a WHEP POST (or a new stream) waits for a worker being replaced before it is turned away. */
const RECOVERY_WAIT_MS = 3_000;
/** What a viewer turned away while workers restart is told: try again this soon. */
const RESTARTING_RETRY_AFTER_SEC = 1;

const MEDIA_CODECS: ms.RtpCodecCapability[] = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
  {
    kind: 'video', mimeType: 'video/H264', clockRate: 90000,
    parameters: { 'packetization-mode': 1, 'profile-level-id': '42e01f', 'level-asymmetry-allowed': 1 },
  },
];

/** A viewer router and its own copies of the stream's producers (see `#pipe`). */
interface ViewerRouter {
  router: ms.Router;
  /** Piped producers by the origin producer's id. */
  producers: Map<string, ms.Producer>;
  /** The PipeTransport pair from the origin router, made once. */
  pipe: Promise<{ local: ms.PipeTransport; remote: ms.PipeTransport }> | undefined;
}

/** A pipe this node (the origin) feeds to an edge: a PipeTransport consuming the stream's producers. */
interface OutPipe {
  id: string;
  transport: ms.PipeTransport;
  /** Closes the pipe unless the edge renews it (`keepPipe`) first: an edge that died stops costing. */
  lease: NodeJS.Timeout;
}

/** A stream this node (an edge) pulls from its origin: the pipe's id there, the lease renewal and the linger. */
interface RemoteFeed {
  internalUrl: string;
  pipeId: string;
  /** The next lease renewal. */
  poll: NodeJS.Timeout | undefined;
  /** Set while the stream has no viewer here: the pipe closes when it fires. */
  linger: NodeJS.Timeout | undefined;
  /** Renewals in a row that reached no origin. */
  failures: number;
}

interface Session {
  id: string;
  worker: number;
  /** The viewer router it consumes from (`EdgeStream.routers` key) and its client's address key. */
  routerKey: string;
  client: string;
  transport: ms.WebRtcTransport;
  consumers: ms.Consumer[];
  timer: NodeJS.Timeout | undefined;
  /** Bytes its transport had sent at the last `sentBytes()` read. */
  sentBytes?: number;
}

/**
 * One live stream on the edge: the plain-RTP input (or, pulled from another node, the pipe from there), its producers,
 * a router per worker that has viewers, and the pipes it feeds to edge nodes.
 */
class EdgeStream {
  readonly streamId: string;
  /** The plain-RTP input from ffmpeg; undefined for a stream pulled from another node (`remote`). */
  readonly relay: RtpRelay | undefined;
  readonly inputs: EdgeRtpInputs | undefined;
  /** On the ingest worker; replaced, with the plain transport and producers, when that worker is. */
  origin: ms.Router;
  plain: ms.PlainTransport | undefined;
  /** Pulled from the origin node over a pipe (this node is its edge). */
  remote: RemoteFeed | undefined;
  /** Pipes this node feeds to edges, by id. */
  readonly pipes = new Map<string, OutPipe>();
  /**
   * Viewer routers by `<worker>|<codec key>`: payload types follow the viewers' offers (see whepSdp.ts). A promise, so
   * that viewers arriving together share the router the first of them opens.
   */
  readonly routers = new Map<string, Promise<ViewerRouter>>();
  /** Sessions (and sessions being set up) per viewer router: a router closes with its last one. */
  readonly routerUsers = new Map<string, number>();
  readonly sessions = new Map<string, Session>();
  video: ms.Producer | undefined;
  audio: ms.Producer | undefined;
  shapeKey = '';
  /** The shape the producers were made for: what they are rebuilt with on a new ingest worker. */
  shape: EdgeProducerShape | undefined;
  /** Serialises producer changes and the pipes that follow them. */
  chain: Promise<void> = Promise.resolve();

  constructor(parts: { streamId: string; relay?: RtpRelay; inputs?: EdgeRtpInputs; origin: ms.Router; plain?: ms.PlainTransport; remote?: RemoteFeed }) {
    this.streamId = parts.streamId;
    this.relay = parts.relay;
    this.inputs = parts.inputs;
    this.origin = parts.origin;
    this.plain = parts.plain;
    this.remote = parts.remote;
  }
}

/** Errors a WHEP client can cause, with a catalogue code. */
export class EdgeError extends Error {
  constructor(
    readonly code: 'ONAIR_ERR_STREAM_NOT_LIVE' | 'ONAIR_ERR_WHEP_SESSION_NOT_FOUND' | 'ONAIR_ERR_WHEP_NO_MEDIA' | 'ONAIR_ERR_WHEP_BUSY',
    message: string,
    /** For `ONAIR_ERR_WHEP_BUSY`: when to try again. */
    readonly retryAfterSec?: number,
  ) {
    super(message);
    this.name = 'EdgeError';
  }
}

/** A viewer turned away by a cap tries again after this long. */
const BUSY_RETRY_AFTER_SEC = 5;
/** A pulled stream's pipe stays this long after its last viewer here (the next one joins at once). */
const PIPE_LINGER_MS = 30_000;
/** An edge renews each pipe this often; the origin closes a pipe not renewed for PIPE_LEASE_MS. */
const PIPE_RENEW_MS = 2_000;
const PIPE_LEASE_MS = 15_000;
/** Renewals in a row that may fail (origin unreachable) before the edge gives the pipe up. */
const PIPE_RENEW_FAILURES = 3;

/**
 * The WebRTC edge: viewer workers (one per core by default), a WebRtcServer per viewer worker on one port each, and
 * one ingest worker that holds every stream's origin router (plain-RTP input, producers). Viewer routers, one per
 * stream per worker (and per payload-type set of the viewers' offers), are fed from the origin through PipeTransports;
 * a viewer lands on the least-loaded worker. The ingest worker is apart so that every viewer worker gets its producers
 * through a pipe. Across nodes (issue #17) the same pipes run over the network: an origin feeds each edge node one
 * (`openPipe`), and a pulling edge (`origin` option) takes a stream not live here from its origin's pipe (`#pull`).
 */
export class WebRtcEdge extends TypedEmitter<WebRtcEdgeEvents> {
  readonly #log: Logger;
  readonly #mediasoup: Mediasoup;
  readonly #options: WebRtcEdgeOptions;
  /** Viewer workers and their WebRtcServers by index; an entry is replaced when its worker dies. */
  readonly #workers: ms.Worker[];
  readonly #servers: ms.WebRtcServer[];
  #ingest: ms.Worker;
  readonly #load: number[];
  /** Bytes the transports of closed sessions had sent when last read (see `sentBytes`). */
  #closedSentBytes = 0;
  readonly #limits: WhepLimits;
  /** Sessions per client address key, on this node. */
  readonly #perAddress = new Map<string, number>();
  readonly #streams = new Map<string, EdgeStream>();
  /** Viewer workers that died and whose replacement is not running yet: no viewer is placed on them. */
  readonly #down = new Set<number>();
  /** Set from the ingest worker's death until a new one runs and every stream's origin is rebuilt on it. */
  #ingestRecovery: Promise<void> | undefined;
  /** Resolves once an ingest worker runs (at once, unless one is being replaced). */
  #ingestUp: Promise<void> = Promise.resolve();
  /** Aborted by `close()`: ends the replacements being tried. */
  readonly #closing = new AbortController();
  #closed = false;
  /** Set on a pulling edge (`origin` and `clusterSecret` given). */
  readonly #originClient: OriginClient | undefined;
  /** Pulls being opened, by stream: viewers arriving together share one. */
  readonly #pulling = new Map<string, Promise<EdgeStream | undefined>>();
  /** The worker rewrites header-extension ids per consumer (our patch, see README.md): viewer routers use the offer's. */
  readonly #offerExtensionIds: boolean;

  private constructor(parts: {
    mediasoup: Mediasoup; options: WebRtcEdgeOptions; workers: ms.Worker[]; ingest: ms.Worker; servers: ms.WebRtcServer[]; limits: WhepLimits;
    offerExtensionIds: boolean;
  }) {
    super();
    this.#log = parts.options.log;
    this.#offerExtensionIds = parts.offerExtensionIds;
    this.#mediasoup = parts.mediasoup;
    this.#options = parts.options;
    this.#limits = parts.limits;
    this.#workers = parts.workers;
    this.#ingest = parts.ingest;
    this.#servers = parts.servers;
    this.#load = parts.workers.map(() => 0);
    this.#originClient = parts.options.origin && parts.options.clusterSecret ? new OriginClient(parts.options.clusterSecret) : undefined;
    this.#ingest.on('died', (error) => this.#ingestDied(parts.ingest, error));
    parts.workers.forEach((worker, i) => worker.on('died', (error) => this.#viewerDied(i, worker, error)));
  }

  static async create(options: WebRtcEdgeOptions): Promise<WebRtcEdge> {
    const mediasoup = await loadMediasoup();
    const count = Math.max(1, options.workers ?? os.availableParallelism());
    const workers: ms.Worker[] = [];
    const servers: ms.WebRtcServer[] = [];
    let ingest: ms.Worker | undefined;
    try {
      ingest = await mediasoup.createWorker({ logLevel: 'warn' });
      for (let i = 0; i < count; i++) {
        const { worker, server } = await startViewerWorker(mediasoup, options, i);
        workers.push(worker);
        servers.push(server);
      }
    } catch (error) {
      for (const worker of workers) worker.close();
      ingest?.close();
      throw error;
    }
    if (options.origin && !options.clusterSecret) options.log.warn('ONAIR_CLUSTER_SECRET is unset: this edge cannot pull streams from other nodes');
    const patched = await workerPatches(workers[0]!);
    const offerExtensionIds = patched.headerExtensionIdRewrite === 1;
    if (!offerExtensionIds) {
      options.log.warn({ workerBin: process.env['MEDIASOUP_WORKER_BIN'] }, 'this mediasoup worker lacks OnAir\'s header-extension id patch: '
        + 'browsers whose ids differ from mediasoup\'s (Chromium) get no transport-cc, so their simulcast layer never adapts (run `npm run setup`)');
    } else if (patched.lowestLayerFloor !== 1) {
      options.log.warn({ workerBin: process.env['MEDIASOUP_WORKER_BIN'] }, 'this mediasoup worker lacks OnAir\'s lowest-layer floor: '
        + 'a viewer whose bandwidth estimate falls below the lowest layer gets no video until it recovers (run `npm run setup`)');
    }
    options.log.info({ workers: count, listenIp: options.listenIp, announcedIp: options.announcedIp, port: options.port }, 'WebRTC edge ready');
    return new WebRtcEdge({
      mediasoup, options, workers, ingest, servers, limits: { ...defaultLimits(WHEP_LIMITS), ...options.limits }, offerExtensionIds,
    });
  }

  /**
   * What is being repaired, for `/readyz`: undefined when every worker runs (and every stream's input is on the
   * current ingest worker).
   */
  get degraded(): string | undefined {
    const restarting = [...(this.#ingestRecovery ? ['ingest worker'] : []), ...[...this.#down].sort().map((i) => `viewer worker ${i}`)];
    return restarting.length === 0 ? undefined : `degraded: restarting ${restarting.join(', ')}`;
  }

  get workerCount(): number {
    return this.#workers.length;
  }

  /** Viewers per worker, for placement checks and metrics. */
  get load(): readonly number[] {
    return this.#load;
  }

  /** Pipes this node feeds to edges, over every stream (`onair_webrtc_pipes`). */
  get pipeCount(): number {
    let count = 0;
    for (const stream of this.#streams.values()) count += stream.pipes.size;
    return count;
  }

  /** Streams this node pulls from origins (`onair_webrtc_pulled_streams`). */
  get pulledCount(): number {
    let count = 0;
    for (const stream of this.#streams.values()) if (stream.remote) count += 1;
    return count + this.#pulling.size;
  }

  /** Whether WHEP viewers of streams not live here are served from their origin (a pulling edge). */
  get pulls(): boolean {
    return this.#originClient !== undefined;
  }

  viewers(streamId: string): number {
    return this.#streams.get(streamId)?.sessions.size ?? 0;
  }

  /** WHEP sessions on this node, every stream (`onair_webrtc_sessions`). */
  get sessionCount(): number {
    let count = 0;
    for (const stream of this.#streams.values()) count += stream.sessions.size;
    return count;
  }

  /**
   * Bytes sent to WHEP viewers since the start, never decreasing (`onair_sent_bytes_total{protocol="webrtc"}`): each
   * open transport's own count (its stats, read now), plus what the closed ones had sent when last read.
   */
  async sentBytes(): Promise<number> {
    const sessions = [...this.#streams.values()].flatMap((stream) => [...stream.sessions.values()]);
    await Promise.all(sessions.map(async (session) => {
      const stats = await session.transport.getStats().catch(() => []);
      const bytes = stats[0]?.bytesSent;
      if (typeof bytes === 'number' && bytes > (session.sentBytes ?? 0)) session.sentBytes = bytes;
    }));
    let total = this.#closedSentBytes;
    for (const stream of this.#streams.values()) for (const session of stream.sessions.values()) total += session.sentBytes ?? 0;
    return total;
  }

  hasStream(streamId: string): boolean {
    return this.#streams.has(streamId);
  }

  /** Opens a stream's plain-RTP input; returns where ffmpeg must send. Idempotent per stream. */
  async openStream(streamId: string): Promise<EdgeRtpInputs> {
    const existing = this.#streams.get(streamId);
    if (existing?.inputs) return existing.inputs;
    // Published here now: a copy pulled from another node gives way.
    if (existing) this.closeStream(streamId);
    if (!await settles(this.#ingestUp, RECOVERY_WAIT_MS)) throw new Error('the mediasoup ingest worker is being replaced');
    const { origin, plain } = await this.#originOn(this.#ingest);
    const { relay, inputs } = await RtpRelay.create(MAX_LAYERS + 1);
    relay.connect({ address: plain.tuple.localIp, port: plain.tuple.localPort });
    const base = 0x4f4e0000 + Math.floor(Math.random() * 0xff00); // 'ON' + random: distinct per stream in logs
    const rtpInputs: EdgeRtpInputs = {
      videoPorts: inputs.slice(0, MAX_LAYERS).map((i: RelayInput) => i.port),
      audioPort: inputs[MAX_LAYERS]!.port,
      videoSsrcs: Array.from({ length: MAX_LAYERS }, (_, i) => base + i),
      audioSsrc: base + 0x80,
      videoPayloadType: VIDEO_PAYLOAD_TYPE,
      audioPayloadType: AUDIO_PAYLOAD_TYPE,
    };
    // Each ffmpeg run restarts its numbering on the same SSRCs: the relay keeps them continuous for the viewers.
    relay.track([...rtpInputs.videoSsrcs.map((ssrc) => ({ ssrc, clockRate: 90000 })), { ssrc: rtpInputs.audioSsrc, clockRate: 48000 }]);
    // What arrives on an input is that input's stream, whoever sends it (a WHIP publisher's consumer numbers its own).
    relay.stamp([...rtpInputs.videoSsrcs.map((ssrc) => ({ ssrc, payloadType: VIDEO_PAYLOAD_TYPE })), { ssrc: rtpInputs.audioSsrc, payloadType: AUDIO_PAYLOAD_TYPE }]);
    this.#streams.set(streamId, new EdgeStream({ streamId, relay, inputs: rtpInputs, origin, plain }));
    return rtpInputs;
  }

  /**
   * Where an ad break's ffmpeg sends (issue #18): the stream's own SSRCs and payload types on a second set of relay
   * ports, dropped until `useFeed(streamId, 'ad')`. Undefined for a stream not published here (a pulled copy switches
   * with its origin's feed, upstream of the pipe).
   */
  async adInputs(streamId: string): Promise<EdgeRtpInputs | undefined> {
    const stream = this.#streams.get(streamId);
    if (!stream?.relay || !stream.inputs) return undefined;
    const ports = await stream.relay.adInputs();
    return { ...stream.inputs, videoPorts: ports.slice(0, MAX_LAYERS).map((i) => i.port), audioPort: ports[MAX_LAYERS]!.port };
  }

  /**
   * Which feed the stream's viewers get: the live ladder or the ad break's ffmpeg. Each layer switches at the new
   * feed's next keyframe, audio with it (`RtpRelay.use`); producers, pipes and viewers stay as they are.
   */
  useFeed(streamId: string, feed: RelaySource): void {
    const stream = this.#streams.get(streamId);
    stream?.relay?.use(feed);
    // A sender that makes keyframes when asked (WHIP) makes the one the switch back waits for.
    if (feed === 'live') stream?.shape?.keyFrameRequest?.('join');
  }

  /**
   * ffmpeg (re)starts with these layers: (re)creates the producers when their shape changed. Viewers survive a restart
   * with the same shape (same SSRCs, same producers), e.g. a publisher reconnect within the grace.
   */
  setProducers(streamId: string, shape: EdgeProducerShape): Promise<void> {
    const stream = this.#streams.get(streamId);
    if (!stream?.plain) return Promise.resolve();
    const key = `${shape.layers.map((l) => `${l.ssrc}:${l.kbps}`).join(',')}|${shape.audio}|${shape.keyFrameRequest ? 'pli' : ''}`;
    stream.chain = stream.chain.then(async () => {
      if (stream.shapeKey === key) return;
      stream.shapeKey = key;
      stream.shape = shape;
      await this.#produce(stream, shape);
    }).catch((error: unknown) => {
      // Not made as asked: the same shape asked again is tried again.
      stream.shapeKey = '';
      this.#log.error({ err: error, streamId }, 'could not create producers');
    });
    return stream.chain;
  }

  /** The stream's producers for `shape` on its plain transport, piped to its viewer routers. */
  async #produce(stream: EdgeStream, shape: EdgeProducerShape): Promise<void> {
    const { streamId, plain, inputs } = stream;
    if (!plain || !inputs) return;
    // A new shape closes the old producers (and with them their consumers and pipes, local and to edges).
    stream.video?.close();
    stream.audio?.close();
    const { keyFrameRequest } = shape;
    stream.video = await plain.produce({
      kind: 'video',
      rtpParameters: {
        codecs: [{
          mimeType: 'video/H264', payloadType: VIDEO_PAYLOAD_TYPE, clockRate: 90000, parameters: MEDIA_CODECS[1]!.parameters!,
          // A sender that answers PLIs: mediasoup then asks (the relay drops the RTCP; the trace below carries it on).
          ...(keyFrameRequest ? { rtcpFeedback: [{ type: 'nack', parameter: 'pli' }] } : {}),
        }],
        encodings: shape.layers.map((layer) => ({ ssrc: layer.ssrc, maxBitrate: layer.kbps * 1000 })),
        rtcp: { cname: `onair-${streamId}` },
      },
    });
    if (keyFrameRequest) {
      // mediasoup already spaces the requests of many viewers (its keyframe request manager).
      stream.video.on('trace', (trace) => {
        if (trace.type === 'pli' || trace.type === 'fir') keyFrameRequest('loss');
      });
      await stream.video.enableTraceEvent(['pli', 'fir']);
    }
    stream.audio = shape.audio
      ? await plain.produce({
        kind: 'audio',
        rtpParameters: {
          codecs: [{ mimeType: 'audio/opus', payloadType: AUDIO_PAYLOAD_TYPE, clockRate: 48000, channels: 2 }],
          encodings: [{ ssrc: inputs.audioSsrc }],
          rtcp: { cname: `onair-${streamId}` },
        },
      })
      : undefined;
    for (const pending of stream.routers.values()) {
      const viewer = await pending.catch(() => undefined);
      // A router closed meanwhile (its last viewer left) needs nothing; the others still get the producers.
      if (viewer && !viewer.router.closed) await this.#pipe(stream, viewer).catch((error: unknown) => this.#log.warn({ err: error, streamId }, 'could not pipe producers to a viewer router'));
    }
  }

  /**
   * WHEP: consumers for the offer's media on the least-loaded worker. `answer` builds the SDP from the transport and
   * consumers (the SDP module stays out of this class).
   */
  async createSession<T>(streamId: string, request: {
    /** The viewer's address (per-address cap). */
    remoteAddress: string;
    /** Router codecs with the offer's payload types (and its header-extension ids), and a key shared by offers with the same ones. */
    router: ViewerRouterCodecs;
    rtpCapabilities: ms.RtpCapabilities;
    dtlsParameters: ms.DtlsParameters;
    media: { mid: string; kind: 'audio' | 'video'; rejected: boolean }[];
    answer: (transport: ms.WebRtcTransport, consumers: { mid: string; consumer: ms.Consumer }[]) => T;
  }): Promise<{ sessionId: string; result: T }> {
    const stream = this.#streams.get(streamId) ?? await this.#pull(streamId);
    if (!stream) throw new EdgeError('ONAIR_ERR_STREAM_NOT_LIVE', 'the stream is not live');
    // After the ingest worker's death the chain rebuilds the stream's input: wait for it, a while.
    if (!await settles(stream.chain, RECOVERY_WAIT_MS) || (this.#ingestRecovery && stream.video?.closed !== false)) {
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'the WebRTC edge is restarting a media worker', RESTARTING_RETRY_AFTER_SEC);
    }
    if (!stream.video) throw new EdgeError('ONAIR_ERR_STREAM_NOT_LIVE', 'the stream has no media yet');
    const client = addressKey(request.remoteAddress);
    const held = this.#perAddress.get(client) ?? 0;
    if (held >= this.#limits.maxSessionsPerAddress) {
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', `this address holds ${held} WebRTC sessions, the most one address may`, BUSY_RETRY_AFTER_SEC);
    }
    let worker = this.#leastLoaded();
    if (worker === undefined) {
      // Every viewer worker is being replaced: the first one back serves this viewer.
      await this.next('restart', RECOVERY_WAIT_MS, (role) => role !== 'ingest').catch(() => undefined);
      worker = this.#leastLoaded();
      if (worker === undefined) throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'every WebRTC worker of this node is restarting', RESTARTING_RETRY_AFTER_SEC);
    }
    if (this.#load[worker]! >= this.#limits.maxSessionsPerWorker) {
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'every WebRTC worker of this node is full', BUSY_RETRY_AFTER_SEC);
    }
    const routerKey = `${worker}|${request.router.key}`;
    if (!stream.routers.has(routerKey) && [...stream.routers.keys()].filter((key) => key.startsWith(`${worker}|`)).length >= this.#limits.maxCodecVariants) {
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'too many different codec payload-type sets on this stream now', BUSY_RETRY_AFTER_SEC);
    }
    // Counted from the choice on: viewers arriving together spread over the workers instead of all taking the one that
    // was least loaded when they came.
    this.#load[worker]! += 1;
    this.#perAddress.set(client, held + 1);
    stream.routerUsers.set(routerKey, (stream.routerUsers.get(routerKey) ?? 0) + 1);
    // A pulled stream has a viewer again: no linger (a refusal before this point leaves it running).
    if (stream.remote) {
      clearTimeout(stream.remote.linger);
      stream.remote.linger = undefined;
    }
    let transport: ms.WebRtcTransport | undefined;
    try {
      const viewer = await this.#routerOn(stream, worker, request.router);
      const { router } = viewer;
      transport = await router.createWebRtcTransport({
        webRtcServer: this.#servers[worker]!,
        enableUdp: true,
        enableTcp: true,
        preferUdp: true,
        initialAvailableOutgoingBitrate: 1_000_000,
      });
      const consumers: { mid: string; consumer: ms.Consumer }[] = [];
      await transport.connect({ dtlsParameters: request.dtlsParameters });
      for (const media of request.media) {
        if (media.rejected) continue;
        const origin = media.kind === 'video' ? stream.video : stream.audio;
        const producer = origin && viewer.producers.get(origin.id);
        if (!producer || !router.canConsume({ producerId: producer.id, rtpCapabilities: request.rtpCapabilities })) continue;
        const consumer = await transport.consume({ producerId: producer.id, rtpCapabilities: request.rtpCapabilities, mid: media.mid, paused: false });
        consumers.push({ mid: media.mid, consumer });
      }
      if (consumers.length === 0) {
        throw new EdgeError('ONAIR_ERR_WHEP_NO_MEDIA', stream.audio
          ? 'the offer cannot receive this stream\'s media (H.264 packetization-mode 1 video, opus audio)'
          : 'this stream has no audio, and the offer asks for audio only');
      }
      const result = request.answer(transport, consumers);
      const session: Session = {
        id: randomUUID(), worker, routerKey, client, transport, consumers: consumers.map((c) => c.consumer), timer: undefined,
      };
      this.#track(stream, session);
      return { sessionId: session.id, result };
    } catch (error) {
      transport?.close();
      this.#release(stream, worker, routerKey, client);
      throw error;
    }
  }

  /**
   * A router for one WHIP publisher (issue #20), on the least-loaded viewer worker, reached through that worker's
   * WebRtcServer (the port viewers use: nothing more to open in a firewall). It closes with its worker: the publisher's
   * transport goes, and the publish ends as a dropped connection does.
   */
  async publishRouter(mediaCodecs: ms.RtpCodecCapability[]): Promise<{ router: ms.Router; webRtcServer: ms.WebRtcServer }> {
    if (this.#closed) throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'the WebRTC edge is closing', RESTARTING_RETRY_AFTER_SEC);
    const worker = this.#leastLoaded();
    if (worker === undefined) throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'every WebRTC worker of this node is restarting', RESTARTING_RETRY_AFTER_SEC);
    const router = await this.#workers[worker]!.createRouter({ mediaCodecs });
    return { router, webRtcServer: this.#servers[worker]! };
  }

  /** Viewer routers open for a stream (for tests and metrics). */
  routerCount(streamId: string): number {
    return this.#streams.get(streamId)?.routers.size ?? 0;
  }

  /** A session's (or a failed set-up's) share of its worker, its address and its router; the router closes with the last. */
  #release(stream: EdgeStream, worker: number, routerKey: string, client: string): void {
    this.#load[worker]! -= 1;
    const held = (this.#perAddress.get(client) ?? 1) - 1;
    if (held > 0) this.#perAddress.set(client, held);
    else this.#perAddress.delete(client);
    const users = (stream.routerUsers.get(routerKey) ?? 1) - 1;
    if (users > 0) {
      stream.routerUsers.set(routerKey, users);
      return;
    }
    stream.routerUsers.delete(routerKey);
    const pending = stream.routers.get(routerKey);
    stream.routers.delete(routerKey);
    void pending?.then((viewer) => viewer.router.close(), () => undefined);
    this.#lingerIfIdle(stream);
  }

  /** A pulled stream with no viewer here (its last left, or its first was refused): the pipe lingers, then closes. */
  #lingerIfIdle(stream: EdgeStream): void {
    const { remote } = stream;
    if (!remote || stream.routerUsers.size > 0 || remote.linger || this.#streams.get(stream.streamId) !== stream) return;
    remote.linger = setTimeout(() => {
      remote.linger = undefined;
      if (stream.routerUsers.size === 0) this.closeStream(stream.streamId);
    }, this.#options.pipeLingerMs ?? PIPE_LINGER_MS);
  }

  /** WHEP DELETE: frees the viewer's transport and consumers. */
  closeSession(streamId: string, sessionId: string): void {
    const stream = this.#streams.get(streamId);
    const session = stream?.sessions.get(sessionId);
    if (!stream || !session) throw new EdgeError('ONAIR_ERR_WHEP_SESSION_NOT_FOUND', 'no such WHEP session');
    this.#drop(stream, session, 'deleted');
  }

  /** Limits what a viewer's transport may send (the bandwidth estimate then picks a lower simulcast layer). */
  async limitSession(streamId: string, sessionId: string, bitrate: number): Promise<void> {
    const session = this.#streams.get(streamId)?.sessions.get(sessionId);
    if (!session) throw new EdgeError('ONAIR_ERR_WHEP_SESSION_NOT_FOUND', 'no such WHEP session');
    await session.transport.setMaxOutgoingBitrate(bitrate);
  }

  sessionStats(streamId: string): ViewerStats[] {
    const stream = this.#streams.get(streamId);
    if (!stream) return [];
    return [...stream.sessions.values()].map((s) => ({
      sessionId: s.id,
      worker: s.worker,
      iceState: s.transport.iceState,
      spatialLayer: s.consumers.find((c) => c.kind === 'video')?.currentLayers?.spatialLayer,
    }));
  }

  /** The stream ended: every viewer is dropped and the input closed. */
  closeStream(streamId: string): void {
    const stream = this.#streams.get(streamId);
    if (!stream) return;
    this.#streams.delete(streamId);
    for (const session of [...stream.sessions.values()]) this.#drop(stream, session, 'stream ended');
    for (const pipe of [...stream.pipes.values()]) this.#closePipe(stream, pipe, 'stream ended');
    const { remote } = stream;
    if (remote) {
      clearTimeout(remote.poll);
      clearTimeout(remote.linger);
      void this.#originClient?.close(remote.internalUrl, streamId, remote.pipeId);
      this.#log.info({ streamId, pipeId: remote.pipeId }, 'pipe from the origin closed');
    }
    stream.relay?.close();
    for (const pending of stream.routers.values()) void pending.then((viewer) => viewer.router.close(), () => undefined);
    stream.origin.close();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort();
    for (const streamId of [...this.#streams.keys()]) this.closeStream(streamId);
    for (const worker of this.#workers) worker.close();
    this.#ingest.close();
  }

  // ---- Pipes between nodes (issue #17): this node as an origin feeding edges, or as an edge pulling from origins ----

  /** The announced (or listen) address of this node's pipe transports: what the other node sends to. */
  #pipeListenIp(): ms.TransportListenIp {
    return { ip: this.#options.listenIp, ...(this.#options.announcedIp ? { announcedIp: this.#options.announcedIp } : {}) };
  }

  static #endpointOf(transport: ms.PipeTransport): PipeEndpoint {
    return { ip: transport.tuple.localIp, port: transport.tuple.localPort, srtpParameters: transport.srtpParameters! };
  }

  /**
   * Origin side: a pipe to an edge's PipeTransport at `remote` (`parsePipeEndpoint` checked it), consuming the
   * stream's producers. The answer carries the consumers' RTP parameters (every simulcast layer: the edge's viewers
   * pick theirs there). Closed by `closePipe`, by its lease running out, and when the producers close (stream end, new
   * shape): the edge learns it at its next renewal and ends its viewers' sessions, as local viewers' end here.
   */
  async openPipe(streamId: string, remote: PipeEndpoint): Promise<PipeOffer> {
    const stream = this.#streams.get(streamId);
    if (!stream || stream.remote) throw new EdgeError('ONAIR_ERR_STREAM_NOT_LIVE', 'the stream is not live on this node');
    if (!await settles(stream.chain, RECOVERY_WAIT_MS) || this.#ingestRecovery) {
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'the WebRTC edge is restarting a media worker', RESTARTING_RETRY_AFTER_SEC);
    }
    const producers = [stream.video, stream.audio].filter((p): p is ms.Producer => p !== undefined && !p.closed);
    if (!stream.video || producers.length === 0) throw new EdgeError('ONAIR_ERR_STREAM_NOT_LIVE', 'the stream has no media yet');
    if (stream.pipes.size >= this.#limits.maxPipesPerStream || this.pipeCount >= this.#limits.maxPipes) {
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'this origin feeds as many edges as it may', BUSY_RETRY_AFTER_SEC);
    }
    const transport = await stream.origin.createPipeTransport({ listenIp: this.#pipeListenIp(), enableRtx: true, enableSrtp: true });
    const pipe: OutPipe = { id: randomUUID(), transport, lease: setTimeout(() => this.#closePipe(stream, pipe, 'lease expired'), PIPE_LEASE_MS) };
    stream.pipes.set(pipe.id, pipe);
    try {
      await transport.connect(remote);
      const offered: PipeOffer['producers'] = [];
      for (const producer of producers) {
        const consumer = await transport.consume({ producerId: producer.id });
        // New producers (another shape) or none (the stream ended): the edge must pipe again, or stop.
        consumer.on('producerclose', () => this.#closePipe(stream, pipe, 'producers replaced or closed'));
        offered.push({ kind: consumer.kind, rtpParameters: consumer.rtpParameters, paused: consumer.producerPaused });
      }
      transport.on('routerclose', () => this.#closePipe(stream, pipe, 'origin router closed'));
      this.#log.info({ streamId, pipeId: pipe.id, edge: `${remote.ip}:${remote.port}` }, 'pipe to an edge opened');
      return { pipeId: pipe.id, ...WebRtcEdge.#endpointOf(transport), producers: offered };
    } catch (error) {
      this.#closePipe(stream, pipe, 'could not be set up');
      throw error;
    }
  }

  /** Origin side: the edge renews a pipe's lease; false when the pipe is gone (the edge then closes its side). */
  keepPipe(streamId: string, pipeId: string): boolean {
    const stream = this.#streams.get(streamId);
    const pipe = stream?.pipes.get(pipeId);
    if (!stream || !pipe) return false;
    pipe.lease.refresh();
    return true;
  }

  /** Origin side: the edge has no viewer left for it; false when there was no such pipe. */
  closePipe(streamId: string, pipeId: string): boolean {
    const stream = this.#streams.get(streamId);
    const pipe = stream?.pipes.get(pipeId);
    if (!stream || !pipe) return false;
    this.#closePipe(stream, pipe, 'closed by the edge');
    return true;
  }

  #closePipe(stream: EdgeStream, pipe: OutPipe, reason: string): void {
    if (stream.pipes.get(pipe.id) !== pipe) return;
    stream.pipes.delete(pipe.id);
    clearTimeout(pipe.lease);
    pipe.transport.close();
    this.#log.info({ streamId: stream.streamId, pipeId: pipe.id, reason }, 'pipe to an edge closed');
  }

  /**
   * Edge side: the stream from its origin, once for every viewer here. A router on the ingest worker takes the pipe's
   * producers and stands in for a local stream's origin router: viewer routers are fed from it as for a local stream.
   * Undefined when no origin has the stream live.
   */
  #pull(streamId: string): Promise<EdgeStream | undefined> {
    const client = this.#originClient;
    if (!client) return Promise.resolve(undefined);
    const pending = this.#pulling.get(streamId);
    if (pending) return pending;
    if (this.pulledCount >= this.#limits.maxPipes) {
      return Promise.reject(new EdgeError('ONAIR_ERR_WHEP_BUSY', 'this edge pulls as many streams as it may', BUSY_RETRY_AFTER_SEC));
    }
    const pulling = this.#openPull(client, streamId);
    this.#pulling.set(streamId, pulling);
    void pulling.finally(() => this.#pulling.delete(streamId)).catch(() => undefined);
    return pulling;
  }

  async #openPull(client: OriginClient, streamId: string): Promise<EdgeStream | undefined> {
    let found: { internalUrl: string } | undefined;
    try {
      found = await this.#options.origin!(streamId);
    } catch (error) {
      this.#log.warn({ streamId, err: (error as Error).message }, 'could not look up the stream\'s origin');
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'the stream\'s origin cannot be found now', RESTARTING_RETRY_AFTER_SEC);
    }
    if (!found) return undefined;
    if (!await settles(this.#ingestUp, RECOVERY_WAIT_MS)) {
      throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'the WebRTC edge is restarting a media worker', RESTARTING_RETRY_AFTER_SEC);
    }
    const origin = await this.#ingest.createRouter({ mediaCodecs: MEDIA_CODECS });
    try {
      const transport = await origin.createPipeTransport({ listenIp: this.#pipeListenIp(), enableRtx: true, enableSrtp: true });
      const offer = await client.open(found.internalUrl, streamId, WebRtcEdge.#endpointOf(transport));
      if (offer === 'not-live') {
        origin.close();
        return undefined;
      }
      if (offer === 'unavailable') throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'the stream\'s origin does not answer now', RESTARTING_RETRY_AFTER_SEC);
      const remote: RemoteFeed = { internalUrl: found.internalUrl, pipeId: offer.pipeId, poll: undefined, linger: undefined, failures: 0 };
      const stream = new EdgeStream({ streamId, origin, remote });
      try {
        await transport.connect({ ip: offer.ip, port: offer.port, srtpParameters: offer.srtpParameters });
        for (const p of offer.producers) {
          const producer = await transport.produce({ kind: p.kind, rtpParameters: p.rtpParameters, paused: p.paused });
          if (p.kind === 'video') stream.video = producer;
          else stream.audio = producer;
        }
      } catch (error) {
        void client.close(found.internalUrl, streamId, offer.pipeId);
        this.#log.warn({ streamId, err: (error as Error).message }, 'the origin\'s pipe offer could not be used');
        throw new EdgeError('ONAIR_ERR_WHEP_BUSY', 'the stream\'s origin answered with a pipe this edge cannot use', RESTARTING_RETRY_AFTER_SEC);
      }
      if (!stream.video || this.#closed || this.#streams.has(streamId)) {
        void client.close(found.internalUrl, streamId, offer.pipeId);
        origin.close();
        return this.#streams.get(streamId);
      }
      this.#streams.set(streamId, stream);
      this.#renewPipe(client, stream, remote);
      // Until the viewer that asked for it is counted (it may yet be refused by a cap).
      this.#lingerIfIdle(stream);
      this.#log.info({ streamId, pipeId: offer.pipeId, origin: `${offer.ip}:${offer.port}` }, 'pipe from the origin opened');
      return stream;
    } catch (error) {
      origin.close();
      throw error;
    }
  }

  /** Edge side: renews the pipe's lease at the origin until the stream closes here; the origin's `gone` ends it. */
  #renewPipe(client: OriginClient, stream: EdgeStream, remote: RemoteFeed): void {
    remote.poll = setTimeout(async () => {
      const state = await client.keep(remote.internalUrl, stream.streamId, remote.pipeId);
      if (this.#streams.get(stream.streamId) !== stream) return;
      remote.failures = state === 'unreachable' ? remote.failures + 1 : 0;
      if (state === 'gone' || remote.failures >= PIPE_RENEW_FAILURES) {
        this.#log.info({ streamId: stream.streamId, pipeId: remote.pipeId, state }, 'the origin ended the pipe: its viewers here leave');
        this.closeStream(stream.streamId);
        return;
      }
      this.#renewPipe(client, stream, remote);
    }, PIPE_RENEW_MS);
  }

  /** The least-loaded viewer worker that runs; undefined while every one is being replaced. */
  #leastLoaded(): number | undefined {
    let best: number | undefined;
    for (let i = 0; i < this.#load.length; i++) {
      if (this.#down.has(i)) continue;
      if (best === undefined || this.#load[i]! < this.#load[best]!) best = i;
    }
    return best;
  }

  /** A stream's origin router and plain-RTP transport on `ingest`. */
  async #originOn(ingest: ms.Worker): Promise<{ origin: ms.Router; plain: ms.PlainTransport }> {
    const origin = await ingest.createRouter({ mediaCodecs: MEDIA_CODECS });
    try {
      const plain = await origin.createPlainTransport({ listenIp: '127.0.0.1', rtcpMux: true, comedia: true });
      return { origin, plain };
    } catch (error) {
      origin.close();
      throw error;
    }
  }

  /**
   * A viewer worker died: mediasoup closed its routers, and with them its viewers' transports. Those sessions are
   * ended (a player sees its connection go and POSTs again), the worker's viewer routers forgotten, and a replacement
   * started at the same index — the same port when one is configured: the dead process's sockets went with it.
   * Meanwhile new viewers go to the other workers.
   */
  #viewerDied(index: number, worker: ms.Worker, error: Error): void {
    if (this.#closed || this.#workers[index] !== worker) return;
    this.#down.add(index);
    for (const stream of this.#streams.values()) {
      // Already dropped as their transports closed with the worker's routers ('routerclose'); this makes sure.
      for (const session of [...stream.sessions.values()]) if (session.worker === index) this.#drop(stream, session, 'worker died');
      // Routers still opening for a viewer being set up fail on their own; none of this worker's is reused.
      for (const key of [...stream.routers.keys()]) if (key.startsWith(`${index}|`)) stream.routers.delete(key);
    }
    this.#log.error({ worker: index, pid: worker.pid, err: error.message }, 'mediasoup viewer worker died (its viewers\' sessions ended); replacing it');
    void this.#restart(index, async () => {
      const { worker: next, server } = await startViewerWorker(this.#mediasoup, this.#options, index);
      if (this.#closed) {
        next.close();
        return;
      }
      this.#workers[index] = next;
      this.#servers[index] = server;
      next.on('died', (e) => this.#viewerDied(index, next, e));
      this.#down.delete(index);
      this.#log.warn({ worker: index, pid: next.pid }, 'mediasoup viewer worker replaced');
    });
  }

  /**
   * The ingest worker died: every stream's origin router, plain transport and producers went with it, and so did the
   * pipes to the viewer routers. Every viewer of every stream is dropped (their players POST again) and their viewer
   * routers closed; a new ingest worker is started, each stream's origin rebuilt on it with the producers' current shape
   * and its relay re-pointed at the new plain transport (ffmpeg keeps sending to the relay's ports, untouched).
   */
  #ingestDied(worker: ms.Worker, error: Error): void {
    if (this.#closed || this.#ingest !== worker) return;
    let dropped = 0;
    // Pulled streams' pipes went with the worker: dropped now, the next viewer opens a new pipe.
    for (const stream of [...this.#streams.values()]) {
      if (!stream.remote) continue;
      dropped += stream.sessions.size;
      this.closeStream(stream.streamId);
    }
    for (const stream of this.#streams.values()) {
      for (const session of [...stream.sessions.values()]) {
        this.#drop(stream, session, 'ingest worker died');
        dropped += 1;
      }
      for (const pending of stream.routers.values()) void pending.then((viewer) => viewer.router.close(), () => undefined);
      stream.routers.clear();
    }
    this.#log.error({ worker: 'ingest', pid: worker.pid, err: error.message, viewersDropped: dropped }, 'mediasoup ingest worker died; replacing it');
    const up = this.#restart('ingest', async () => {
      const next = await this.#mediasoup.createWorker({ logLevel: 'warn' });
      if (this.#closed) {
        next.close();
        return;
      }
      this.#ingest = next;
      next.on('died', (e) => this.#ingestDied(next, e));
      this.#log.warn({ worker: 'ingest', pid: next.pid }, 'mediasoup ingest worker replaced');
    });
    this.#ingestUp = up;
    // Chained now: a WHEP POST for a stream waits on its chain, so it waits for the rebuild instead of meeting the dead
    // producers.
    const rebuilt = [...this.#streams.values()].map((stream) => {
      stream.chain = stream.chain.then(async () => {
        await up;
        await this.#rebuildOrigin(stream);
      }).catch((e: unknown) => this.#log.error({ err: e, streamId: stream.streamId }, 'could not rebuild the stream\'s WebRTC input'));
      return stream.chain;
    });
    const recovery = Promise.all(rebuilt).then(() => {
      if (this.#ingestRecovery === recovery) this.#ingestRecovery = undefined;
    });
    this.#ingestRecovery = recovery;
  }

  async #rebuildOrigin(stream: EdgeStream): Promise<void> {
    if (this.#closed || this.#streams.get(stream.streamId) !== stream || !stream.origin.closed) return;
    const { origin, plain } = await this.#originOn(this.#ingest);
    if (this.#streams.get(stream.streamId) !== stream) {
      origin.close();
      return;
    }
    stream.origin = origin;
    stream.plain = plain;
    // comedia: the new transport learns the relay's address from the relay's next packet.
    stream.relay?.connect({ address: plain.tuple.localIp, port: plain.tuple.localPort });
    stream.video = undefined;
    stream.audio = undefined;
    if (stream.shape) await this.#produce(stream, stream.shape);
    this.#log.info({ streamId: stream.streamId }, 'stream\'s WebRTC input rebuilt on the new ingest worker');
  }

  /** Starts a replacement with backoff until one runs (or the edge closes); each success is a `restart`. */
  async #restart(role: EdgeWorkerRole, start: () => Promise<void>): Promise<void> {
    const started = await restartWithBackoff(start, {
      backoffMs: RESTART_BACKOFF_MS,
      signal: this.#closing.signal,
      onFailure: (error, attempt, retryInMs) => this.#log.error({ worker: role, attempt, err: (error as Error).message, retryInMs },
        'could not start a replacement mediasoup worker'),
    });
    if (started) this.safeEmit('restart', role);
  }

  #routerOn(stream: EdgeStream, worker: number, codecs: ViewerRouterCodecs): Promise<ViewerRouter> {
    const key = `${worker}|${codecs.key}`;
    const existing = stream.routers.get(key);
    if (existing) return existing;
    const opening = (async (): Promise<ViewerRouter> => {
      const viewer: ViewerRouter = {
        router: await this.#workers[worker]!.createRouter({ mediaCodecs: codecs.mediaCodecs }), producers: new Map(), pipe: undefined,
      };
      // Before any producer is piped in: their consumers then carry the viewer's ids (the patched worker sends on them).
      if (this.#offerExtensionIds && codecs.headerExtensionIds) useOfferHeaderExtensionIds(viewer.router.rtpCapabilities, codecs.headerExtensionIds);
      try {
        await this.#pipe(stream, viewer);
      } catch (error) {
        viewer.router.close();
        throw error;
      }
      return viewer;
    })();
    stream.routers.set(key, opening);
    // A router that could not be fed is forgotten: the next viewer tries afresh.
    opening.catch(() => {
      if (stream.routers.get(key) === opening) stream.routers.delete(key);
    });
    return opening;
  }

  /**
   * Mirrors the origin's producers into a viewer router, as `router.pipeToRouter` does but with producer ids of their
   * own: `pipeToRouter` keeps the origin's id, which a worker can hold only once, so a second router of one worker
   * (viewers whose offers have other payload types, e.g. Chromium and Firefox) could not get the stream.
   */
  async #pipe(stream: EdgeStream, viewer: ViewerRouter): Promise<void> {
    viewer.pipe ??= this.#pipeTransports(stream.origin, viewer.router);
    const { local, remote } = await viewer.pipe;
    for (const producer of [stream.video, stream.audio]) {
      if (!producer || producer.closed || viewer.producers.has(producer.id)) continue;
      // An audio-only (or video-only) viewer's router has no codec of the other kind: nothing to pipe there.
      if (!viewer.router.rtpCapabilities.codecs?.some((codec) => codec.kind === producer.kind)) continue;
      const pipeConsumer = await local.consume({ producerId: producer.id });
      let pipeProducer: ms.Producer;
      try {
        pipeProducer = await remote.produce({ kind: pipeConsumer.kind, rtpParameters: pipeConsumer.rtpParameters, paused: pipeConsumer.producerPaused });
      } catch (error) {
        pipeConsumer.close();
        throw error;
      }
      viewer.producers.set(producer.id, pipeProducer);
      pipeConsumer.observer.on('close', () => pipeProducer.close());
      pipeProducer.observer.on('close', () => {
        pipeConsumer.close();
        viewer.producers.delete(producer.id);
      });
    }
  }

  async #pipeTransports(origin: ms.Router, router: ms.Router): Promise<{ local: ms.PipeTransport; remote: ms.PipeTransport }> {
    const [local, remote] = await Promise.all([
      origin.createPipeTransport({ listenIp: '127.0.0.1' }),
      router.createPipeTransport({ listenIp: '127.0.0.1' }),
    ]);
    try {
      await Promise.all([
        local.connect({ ip: remote.tuple.localIp, port: remote.tuple.localPort }),
        remote.connect({ ip: local.tuple.localIp, port: local.tuple.localPort }),
      ]);
    } catch (error) {
      local.close();
      remote.close();
      throw error;
    }
    local.observer.on('close', () => remote.close());
    remote.observer.on('close', () => local.close());
    return { local, remote };
  }

  #track(stream: EdgeStream, session: Session): void {
    stream.sessions.set(session.id, session);
    this.safeEmit('viewer', stream.streamId, session.id);
    const { transport } = session;
    session.timer = setTimeout(() => {
      if (transport.iceState !== 'connected' && transport.iceState !== 'completed') this.#drop(stream, session, 'never connected');
    }, CONNECT_TIMEOUT_MS);
    transport.on('icestatechange', (state) => {
      clearTimeout(session.timer);
      if (state === 'disconnected') {
        session.timer = setTimeout(() => this.#drop(stream, session, 'ICE disconnected'), DISCONNECT_GRACE_MS);
      }
    });
    transport.on('dtlsstatechange', (state) => {
      if (state === 'failed' || state === 'closed') this.#drop(stream, session, `DTLS ${state}`);
      // A sender that makes keyframes when asked (WHIP) is asked now that the viewer can take one: its consumer asked
      // when it was made (answered before the viewer could take it), and mediasoup holds the one it makes now back
      // for up to a second while that first one is pending.
      if (state === 'connected') stream.shape?.keyFrameRequest?.('join');
    });
    // Its worker died (the router and WebRtcServer close with it), also while the session was being set up.
    transport.on('routerclose', () => this.#drop(stream, session, 'router closed'));
    transport.on('listenserverclose', () => this.#drop(stream, session, 'WebRtcServer closed'));
    if (transport.closed) this.#drop(stream, session, 'router closed');
    for (const consumer of session.consumers) {
      consumer.on('producerclose', () => {
        if (session.consumers.every((c) => c.closed)) this.#drop(stream, session, 'producer closed');
      });
    }
  }

  #drop(stream: EdgeStream, session: Session, reason: string): void {
    if (!stream.sessions.delete(session.id)) return;
    this.#closedSentBytes += session.sentBytes ?? 0;
    clearTimeout(session.timer);
    session.transport.close();
    this.#release(stream, session.worker, session.routerKey, session.client);
    this.#log.debug({ streamId: stream.streamId, sessionId: session.id, reason }, 'WebRTC viewer left');
  }
}

/** What a viewer router is made with (whepSdp.ts `routerMediaCodecsFor`). */
export interface ViewerRouterCodecs {
  key: string;
  mediaCodecs: ms.RtpCodecCapability[];
  /** The offer's header-extension ids; used when the worker can send on them. */
  headerExtensionIds?: RouterHeaderExtensionId[];
}

/** What of our worker patch this worker was built with (it says so in its dump; see README.md). */
async function workerPatches(worker: ms.Worker): Promise<{ headerExtensionIdRewrite?: number; lowestLayerFloor?: number }> {
  const dump = await worker.dump() as { onair?: { headerExtensionIdRewrite?: number; lowestLayerFloor?: number } };
  return dump.onair ?? {};
}

/** A viewer worker with its WebRtcServer on `port + index` (or a free port). */
async function startViewerWorker(mediasoup: Mediasoup, options: WebRtcEdgeOptions, index: number): Promise<{ worker: ms.Worker; server: ms.WebRtcServer }> {
  const worker = await mediasoup.createWorker({ logLevel: 'warn' });
  const port = options.port === 0 ? undefined : options.port + index;
  const listen = (protocol: 'udp' | 'tcp'): ms.WebRtcServerListenInfo => ({
    protocol, ip: options.listenIp, ...(options.announcedIp ? { announcedIp: options.announcedIp } : {}), ...(port === undefined ? {} : { port }),
  });
  try {
    return { worker, server: await worker.createWebRtcServer({ listenInfos: [listen('udp'), listen('tcp')] }) };
  } catch (error) {
    worker.close();
    throw error;
  }
}

/** Whether `promise` settles within `ms` (its outcome is the caller's business). */
async function settles(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    promise.then(() => true, () => true),
    new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return settled;
}
