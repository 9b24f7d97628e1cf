import { TypedEmitter } from '../lib/emitter.js';
import type { Logger } from '../lib/log.js';
import type { PublishSession } from '../ingest/index.js';
import { LiveTranscoder, type LadderPlan, type LoadGovernor, type RtpFeed, type VideoEncoderKind } from '../live-transcoder/index.js';
import { StreamPackager, type Continuation } from '../ll-hls-packager/index.js';
import type { EventRecorder } from '../vod-archive/index.js';
import type { EdgeRtpInputs, WebRtcEdge } from '../webrtc-edge/index.js';
import type { Config } from './config.js';
import { closeEventCues, openEventCues, WebRtcAds, type LiveEventCues } from '../cues/index.js';

/** The one layer of a publisher's own media, as the producers declare it (its `maxBitrate`) and an ad is encoded at most. */
const OWN_MEDIA_KBPS = 4000;

export type LiveEventEvents = {
  /** The transcoder (re)started with this ladder plan; the packager has taken it already. */
  plan: [LadderPlan];
};

/** What a live event is built from: its ids, its recording, and narrow handles on the rooms it feeds. */
export interface LiveEventOptions {
  streamId: string;
  eventId: string;
  startedAt: number;
  /** The event's recording; undefined when it cannot be recorded (no replay or archive for it). */
  recorder: EventRecorder | undefined;
  /** The WebRTC room's plain-RTP input for the stream; undefined when WebRTC is off. */
  rtpInputs: EdgeRtpInputs | undefined;
  config: Pick<Config, 'dataDir' | 'ffmpegPath' | 'x264Preset' | 'partTargetMs' | 'vaapiDevice' | 'ladderHeights' | 'passthrough'
    | 'segmentTargetMs' | 'webrtcLayers' | 'dvrWindowMs' | 'holdBackParts'>;
  encoder: VideoEncoderKind;
  /** The node's logger with the stream's id. */
  log: Logger;
  edge: (Pick<WebRtcEdge, 'setProducers' | 'closeStream'> & Partial<Pick<WebRtcEdge, 'adInputs' | 'useFeed'>>) | undefined;
  governor: Pick<LoadGovernor, 'add' | 'remove'>;
  /** The transcoder exited unexpectedly (it restarts on its own). */
  transcoderRestarted: (streamId: string) => void;
  /** A part went out, this long (ms) after its media's end reached the ingest (onair_llhls_part_delay_seconds). */
  partPublished?: (delayMs: number) => void;
  /** The event continues here from another origin (issue #17): its LL-HLS numbering goes on from there. */
  continueFrom?: Readonly<Record<string, Continuation>>;
  /** A segment of some rendition completed (the hand-over record is written again). */
  segmentDone?: () => void;
}

/**
 * One live event of one stream: its transcoder (the ladder), its LL-HLS packager and its WebRTC stream, from the
 * first publish until the event ends. A publisher that reconnects within the grace is attached again to the same
 * event. close() cascades to everything the event built and is idempotent.
 */
export class LiveEvent extends TypedEmitter<LiveEventEvents> {
  readonly streamId: string;
  readonly eventId: string;
  readonly startedAt: number;
  /** Since when this node holds the event (later than `startedAt` when it continued here from another origin). */
  readonly heldSince = Date.now();
  readonly transcoder: LiveTranscoder;
  readonly packager: StreamPackager;
  /** The event's recording (its source and its ladder's segments): the replay and the archive's input. */
  readonly recorder: EventRecorder | undefined;
  readonly cues: LiveEventCues;
  readonly #edge: LiveEventOptions['edge'];
  readonly #governor: LiveEventOptions['governor'];
  /** Ad breaks for the WebRTC viewers (the relay switches to the ads and back); undefined without WebRTC. */
  readonly #webrtcAds: WebRtcAds | undefined;
  /** The publisher now; undefined during the reconnect grace. */
  #publisher: PublishSession | undefined;
  /** The WebRTC input's ports and SSRCs (undefined without WebRTC). */
  readonly #rtpInputs: EdgeRtpInputs | undefined;
  readonly #log: Logger;
  /** Set while the WebRTC viewers get the publisher's own media (a WHIP publisher, issue #20): whether it has audio. */
  #ownMedia: { audio: boolean } | undefined;
  /** Publishers whose own media could not be sent to the WebRTC viewers: the ladder's layers serve them. */
  readonly #ownMediaFailed = new WeakSet<PublishSession>();
  #closing: Promise<void> | undefined;

