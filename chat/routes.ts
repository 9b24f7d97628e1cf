import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OnAirError } from '../lib/errors.js';
import { MAX_SLOW_MODE_SEC, type BanRequest, type ChatServer } from './ChatServer.js';

export interface ChatRoutesOptions {
  chat: ChatServer;
  /** Whether a presented bearer token is the admin token (constant-time). */
  streamExists(streamId: string): Promise<boolean>;
  /**
   * The live event behind a video id, for the replay API. Until the VOD catalog exists, a replay's video id is the
   * live event's id (`eventId` in the stream stats).
   */
  video(videoId: string): Promise<{ eventId: string } | undefined>;
}

/** The longest video the replay API takes positions in (a year: beyond any real recording). */
const MAX_OFFSET_SEC = 366 * 24 * 3600;
const MAX_PAGE = 5000;
const DEFAULT_PAGE = 1000;

const streamParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^[a-z0-9]{12}$' } },
  required: ['id'],
} as const;

const commentParams = {
  type: 'object',
  properties: {
    id: { type: 'string', pattern: '^[a-z0-9]{12}$' },
    commentId: { type: 'string', pattern: '^[a-z0-9]{16}$' },
  },
  required: ['id', 'commentId'],
} as const;

const banParams = {
  type: 'object',
  properties: {
    id: { type: 'string', pattern: '^[a-z0-9]{12}$' },
    banId: { type: 'string', pattern: '^[a-z0-9]{12}$' },
  },
  required: ['id', 'banId'],
} as const;

const settingsBody = {
  type: 'object',
  additionalProperties: false,
  properties: { slowModeSec: { type: 'integer', minimum: 0, maximum: MAX_SLOW_MODE_SEC } },
  required: ['slowModeSec'],
} as const;

const banBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    commentId: { type: 'string', pattern: '^[a-z0-9]{16}$' },
    address: { type: 'string', minLength: 2, maxLength: 64 },
    scope: { type: 'string', enum: ['connection', 'address'] },
    durationSec: { type: 'integer', minimum: 1, maximum: 366 * 24 * 3600 },
  },
} as const;

const videoParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } },
  required: ['id'],
} as const;

const replayQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    fromSec: { type: 'number', minimum: 0, maximum: MAX_OFFSET_SEC },
    toSec: { type: 'number', minimum: 0, maximum: MAX_OFFSET_SEC },
    limit: { type: 'integer', minimum: 1, maximum: MAX_PAGE },
    cursor: { type: 'string', pattern: '^[0-9]{1,14}\\.[a-z0-9]{16}$' },
  },
} as const;

/** A ban as the API shows it (the target is an address or a connection id: admin eyes only). */
function banView(ban: { id: string; kind: string; target: string; createdAt: number; expiresAt: number | null }): unknown {
  return { id: ban.id, kind: ban.kind, target: ban.target, createdAt: ban.createdAt, expiresAt: ban.expiresAt };
}

/**
 * The chat's HTTP routes: the moderation the studio calls (admin token) and the replay API.
 *
 * - `GET /api/streams/:id/chat` → `{ streamId, slowModeSec, viewers, reactions, reactionWindowMs }`
 * - `PUT /api/streams/:id/chat` `{ slowModeSec }` (admin)
 * - `DELETE /api/streams/:id/comments/:commentId` (admin) → 204, and `removed { id }` to every viewer
 * - `POST /api/streams/:id/bans` `{ commentId, scope?, durationSec? }` or `{ address, durationSec? }` (admin) → 201
 * - `GET /api/streams/:id/bans`, `DELETE /api/streams/:id/bans/:banId` (admin)
 * - `GET /api/videos/:id/chat?fromSec=&toSec=&limit=&cursor=` → the kept comments with their offset in the video
 */
