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
  const page = (reply: FastifyReply, name: keyof typeof PAGES): FastifyReply => reply.type('text/html; charset=utf-8')
    .header('cache-control', 'no-cache')
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'same-origin')
    .send(pages[name]);

  app.get('/', async (_request, reply) => page(reply, 'home'));
  app.get('/studio', async (_request, reply) => page(reply, 'studio'));
  app.get('/watch/:id', async (request, reply) => {
    const { id } = request.params as { id: string };
    if (!/^([a-z0-9]{12}|[a-z0-9]{16})$/.test(id)) return reply.callNotFound();
    return page(reply, 'watch');
  });

  app.get('/favicon.ico', async (_request, reply) => reply.code(204).header('cache-control', 'public, max-age=86400').send());

  app.get('/assets/:name', async (request, reply) => {
    const asset = assets.get((request.params as { name: string }).name);
    if (!asset) return reply.callNotFound();
    return reply.type(asset.type).header('cache-control', 'public, max-age=300').header('x-content-type-options', 'nosniff').send(asset.body);
  });
}