  constructor(options: LiveEventOptions) {
    super();
    const { streamId, config, log, rtpInputs } = options;
    this.streamId = streamId;
    this.eventId = options.eventId;
    this.startedAt = options.startedAt;
    this.recorder = options.recorder;
    this.#edge = options.edge;
    this.#rtpInputs = rtpInputs;
    this.#log = log;
    this.#governor = options.governor;
    this.cues = openEventCues(config.dataDir, streamId, log);
    const tickerFile = this.cues.tickerFile;
    const transcoder = new LiveTranscoder({
      streamId,
      ...(tickerFile ? { tickerFile } : {}),
      // A publisher whose own media the WebRTC viewers get (WHIP): the ladder encodes no WebRTC layers (unless that
      // media could not be sent: then the ladder's layers serve them).
      ...(rtpInputs ? { rtp: () => (this.#publisher?.passthrough && !this.#ownMediaFailed.has(this.#publisher) ? undefined : rtpInputs) } : {}),
      ffmpegPath: config.ffmpegPath,
      encoder: options.encoder,
      x264Preset: config.x264Preset,
      partTargetMs: config.partTargetMs,
      vaapiDevice: config.vaapiDevice,
      ladder: {
        heights: config.ladderHeights,
        passthrough: config.passthrough,
        gopMs: config.segmentTargetMs,
        webrtcHeights: this.#edge ? config.webrtcLayers : [],
      },
      log: log.child({ component: 'transcoder' }),
    });
    this.transcoder = transcoder;
    this.#governor.add(transcoder);
    transcoder.on('exit', ({ expected }) => {
      if (!expected) options.transcoderRestarted(streamId);
    });
    const edge = this.#edge;
    this.#webrtcAds = edge?.adInputs && edge.useFeed && rtpInputs ? new WebRtcAds({
      streamId,
      ffmpegPath: config.ffmpegPath,
      encoder: options.encoder,
      x264Preset: config.x264Preset,
      vaapiDevice: config.vaapiDevice,
      adInputs: () => edge.adInputs!(streamId),
      useFeed: (feed) => edge.useFeed!(streamId, feed),
      log: log.child({ component: 'webrtc-ads' }),
    }) : undefined;
    const webrtcAds = this.#webrtcAds;
    const recorder = this.recorder;
    const segmentDone = options.segmentDone;
    const packager = new StreamPackager({
      streamId,
      partTargetMs: config.partTargetMs,
      segmentTargetMs: config.segmentTargetMs,
      holdBackParts: config.holdBackParts,
      windowMs: config.dvrWindowMs,
      ...(options.partPublished ? { onPart: options.partPublished } : {}),
      ...(options.continueFrom ? { continueFrom: options.continueFrom } : {}),
      // WebRTC viewers switch to the break's ads and back on the playlists' boundaries.
      ...(webrtcAds ? {
        onBreak: (cue, phase) => (phase === 'start'
          ? webrtcAds.start(cue, this.packager.adsOf(cue.id), transcoder.rtp ?? this.#ownMediaFeed())
          : webrtcAds.end(cue)),
      } : {}),
      ...(recorder || segmentDone ? {
        onSegment: (rendition, segment, init) => {
          recorder?.addSegment(rendition, segment, init);
          segmentDone?.();
        },
      } : {}),
    });
    this.packager = packager;
    transcoder.on('start', ({ generation, plan }) => {
      packager.setPlan(plan);
      // The run is about to be fed the publisher's prelude (in this same tick): its media is dated from when that
      // reached the ingest (EXT-X-PROGRAM-DATE-TIME = ingest time).
      const dated = this.#publisher?.preludeDate();
      if (dated) packager.runInput(generation, dated);
      this.safeEmit('plan', plan);
      const feed = transcoder.rtp;
      if (this.#edge && feed) {
        void this.#edge.setProducers(streamId, {
          layers: feed.video.map((v) => ({ ssrc: v.ssrc, kbps: v.layer.kbps })),
          audio: feed.audio !== undefined,
        });
      }
    });
    transcoder.on('init', ({ generation, rendition, init }) => packager.playlist(rendition.name)?.addInit(generation, init));
    transcoder.on('fragment', ({ generation, rendition, fragment }) => packager.addFragment(generation, rendition.name, fragment));
  }

  /** The publisher now; undefined during the reconnect grace. */
  get publisher(): PublishSession | undefined {
    return this.#publisher;
  }

  /** The event's recording waits for disk space. */
  get diskFull(): boolean {
    return this.recorder?.diskFull === true;
  }