export function registerChatRoutes(app: FastifyInstance, options: ChatRoutesOptions): void {
  const { chat } = options;

  const existingStream = async (request: FastifyRequest): Promise<string> => {
    const { id } = request.params as { id: string };
    if (!(await options.streamExists(id))) throw new OnAirError('ONAIR_ERR_STREAM_NOT_FOUND');
    return id;
  };

  app.get('/api/streams/:id/chat', { schema: { params: streamParams } }, async (request) => {
    const id = await existingStream(request);
    const settings = await chat.settings(id);
    return { streamId: id, ...settings, viewers: chat.viewers(id), reactions: chat.reactions.list, reactionWindowMs: chat.windowMs };
  });

  app.put('/api/streams/:id/chat', { onRequest: app.requireAdmin, schema: { params: streamParams, body: settingsBody } }, async (request) => {
    const id = await existingStream(request);
    const settings = await chat.setSettings(id, request.body as { slowModeSec: number });
    return { streamId: id, ...settings, viewers: chat.viewers(id), reactions: chat.reactions.list, reactionWindowMs: chat.windowMs };
  });

  app.delete('/api/streams/:id/comments/:commentId', { onRequest: app.requireAdmin, schema: { params: commentParams } }, async (request, reply: FastifyReply) => {
    const id = await existingStream(request);
    const { commentId } = request.params as { commentId: string };
    if (!(await chat.removeComment(id, commentId))) throw new OnAirError('ONAIR_ERR_CHAT_COMMENT_NOT_FOUND');
    return reply.code(204).send();
  });

  app.post('/api/streams/:id/bans', { onRequest: app.requireAdmin, schema: { params: streamParams, body: banBody } }, async (request, reply) => {
    const id = await existingStream(request);
    const body = request.body as { commentId?: string; address?: string; scope?: 'connection' | 'address'; durationSec?: number };
    if ((body.commentId === undefined) === (body.address === undefined)) {
      throw new OnAirError('ONAIR_ERR_VALIDATION', 'body must have exactly one of commentId and address');
    }
    if (body.address !== undefined && body.scope === 'connection') {
      throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/scope "connection" needs a commentId');
    }
    const ban: BanRequest = body.commentId !== undefined
      ? { commentId: body.commentId, ...(body.scope ? { scope: body.scope } : {}), ...(body.durationSec ? { durationSec: body.durationSec } : {}) }
      : { address: body.address!, ...(body.durationSec ? { durationSec: body.durationSec } : {}) };
    return reply.code(201).send(banView(await chat.ban(id, ban)));
  });

  app.get('/api/streams/:id/bans', { onRequest: app.requireAdmin, schema: { params: streamParams } }, async (request) => {
    const id = await existingStream(request);
    return { bans: (await chat.bans(id)).map(banView) };
  });

  app.delete('/api/streams/:id/bans/:banId', { onRequest: app.requireAdmin, schema: { params: banParams } }, async (request, reply) => {
    const id = await existingStream(request);
    const { banId } = request.params as { banId: string };
    if (!(await chat.unban(id, banId))) throw new OnAirError('ONAIR_ERR_CHAT_BAN_NOT_FOUND');
    return reply.code(204).send();
  });

  app.get('/api/videos/:id/chat', { schema: { params: videoParams, querystring: replayQuery } }, async (request) => {
    const { id } = request.params as { id: string };
    const query = request.query as { fromSec?: number; toSec?: number; limit?: number; cursor?: string };
    const fromSec = query.fromSec ?? 0;
    if (query.toSec !== undefined && fromSec > query.toSec) {
      throw new OnAirError('ONAIR_ERR_VALIDATION', 'querystring/fromSec must be less than or equal to toSec');
    }
    const video = await options.video(id);
    if (!video) throw new OnAirError('ONAIR_ERR_VIDEO_NOT_FOUND');
    let after: { offsetMs: number; id: string } | undefined;
    if (query.cursor !== undefined) {
      const [offset, commentId] = query.cursor.split('.');
      after = { offsetMs: Number(offset), id: commentId! };
    }
    const page = await chat.replay(video.eventId, {
      fromMs: Math.round(fromSec * 1000),
      toMs: query.toSec === undefined ? undefined : Math.round(query.toSec * 1000),
      limit: query.limit ?? DEFAULT_PAGE,
      after,
    });
    return {
      videoId: id,
      comments: page.comments,
      ...(page.next ? { nextCursor: `${page.next.offsetMs}.${page.next.id}` } : {}),
    };
  });
}
