import { TypedEmitter } from '../lib/emitter.js';
import { decodeMetadata, flvHeader, flvTag, PacketFlag, parseH264Sps, type AvPacket } from './nms.js';

/** What the publisher sends, as read from its own stream. Same shape as live-transcoder's `SourceInfo`. */
export interface PublishSource {
  width: number;
  height: number;
  fps: number;
  videoCodec: 'h264';
  audioCodec: 'aac' | 'mp3' | 'other' | undefined;
  audioSampleRate?: number;
  audioChannels?: number;
  declaredVideoKbps?: number;
}

export interface PublishStats {
  /** Bytes received on the RTMP connection. */
  inBytes: number;
  /** Input bitrate over the last few seconds, kbit/s. */
  inKbps: number;
  /** Video frames per second over the last few seconds. */
  inFps: number;
}

/**
 * A publisher whose own media WebRTC viewers can get as it is, with no re-encode (a WHIP publisher, issue #20): its
 * video (one layer) and audio go as plain RTP to the stream's WebRTC input, in place of the ladder's layers.
 */
export interface RtpPassthrough {
  /** Sends to these ports (RTCP on port + 1), or goes on when it sends there already; resolves with what it sends. */
  send(target: { videoPort: number; audioPort: number | undefined }): Promise<{ audio: boolean }>;
  /**
   * A keyframe for the WebRTC viewers: one joined (or they switch back from an ad), or one lost a picture (its PLI).
   * Losses are answered at most once a second: a viewer on a bad link, or one that sends PLIs on purpose, must not
   * make the publisher spend its bitrate on keyframes for everyone.
   */
  requestKeyFrame(cause: 'join' | 'loss'): void;
}

export type PublishSessionEvents = {
  /** Flow control from downstream: false, stop reading the publisher's socket; true, read again. */
  flow: [flowing: boolean];
  /** The source is known (first keyframe, sequence headers and frame rate seen); `tag`s follow. */
  source: [PublishSource];
  /** One FLV tag, in order, after `source`. */
  tag: [Buffer];
  /** The publisher is gone (disconnect, refusal or kick). */
  close: [];
  /** The stream cannot be used (e.g. not H.264); the session closes after this. */
  unsupported: [string];
};

const FLV_CODEC_H264 = 7;
const FLV_SOUND_AAC = 10;
const FLV_SOUND_MP3 = 2;
const AAC_SAMPLE_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
/** Frames measured when the publisher's metadata gives no frame rate. */
const FPS_PROBE_FRAMES = 8;
/** A GOP cache bigger than this is dropped: it only serves transcoder restarts, and a broken GOP is not worth RAM. */
const GOP_CACHE_MAX_BYTES = 16 * 1024 * 1024;
const RATE_WINDOW_MS = 3000;
/** The least-delayed frame of this long dates the media (clocks drift; a window follows them). */
const OFFSET_WINDOW_MS = 10_000;
/** Frames kept for that minimum at most (a deque; a sane publisher keeps it to a few). */
const MAX_OFFSETS = 1024;
/** A keyframe is dated at most this much before its own arrival (timestamps that jump are not followed further). */
const MAX_DATE_CORRECTION_MS = 2_000;

/**
 * One accepted RTMP publish. Turns RTMP messages into FLV tags for the transcoder (no second RTMP hop), reads the
 * source's resolution from the SPS and its frame rate from metadata or timestamps, and keeps the sequence headers
 * and the current GOP so that a restarted transcoder can start at once from the last keyframe (`prelude()`).
 */
export class PublishSession extends TypedEmitter<PublishSessionEvents> {
  readonly id: string;
  readonly streamId: string;
  readonly remoteAddress: string;
  readonly startedAt = Date.now();

  #closed = false;
  #paused = false;
  #source: PublishSource | undefined;
  #metadata: Record<string, unknown> | undefined;
  #metadataTag: Buffer | undefined;
  #audioHeaderTag: Buffer | undefined;
  #videoHeaderTag: Buffer | undefined;
  #audioCodec: PublishSource['audioCodec'];
  #audioSampleRate: number | undefined;
  #audioChannels: number | undefined;
  #size: { width: number; height: number } | undefined;
  #gop: Buffer[] = [];
  /** When the GOP's keyframe reached the ingest (ms since the epoch), and its FLV timestamp. */
  #gopAt = 0;
  #gopDts = 0;
  /**
   * Arrival minus timestamp of the video frames of the last OFFSET_WINDOW_MS, as a sliding-window minimum (a deque of
   * increasing offsets): the smallest is the frame that came soonest, the one least delayed on its way here.
   */
  #offsets: { at: number; offset: number }[] = [];
  #gopBytes = 0;
  #sawKeyframe = false;
  #probeDts: number[] = [];
  #inBytes = 0;
  #samples: { at: number; bytes: number; frames: number }[] = [];
  #windowBytes = 0;
  #windowFrames = 0;

