import type { PublishSource, PublishStats } from '../ingest/index.js';
import type { DegradeStep, RenditionStats, TranscoderStats } from '../live-transcoder/index.js';
import type { StreamPackager } from '../ll-hls-packager/index.js';
import { playbackTokenExpiry, signPlaybackToken } from '../lib/signing.js';
import type { ViewerStats } from '../webrtc-edge/index.js';
import { adBreakView } from '../cues/index.js';
import type { HttpDeps } from './http.js';
import type { LiveStreamSample } from './metrics.js';
import type { AudienceCounts } from './Audience.js';
import type { StreamEvent, StreamRecord, StreamStore } from './streams.js';

/** The stream view the API returns (never the key, except right after creation or rotation). */
export interface StreamView extends StreamRecord {
  ingest: { rtmpUrl: string; rtmpsUrl?: string; whipUrl?: string; srtUrl?: string; srtPassphrase?: string };
  playback: { hls: string; whep: string; watchPage: string };
  /** While a live event runs on this node. */
  stats?: StreamStats;
  /** After the event: its replay (catalog video), played by the same watch page. */
  replay?: { videoId: string; hls: string };
  /** After the event: when it ran and who watched it (its audience is written at its end; null if never known). */
  lastEvent?: { id: string; startedAt: string; endedAt: string; audience: { peak: number; total: number } | null };
}

/** A live event's figures in the stream view. Fields that are undefined are left out of the JSON. */
export interface StreamStats {
  eventId: string;
  startedAt: number;
  /** False during the reconnect grace (no publisher, the event goes on). */
  publishing: boolean;
  input: {
    kbps: number;
    fps: number;
    width: number | undefined;
    height: number | undefined;
    videoCodec: PublishSource['videoCodec'] | undefined;
    audioCodec: PublishSource['audioCodec'];
  };
  encoder: { kind: TranscoderStats['encoder']; speed: number | undefined; fps: number | undefined; restarts: number; backlogMs: number };
  /** Steps taken because the node is short of CPU (undefined: the full ladder); see live-transcoder/degrade.ts. */
  degraded: { step: DegradeStep | undefined; steps: DegradeStep[]; reason: string; since: string } | undefined;
  renditions: RenditionStats[];
  /** WebRTC viewers on this node (0 with WebRTC off); every protocol on every node: `audience`. */
  viewers: number;
  /** Who watches, every protocol on every node (server/Audience.ts): now, the most at once, distinct sessions. */
  audience: AudienceCounts | undefined;
  /** Chat connections in the stream's room on every process. */
  chatViewers: number;
  /** The publisher's video carries CEA-608/708 captions: every rung carries them and the playlists declare them. */
  captions: boolean;
  /** undefined with WebRTC off; `sessions` for the admin only. */
  webrtc: { viewers: number; sessions?: ViewerStats[] } | undefined;
  /** What an ad break would play now (packaged in this stream's ladder). */
  ads: { videoId: string; durationSec: number }[];
  /** The break on air, if any. */
  adBreak: { id: string; startDate: string | null; plannedDurationSec: number } | null;
}

/** What a view shows of a live event. */
export interface LiveEventView {
  readonly streamId: string;
  readonly eventId: string;
  readonly startedAt: number;
  readonly publisher: { readonly source: PublishSource | undefined; readonly stats: PublishStats } | undefined;
  readonly transcoder: { readonly stats: TranscoderStats };
  readonly packager: Pick<StreamPackager, 'ads' | 'runningBreak' | 'captions'>;
}

/** Where views read from: closures over the node's parts, read at each call. */
export interface ViewSources {
  /** The public origin and the RTMP URL (known once the node listens). */
  publicUrl: () => string;
  rtmpUrl: () => string;
  /** Undefined while RTMPS is off. */
  rtmpsUrl?: () => string | undefined;
  /** Whether this node takes WHIP publishers (WebRTC on, not an edge). */
  whip?: () => boolean;
  /** The stream's SRT URL without its passphrase; undefined while SRT is off. */
  srtUrl?: (id: string) => string | undefined;
  /** The stream's SRT passphrase (derived from its key): given with the key only (create, rotate). */
  srtPassphrase?: (id: string) => Promise<string | undefined>;
  playbackSigningKey: string | undefined;
  playbackTokenTtlSec: number;
  /** The stream's live event on this node. */
  live: (streamId: string) => LiveEventView | undefined;
  /** The stream's event is over on this node and its end waits for the database. */
  endWaiting: (streamId: string) => boolean;
  /** The stream's newest catalog video (its replay once it has a version). */
  latestVideo: (streamId: string) => Promise<{ id: string; version: unknown } | undefined>;
  edge: { viewers(streamId: string): number; sessionStats(streamId: string): ViewerStats[] } | undefined;
  chatViewers: (streamId: string) => number;
  /** The event's audience as of the last exchange (about a second old); absent with ONAIR_AUDIENCE=false. */
  audience?: (streamId: string) => AudienceCounts;
  /** The stream's newest ended event. */
  lastEndedEvent: (streamId: string) => Promise<StreamEvent | undefined>;
  /** The stats of a stream live on another node (its origin), or undefined; only with a shared Redis. */
  remoteStats?: (streamId: string) => Promise<StreamStats | undefined>;
}

