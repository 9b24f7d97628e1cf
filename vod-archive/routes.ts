import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OnAirError } from '../lib/errors.js';
import { isSelfRequest } from '../lib/selfRequest.js';
import { playbackTokenExpiry, verifyPlaybackToken } from '../lib/signing.js';
import { isValidCursor, VIDEO_ID_RE, type Video } from './catalog.js';
import { checkKey, contentTypeFor, type ByteRange, type Storage } from './storage.js';
import { videoPrefix } from './pipeline.js';

export interface VideoView {
  id: string;
  title: string;
  description: string;
  tags: string[];
  status: Video['status'];
  progress: number;
  error?: string;
  /** Admin view only: processing, but waiting for a dependency (S3, the disk, the database, Redis) to come back. */
  waiting?: string;
  durationSec: number | null;
  renditions: Video['renditions'];
  /** The poster image, once the archive is ready. */
  thumbnail: string | null;
  /** WebVTT thumbnails track (storyboard), once the archive is ready. */
  thumbnails: string | null;
  /** `upload`, or the id of the live stream it archives. */
  source: string;
  /** `replay`: the live ladder's segments (instant); `archive`: the VOD pipeline's output. */
  kind: Video['kind'] | null;
  ad: boolean;
  /** Sessions that played it (a session counts once per 30 minutes; issue #19). */
  views: number;
  /** WebVTT subtitle tracks (also in the HLS multivariant playlist as a SUBTITLES group, and in the DASH manifest). */
  subtitles: { lang: string; label: string; url: string }[];
  createdAt: string;
  playback: { hls: string | null; dash: string | null; watchPage: string };
  /** Admin view only: the stored source's SHA-256 and size (uploads). */
  sourceSha256?: string;
  sourceBytes?: number;
}

export interface VodRoutesOptions {
  /**
   * A session loaded a video's media playlist (HLS: any playlist but the multivariant one, which the watch page
   * preloads without its session; DASH: the manifest): a view, counted by server/Audience.ts.
   */
  viewed?: (videoId: string, request: FastifyRequest) => void;
  catalog: {
    get(id: string): Promise<Video | undefined>;
    list(options: { q?: string; limit: number; cursor?: string; all: boolean }): Promise<{ videos: Video[]; nextCursor: string | undefined }>;
    update(id: string, fields: { title?: string; description?: string; tags?: string[]; ad?: boolean }): Promise<Video | undefined>;
    setSubtitles(id: string, tracks: Video['subtitles']): Promise<void>;
  };
  /** The set of ads changed: `videoId` was marked as an ad (`ad`), or unmarked or deleted (`!ad`). */
  adsChanged?: (videoId: string, ad: boolean) => void;
  storage: Storage;
  /** Deletes a video: its storage and its row. */
  deleteVideo(id: string): Promise<boolean>;
  /** Processes a failed video again (its source was kept): undefined, no such video; false, it is not failed. */
  retryVideo?(id: string): Promise<boolean | undefined>;
  publicUrl(): string;
  playbackSigningKey: string | undefined;
  /** Lifetime of the tokens the admin view hands out. */
  playbackTokenTtlSec: number;
  signToken(id: string, expiresAtSec: number): string;
}

const videoIdParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^[a-z0-9]{16}$' } },
  required: ['id'],
} as const;

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    q: { type: 'string', maxLength: 200 },
    limit: { type: 'integer', minimum: 1, maximum: 100, default: 20 },
    cursor: { type: 'string', maxLength: 100, pattern: '^[A-Za-z0-9_-]+$' },
  },
} as const;

const updateBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    title: { type: 'string', minLength: 1, maxLength: 200, pattern: '\\S' },
    description: { type: 'string', maxLength: 5000 },
    tags: { type: 'array', maxItems: 20, items: { type: 'string', minLength: 1, maxLength: 40, pattern: '^[^,\\p{Cc}]+$' } },
    ad: { type: 'boolean' },
  },
} as const;

