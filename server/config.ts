import path from 'node:path';
import { rangeProblem } from '../lib/address.js';
import { ConfigError } from '../lib/errors.js';
import { readLimits, type LimitTable, type LimitValues } from '../lib/limits.js';
import { RTMP_LIMITS, SRT_LIMITS } from '../ingest/index.js';
import { WHEP_LIMITS } from '../webrtc-edge/index.js';
import { LLHLS_LIMITS } from '../ll-hls-packager/index.js';
import { HTTP_LIMITS } from './httpLimits.js';
import { CHAT_LIMITS } from '../chat/index.js';

/**
 * One schema for every environment variable OnAir reads. Each entry parses a raw string (or its absence) into a typed
 * value, and a bad value stops start-up with a message that names the variable. The table is the documentation:
 * README's configuration section lists the same variables.
 */
type Parser<T> = (raw: string | undefined, name: string) => T;

const integer = (fallback: number, min: number, max: number): Parser<number> => (raw, name) => {
  if (raw === undefined || raw === '') return fallback;
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(name, `expected an integer, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `expected an integer from ${min} to ${max}, got ${value}`);
  return value;
};

/** A decimal number (`0.5`, `24`, `1e-3` not accepted: plain digits and one point). */
const decimal = (fallback: number, min: number, max: number): Parser<number> => (raw, name) => {
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+(\.\d+)?$/.test(raw.trim())) throw new ConfigError(name, `expected a number such as 2 or 0.5, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `expected a number from ${min} to ${max}, got ${value}`);
  return value;
};

const port = (fallback: number): Parser<number> => integer(fallback, 0, 65535);
/** A port that may be left unset (the listener is off); 0 picks a free one. */
const optionalPort: Parser<number | undefined> = (raw, name) => (raw === undefined || raw === '' ? undefined : integer(0, 0, 65535)(raw, name));

const oneOf = <T extends string>(fallback: T, values: readonly T[]): Parser<T> => (raw, name) => {
  if (raw === undefined || raw === '') return fallback;
  if (!values.includes(raw as T)) throw new ConfigError(name, `expected one of ${values.join(', ')}, got "${raw}"`);
  return raw as T;
};

const optionalString: Parser<string | undefined> = (raw) => (raw === undefined || raw === '' ? undefined : raw);

const string = (fallback: string): Parser<string> => (raw) => (raw === undefined || raw === '' ? fallback : raw);

const boolean = (fallback: boolean): Parser<boolean> => (raw, name) => {
  if (raw === undefined || raw === '') return fallback;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(name, `expected true or false, got "${raw}"`);
};

const url = (protocols: readonly string[]): Parser<string | undefined> => (raw, name) => {
  if (raw === undefined || raw === '') return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, 'expected a URL');
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `expected a ${protocols.map((p) => p.replace(':', '://')).join(' or ')} URL`);
  }
  return raw.replace(/\/+$/, '');
};

/** A comma-separated list of rung heights, highest first (`1080,720,480`). */
const heightsWith = (fallback: string): Parser<number[]> => (raw, name) => {
  const text = raw === undefined || raw === '' ? fallback : raw;
  const values = text.split(',').map((part) => part.trim());
  const result: number[] = [];
  for (const value of values) {
    if (!/^\d+$/.test(value) || Number(value) < 144 || Number(value) > 4320 || Number(value) % 2 !== 0) {
      throw new ConfigError(name, `expected even heights from 144 to 4320 separated by commas, got "${text}"`);
    }
    result.push(Number(value));
  }
  return [...new Set(result)].sort((a, b) => b - a);
};
const heights = heightsWith('720,480,360');

/** WebRTC simulcast layer heights (`480,240`), or `off` for no WebRTC feed (an empty list). */
const webrtcLayers: Parser<number[]> = (raw, name) => {
  const text = raw === undefined || raw === '' ? '480,240' : raw.trim();
  if (/^(off|none|false|0)$/i.test(text)) return [];
  const values = text.split(',').map((part) => part.trim());
  const result: number[] = [];
  for (const value of values) {
    // Up to 720 lines: WebRTC layers stay within H.264 level 3.1 for 16:9 at 30 fps (browsers' 42e01f).
    if (!/^\d+$/.test(value) || Number(value) < 144 || Number(value) > 720 || Number(value) % 2 !== 0) {
      throw new ConfigError(name, `expected off, or even heights from 144 to 720 separated by commas, got "${text}"`);
    }
    result.push(Number(value));
  }
  if (result.length > 3) throw new ConfigError(name, `expected at most 3 layers, got ${result.length}`);
  return [...new Set(result)].sort((a, b) => a - b);
};