/**
 * `admin`: playback URLs carry a fresh signed token when signing is on (the public view cannot hand out tokens).
 * `token`: what a viewer presented (`?token=`). A valid one for this stream is carried into the playback URLs and,
 * signed for the replay's video with the same expiry, into the replay's: the watch link plays the replay after the
 * event, and opens nothing else.
 */
export async function streamView(sources: ViewSources, stream: StreamRecord, admin: boolean, token?: unknown): Promise<StreamView> {
  const base = sources.publicUrl();
  const key = sources.playbackSigningKey;
  const expiresAtSec = key === undefined ? undefined
    : admin ? Math.floor(Date.now() / 1000) + sources.playbackTokenTtlSec
    : playbackTokenExpiry(key, stream.id, token);
  const signed = (id: string): string => (expiresAtSec === undefined ? '' : `?token=${signPlaybackToken(key!, id, expiresAtSec)}`);
  const query = signed(stream.id);
  const view: StreamView = {
    ...stream,
    ingest: ingestOf(sources, stream.id),
    playback: {
      hls: `${base}/live/${stream.id}/index.m3u8${query}`,
      whep: `${base}/live/${stream.id}/whep${query}`,
      watchPage: `${base}/watch/${stream.id}${query}`,
    },
  };
  const live = sources.live(stream.id);
  if (live) view.stats = streamStats(sources, live, admin);
  // Its event is over on this node; the database has not been told yet (it was down): viewers see it ended.
  else if (stream.status === 'live' && sources.endWaiting(stream.id)) view.status = 'ended';
  // Live on another node (this is an edge, or another origin): its origin has the figures (ad break, publishing).
  else if (stream.status === 'live' && sources.remoteStats) {
    const remote = await sources.remoteStats(stream.id);
    if (remote) view.stats = remote;
  }
  else if (stream.status === 'ended') {
    // The same /watch/:id plays the replay once the event is over.
    const [video, event] = await Promise.all([sources.latestVideo(stream.id), sources.lastEndedEvent(stream.id)]);
    if (video?.version) view.replay = { videoId: video.id, hls: `${base}/vod/${video.id}/index.m3u8${signed(video.id)}` };
    if (event?.endedAt != null) {
      view.lastEvent = { id: event.id, startedAt: new Date(event.startedAt).toISOString(), endedAt: new Date(event.endedAt).toISOString(), audience: event.audience };
    }
  }
  return view;
}

/** `admin`: the WebRTC sessions are listed (their ids are the capability to end them: never public). */
export function streamStats(sources: Pick<ViewSources, 'edge' | 'chatViewers' | 'audience'>, live: LiveEventView, admin: boolean): StreamStats {
  const edge = sources.edge;
  const source = live.publisher?.source;
  const input = live.publisher?.stats;
  const transcoder = live.transcoder.stats;
  return {
    eventId: live.eventId,
    startedAt: live.startedAt,
    publishing: live.publisher !== undefined,
    input: {
      kbps: input?.inKbps ?? 0,
      fps: input?.inFps ?? 0,
      width: source?.width,
      height: source?.height,
      videoCodec: source?.videoCodec,
      audioCodec: source?.audioCodec,
    },
    encoder: {
      kind: transcoder.encoder, speed: transcoder.speed, fps: transcoder.fps, restarts: transcoder.restarts,
      backlogMs: Math.round(transcoder.backlogMs),
    },
    // Steps taken because the node is short of CPU (undefined: the full ladder); see live-transcoder/degrade.ts.
    degraded: transcoder.degraded && {
      step: transcoder.degraded.steps[transcoder.degraded.steps.length - 1],
      steps: transcoder.degraded.steps,
      reason: transcoder.degraded.reason,
      since: new Date(transcoder.degraded.since).toISOString(),
    },
    renditions: transcoder.renditions,
    viewers: edge?.viewers(live.streamId) ?? 0,
    // Chat connections in the stream's room on every process: a separate figure, since a WebRTC viewer with the
    // chat open would otherwise count twice.
    chatViewers: sources.chatViewers(live.streamId),
    audience: sources.audience?.(live.streamId),
    captions: live.packager.captions,
    webrtc: edge
      ? { viewers: edge.viewers(live.streamId), ...(admin ? { sessions: edge.sessionStats(live.streamId) } : {}) }
      : undefined,
    // What an ad break would play now (packaged in this stream's ladder), and the break on air, if any.
    ads: live.packager.ads.map((ad) => ({ videoId: ad.id, durationSec: ad.durationMs / 1000 })),
    adBreak: adBreakView(live.packager.runningBreak),
  };
}

