import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { selfRequestHeaders } from '../lib/selfRequest.js';
import { PLAYBACK_TOKEN } from '../lib/signing.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);

/** The files the pages may load, by public name: a fixed table, so no path is ever built from a request. */
const JS = 'text/javascript; charset=utf-8';
const ASSETS: Record<string, { file: string; type: string }> = {
  'hls.min.js': { file: require.resolve('hls.js/dist/hls.min.js'), type: JS },
  // The package exports only its unminified bundle; the minified one sits beside it.
  'socket.io.min.js': { file: path.join(path.dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js'), type: JS },
  'common.js': { file: path.join(root, 'web', 'common.js'), type: JS },
  'watch.js': { file: path.join(root, 'web', 'watch.js'), type: JS },
  'studio.js': { file: path.join(root, 'web', 'studio.js'), type: JS },
  'home.js': { file: path.join(root, 'web', 'home.js'), type: JS },
  'onair.css': { file: path.join(root, 'web', 'onair.css'), type: 'text/css; charset=utf-8' },
};

/** The pages: HTML shells whose scripts do the rest through the public API. */
const PAGES = { home: 'index.html', studio: 'studio.html', watch: 'watch.html' } as const;

/** What `/watch/:id` shows: a stream's page (live, offline, or its replay after the event) or a catalog video's. */
export type WatchKind = 'stream' | 'video';

/** What `/watch/:id` is, and the public API's answer for it (what the page's script would ask first). */
interface WatchTarget {
  kind: WatchKind;
  item: { status?: unknown; replay?: { hls?: unknown } };
}

/** At most this much playlist text goes into a watch page; past it, the rest loads as before (a long video's). */
const MAX_PAGE_PLAYLIST_BYTES = 64 * 1024;

/**
 * An on-demand video's playlists as its player loads them first, for the page to carry: the multivariant playlist and
 * the media playlists of its renditions and audio, in that order while they fit MAX_PAGE_PLAYLIST_BYTES. Subtitles'
 * are not carried: no first frame waits for them, and a carried one showed no cue in hls.js 1.7.4 (e2e/subtitles).
 * Asked of the node's own routes (`app.inject`), with the viewer's token, so the answers are what the player would get;
 * marked as the node's own requests, so that putting the page together counts no view. Keyed by path and query, as the
 * player asks for them. Undefined when the multivariant playlist cannot be had (the player then asks and is answered).
 * Bounded in time by onDemandPlaylistsInTime.
 */
async function onDemandPlaylists(app: FastifyInstance, master: string): Promise<Record<string, string> | undefined> {
  const text = async (url: string): Promise<string | undefined> => {
    const response = await app.inject({ method: 'GET', url, headers: selfRequestHeaders }).catch(() => undefined);
    return response?.statusCode === 200 && response.body.startsWith('#EXTM3U') ? response.body : undefined;
  };
  const multivariant = await text(master);
  if (multivariant === undefined) return undefined;
  const base = new URL(master, 'http://onair.invalid');
  // Only the video's own playlists: no URI the playlist lists can make the node ask for anything else.
  const scope = base.pathname.slice(0, base.pathname.lastIndexOf('/') + 1);
  const unique = new Set<string>();
  const lines = multivariant.split('\n');
  lines.forEach((line, index) => {
    let uri: string | undefined;
    if (line.startsWith('#EXT-X-MEDIA:') && /[:,]TYPE=AUDIO(,|$)/.test(line)) uri = /URI="([^"]+)"/.exec(line)?.[1];
    else if (line.startsWith('#EXT-X-STREAM-INF:')) uri = lines[index + 1]?.trim();
    if (!uri || uri.startsWith('#')) return;
    const url = new URL(uri, base);
    if (url.origin === base.origin && url.pathname.startsWith(scope) && url.pathname.endsWith('.m3u8')) unique.add(url.pathname + url.search);
  });
  const listed = [...unique];
  const playlists: Record<string, string> = { [master]: multivariant };
  let bytes = multivariant.length;
  const carry = (url: string, body: string | undefined): void => {
    if (body === undefined || bytes + body.length > MAX_PAGE_PLAYLIST_BYTES) return;
    playlists[url] = body;
    bytes += body.length;
  };
  // The first one alone, then the others together: a video's media playlists are about as long as each other (the
  // same segments), so a long video's, past the bound from the first, are not all read for nothing on every page.
  const [first, ...others] = listed;
  if (first === undefined) return playlists;
  carry(first, await text(first));
  if (playlists[first] === undefined) return playlists;
  const bodies = await Promise.all(others.map(text));
  others.forEach((url, index) => carry(url, bodies[index]));
  return playlists;
}

/**
 * How long the watch page waits for the playlists it would carry: past it (storage slow or away), the page goes
 * without them, and its player asks as it did before.
 */
const PAGE_PLAYLISTS_WAIT_MS = 500;