/**
 * A token bucket as `<tokens>/<period>`: `5/10s` is a burst of 5 that refills at 5 per 10 seconds. Periods in `ms`,
 * `s` or `m`; `off` for no limit.
 */
const rateLimit = (fallback: string): Parser<RateLimit | undefined> => (raw, name) => {
  const text = (raw === undefined || raw === '' ? fallback : raw).trim();
  if (/^(off|none)$/i.test(text)) return undefined;
  const match = /^(\d+)\s*\/\s*(\d+)\s*(ms|s|m)$/i.exec(text);
  const unit = match ? ({ ms: 1, s: 1000, m: 60_000 } as const)[match[3]!.toLowerCase() as 'ms' | 's' | 'm'] : 0;
  const tokens = match ? Number(match[1]) : 0;
  const periodMs = match ? Number(match[2]) * unit : 0;
  if (!match || tokens < 1 || tokens > 1_000_000 || periodMs < 1 || periodMs > 24 * 3600_000) {
    throw new ConfigError(name, `expected <tokens>/<period> such as 5/10s (tokens 1 to 1000000, period up to 24h), or off; got "${text}"`);
  }
  return { tokens, periodMs };
};

/** A comma-separated list: items trimmed, empty ones and repeats dropped, each checked by `check`. */
const list = (fallback: string, check: (item: string) => string | undefined, maxItems: number): Parser<string[]> => (raw, name) => {
  const text = raw === undefined || raw === '' ? fallback : raw;
  const items = [...new Set(text.split(',').map((item) => item.trim()).filter((item) => item !== ''))];
  if (items.length > maxItems) throw new ConfigError(name, `expected at most ${maxItems} items, got ${items.length}`);
  for (const item of items) {
    const problem = check(item);
    if (problem !== undefined) throw new ConfigError(name, `"${item}": ${problem}`);
  }
  return items;
};

/** Reactions are short symbols without spaces or control characters (emoji, possibly with ZWJ sequences). */
const reactionItem = (item: string): string | undefined =>
  [...item].length > 8 || /[\s\p{Cc}]/u.test(item) ? 'expected one emoji (at most 8 code points, no spaces)' : undefined;

/** A blocked word or phrase: matched case-insensitively on word boundaries. */
const blockedWordItem = (item: string): string | undefined =>
  item.length > 100 || /\p{Cc}/u.test(item) ? 'expected at most 100 characters and no control characters' : undefined;

export const DEFAULT_CHAT_REACTIONS = '❤️,👏,😂,😮,😢,🔥';

const X264_PRESETS = ['ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium'] as const;

