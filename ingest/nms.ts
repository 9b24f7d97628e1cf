/**
 * The only file that touches node-media-server. NMS 4.x is CommonJS without types; we use its RTMP chunk-stream
 * protocol and FLV tag helpers and nothing of its servers, store, auth or logger output, so that key checks, sessions
 * and reconnects are ours and typed.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** NMS's AVPacket: one RTMP audio/video/data message. `flags`: see `PacketFlag`. */
export interface AvPacket {
  codec_id: number;
  codec_type: number;
  flags: number;
  pts: number;
  dts: number;
  size: number;
  data: Buffer;
}

/** `AvPacket.flags` as NMS's FLV parser sets them. */
export const PacketFlag = {
  audioHeader: 0,
  audio: 1,
  videoHeader: 2,
  keyframe: 3,
  interframe: 4,
  metadata: 5,
  videoMetadata: 6,
} as const;

export interface ConnectRequest {
  app: string;
  name: string;
  host: string;
  query: Record<string, unknown>;
}

/** NMS's `Rtmp` class: feed it socket bytes, it calls back with commands and media and asks for bytes to send. */
export interface RtmpProtocol {
  /** Returns an error string when the bytes are not RTMP. */
  parserData(data: Buffer): string | null;
  onConnectCallback: (req: ConnectRequest) => void;
  onPlayCallback: () => void;
  onPushCallback: () => void;
  onPacketCallback: (packet: AvPacket) => void;
  onOutputCallback: (buffer: Buffer) => void;
  /** The message stream of the last publish or play (where its status messages go). */
  readonly streamId: number;
  /** An `onStatus` message to the client (`level` `error` ends a publish in ffmpeg, OBS and librtmp clients). */
  sendStatusMessage(streamId: number, level: 'status' | 'error', code: string, description: string): void;
}

interface FlvStatic {
  new (): FlvParser;
  createHeader(hasAudio: boolean, hasVideo: boolean): Buffer;
  createMessage(packet: AvPacket): Buffer;
}

interface FlvParser {
  onPacketCallback: (packet: AvPacket) => void;
  /** Returns an error message, or null. */
  parserData(buffer: Buffer): string | null;
}

/** The parts of NMS's `Rtmp` internals that the guard reads (node-media-server is pinned to one exact version). */
interface RtmpInternals {
  parserPacket: { header: { cid: number; type: number; length: number }; capacity: number; payload: Buffer };
  inPackets: Map<number, { capacity: number }>;
  packetParse(): void;
  packetAlloc(): void;
  controlHandler(): void;
  onConnect(message: { cmdObj?: unknown }): void;
  onPublish(message: { streamName?: unknown }): void;
  onPlay(message: { streamName?: unknown }): void;
}

const Rtmp = require('node-media-server/src/protocol/rtmp.js') as new () => RtmpProtocol & RtmpInternals;
const Flv = require('node-media-server/src/protocol/flv.js') as FlvStatic;
const amf = require('node-media-server/src/protocol/amf.js') as {
  decodeAmf0Data(data: Buffer): { cmd?: string; method?: string; dataObj?: Record<string, unknown> | null };
};
const sps = require('node-media-server/src/protocol/sps_info.js') as {
  parseH264Sps(nal: Buffer): { width: number; height: number } | null;
};
const nmsLogger = require('node-media-server/src/core/logger.js') as { log: (message: string, level?: string) => void };

// NMS logs stream paths, which carry stream keys, and prints a line per malformed AMF field at `error` (a hostile
// client could fill the log with them): its protocol code has nothing we need to hear. The guard logs what counts.
nmsLogger.log = () => undefined;

/** What the guarded parser bounds, per connection (see ingest/limits.ts). */
export interface RtmpProtocolLimits {
  maxVideoMessageBytes: number;
  maxAudioMessageBytes: number;
  maxCommandMessageBytes: number;
  maxChunkStreams: number;
  maxBufferedBytes: number;
}

/** Why the guarded parser gave up on a connection: `limit` (a bound was passed) or `protocol` (not valid RTMP). */
export class RtmpViolation extends Error {
  constructor(readonly kind: 'limit' | 'protocol', message: string) {
    super(message);
    this.name = 'RtmpViolation';
  }
}

const TYPE_SET_CHUNK_SIZE = 1;
const TYPE_AUDIO = 8;
const TYPE_VIDEO = 9;
/** rtmp_specification_1.0 §5.4.1: the chunk size is 1 to 2^31 - 1 (the top bit is 0). */
const MAX_CHUNK_SIZE = 0x7fffffff;
const MAX_STREAM_NAME = 1024;

