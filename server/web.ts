import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);

/** The files the pages may load, by public name: a fixed table, so no path is ever built from a request. */
const ASSETS: Record<string, { file: string; type: string }> = {
  'hls.min.js': { file: require.resolve('hls.js/dist/hls.min.js'), type: 'text/javascript; charset=utf-8' },
  'watch.js': { file: path.join(root, 'web', 'watch.js'), type: 'text/javascript; charset=utf-8' },
  'onair.css': { file: path.join(root, 'web', 'onair.css'), type: 'text/css; charset=utf-8' },
};

/** `/watch/:id` and `/assets/*`, read once at start and served from memory. */
export function registerWebRoutes(app: FastifyInstance): void {
  const assets = new Map(Object.entries(ASSETS).map(([name, { file, type }]) => [name, { body: readFileSync(file), type }]));
  const watch = readFileSync(path.join(root, 'web', 'watch.html'));

  app.get('/watch/:id', async (request, reply) => {
    const { id } = request.params as { id: string };
    if (!/^([a-z0-9]{12}|[a-z0-9]{16})$/.test(id)) return reply.callNotFound();
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(watch);
  });

  app.get('/favicon.ico', async (_request, reply) => reply.code(204).header('cache-control', 'public, max-age=86400').send());

  app.get('/assets/:name', async (request, reply) => {
    const asset = assets.get((request.params as { name: string }).name);
    if (!asset) return reply.callNotFound();
    return reply.type(asset.type).header('cache-control', 'public, max-age=300').send(asset.body);
  });
}
