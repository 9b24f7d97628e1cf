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
  /** An upload was declared: the catalog gets its video (status processing, not listed publicly yet). */
  created(id: string, metadata: UploadMetadata): Promise<void>;
  /**
   * Every byte arrived (called once the response is sent: tus still reads the upload while it answers): the file at
   * `file` becomes the video's source and its job is queued. A failure here is retried at the next start.
   */
  finished(id: string, file: string): Promise<void>;
  onError(error: unknown, id: string): void;
}

const UPLOAD_ID_RE = /^[a-z0-9]{16}$/;

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
    datastore: new FileStore({ directory: options.dir, expirationPeriodInMilliseconds: 7 * 24 * 3600_000 }),
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