/**
 * NMS's parser with bounds checked before it acts: a chunk header's declared size against the message type's limit
 * and the connection's buffer budget (NMS reserves the declared size at once), the number of chunk-stream ids, the
 * chunk size, and the fields of `connect`/`publish`/`play` that NMS reads without checking (a `connect` without
 * `tcUrl` made it throw a TypeError). Every violation throws `RtmpViolation`; the caller closes the connection.
 */
function guardedRtmpClass(limits: RtmpProtocolLimits): new () => RtmpProtocol {
  return class GuardedRtmp extends Rtmp {
    override packetParse(): void {
      super.packetParse();
      if (this.inPackets.size > limits.maxChunkStreams) {
        throw new RtmpViolation('limit', `more than ${limits.maxChunkStreams} chunk streams`);
      }
    }

    override packetAlloc(): void {
      const { header } = this.parserPacket;
      const max = header.type === TYPE_VIDEO ? limits.maxVideoMessageBytes
        : header.type === TYPE_AUDIO ? limits.maxAudioMessageBytes : limits.maxCommandMessageBytes;
      if (header.length > max) throw new RtmpViolation('limit', `a type ${header.type} message of ${header.length} bytes (limit ${max})`);
      if (this.parserPacket.capacity < header.length) {
        let held = 0;
        for (const packet of this.inPackets.values()) if (packet !== this.parserPacket) held += packet.capacity;
        // NMS allocates length + 1024.
        if (held + header.length + 1024 > limits.maxBufferedBytes) {
          throw new RtmpViolation('limit', `message buffers over ${limits.maxBufferedBytes} bytes`);
        }
      }
      super.packetAlloc();
    }

    override controlHandler(): void {
      if (this.parserPacket.header.type === TYPE_SET_CHUNK_SIZE) {
        if (this.parserPacket.header.length < 4) throw new RtmpViolation('protocol', 'a short Set Chunk Size message');
        const size = this.parserPacket.payload.readUInt32BE(0);
        if (size < 1 || size > MAX_CHUNK_SIZE) throw new RtmpViolation('protocol', `chunk size ${size}`);
      }
      super.controlHandler();
    }

    override onConnect(message: { cmdObj?: unknown }): void {
      const command = message.cmdObj as Record<string, unknown> | null | undefined;
      if (typeof command !== 'object' || command === null) throw new RtmpViolation('protocol', 'connect without a command object');
      if (typeof command['app'] !== 'string') throw new RtmpViolation('protocol', 'connect without app');
      if (typeof command['tcUrl'] !== 'string' || !URL.canParse(command['tcUrl'])) throw new RtmpViolation('protocol', 'connect without a valid tcUrl');
      super.onConnect(message);
    }

    override onPublish(message: { streamName?: unknown }): void {
      checkStreamName(message.streamName);
      super.onPublish(message);
    }

    override onPlay(message: { streamName?: unknown }): void {
      checkStreamName(message.streamName);
      super.onPlay(message);
    }
  };
}

function checkStreamName(name: unknown): void {
  if (typeof name !== 'string' || name === '' || name.length > MAX_STREAM_NAME) {
    throw new RtmpViolation('protocol', 'publish or play without a stream name');
  }
}

const guardedClasses = new WeakMap<RtmpProtocolLimits, new () => RtmpProtocol>();

/** One RTMP protocol state machine per connection, bounded by `limits`. */
export function createRtmpProtocol(limits: RtmpProtocolLimits): RtmpProtocol {
  let GuardedRtmp = guardedClasses.get(limits);
  if (!GuardedRtmp) guardedClasses.set(limits, (GuardedRtmp = guardedRtmpClass(limits)));
  return new GuardedRtmp();
}

export function flvHeader(hasAudio: boolean, hasVideo: boolean): Buffer {
  return Flv.createHeader(hasAudio, hasVideo);
}

/** One FLV tag (11-byte header, payload, PreviousTagSize) for a packet; copies the payload. */
export function flvTag(packet: AvPacket): Buffer {
  return Flv.createMessage(packet);
}

/**
 * Reads an FLV byte stream (an ffmpeg of ours writing `-f flv pipe:1`) into the packets an RTMP publish gives, so that
 * a `PublishSession` takes either alike. A packet's `data` is the parser's buffer, valid during the callback only.
 * The returned function throws on bytes that are not FLV.
 */
export function createFlvReader(onPacket: (packet: AvPacket) => void): (chunk: Buffer) => void {
  const parser = new Flv();
  parser.onPacketCallback = onPacket;
  return (chunk) => {
    const error = parser.parserData(chunk);
    if (error !== null) throw new Error(error);
  };
}

export function decodeMetadata(data: Buffer): Record<string, unknown> | undefined {
  try {
    const decoded = amf.decodeAmf0Data(data);
    return decoded.dataObj ?? undefined;
  } catch {
    return undefined;
  }
}

export function parseH264Sps(nal: Buffer): { width: number; height: number } | undefined {
  return sps.parseH264Sps(nal) ?? undefined;
}