/** onDemandPlaylists, or undefined once PAGE_PLAYLISTS_WAIT_MS have gone by. */
async function onDemandPlaylistsInTime(app: FastifyInstance, master: string): Promise<Record<string, string> | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => { timer = setTimeout(resolve, PAGE_PLAYLISTS_WAIT_MS, undefined); });
  try {
    return await Promise.race([onDemandPlaylists(app, master), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the watch page carries besides its shell, for the player to start without a round trip (see watchPage). */
interface WatchStart {
  /** The playlist the player loads first: preloaded while the scripts load, unless it is in `playlists`. */
  playlist?: string;
  /** On demand: the playlists themselves, by path and query (onDemandPlaylists). */
  playlists?: Record<string, string>;
}

/** The playlist the page's player loads first for what `target` is (none in real-time mode), with the viewer's token. */
function firstPlaylist(target: WatchTarget, id: string, token: string | undefined, webrtc: boolean): string | undefined {
  const query = token === undefined ? '' : `?token=${encodeURIComponent(token)}`;
  const { kind, item } = target;
  const replay = typeof item.replay?.hls === 'string' ? item.replay.hls.replace(/^https?:\/\/[^/]+/, '') : undefined;
  return kind === 'video' ? `/vod/${id}/index.m3u8${query}`
    : item.status === 'live' ? (webrtc ? undefined : `/live/${id}/index.m3u8${query}`)
      : replay?.startsWith('/vod/') ? replay : undefined;
}

/**
 * The watch page for one id, marked so that playback starts without a round trip:
 * - `<body data-kind="…">` says which the id is; with no kind (no such stream or video) the page says there is none;
 * - `<script type="application/json" id="onair-item">`: the API's public answer for it, as the page would fetch it
 *   (data, never run: the CSP allows no inline script); `<` is escaped so no title can close the element;
 * - on demand (a video, a replay), `<script type="application/json" id="onair-playlists">`: the playlists the player
 *   loads first (onDemandPlaylists); it takes each from there once instead of asking (web/common.js);
 * - otherwise `<link rel="preload">` of the playlist the player will load first (live, not real-time mode), fetched
 *   while the scripts load.
 */
function watchPage(shell: string, target: WatchTarget | undefined, start: WatchStart): Buffer {
  if (!target) return Buffer.from(shell);
  const attribute = (value: string): string => value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  const data = (value: unknown): string => JSON.stringify(value).replace(/</g, '\\u003c');
  let marks = `\n  <script type="application/json" id="onair-item">${data(target.item)}</script>`;
  if (start.playlists) marks += `\n  <script type="application/json" id="onair-playlists">${data(start.playlists)}</script>`;
  let html = shell.replace('<body>', `<body data-kind="${target.kind}">${marks}`);
  if (start.playlist && !start.playlists) html = html.replace('</head>', `  <link rel="preload" href="${attribute(start.playlist)}" as="fetch" crossorigin="anonymous">\n</head>`);
  return Buffer.from(html);
}

/**
 * Which the id is, as the node's own public API answers it (`GET /api/streams/:id`, then `GET /api/videos/:id`, no
 * credentials but the viewer's playback token): the same routes and rules the page then uses, so what the public may
 * see stays decided in one place (a failed upload is no video to a viewer). The id has been checked against the id
 * patterns, and the token against PLAYBACK_TOKEN (a token's shape, lib/signing.ts), before either goes into a URL.
 */
async function watchTarget(app: FastifyInstance, id: string, token: string | undefined): Promise<WatchTarget | undefined> {
  const query = token === undefined ? '' : `?token=${encodeURIComponent(token)}`;
  for (const kind of ['stream', 'video'] as const) {
    const response = await app.inject({ method: 'GET', url: `/api/${kind}s/${id}${query}` }).catch(() => undefined);
    if (response?.statusCode !== 200) continue;
    try {
      const item = response.json() as WatchTarget['item'];
      if (item !== null && typeof item === 'object') return { kind, item };
    } catch { /* not JSON: treated as absent */ }
  }
  return undefined;
}

/**
 * Every page allows only its own origin: scripts, styles, media, API calls and the chat's WebSocket. No inline script,
 * no external request (a page cannot be made to load anything from elsewhere). `media-src data:`: hls.js makes the
 * text track of in-band captions a `<track src="data:,WEBVTT">`; blocked, the captions never showed (e2e/captions).
 */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: data:; " +
  "connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/** `/`, `/studio`, `/watch/:id` and `/assets/*`, read once at start and served from memory. */
export function registerWebRoutes(app: FastifyInstance): void {
  const assets = new Map(Object.entries(ASSETS).map(([name, { file, type }]) => [name, { body: readFileSync(file), type }]));
  const pages = Object.fromEntries(Object.entries(PAGES).map(([name, file]) => [name, readFileSync(path.join(root, 'web', file))])) as Record<keyof typeof PAGES, Buffer>;
  const watchShell = pages.watch.toString('utf8');
  if (!watchShell.includes('<body>') || !watchShell.includes('</head>')) throw new Error('web/watch.html has no <body> or </head> to mark');
  const page = (reply: FastifyReply, name: keyof typeof PAGES, body: Buffer = pages[name]): FastifyReply => reply.type('text/html; charset=utf-8')
    .header('cache-control', 'no-cache')
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'same-origin')
    .send(body);

  app.get('/', async (_request, reply) => page(reply, 'home'));
  app.get('/studio', async (_request, reply) => page(reply, 'studio'));
  app.get('/watch/:id', async (request, reply) => {
    const { id } = request.params as { id: string };
    if (!/^([a-z0-9]{12}|[a-z0-9]{16})$/.test(id)) return reply.callNotFound();
    const { token, mode } = request.query as { token?: unknown; mode?: unknown };
    const signed = typeof token === 'string' && PLAYBACK_TOKEN.test(token) ? token : undefined;
    const target = await watchTarget(app, id, signed);
    const playlist = target && firstPlaylist(target, id, signed, mode === 'webrtc');
    const playlists = playlist?.startsWith('/vod/') ? await onDemandPlaylistsInTime(app, playlist) : undefined;
    return page(reply, 'watch', watchPage(watchShell, target, { playlist, playlists }));
  });

  app.get('/favicon.ico', async (_request, reply) => reply.code(204).header('cache-control', 'public, max-age=86400').send());

  app.get('/assets/:name', async (request, reply) => {
    const asset = assets.get((request.params as { name: string }).name);
    if (!asset) return reply.callNotFound();
    return reply.type(asset.type).header('cache-control', 'public, max-age=300').header('x-content-type-options', 'nosniff').send(asset.body);
  });
}
