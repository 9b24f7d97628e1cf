import type { LimitTable } from '../lib/limits.js';

const MiB = 1024 * 1024;

/**
 * What one RTMP client may cost: every bound of the RTMP port, its variable and default. A client past a bound has its
 * connection closed with one log line; nobody else notices.
 */
export const RTMP_LIMITS = {
  maxConnections: {
    env: 'ONAIR_RTMP_MAX_CONNECTIONS', default: 1000, min: 1, max: 1_000_000, unit: 'connections',
    doc: 'RTMP connections open at once on this node; a connection beyond is closed on accept.',
  },
  maxConnectionsPerAddress: {
    env: 'ONAIR_RTMP_MAX_CONNECTIONS_PER_ADDRESS', default: 16, min: 1, max: 1_000_000, unit: 'connections',
    doc: 'RTMP connections from one address (IPv6: one /64); a connection beyond is closed on accept.',
  },
  maxUnauthenticatedPerAddress: {
    env: 'ONAIR_RTMP_MAX_UNAUTHENTICATED_PER_ADDRESS', default: 4, min: 1, max: 1_000_000, unit: 'connections',
    doc: 'Connections from one address that have not yet published with a valid key; a connection beyond is closed on accept.',
  },
  handshakeTimeoutMs: {
    env: 'ONAIR_RTMP_HANDSHAKE_TIMEOUT_MS', default: 10_000, min: 100, max: 600_000, unit: 'ms',
    doc: 'From accept to an accepted publish (handshake, connect, key check); a slower client is closed.',
  },
  idleTimeoutMs: {
    env: 'ONAIR_RTMP_IDLE_TIMEOUT_MS', default: 15_000, min: 100, max: 600_000, unit: 'ms',
    doc: 'A connection that sends nothing for this long is closed (dead TCP connections never send FIN).',
  },
  minBitrateKbps: {
    env: 'ONAIR_RTMP_MIN_KBPS', default: 8, min: 0, max: 1_000_000, unit: 'kbit/s',
    doc: 'A publisher must average at least this over each rate window; a trickle cannot keep a session. 0: off.',
  },
  rateWindowMs: {
    env: 'ONAIR_RTMP_RATE_WINDOW_MS', default: 10_000, min: 1000, max: 600_000, unit: 'ms',
    doc: 'The window over which the minimum bitrate is measured.',
  },
  maxVideoMessageBytes: {
    env: 'ONAIR_RTMP_MAX_VIDEO_MESSAGE_BYTES', default: 8 * MiB, min: 64 * 1024, max: 256 * MiB, unit: 'bytes',
    doc: 'Largest video message (one frame) a chunk header may declare; a larger declaration closes the connection before any memory is reserved.',
  },
  maxAudioMessageBytes: {
    env: 'ONAIR_RTMP_MAX_AUDIO_MESSAGE_BYTES', default: 256 * 1024, min: 1024, max: 64 * MiB, unit: 'bytes',
    doc: 'Largest audio message a chunk header may declare.',
  },
  maxCommandMessageBytes: {
    env: 'ONAIR_RTMP_MAX_COMMAND_MESSAGE_BYTES', default: 64 * 1024, min: 1024, max: 64 * MiB, unit: 'bytes',
    doc: 'Largest command, metadata or control message a chunk header may declare.',
  },
  maxChunkStreams: {
    env: 'ONAIR_RTMP_MAX_CHUNK_STREAMS', default: 16, min: 4, max: 65_600, unit: 'chunk streams',
    doc: 'Chunk-stream ids one connection may use (OBS and ffmpeg use five or six).',
  },
  maxBufferedBytes: {
    env: 'ONAIR_RTMP_MAX_BUFFERED_BYTES', default: 16 * MiB, min: 256 * 1024, max: 1024 * MiB, unit: 'bytes',
    doc: 'Message buffers one connection may hold across its chunk streams.',
  },
} satisfies LimitTable;

export type RtmpLimits = { [K in keyof typeof RTMP_LIMITS]: number };

/** What SRT callers may cost (ONAIR_SRT_PORT, issue #20): the listener's own bound; each publish is then RTMP's. */
export const SRT_LIMITS = {
  maxConnections: {
    env: 'ONAIR_SRT_MAX_CONNECTIONS', default: 64, min: 1, max: 4096, unit: 'connections',
    doc: 'SRT connections at once on this node (publishers, and callers being refused); a caller beyond is rejected in its handshake (SRT reject 1402).',
  },
} satisfies LimitTable;

export type SrtLimits = { [K in keyof typeof SRT_LIMITS]: number };