/** `replay` or `a` + 8 characters: the storage versions the pipeline and the archiver make. */
const VERSION_RE = /^(replay|a[a-z0-9]{8})$/;
/** Files below a version: rendition folders and names of [A-Za-z0-9._-], nothing starting with a dot. */
const FILE_RE = /^([A-Za-z0-9][A-Za-z0-9_-]*\/)?[A-Za-z0-9][A-Za-z0-9._-]*\.(m3u8|mpd|m4s|mp4|jpg|vtt)$/;

function sendError(reply: FastifyReply, error: OnAirError): FastifyReply {
  return reply.code(error.status).send(error.toJSON());
}

export function parseRange(header: string | undefined): ByteRange | undefined | 'invalid' {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d{1,15})-(\d{0,15})$/.exec(header.trim());
  if (!match) return 'invalid';
  const start = Number(match[1]);
  const end = match[2] === '' ? Number.MAX_SAFE_INTEGER : Number(match[2]);
  return end < start ? 'invalid' : { start, end };
}

/** Appends the playback token to every URI of a playlist (lines and URI="…" attributes). */
function rewritePlaylist(text: string, prefix: string, query: string): string {
  if (prefix === '' && query === '') return text;
  return text.split('\n').map((line) => {
    if (line.startsWith('#')) return line.replace(/URI="([^"]+)"/g, (_m, uri: string) => `URI="${prefix}${uri}${query}"`);
    return line.trim() === '' ? line : `${prefix}${line}${query}`;
  }).join('\n');
}

/** A subtitle track's language: a BCP 47 tag of the usual shape (`en`, `fr`, `pt-BR`, `zh-Hant`). */
const LANG_RE = /^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$/;
/** A track's label: what players show; no quotes or control characters (it goes into playlist attributes). */
const LABEL_RE = /^[^"\u0000-\u001f\u007f]{1,64}$/;
const MAX_SUBTITLE_BYTES = 1024 * 1024;
const MAX_SUBTITLE_TRACKS = 20;
const CUE_TIMING_RE = /^(?:\d{2,}:)?\d{2}:\d{2}\.\d{3}[ \t]+-->[ \t]+(?:\d{2,}:)?\d{2}:\d{2}\.\d{3}/m;

/** Why a body is no WebVTT file a player can use (undefined: it is one). */
function webvttProblem(body: Buffer): string | undefined {
  const text = body.toString('utf8');
  if (Buffer.from(text, 'utf8').length !== body.length || text.includes('\u0000')) return 'the file is not UTF-8 text';
  if (!/^(\ufeff)?WEBVTT([ \t][^\n]*)?\r?\n/.test(text)) return 'a WebVTT file starts with "WEBVTT" on its first line';
  if (!CUE_TIMING_RE.test(text)) return 'the file has no cue (a line like 00:00:01.000 --> 00:00:03.000)';
  return undefined;
}

const xmlEscape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The multivariant playlist with the video's subtitle tracks: a SUBTITLES group, which every variant names. */
function withSubtitles(text: string, tracks: Video['subtitles'], query: string): string {
  if (tracks.length === 0) return text;
  const media = tracks.map((t, i) => `#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="${t.lang}",NAME="${t.label}",` +
    `DEFAULT=${i === 0 ? 'YES' : 'NO'},AUTOSELECT=YES,URI="subtitles/${t.lang}.m3u8${query}"`);
  const lines = text.split('\n').map((line) => (line.startsWith('#EXT-X-STREAM-INF:') && !line.includes('SUBTITLES=') ? `${line},SUBTITLES="subs"` : line));
  const first = lines.findIndex((line) => line.startsWith('#EXT-X-STREAM-INF:') || line.startsWith('#EXT-X-MEDIA:'));
  lines.splice(first < 0 ? lines.length : first, 0, ...media);
  return lines.join('\n');
}

/** The DASH manifest with the video's subtitle tracks: a text adaptation set each, the file as its BaseURL. */
function mpdWithSubtitles(text: string, id: string, tracks: Video['subtitles'], query: string): string {
  if (tracks.length === 0) return text;
  const sets = tracks.map((t, i) => `\t\t<AdaptationSet id="${1000 + i}" contentType="text" mimeType="text/vtt" lang="${t.lang}">\n` +
    `\t\t\t<Role schemeIdUri="urn:mpeg:dash:role:2011" value="subtitle"/>\n\t\t\t<Label>${xmlEscape(t.label)}</Label>\n` +
    `\t\t\t<Representation id="subtitles-${t.lang}" bandwidth="256">\n` +
    `\t\t\t\t<BaseURL>/vod/${id}/subtitles/${t.lang}.vtt${xmlEscape(query)}</BaseURL>\n\t\t\t</Representation>\n\t\t</AdaptationSet>\n`).join('');
  const end = text.lastIndexOf('</Period>');
  return end < 0 ? text : `${text.slice(0, end)}${sets}\t${text.slice(end)}`;
}

/** Points a DASH manifest at a version folder (a BaseURL) and carries the token into its segment templates. */
function rewriteMpd(text: string, prefix: string, query: string): string {
  let out = text;
  if (query !== '') out = out.replace(/(initialization|media)="([^"]+)"/g, (_m, attr: string, uri: string) => `${attr}="${uri}${query.replace(/&/g, '&amp;')}"`);
  if (prefix !== '') {
    const base = `<BaseURL>${prefix}</BaseURL>`;
    out = out.includes('</ProgramInformation>')
      ? out.replace('</ProgramInformation>', `</ProgramInformation>\n\t${base}`)
      : out.replace(/(<MPD\b[^>]*>)/, `$1\n\t${base}`);
  }
  return out;
}

