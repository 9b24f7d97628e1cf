import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';

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

/**
 * The watch page for each kind: `<body data-kind="…">`, which the page's script reads to ask the right resource; with
 * no kind (no such stream or video) the page says there is no such stream.
 */
function watchPages(shell: Buffer): Record<WatchKind | 'none', Buffer> {
  const html = shell.toString('utf8');
  if (!html.includes('<body>')) throw new Error('web/watch.html has no <body> to mark');
  const marked = (kind: WatchKind): Buffer => Buffer.from(html.replace('<body>', `<body data-kind="${kind}">`));
  return { stream: marked('stream'), video: marked('video'), none: shell };
}

/**
 * Which the id is, as the node's own public API answers it (`GET /api/streams/:id`, then `GET /api/videos/:id`, no
 * credentials): the same routes and rules the page then uses, so what the public may see stays decided in one place
 * (a failed upload is no video to a viewer). The id has been checked against the id patterns before it goes into a URL.
 */
async function watchKind(app: FastifyInstance, id: string): Promise<WatchKind | undefined> {
  for (const kind of ['stream', 'video'] as const) {
    const response = await app.inject({ method: 'GET', url: `/api/${kind}s/${id}` }).catch(() => undefined);
    if (response?.statusCode === 200) return kind;
  }
  return undefined;
}

/**
 * Every page allows only its own origin: scripts, styles, media, API calls and the chat's WebSocket. No inline script,
 * no external request (a page cannot be made to load anything from elsewhere).
 */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; " +
  "connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/** `/`, `/studio`, `/watch/:id` and `/assets/*`, read once at start and served from memory. */
export function registerWebRoutes(app: FastifyInstance): void {
  const assets = new Map(Object.entries(ASSETS).map(([name, { file, type }]) => [name, { body: readFileSync(file), type }]));
  const pages = Object.fromEntries(Object.entries(PAGES).map(([name, file]) => [name, readFileSync(path.join(root, 'web', file))])) as Record<keyof typeof PAGES, Buffer>;
  const watch = watchPages(pages.watch);
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
    return page(reply, 'watch', watch[(await watchKind(app, id)) ?? 'none']);
  });

  app.get('/favicon.ico', async (_request, reply) => reply.code(204).header('cache-control', 'public, max-age=86400').send());

  app.get('/assets/:name', async (request, reply) => {
    const asset = assets.get((request.params as { name: string }).name);
    if (!asset) return reply.callNotFound();
    return reply.type(asset.type).header('cache-control', 'public, max-age=300').header('x-content-type-options', 'nosniff').send(asset.body);
  });
}