  /**
   * Feeds the event from `session` (its first publisher, or one that came back within the grace) until it closes.
   * Backpressure: a backlogged ffmpeg pauses the publisher's socket until it drains.
   */
  attach(session: PublishSession): void {
    if (session.closed) return;
    this.#publisher = session;
    if (!session.passthrough) this.#ownMedia = undefined;
    else if (this.#edge && this.#rtpInputs) void this.#sendOwnMedia(session, this.#rtpInputs);
    let record: ((tag: Buffer) => void) | undefined;
    const feed = (tag: Buffer): void => {
      if (!this.transcoder.write(tag)) session.pause();
      record?.(tag);
    };
    const resume = (): void => session.resume();
    const start = (): void => {
      this.transcoder.on('drain', resume);
      this.transcoder.attach({ source: session.source!, prelude: () => session.prelude() });
      record = this.recorder?.startSource(() => session.prelude());
      session.on('tag', feed);
    };
    if (session.source) start();
    else session.once('source', start);
    session.once('close', () => {
      session.off('tag', feed);
      this.transcoder.off('drain', resume);
      if (record) this.recorder?.endSource();
      if (this.#publisher === session) {
        this.#publisher = undefined;
        this.transcoder.detach();
      }
    });
  }

  /**
   * The WebRTC viewers get `session`'s own media (issue #20): it sends its video and audio to the WebRTC input's first
   * layer and audio ports, and the producers take that one layer; viewers' keyframe requests go back to it. A failure
   * costs the WebRTC viewers their picture, never the event.
   */
  async #sendOwnMedia(session: PublishSession, inputs: EdgeRtpInputs): Promise<void> {
    try {
      const { audio } = await session.passthrough!.send({ videoPort: inputs.videoPorts[0]!, audioPort: inputs.audioPort });
      if (this.#publisher !== session || this.#closing) return;
      this.#ownMedia = { audio };
      await this.#edge?.setProducers(this.streamId, {
        layers: [{ ssrc: inputs.videoSsrcs[0]!, kbps: OWN_MEDIA_KBPS }],
        audio,
        keyFrameRequest: (cause) => this.#publisher?.passthrough?.requestKeyFrame(cause),
      });
    } catch (error) {
      this.#log.warn({ err: (error as Error).message }, 'the publisher\'s own media cannot reach the WebRTC viewers: the ladder\'s layers serve them');
      this.#ownMediaFailed.add(session);
      if (this.#publisher === session && !this.#closing) this.transcoder.rerun('WebRTC layers from the ladder');
    }
  }

  /**
   * The WebRTC feed's shape while viewers get the publisher's own media: one layer at its picture size, for an ad
   * break's ffmpeg to encode the ads to (undefined without a known source).
   */
  #ownMediaFeed(): RtpFeed | undefined {
    const inputs = this.#rtpInputs;
    const source = this.#publisher?.source;
    if (!this.#ownMedia || !inputs || !source) return undefined;
    const fps = Math.min(30, Math.max(1, Math.round(source.fps)));
    const kbps = Math.min(OWN_MEDIA_KBPS, Math.max(300, Math.round((source.width * source.height * fps * 0.1) / 1000)));
    return {
      video: [{ layer: { name: 'whip', width: source.width, height: source.height, fps, kbps }, port: inputs.videoPorts[0]!, ssrc: inputs.videoSsrcs[0]!, payloadType: inputs.videoPayloadType }],
      audio: this.#ownMedia.audio
        ? { audio: { codec: 'opus', sampleRate: 48000, channels: 2, kbps: 96, frameMs: 20 }, port: inputs.audioPort, ssrc: inputs.audioSsrc, payloadType: inputs.audioPayloadType }
        : undefined,
      gopMs: 1000,
    };
  }

  /**
   * Ends the event's media: the ticker's timer, the transcoder (out of the load governor), the packager (its
   * playlists get ENDLIST) and the WebRTC stream. Idempotent: a second call returns the first one's promise.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close(true);
    return this.#closing;
  }

  /**
   * The event went on at another origin (issue #17): the same as close() but the playlists do not end (no ENDLIST:
   * the event is not over, a player that still reads them must not think it is). Idempotent with close().
   */
  letGo(): Promise<void> {
    this.#closing ??= this.#close(false);
    return this.#closing;
  }

  async #close(end: boolean): Promise<void> {
    closeEventCues(this.cues);
    this.#webrtcAds?.close();
    this.#governor.remove(this.transcoder);
    await this.transcoder.close();
    if (end) this.packager.end();
    this.#edge?.closeStream(this.streamId);
  }
}
