import { readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Server as TusServer } from '@tus/server';
import { FileStore } from '@tus/file-store';
import { EVENTS } from '@tus/utils';
import { OnAirError } from '../lib/errors.js';
import { randomId } from '../lib/ids.js';

export interface UploadMetadata {
  title: string;
  description: string;
  tags: string[];
  /** The original file's extension (`.mp4`), when it is a plain one. */
  extension: string;
}

export interface UploadRoutesOptions {
  /** Where partial uploads live (`<dataDir>/uploads`): on disk, so an upload resumes across a node restart. */
  dir: string;
  maxBytes: number;
  /**
   * An upload whose last byte has not arrived this long after its creation is expired: tus answers 410 to it, and
   * the sweep (every quarter of this, between 1 s and 1 h) removes its partial file and calls `expired`.
   */
  expiryMs: number;
  /** An upload was declared: the catalog gets its video (status processing, not listed publicly yet). */
  created(id: string, metadata: UploadMetadata): Promise<void>;
  /**
   * Every byte arrived (called once the response is sent: tus still reads the upload while it answers): the file at
   * `file` becomes the video's source and its job is queued. A failure here is retried at the next start.
   */
  finished(id: string, file: string): Promise<void>;
  /** An upload expired before every byte arrived: its partial file and its tus record are gone. */
  expired(id: string): Promise<void>;
  onError(error: unknown, id: string): void;
}

const UPLOAD_ID_RE = /^[a-z0-9]{16}$/;
/** At most this many expired uploads are removed per sweep (the next sweep takes the rest). */
const SWEEP_BATCH = 1000;

/**
 * Removes the uploads in `dir` (tus file store: `<id>` and `<id>.json`) created more than `expiryMs` ago whose file
 * is still short of its declared size; returns their ids. A complete upload that was not handed over yet is kept (the
 * hand-over, or the next start, takes it); names that are not upload ids are left alone.
 */
export async function sweepExpiredUploads(dir: string, expiryMs: number, now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (removed.length >= SWEEP_BATCH) break;
    const id = name.endsWith('.json') ? name.slice(0, -5) : '';
    if (!UPLOAD_ID_RE.test(id)) continue;
    const file = path.join(dir, id);
    let info: { size?: unknown; creation_date?: unknown };
    try {
      info = JSON.parse(await readFile(`${file}.json`, 'utf8')) as typeof info;
    } catch {
      continue; // being written, or not tus's: not ours to judge
    }
    const created = typeof info.creation_date === 'string' ? Date.parse(info.creation_date) : NaN;
    if (!Number.isFinite(created) || now - created <= expiryMs) continue;
    const offset = (await stat(file).catch(() => undefined))?.size ?? 0;
    if (typeof info.size === 'number' && offset >= info.size) continue;
    await rm(file, { force: true });
    await rm(`${file}.json`, { force: true });
    removed.push(id);
  }
  return removed;
}

class MetadataError extends Error {}

/** tus `Upload-Metadata` → what the catalog needs; a bad value is a 400 before any byte is stored. */
export function parseUploadMetadata(metadata: Record<string, string | null> | undefined): UploadMetadata {
  const get = (key: string): string | undefined => metadata?.[key] ?? undefined;
  const filename = get('filename') ?? get('name') ?? '';
  const title = (get('title') ?? filename.replace(/\.[^.]*$/, '')).trim();
  if (title === '' || title.length > 200 || /\p{Cc}/u.test(title)) {
    throw new MetadataError('Upload-Metadata: a "title" (or "filename") of 1 to 200 characters without control characters is required');
  }
  const description = get('description') ?? '';
  if (description.length > 5000) throw new MetadataError('Upload-Metadata: "description" is at most 5000 characters');
  const tags = (get('tags') ?? '').split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (tags.length > 20 || tags.some((t) => t.length > 40 || /\p{Cc}/u.test(t))) {
    throw new MetadataError('Upload-Metadata: "tags" is at most 20 comma-separated tags of at most 40 characters');
  }
  const ext = path.extname(filename).toLowerCase();
  return { title, description, tags, extension: /^\.[a-z0-9]{1,5}$/.test(ext) ? ext : '' };
}

/**
 * Resumable uploads: tus 1.0 (creation, termination, expiration) at `/api/uploads`, admin token required, through
 * @tus/server with its file store. tus needs the raw request body, so it lives in its own encapsulated scope where
 * fastify parses nothing; the JSON API outside keeps its parsers.
 */
export function registerUploadRoutes(app: FastifyInstance, options: UploadRoutesOptions): void {
  const tus = new TusServer({
    path: '/api/uploads',
    datastore: new FileStore({ directory: options.dir, expirationPeriodInMilliseconds: options.expiryMs }),
    maxSize: options.maxBytes,
    relativeLocation: true,
    respectForwardedHeaders: false,
    namingFunction: () => randomId(16),
    getFileIdFromRequest: (_req, lastPath) => (lastPath !== undefined && UPLOAD_ID_RE.test(lastPath) ? lastPath : undefined),
    onUploadCreate: async (_req, upload) => {
      let metadata: UploadMetadata;
      try {
        metadata = parseUploadMetadata(upload.metadata);
      } catch (error) {
        if (error instanceof MetadataError) throw { status_code: 400, body: `${error.message}\n` };
        throw error;
      }
      await options.created(upload.id, metadata);
      return {};
    },
  });
  tus.on(EVENTS.POST_FINISH, (_req, _res, upload) => {
    options.finished(upload.id, path.join(options.dir, upload.id)).catch((error: unknown) => options.onError(error, upload.id));
  });

  // Expired uploads: swept while the server runs (one sweep at a time; the first soon after start).
  let sweeping = false;
  const sweep = async (): Promise<void> => {
    if (sweeping) return;
    sweeping = true;
    try {
      for (const id of await sweepExpiredUploads(options.dir, options.expiryMs)) {
        await options.expired(id).catch((error: unknown) => options.onError(error, id));
      }
    } catch (error) {
      options.onError(error, '');
    } finally {
      sweeping = false;
    }
  };
  const sweepEveryMs = Math.min(3600_000, Math.max(1000, Math.floor(options.expiryMs / 4)));
  const timer = setInterval(() => void sweep(), sweepEveryMs);
  timer.unref();
  // What expired while the node was down goes soon after start, not an interval later.
  const first = setTimeout(() => void sweep(), Math.min(sweepEveryMs, 10_000));
  first.unref();
  app.addHook('onClose', async () => {
    clearInterval(timer);
    clearTimeout(first);
  });

  app.register(async (scope) => {
    // tus reads the body itself: no parser may consume it.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    // Browsers send CORS preflights without credentials; every other method needs the admin token.
    const adminUnlessPreflight = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      if (request.method !== 'OPTIONS') await scope.requireAdmin(request, reply);
    };
    const handle = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      reply.hijack();
      await tus.handle(request.raw as never, reply.raw as never);
    };
    for (const url of ['/api/uploads', '/api/uploads/:id']) {
      scope.route({ method: ['POST', 'PATCH', 'HEAD', 'DELETE', 'OPTIONS', 'GET'], url, onRequest: adminUnlessPreflight, handler: handle, exposeHeadRoute: false });
    }
  });
}