/** The live events' figures for /metrics. */
export function liveSamples(lives: Iterable<LiveEventView>): LiveStreamSample[] {
  return [...lives].map((live) => {
    const input = live.publisher?.stats;
    const stats = live.transcoder.stats;
    return {
      streamId: live.streamId,
      inputKbps: input?.inKbps ?? 0,
      inputFps: input?.inFps ?? 0,
      encoderSpeed: stats.speed,
      encoderFps: stats.fps,
      renditions: stats.renditions.map((r) => ({ name: r.name, kbps: r.kbps, fps: r.fps })),
      backlogMs: stats.backlogMs,
      ladderLevel: stats.degraded?.level ?? 0,
    };
  });
}

/**
 * The /api/streams handlers: the store's records as views. `end`: disconnects the stream's publisher (its event
 * ends); `deleted`: the stream's row is gone (its chat goes too).
 */
export function streamsApi(sources: ViewSources, store: Pick<StreamStore, 'create' | 'list' | 'get' | 'rotateKey' | 'delete'>, control: {
  end: (streamId: string) => void;
  deleted: (streamId: string) => Promise<void>;
  /** A key was made, rotated or deleted (the SRT listener's passphrases follow). */
  keysChanged?: () => Promise<void>;
}): HttpDeps['streams'] {
  /** The view given with a new key: the SRT URL then carries its passphrase, shown as rarely as the key. */
  const withSecrets = async (view: StreamView): Promise<StreamView> => {
    const passphrase = view.ingest.srtUrl === undefined ? undefined : await sources.srtPassphrase?.(view.id);
    return passphrase === undefined ? view
      : { ...view, ingest: { ...view.ingest, srtUrl: `${view.ingest.srtUrl}&passphrase=${passphrase}`, srtPassphrase: passphrase } };
  };
  return {
    create: async (input) => {
      const { stream, streamKey } = await store.create(input);
      await control.keysChanged?.();
      return { stream: await withSecrets(await streamView(sources, stream, true)), streamKey };
    },
    list: async () => Promise.all((await store.list()).map((s) => streamView(sources, s, false))),
    get: async (id, admin, token) => {
      const stream = await store.get(id);
      return stream && streamView(sources, stream, admin, token);
    },
    rotateKey: async (id) => {
      const streamKey = await store.rotateKey(id);
      const stream = streamKey === undefined ? undefined : await store.get(id);
      if (streamKey !== undefined) await control.keysChanged?.();
      return stream && streamKey ? { stream: await withSecrets(await streamView(sources, stream, true)), streamKey } : undefined;
    },
    end: async (id) => {
      if (!(await store.get(id))) return undefined;
      if (!sources.live(id)) return false;
      control.end(id);
      return true;
    },
    delete: async (id) => {
      control.end(id);
      const deleted = await store.delete(id);
      if (deleted) {
        await control.keysChanged?.();
        await control.deleted(id);
      }
      return deleted;
    },
  };
}

/** The ways in for the broadcaster: RTMP always, RTMPS, WHIP and SRT when they are on (the key, or its passphrase, for all). */
function ingestOf(sources: ViewSources, id: string): StreamView['ingest'] {
  const rtmpsUrl = sources.rtmpsUrl?.();
  const srtUrl = sources.srtUrl?.(id);
  return {
    rtmpUrl: sources.rtmpUrl(),
    ...(rtmpsUrl ? { rtmpsUrl } : {}),
    ...(sources.whip?.() ? { whipUrl: `${sources.publicUrl()}/live/${id}/whip` } : {}),
    ...(srtUrl ? { srtUrl } : {}),
  };
}
