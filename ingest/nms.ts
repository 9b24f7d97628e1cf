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
}

interface FlvStatic {
  createHeader(hasAudio: boolean, hasVideo: boolean): Buffer;
  createMessage(packet: AvPacket): Buffer;
}

const Rtmp = require('node-media-server/src/protocol/rtmp.js') as new () => RtmpProtocol;
const Flv = require('node-media-server/src/protocol/flv.js') as FlvStatic;
const amf = require('node-media-server/src/protocol/amf.js') as {
  decodeAmf0Data(data: Buffer): { cmd?: string; method?: string; dataObj?: Record<string, unknown> | null };
};
const sps = require('node-media-server/src/protocol/sps_info.js') as {
  parseH264Sps(nal: Buffer): { width: number; height: number } | null;
};
const nmsLogger = require('node-media-server/src/core/logger.js') as { level: string };

// NMS logs stream paths, which carry stream keys; its protocol code has nothing we need to hear.
nmsLogger.level = 'error';

export function createRtmpProtocol(): RtmpProtocol {
  return new Rtmp();
}

export function flvHeader(hasAudio: boolean, hasVideo: boolean): Buffer {
  return Flv.createHeader(hasAudio, hasVideo);
}

/** One FLV tag (11-byte header, payload, PreviousTagSize) for a packet; copies the payload. */
export function flvTag(packet: AvPacket): Buffer {
  return Flv.createMessage(packet);
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
