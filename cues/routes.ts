import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OnAirError } from '../lib/errors.js';

export interface CueInput {
  kind: 'ad' | 'news';
  durationSec: number;
  text?: string;
}

export interface CueRoutesOptions {
  /** Adds a cue to a live stream; undefined when the stream does not exist, an error when it is not live. */
  addCue(streamId: string, input: CueInput): Promise<{ id: string; kind: string; startDate: string } | undefined>;
}

/** News flashes last this long unless the body says otherwise. */
export const DEFAULT_NEWS_SEC = 10;
export const MAX_NEWS_TEXT = 200;

const cueBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    kind: { type: 'string', enum: ['ad', 'news'] },
    durationSec: { type: 'number', exclusiveMinimum: 0, maximum: 3600 },
    text: { type: 'string', minLength: 1, maxLength: MAX_NEWS_TEXT },
  },
  required: ['kind'],
} as const;

const params = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^[a-z0-9]{12}$' } },
  required: ['id'],
} as const;

/** `POST /api/streams/:id/cues` (SPEC): an ad break or a news flash on a live stream. */
export function registerCueRoutes(app: FastifyInstance, options: CueRoutesOptions): void {
  app.post('/api/streams/:id/cues', { onRequest: app.requireAdmin, schema: { params, body: cueBody } }, async (request, reply) => {
    const body = request.body as { kind: 'ad' | 'news'; durationSec?: number; text?: string };
    let input: CueInput;
    if (body.kind === 'ad') {
      if (body.durationSec === undefined) throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/durationSec is required for an ad break');
      if (body.text !== undefined) throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/text belongs to news flashes only');
      input = { kind: 'ad', durationSec: body.durationSec };
    } else {
      const text = body.text?.trim();
      if (!text) throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/text is required for a news flash');
      if (/\p{Cc}/u.test(text)) throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/text must not hold control characters');
      if ((body.durationSec ?? DEFAULT_NEWS_SEC) > 300) throw new OnAirError('ONAIR_ERR_VALIDATION', 'body/durationSec must be at most 300 for a news flash');
      input = { kind: 'news', durationSec: body.durationSec ?? DEFAULT_NEWS_SEC, text };
    }
    const cue = await options.addCue((request.params as { id: string }).id, input);
    if (!cue) throw new OnAirError('ONAIR_ERR_STREAM_NOT_FOUND');
    return reply.code(201).send(cue);
  });
}