const schema = {
  ONAIR_HOST: string('0.0.0.0'),
  ONAIR_HTTP_PORT: port(8080),
  ONAIR_RTMP_PORT: port(1935),
  ONAIR_RTMPS_PORT: optionalPort,
  ONAIR_SRT_PORT: optionalPort,
  ONAIR_SRT_LATENCY_MS: integer(200, 20, 8000),
  ONAIR_DATA_DIR: string('./data'),
  ONAIR_ADMIN_TOKEN: (raw: string | undefined, name: string) => {
    if (raw === undefined || raw === '') return undefined;
    if (raw.length < 16) throw new ConfigError(name, 'must be at least 16 characters long');
    return raw;
  },
  ONAIR_REDIS_URL: url(['redis:', 'rediss:', 'unix:']),
  ONAIR_DATABASE_URL: url(['postgres:', 'postgresql:']),
  ONAIR_S3_ENDPOINT: url(['http:', 'https:']),
  ONAIR_S3_BUCKET: optionalString,
  ONAIR_S3_REGION: string('us-east-1'),
  ONAIR_S3_ACCESS_KEY_ID: optionalString,
  ONAIR_S3_SECRET_ACCESS_KEY: optionalString,
  ONAIR_PUBLIC_URL: url(['http:', 'https:']),
  ONAIR_INTERNAL_URL: url(['http:', 'https:']),
  ONAIR_ROLE: oneOf('all', ['all', 'origin', 'edge', 'worker'] as const),
  ONAIR_HWACCEL: oneOf('auto', ['auto', 'none', 'nvenc', 'vaapi', 'qsv'] as const),
  ONAIR_LLHLS_PART_MS: integer(200, 100, 2000),
  ONAIR_LLHLS_HOLD_BACK_PARTS: integer(3, 3, 20),
  ONAIR_SEGMENT_MS: integer(2000, 500, 10000),
  ONAIR_PLAYBACK_SIGNING_KEY: optionalString,
  ONAIR_CLUSTER_SECRET: (raw: string | undefined, name: string) => {
    if (raw === undefined || raw === '') return undefined;
    if (raw.length < 32) throw new ConfigError(name, 'must be at least 32 characters long (e.g. `openssl rand -hex 32`)');
    return raw;
  },
  ONAIR_RECONNECT_GRACE_SEC: integer(10, 0, 600),
  ONAIR_MAX_STREAMS: integer(0, 0, 10_000),
  ONAIR_LADDER_POLICY: oneOf('degrade', ['degrade', 'fixed'] as const),
  ONAIR_LADDER_RECOVER_SEC: integer(60, 5, 3600),
  ONAIR_DVR_WINDOW_SEC: integer(30, 10, 6 * 3600),
  ONAIR_PLAYBACK_TOKEN_TTL_SEC: integer(24 * 3600, 60, 365 * 24 * 3600),
  ONAIR_TLS_CERT: optionalString,
  ONAIR_TLS_KEY: optionalString,
  ONAIR_LADDER: heights,
  ONAIR_PASSTHROUGH: boolean(false),
  ONAIR_WHIP_PASSTHROUGH: boolean(true),
  ONAIR_AUDIENCE: boolean(true),
  ONAIR_WEBHOOK_ATTEMPTS: integer(10, 1, 100),
  ONAIR_WEBHOOK_BACKOFF_MS: integer(2000, 10, 3_600_000),
  ONAIR_WEBRTC_LAYERS: webrtcLayers,
  ONAIR_WEBRTC_PORT: port(40000),
  ONAIR_WEBRTC_LISTEN_IP: optionalString,
  ONAIR_WEBRTC_ANNOUNCED_IP: optionalString,
  ONAIR_WEBRTC_WORKERS: integer(0, 0, 64),
  ONAIR_X264_PRESET: oneOf('superfast', X264_PRESETS),
  ONAIR_FFMPEG: string('ffmpeg'),
  ONAIR_FFPROBE: string('ffprobe'),
  ONAIR_VAAPI_DEVICE: string('/dev/dri/renderD128'),
  ONAIR_CHAT_REACTIONS: list(DEFAULT_CHAT_REACTIONS, reactionItem, 32),
  ONAIR_CHAT_REACTION_WINDOW_MS: integer(250, 50, 5000),
  ONAIR_CHAT_COMMENT_LIMIT: rateLimit('5/10s'),
  ONAIR_CHAT_ADDRESS_COMMENT_LIMIT: rateLimit('50/10s'),
  ONAIR_CHAT_REACTION_LIMIT: rateLimit('30/3s'),
  ONAIR_CHAT_ADDRESS_REACTION_LIMIT: rateLimit('600/3s'),
  ONAIR_CHAT_JOIN_LIMIT: rateLimit('10/10s'),
  ONAIR_CHAT_BLOCKED_WORDS: list('', blockedWordItem, 10_000),
  ONAIR_CHAT_TRUST_PROXY: boolean(false),
  ONAIR_TRUST_PROXY: list('', rangeProblem, 64),
  ONAIR_CHAT_REDIS_ADAPTER: oneOf('auto', ['auto', 'sharded', 'classic'] as const),
  ONAIR_VOD_LADDER: heightsWith('1080,720,480,360'),
  ONAIR_VOD_X264_PRESET: oneOf('veryfast', [...X264_PRESETS, 'slow'] as const),
  ONAIR_VOD_CRF: integer(23, 15, 35),
  ONAIR_VOD_SEGMENT_SEC: integer(4, 1, 10),
  ONAIR_VOD_CONCURRENCY: integer(1, 0, 16),
  ONAIR_VOD_ATTEMPTS: integer(3, 1, 20),
  ONAIR_VOD_BACKOFF_MS: integer(5000, 100, 3_600_000),
  ONAIR_VOD_WAIT_MAX_MS: integer(60_000, 100, 3_600_000),
  ONAIR_VOD_LOCK_MS: integer(30_000, 2000, 600_000),
  ONAIR_VOD_REPLACED_RETENTION_SEC: integer(600, 0, 7 * 24 * 3600),
  ONAIR_VOD_PROBE_TIMEOUT_SEC: integer(60, 1, 3600),
  ONAIR_VOD_TIME_FACTOR: decimal(6, 0.001, 1000),
  ONAIR_VOD_MIN_TIME_SEC: integer(300, 1, 7 * 24 * 3600),
  ONAIR_UPLOAD_MAX_BYTES: integer(50 * 1024 ** 3, 1024, Number.MAX_SAFE_INTEGER),
  ONAIR_UPLOAD_EXPIRY_HOURS: decimal(24, 0.001, 365 * 24),
  ONAIR_ADS_MAX_PACKAGED: integer(200, 1, 100_000),
  ONAIR_ADS_MAX_DISK_MB: integer(4096, 1, 1024 * 1024),
  ONAIR_ADS_MAX_MEMORY_MB: integer(512, 1, 64 * 1024),
  ONAIR_LOG_LEVEL: oneOf('info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
} satisfies Record<string, Parser<unknown>>;

/**
 * Every room's table of limits (STYLE: limits are data), read from the environment with the rest of the schema and
 * listed in the README's *Limits* tables (test/docs.test.ts checks them).
 */
export const LIMIT_TABLES = {
  rtmp: RTMP_LIMITS,
  srt: SRT_LIMITS,
  http: HTTP_LIMITS,
  whep: WHEP_LIMITS,
  llhls: LLHLS_LIMITS,
  chat: CHAT_LIMITS,
} satisfies Record<string, LimitTable>;

export type Limits = { [K in keyof typeof LIMIT_TABLES]: LimitValues<(typeof LIMIT_TABLES)[K]> };

/** `tokens` per `periodMs`, which is also the burst. */
export interface RateLimit {
  tokens: number;
  periodMs: number;
}

type Schema = typeof schema;
type Raw = { [K in keyof Schema]: ReturnType<Schema[K]> };

export interface Config {
  host: string;
  httpPort: number;
  rtmpPort: number;
  /** RTMPS (RTMP over TLS with `tls`'s certificate); undefined: off. */
  rtmpsPort: number | undefined;
  /** SRT (UDP) listener port; undefined: off. `latencyMs`: the receiver's latency (SRTO_RCVLATENCY/PEERLATENCY). */
  srt: { port: number; latencyMs: number } | undefined;
  /** Absolute path of the data directory. */
  dataDir: string;
  /** Unset: generated once and kept in the data dir (see `adminToken.ts`). */
  adminToken: string | undefined;
  redisUrl: string | undefined;
  databaseUrl: string | undefined;
  s3: { endpoint: string; bucket: string; region: string; accessKeyId: string; secretAccessKey: string } | undefined;
  publicUrl: string | undefined;
  /** How other OnAir nodes reach this one (origins register it in Redis for edges); unset: the public URL. */
  internalUrl: string | undefined;
  role: Raw['ONAIR_ROLE'];
  /**
   * Reverse proxies (addresses, CIDR ranges) whose `X-Forwarded-For` names the client, for every per-address limit
   * (HTTP, chat, WHEP). Empty: the connecting address is the client.
   */
  trustProxy: string[];
  hwaccel: Raw['ONAIR_HWACCEL'];
  partTargetMs: number;
  /** PART-HOLD-BACK in parts: how far behind the live edge LL-HLS players stay (rfc8216bis: at least 3). */
  holdBackParts: number;
  segmentTargetMs: number;
  playbackSigningKey: string | undefined;
  /** Node-to-node secret (`Authorization: Bearer`) for the internal routes; undefined: they answer 404. */
  clusterSecret: string | undefined;
  reconnectGraceMs: number;
  /** Live streams this node takes at once; 0: no fixed cap. */
  maxStreams: number;
  /** What OnAir does when a stream's encoder falls behind (live-transcoder/LoadGovernor.ts). */
  ladderPolicy: Raw['ONAIR_LADDER_POLICY'];
  /** A degraded stream steps back up after keeping up this long (doubled after each failed step back up). */
  ladderRecoverMs: number;
  /** Media each live playlist keeps for seeking back (and at least CAN-SKIP-UNTIL). */
  dvrWindowMs: number;
  /** Lifetime of the playback tokens the admin API hands out when signing is on. */
  playbackTokenTtlSec: number;
  /** PEM files: when both are set, HTTP is served as HTTP/2 over TLS (HTTP/1.1 still accepted). */
  tls: { certFile: string; keyFile: string } | undefined;
  ladderHeights: number[];
  passthrough: boolean;
  /** WebRTC viewers of a WHIP publish get the publisher's own H.264 and opus, one layer, no re-encode (issue #20). */
  whipPassthrough: boolean;
  /** Count viewers (server/Audience.ts); false: no counting, no `stats.audience`, no video views (issue #19). */
  audience: boolean;
  /** Webhook deliveries: tries each, and the first retry delay (doubling). */
  webhooks: { attempts: number; backoffMs: number };
  /** WebRTC simulcast layer heights, low → high; empty when `ONAIR_WEBRTC_LAYERS=off`. */
  webrtcLayers: number[];
  /** WebRTC (mediasoup): first UDP/TCP port (worker i uses port + i), listen and announced addresses, workers (0: one per core). */
  webrtc: { port: number; listenIp: string | undefined; announcedIp: string | undefined; workers: number };
  x264Preset: Raw['ONAIR_X264_PRESET'];
  ffmpegPath: string;
  ffprobePath: string;
  vaapiDevice: string;
  logLevel: Raw['ONAIR_LOG_LEVEL'];
  /** What a client may cost, per room (see LIMIT_TABLES). */
  limits: Limits;
  /** VOD (issue #6): ladder, x264, segments, jobs (concurrency 0: no worker in this process), uploads. */
  vod: {
    heights: number[];
    preset: Raw['ONAIR_VOD_X264_PRESET'];
    crf: number;
    segmentSec: number;
    concurrency: number;
    attempts: number;
    backoffMs: number;
    /** The longest wait between two tries while S3, the disk, the database or Redis is away (waits are not tries). */
    waitMaxMs: number;
    lockMs: number;
    replacedRetentionMs: number;
    /** Time limits: one ffprobe; a transcode gets the media's duration × factor, at least minMs. */
    timeLimits: { probeMs: number; factor: number; minMs: number };
    uploadMaxBytes: number;
    /** A tus upload not finished this long after its creation is removed (and its video failed). */
    uploadExpiryMs: number;
  };
  /** Packaged ads kept (least recently used evicted past these): entries and bytes on disk, bytes in memory. */
  ads: { maxPackaged: number; maxDiskBytes: number; maxMemoryBytes: number };
  /** Chat (issue #5): reactions, limits (undefined: no limit), moderation, the Socket.IO Redis adapter. */
  chat: {
    reactions: string[];
    reactionWindowMs: number;
    limits: {
      comment: RateLimit | undefined;
      addressComment: RateLimit | undefined;
      reaction: RateLimit | undefined;
      addressReaction: RateLimit | undefined;
      join: RateLimit | undefined;
      /** Chat connections held at once by one address across processes (`limits.chat.maxConnectionsPerAddress`, 0: off). */
      connectionsPerAddress: number | undefined;
    };
    blockedWords: string[];
    /** Take the client address from the last X-Forwarded-For hop from any peer (older, coarser than `trustProxy`). */
    trustProxy: boolean;
    redisAdapter: Raw['ONAIR_CHAT_REDIS_ADAPTER'];
  };
}

/** Reads the environment into a typed config; throws a `ConfigError` naming the first bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw = {} as Record<string, unknown>;
  for (const [name, parse] of Object.entries(schema)) {
    raw[name] = (parse as Parser<unknown>)(env[name], name);
  }
  const r = raw as Raw;
  if (r.ONAIR_SEGMENT_MS < 2 * r.ONAIR_LLHLS_PART_MS) {
    throw new ConfigError('ONAIR_SEGMENT_MS', `must be at least twice ONAIR_LLHLS_PART_MS (${r.ONAIR_LLHLS_PART_MS})`);
  }
  if ((r.ONAIR_TLS_CERT === undefined) !== (r.ONAIR_TLS_KEY === undefined)) {
    throw new ConfigError(r.ONAIR_TLS_CERT === undefined ? 'ONAIR_TLS_CERT' : 'ONAIR_TLS_KEY', 'ONAIR_TLS_CERT and ONAIR_TLS_KEY go together');
  }
  if (r.ONAIR_RTMPS_PORT !== undefined && r.ONAIR_TLS_CERT === undefined) {
    throw new ConfigError('ONAIR_RTMPS_PORT', 'RTMPS needs a certificate: set ONAIR_TLS_CERT and ONAIR_TLS_KEY');
  }
  const limits = Object.fromEntries(Object.entries(LIMIT_TABLES).map(([room, table]) => [room, readLimits(table, env)])) as Limits;
  let s3: Config['s3'];
  if (r.ONAIR_S3_ENDPOINT !== undefined || r.ONAIR_S3_BUCKET !== undefined) {
    for (const name of ['ONAIR_S3_ENDPOINT', 'ONAIR_S3_BUCKET', 'ONAIR_S3_ACCESS_KEY_ID', 'ONAIR_S3_SECRET_ACCESS_KEY'] as const) {
      if (r[name] === undefined) throw new ConfigError(name, 'is required when S3 storage is configured');
    }
    s3 = {
      endpoint: r.ONAIR_S3_ENDPOINT!,
      bucket: r.ONAIR_S3_BUCKET!,
      region: r.ONAIR_S3_REGION,
      accessKeyId: r.ONAIR_S3_ACCESS_KEY_ID!,
      secretAccessKey: r.ONAIR_S3_SECRET_ACCESS_KEY!,
    };
  }
  return {
    host: r.ONAIR_HOST,
    httpPort: r.ONAIR_HTTP_PORT,
    rtmpPort: r.ONAIR_RTMP_PORT,
    rtmpsPort: r.ONAIR_RTMPS_PORT,
    srt: r.ONAIR_SRT_PORT === undefined ? undefined : { port: r.ONAIR_SRT_PORT, latencyMs: r.ONAIR_SRT_LATENCY_MS },
    dataDir: path.resolve(r.ONAIR_DATA_DIR),
    adminToken: r.ONAIR_ADMIN_TOKEN,
    redisUrl: r.ONAIR_REDIS_URL,
    databaseUrl: r.ONAIR_DATABASE_URL,
    s3,
    publicUrl: r.ONAIR_PUBLIC_URL,
    internalUrl: r.ONAIR_INTERNAL_URL?.replace(/\/+$/, ''),
    role: r.ONAIR_ROLE,
    trustProxy: r.ONAIR_TRUST_PROXY,
    hwaccel: r.ONAIR_HWACCEL,
    partTargetMs: r.ONAIR_LLHLS_PART_MS,
    holdBackParts: r.ONAIR_LLHLS_HOLD_BACK_PARTS,
    segmentTargetMs: r.ONAIR_SEGMENT_MS,
    playbackSigningKey: r.ONAIR_PLAYBACK_SIGNING_KEY,
    clusterSecret: r.ONAIR_CLUSTER_SECRET,
    reconnectGraceMs: r.ONAIR_RECONNECT_GRACE_SEC * 1000,
    maxStreams: r.ONAIR_MAX_STREAMS,
    ladderPolicy: r.ONAIR_LADDER_POLICY,
    ladderRecoverMs: r.ONAIR_LADDER_RECOVER_SEC * 1000,
    dvrWindowMs: r.ONAIR_DVR_WINDOW_SEC * 1000,
    playbackTokenTtlSec: r.ONAIR_PLAYBACK_TOKEN_TTL_SEC,
    tls: r.ONAIR_TLS_CERT !== undefined && r.ONAIR_TLS_KEY !== undefined ? { certFile: r.ONAIR_TLS_CERT, keyFile: r.ONAIR_TLS_KEY } : undefined,
    ladderHeights: r.ONAIR_LADDER,
    passthrough: r.ONAIR_PASSTHROUGH,
    whipPassthrough: r.ONAIR_WHIP_PASSTHROUGH,
    audience: r.ONAIR_AUDIENCE,
    webhooks: { attempts: r.ONAIR_WEBHOOK_ATTEMPTS, backoffMs: r.ONAIR_WEBHOOK_BACKOFF_MS },
    webrtcLayers: r.ONAIR_WEBRTC_LAYERS,
    webrtc: {
      port: r.ONAIR_WEBRTC_PORT,
      listenIp: r.ONAIR_WEBRTC_LISTEN_IP,
      announcedIp: r.ONAIR_WEBRTC_ANNOUNCED_IP,
      workers: r.ONAIR_WEBRTC_WORKERS,
    },
    x264Preset: r.ONAIR_X264_PRESET,
    ffmpegPath: r.ONAIR_FFMPEG,
    ffprobePath: r.ONAIR_FFPROBE,
    vaapiDevice: r.ONAIR_VAAPI_DEVICE,
    logLevel: r.ONAIR_LOG_LEVEL,
    limits,
    vod: {
      heights: r.ONAIR_VOD_LADDER,
      preset: r.ONAIR_VOD_X264_PRESET,
      crf: r.ONAIR_VOD_CRF,
      segmentSec: r.ONAIR_VOD_SEGMENT_SEC,
      concurrency: r.ONAIR_VOD_CONCURRENCY,
      attempts: r.ONAIR_VOD_ATTEMPTS,
      backoffMs: r.ONAIR_VOD_BACKOFF_MS,
      waitMaxMs: r.ONAIR_VOD_WAIT_MAX_MS,
      lockMs: r.ONAIR_VOD_LOCK_MS,
      replacedRetentionMs: r.ONAIR_VOD_REPLACED_RETENTION_SEC * 1000,
      timeLimits: { probeMs: r.ONAIR_VOD_PROBE_TIMEOUT_SEC * 1000, factor: r.ONAIR_VOD_TIME_FACTOR, minMs: r.ONAIR_VOD_MIN_TIME_SEC * 1000 },
      uploadMaxBytes: r.ONAIR_UPLOAD_MAX_BYTES,
      uploadExpiryMs: Math.round(r.ONAIR_UPLOAD_EXPIRY_HOURS * 3600_000),
    },
    ads: {
      maxPackaged: r.ONAIR_ADS_MAX_PACKAGED,
      maxDiskBytes: r.ONAIR_ADS_MAX_DISK_MB * 1024 * 1024,
      maxMemoryBytes: r.ONAIR_ADS_MAX_MEMORY_MB * 1024 * 1024,
    },
    chat: {
      reactions: r.ONAIR_CHAT_REACTIONS,
      reactionWindowMs: r.ONAIR_CHAT_REACTION_WINDOW_MS,
      limits: {
        comment: r.ONAIR_CHAT_COMMENT_LIMIT,
        addressComment: r.ONAIR_CHAT_ADDRESS_COMMENT_LIMIT,
        reaction: r.ONAIR_CHAT_REACTION_LIMIT,
        addressReaction: r.ONAIR_CHAT_ADDRESS_REACTION_LIMIT,
        join: r.ONAIR_CHAT_JOIN_LIMIT,
        connectionsPerAddress: limits.chat.maxConnectionsPerAddress || undefined,
      },
      blockedWords: r.ONAIR_CHAT_BLOCKED_WORDS,
      trustProxy: r.ONAIR_CHAT_TRUST_PROXY,
      redisAdapter: r.ONAIR_CHAT_REDIS_ADAPTER,
    },
  };
}

/** The variable names the schema knows, for the README and for tests. */
export const CONFIG_VARIABLES = [
  ...Object.keys(schema),
  ...Object.values(LIMIT_TABLES).flatMap((table) => Object.values(table as LimitTable).map((limit) => limit.env)),
];