/**
 * The catalog API (`/api/videos`) and VOD playback (`/vod/:id/…`). Playback of `/vod/:id/index.m3u8`,
 * `manifest.mpd` and `thumbnails.vtt` resolves the video's current version and points every URI into that version's
 * folder (`/vod/:id/<version>/…`, immutable, cached for a year): a player that loaded the replay keeps fetching the
 * replay's segments even after the archive replaced it.
 */
export function registerVodRoutes(app: FastifyInstance, options: VodRoutesOptions): void {
  /**
   * `admin`: playback URLs carry a fresh token when signing is on. `token`: what a viewer presented (`?token=`); a
   * valid one for this video is carried into its playback URLs (HLS, DASH, poster, storyboard). Lists pass neither.
   */
  const view = (video: Video, admin: boolean, token?: unknown): VideoView => {
    const base = options.publicUrl();
    const key = options.playbackSigningKey;
    const expiresAtSec = key === undefined ? undefined
      : admin ? Math.floor(Date.now() / 1000) + options.playbackTokenTtlSec
      : playbackTokenExpiry(key, video.id, token);
    const query = expiresAtSec === undefined ? '' : `?token=${options.signToken(video.id, expiresAtSec)}`;
    const playable = video.version !== undefined;
    const archive = video.kind === 'archive';
    return {
      id: video.id,
      title: video.title,
      description: video.description,
      tags: video.tags,
      status: video.status,
      progress: video.progress,
      ...(video.error !== undefined ? { error: video.error } : {}),
      ...(admin && video.waiting !== undefined ? { waiting: video.waiting } : {}),
      durationSec: video.durationSec ?? null,
      renditions: video.renditions,
      thumbnail: archive ? `${base}/vod/${video.id}/poster.jpg${query}` : null,
      thumbnails: archive ? `${base}/vod/${video.id}/thumbnails.vtt${query}` : null,
      source: video.source,
      kind: video.kind ?? null,
      ad: video.ad,
      views: video.views,
      subtitles: video.subtitles.map((t) => ({ ...t, url: `${base}/vod/${video.id}/subtitles/${t.lang}.vtt${query}` })),
      createdAt: new Date(video.createdAt).toISOString(),
      playback: {
        hls: playable ? `${base}/vod/${video.id}/index.m3u8${query}` : null,
        dash: archive ? `${base}/vod/${video.id}/manifest.mpd${query}` : null,
        watchPage: `${base}/watch/${video.id}${query}`,
      },
      ...(admin && video.sourceSha256 ? { sourceSha256: video.sourceSha256 } : {}),
      ...(admin && video.sourceBytes !== undefined ? { sourceBytes: video.sourceBytes } : {}),
    };
  };

  app.get('/api/videos', { schema: { querystring: listQuery } }, async (request, reply) => {
    const query = request.query as { q?: string; limit: number; cursor?: string };
    if (query.cursor !== undefined && !isValidCursor(query.cursor)) {
      return sendError(reply, new OnAirError('ONAIR_ERR_VALIDATION', 'querystring/cursor is not a cursor this server made'));
    }
    const admin = app.isAdmin(request);
    const page = await options.catalog.list({
      limit: query.limit,
      all: admin,
      ...(query.q !== undefined ? { q: query.q } : {}),
      ...(query.cursor !== undefined ? { cursor: query.cursor } : {}),
    });
    return { videos: page.videos.map((v) => view(v, admin)), nextCursor: page.nextCursor ?? null };
  });

  app.get('/api/videos/:id', { schema: { params: videoIdParams } }, async (request, reply) => {
    const video = await options.catalog.get((request.params as { id: string }).id);
    const admin = app.isAdmin(request);
    // A failed upload or one still arriving is the admin's business only.
    if (!video || (!admin && video.version === undefined && video.status !== 'processing')) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND'));
    return view(video, admin, (request.query as Record<string, unknown>)['token']);
  });

  app.patch('/api/videos/:id', { onRequest: app.requireAdmin, schema: { params: videoIdParams, body: updateBody } }, async (request, reply) => {
    const { id } = request.params as { id: string };
    const before = await options.catalog.get(id);
    if (!before) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND'));
    const body = request.body as { title?: string; description?: string; tags?: string[]; ad?: boolean };
    const video = await options.catalog.update(id, { ...body, ...(body.title !== undefined ? { title: body.title.trim() } : {}) });
    if (video!.ad !== before.ad) options.adsChanged?.(id, video!.ad);
    return view(video!, true);
  });

  app.delete('/api/videos/:id', { onRequest: app.requireAdmin, schema: { params: videoIdParams } }, async (request, reply) => {
    const before = await options.catalog.get((request.params as { id: string }).id);
    const deleted = await options.deleteVideo((request.params as { id: string }).id);
    if (!deleted) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND'));
    if (before?.ad) options.adsChanged?.(before.id, false);
    return reply.code(204).send();
  });

  app.post('/api/videos/:id/retry', { onRequest: app.requireAdmin, schema: { params: videoIdParams } }, async (request, reply) => {
    const { id } = request.params as { id: string };
    const retried = await options.retryVideo?.(id);
    if (retried === undefined) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND'));
    if (!retried) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FAILED'));
    const video = await options.catalog.get(id);
    return reply.code(202).send(view(video!, true));
  });

  // ---- Subtitles (issue #19): WebVTT tracks an admin adds to a video, kept beside its versions --------------------
  const subtitleParams = {
    type: 'object', required: ['id', 'lang'],
    properties: { id: videoIdParams.properties.id, lang: { type: 'string', pattern: LANG_RE.source } },
  } as const;
  app.register(async (scope) => {
    scope.addContentTypeParser('text/vtt', { parseAs: 'buffer', bodyLimit: MAX_SUBTITLE_BYTES }, (_request, body, done) => done(null, body));
    scope.put('/api/videos/:id/subtitles/:lang', {
      onRequest: app.requireAdmin,
      bodyLimit: MAX_SUBTITLE_BYTES,
      schema: { params: subtitleParams, querystring: { type: 'object', additionalProperties: false, properties: { label: { type: 'string', pattern: LABEL_RE.source } } } },
    }, async (request, reply) => {
      const { id, lang } = request.params as { id: string; lang: string };
      const video = await options.catalog.get(id);
      if (!video) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND'));
      if (!Buffer.isBuffer(request.body)) return sendError(reply, new OnAirError('ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE', 'Send the track as Content-Type: text/vtt'));
      const problem = webvttProblem(request.body);
      if (problem) return sendError(reply, new OnAirError('ONAIR_ERR_VALIDATION', `body: ${problem}`));
      const others = video.subtitles.filter((t) => t.lang !== lang);
      if (others.length >= MAX_SUBTITLE_TRACKS) return sendError(reply, new OnAirError('ONAIR_ERR_VALIDATION', `At most ${MAX_SUBTITLE_TRACKS} subtitle tracks`));
      const label = (request.query as { label?: string }).label ?? lang;
      await options.storage.putBuffer(checkKey(`subtitles/${id}/${lang}.vtt`), request.body, 'text/vtt; charset=utf-8');
      const tracks = video.subtitles.some((t) => t.lang === lang) ? video.subtitles.map((t) => (t.lang === lang ? { lang, label } : t)) : [...others, { lang, label }];
      await options.catalog.setSubtitles(id, tracks);
      return view((await options.catalog.get(id))!, true);
    });
  });
  app.delete('/api/videos/:id/subtitles/:lang', { onRequest: app.requireAdmin, schema: { params: subtitleParams } }, async (request, reply) => {
    const { id, lang } = request.params as { id: string; lang: string };
    const video = await options.catalog.get(id);
    if (!video) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND'));
    if (!video.subtitles.some((t) => t.lang === lang)) return sendError(reply, new OnAirError('ONAIR_ERR_NOT_FOUND', 'No subtitle track in this language'));
    await options.catalog.setSubtitles(id, video.subtitles.filter((t) => t.lang !== lang));
    await options.storage.deletePrefix(checkKey(`subtitles/${id}/${lang}.vtt`));
    return reply.code(204).send();
  });
  /**
   * The token check of every `/vod/:id` route: undefined when signing is on and the request's token is not valid for
   * `id`, else the query that carries the token on into the URIs the answer lists ('' while playback is public).
   */
  const tokenQuery = (request: FastifyRequest, id: string): string | undefined => {
    const token = (request.query as Record<string, unknown>)['token'];
    const key = options.playbackSigningKey;
    if (key === undefined) return '';
    return verifyPlaybackToken(key, id, token) ? `?token=${encodeURIComponent(String(token))}` : undefined;
  };

  // A track's one-segment media playlist (HLS) and its file (HLS and DASH).
  app.get('/vod/:id/subtitles/:file', async (request, reply) => {
    const { id, file } = request.params as { id: string; file: string };
    const match = /^([a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?)\.(m3u8|vtt)$/.exec(file);
    if (!VIDEO_ID_RE.test(id) || !match) return sendError(reply, new OnAirError('ONAIR_ERR_NOT_FOUND'));
    const query = tokenQuery(request, id);
    if (query === undefined) return sendError(reply, new OnAirError('ONAIR_ERR_PLAYBACK_FORBIDDEN'));
    const lang = match[1]!;
    const video = await options.catalog.get(id);
    if (!video || !video.subtitles.some((t) => t.lang === lang)) return sendError(reply, new OnAirError('ONAIR_ERR_NOT_FOUND'));
    reply.header('access-control-allow-origin', '*').header('cache-control', 'public, max-age=5');
    if (match[2] === 'm3u8') {
      const duration = Math.max(1, video.durationSec ?? 1);
      return reply.type(contentTypeFor('x.m3u8')).send(['#EXTM3U', '#EXT-X-VERSION:3', `#EXT-X-TARGETDURATION:${Math.ceil(duration)}`,
        '#EXT-X-MEDIA-SEQUENCE:0', '#EXT-X-PLAYLIST-TYPE:VOD', `#EXTINF:${duration.toFixed(3)},`, `${lang}.vtt${query}`, '#EXT-X-ENDLIST', ''].join('\n'));
    }
    const object = await options.storage.get(checkKey(`subtitles/${id}/${lang}.vtt`));
    if (!object) return sendError(reply, new OnAirError('ONAIR_ERR_NOT_FOUND'));
    return reply.type('text/vtt; charset=utf-8').send(object.body);
  });

  app.get('/vod/:id/*', async (request, reply) => {
    const { id, '*': rest } = request.params as { id: string; '*': string };
    if (!VIDEO_ID_RE.test(id)) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND'));
    const query = tokenQuery(request, id);
    if (query === undefined) return sendError(reply, new OnAirError('ONAIR_ERR_PLAYBACK_FORBIDDEN'));

    const slash = rest.indexOf('/');
    const head = slash < 0 ? rest : rest.slice(0, slash);
    let version: string;
    let file: string;
    let pointed = false;
    let subtitles: Video['subtitles'] = [];
    if (slash > 0 && VERSION_RE.test(head)) {
      version = head;
      file = rest.slice(slash + 1);
    } else {
      const video = await options.catalog.get(id);
      if (!video || video.version === undefined) return sendError(reply, new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND', 'No playable version of this video yet'));
      version = video.version;
      file = rest;
      pointed = true;
      subtitles = video.subtitles;
    }
    if (!FILE_RE.test(file)) return sendError(reply, new OnAirError('ONAIR_ERR_NOT_FOUND'));
    const storageKey = checkKey(`${videoPrefix(id, version)}/${file}`);
    const ext = path.extname(file);
    const text = ext === '.m3u8' || ext === '.mpd' || ext === '.vtt';
    const range = text ? undefined : parseRange(request.headers.range);
    if (range === 'invalid') return sendError(reply, new OnAirError('ONAIR_ERR_RANGE_NOT_SATISFIABLE'));
    const object = await options.storage.get(storageKey, range);
    if (!object) return sendError(reply, new OnAirError('ONAIR_ERR_NOT_FOUND'));
    // A view: a player asked for a media playlist (or the DASH manifest). The watch page's own requests, which put the
    // playlists into the page (server/web.ts), are no view: its player sends the view once it plays.
    if (((ext === '.m3u8' && rest !== 'index.m3u8') || ext === '.mpd') && !isSelfRequest(request.headers)) options.viewed?.(id, request);
    reply.header('access-control-allow-origin', '*');
    // The current version's entry points change when the archive replaces the replay; a version's files never do.
    reply.header('cache-control', pointed ? 'public, max-age=5' : 'public, max-age=31536000, immutable');
    reply.type(contentTypeFor(file));
    if (text) {
      const chunks: Buffer[] = [];
      for await (const chunk of object.body) chunks.push(chunk as Buffer);
      let body = Buffer.concat(chunks).toString('utf8');
      const prefix = pointed && !file.includes('/') ? `${version}/` : '';
      if (ext === '.m3u8') body = rewritePlaylist(body, prefix, query);
      else if (ext === '.mpd') body = rewriteMpd(body, prefix, query);
      if (pointed && file === 'index.m3u8') body = withSubtitles(body, subtitles, query);
      if (pointed && ext === '.mpd') body = mpdWithSubtitles(body, id, subtitles, query);
      else body = body.replace(/^(?!WEBVTT)([A-Za-z0-9][A-Za-z0-9._-]*\.jpg)(#xywh=)/gm, `${prefix}$1${query}$2`);
      return reply.send(body);
    }
    reply.header('accept-ranges', 'bytes');
    if (object.range) {
      reply.code(206).header('content-range', `bytes ${object.range.start}-${object.range.end}/${object.size}`);
      reply.header('content-length', object.range.end - object.range.start + 1);
    } else {
      reply.header('content-length', object.size);
    }
    return reply.send(object.body);
  });
}