  /** Set for a publisher whose own media WebRTC viewers get (`RtpPassthrough`). */
  readonly passthrough: RtpPassthrough | undefined;

  constructor(options: { id: string; streamId: string; remoteAddress: string; passthrough?: RtpPassthrough | undefined }) {
    super();
    this.id = options.id;
    this.passthrough = options.passthrough;
    this.streamId = options.streamId;
    this.remoteAddress = options.remoteAddress;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether downstream asked to stop reading (see `pause`). */
  get paused(): boolean {
    return this.#paused;
  }

  /** Downstream is backlogged: stop reading the publisher (TCP then pushes back to it) until `resume`. */
  pause(): void {
    if (this.#paused || this.#closed) return;
    this.#paused = true;
    this.safeEmit('flow', false);
  }

  resume(): void {
    if (!this.#paused || this.#closed) return;
    this.#paused = false;
    this.safeEmit('flow', true);
  }

  /** Undefined until the `source` event. */
  get source(): PublishSource | undefined {
    return this.#source;
  }

  get stats(): PublishStats {
    this.#trimWindow(Date.now());
    const spanMs = Math.max(1000, Math.min(RATE_WINDOW_MS, Date.now() - this.startedAt));
    return {
      inBytes: this.#inBytes,
      inKbps: Math.round((this.#windowBytes * 8) / spanMs),
      inFps: Math.round((this.#windowFrames * 1000 * 10) / spanMs) / 10,
    };
  }

  /** FLV header, metadata, sequence headers and the tags since the last keyframe: a decodable start for ffmpeg. */
  prelude(): Buffer {
    const hasAudio = this.#audioHeaderTag !== undefined || this.#audioCodec !== undefined;
    const parts = [flvHeader(hasAudio, true)];
    if (this.#metadataTag) parts.push(this.#metadataTag);
    if (this.#audioHeaderTag) parts.push(this.#audioHeaderTag);
    if (this.#videoHeaderTag) parts.push(this.#videoHeaderTag);
    parts.push(...this.#gop);
    return Buffer.concat(parts);
  }

  /**
   * The date of the media `prelude()` starts with (its keyframe): when it reached this ingest, ms since the epoch;
   * undefined before a keyframe. A run of the ladder dates its output from it (EXT-X-PROGRAM-DATE-TIME = ingest
   * time). Asked later (when the run's first fragment is out), it is the keyframe's timestamp on the publisher's
   * timeline mapped by the least-delayed frame seen since: a keyframe that came late (a publisher's encoder starting
   * up, then catching up in a burst) would otherwise date everything after it ahead of its arrival.
   */
  preludeDate(): (() => number) | undefined {
    if (this.#gop.length === 0) return undefined;
    const at = this.#gopAt;
    const dts = this.#gopDts;
    return () => {
      const least = this.#offsets[0]?.offset;
      return least === undefined ? at : Math.min(at, Math.max(at - MAX_DATE_CORRECTION_MS, dts + least));
    };
  }

  /** Counts bytes received on the socket (for the input bitrate). */
  received(bytes: number): void {
    this.#inBytes += bytes;
    const now = Date.now();
    this.#samples.push({ at: now, bytes, frames: 0 });
    this.#windowBytes += bytes;
    this.#trimWindow(now);
  }

  /** One RTMP media or data message from the protocol parser. */
  handlePacket(packet: AvPacket): void {
    if (this.#closed) return;
    let tag: Buffer;
    switch (packet.flags) {
      case PacketFlag.metadata: {
        const data = stripSetDataFrame(packet.data.subarray(0, packet.size));
        this.#metadata = decodeMetadata(data);
        this.#metadataTag = flvTag({ ...packet, data, size: data.length });
        return; // metadata goes out in the prelude only; ffmpeg reads it once
      }
      case PacketFlag.audioHeader:
        tag = flvTag(packet);
        this.#audioHeaderTag = tag;
        this.#readAudioHeader(packet);
        break;
      case PacketFlag.videoHeader:
        if (packet.codec_id !== FLV_CODEC_H264) {
          this.safeEmit('unsupported', `video codec ${packet.codec_id} is not supported: publish H.264`);
          return;
        }
        tag = flvTag(packet);
        this.#videoHeaderTag = tag;
        this.#size = readAvcSize(packet.data.subarray(0, packet.size));
        break;
      case PacketFlag.keyframe:
        tag = flvTag(packet);
        this.#sawKeyframe = true;
        this.#gop = [tag];
        this.#gopAt = Date.now();
        this.#gopDts = packet.dts;
        this.#gopBytes = tag.length;
        this.#countFrame(packet);
        break;
      case PacketFlag.interframe:
      case PacketFlag.audio:
        tag = flvTag(packet);
        if (packet.codec_type === 8 && this.#audioCodec === undefined) this.#audioCodec = soundCodec(packet.data[0]! >> 4);
        if (this.#sawKeyframe) {
          this.#gop.push(tag);
          this.#gopBytes += tag.length;
          if (this.#gopBytes > GOP_CACHE_MAX_BYTES) {
            this.#gop = [];
            this.#gopBytes = 0;
            this.#sawKeyframe = false;
          }
        }
        if (packet.codec_type === 9) this.#countFrame(packet);
        break;
      default:
        return;
    }
    if (this.#source !== undefined) {
      this.safeEmit('tag', tag);
    } else {
      this.#maybeReady();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#gop = [];
    this.safeEmit('close');
  }

  #countFrame(packet: AvPacket): void {
    const now = Date.now();
    this.#samples.push({ at: now, bytes: 0, frames: 1 });
    this.#windowFrames += 1;
    if (this.#source === undefined && this.#sawKeyframe) this.#probeDts.push(packet.dts);
    const offsets = this.#offsets;
    const offset = now - packet.dts;
    while (offsets.length > 0 && offsets[offsets.length - 1]!.offset >= offset) offsets.pop();
    offsets.push({ at: now, offset });
    while (offsets.length > MAX_OFFSETS || now - offsets[0]!.at > OFFSET_WINDOW_MS) offsets.shift();
  }

  #trimWindow(now: number): void {
    while (this.#samples.length > 0 && now - this.#samples[0]!.at > RATE_WINDOW_MS) {
      const old = this.#samples.shift()!;
      this.#windowBytes -= old.bytes;
      this.#windowFrames -= old.frames;
    }
  }

  #readAudioHeader(packet: AvPacket): void {
    const format = packet.data[0]! >> 4;
    this.#audioCodec = soundCodec(format);
    if (format === FLV_SOUND_AAC && packet.size >= 4) {
      // AudioSpecificConfig (ISO 14496-3 §1.6.2.1): 5 bits object type, 4 bits frequency index, 4 bits channels.
      const asc = (packet.data[2]! << 8) | packet.data[3]!;
      this.#audioSampleRate = AAC_SAMPLE_RATES[(asc >> 7) & 0x0f];
      this.#audioChannels = (asc >> 3) & 0x0f;
    }
  }

  #maybeReady(): void {
    if (!this.#sawKeyframe || this.#videoHeaderTag === undefined || this.#size === undefined) return;
    const declaredFps = Number(this.#metadata?.['framerate'] ?? this.#metadata?.['fps'] ?? 0);
    let fps = Number.isFinite(declaredFps) && declaredFps > 0 && declaredFps <= 240 ? declaredFps : 0;
    if (fps === 0) {
      if (this.#probeDts.length < FPS_PROBE_FRAMES) return;
      const deltas = this.#probeDts.slice(1).map((dts, i) => dts - this.#probeDts[i]!).filter((d) => d > 0).sort((a, b) => a - b);
      const median = deltas[Math.floor(deltas.length / 2)] ?? 33;
      fps = Math.round((1000 / median) * 100) / 100;
    }
    const declaredKbps = Number(this.#metadata?.['videodatarate'] ?? 0);
    this.#source = {
      width: this.#size.width,
      height: this.#size.height,
      fps,
      videoCodec: 'h264',
      audioCodec: this.#audioCodec ?? (this.#metadata?.['audiocodecid'] !== undefined ? soundCodec(Number(this.#metadata['audiocodecid'])) : undefined),
      ...(this.#audioSampleRate === undefined ? {} : { audioSampleRate: this.#audioSampleRate }),
      ...(this.#audioChannels === undefined ? {} : { audioChannels: this.#audioChannels }),
      ...(Number.isFinite(declaredKbps) && declaredKbps > 0 ? { declaredVideoKbps: declaredKbps } : {}),
    };
    this.safeEmit('source', this.#source);
  }
}

function soundCodec(format: number): PublishSource['audioCodec'] {
  if (format === FLV_SOUND_AAC) return 'aac';
  if (format === FLV_SOUND_MP3) return 'mp3';
  return 'other';
}

/** RTMP publishers wrap metadata as `@setDataFrame onMetaData {...}`; an FLV script tag starts at `onMetaData`. */
function stripSetDataFrame(data: Buffer): Buffer {
  const marker = Buffer.from('\x02\x00\x0d@setDataFrame', 'latin1');
  return data.subarray(0, marker.length).equals(marker) ? Buffer.from(data.subarray(marker.length)) : Buffer.from(data);
}

/** Width and height from the first SPS of an AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1). */
function readAvcSize(data: Buffer): { width: number; height: number } | undefined {
  const record = data.subarray(5); // FLV VideoTagHeader: frame/codec byte, AVCPacketType, CompositionTime
  if (record.length < 8 || (record[5]! & 0x1f) === 0) return undefined;
  const spsLength = record.readUInt16BE(6);
  return parseH264Sps(record.subarray(8, 8 + spsLength));
}
