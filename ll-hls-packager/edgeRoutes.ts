import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, Gauge, type Registry } from 'prom-client';
import { playbackRefusal } from '../lib/signing.js';
import { BlockingRequests } from './BlockingRequests.js';
import type { EdgeRelay, RelayedResponse } from './EdgeRelay.js';
import { LLHLS_LIMIT_DEFAULTS, type LlhlsLimits } from './limits.js';
import { acceptsGzip, fail, hungUp, MEDIA_FILE, parseDirectives, registerLiveCors, RENDITION } from './routes.js';

const PENDING = Symbol('pending');

/**
 * A relayed playlist as viewers get it, gzipped at most once. Without signed playback every viewer of a response gets
 * the same bytes: one view per response, kept with it (one toString, one gzip per new playlist, as the origin's render
 * cache). With it, each viewer's token is written into the URIs and a viewer asks for each response once: a view per
 * request, not kept (keeping them would multiply the relay's memory by the viewers).
 */
interface PlaylistView {
  body: Buffer;
  /** Length in UTF-16 units: the origin's threshold for gzip is on its text's length. */
  chars: number;
  gzip?: Buffer;
}
const shared = new WeakMap<RelayedResponse, PlaylistView>();

function viewOf(response: RelayedResponse, query: string): PlaylistView {
  if (response.upstreamQuery !== '') {
    const text = response.body.toString('utf8').split(`?${response.upstreamQuery}`).join(query);
    return { body: Buffer.from(text, 'utf8'), chars: text.length };
  }
  let view = shared.get(response);
  if (!view) shared.set(response, (view = { body: response.body, chars: response.body.toString('utf8').length }));
  return view;
}

export interface EdgeLiveRoutesOptions {
  relay: EdgeRelay;
  /** HMAC key: when set, every /live URL needs a valid `?token=` (checked here, as the origin does). */
  playbackSigningKey: string | undefined;
  limits?: Partial<LlhlsLimits>;
  /** Where onair_edge_upstream_requests_total, onair_edge_streams and onair_llhls_blocking_requests go. */
  registry?: Registry;
  /** A viewer asked for a media playlist (a valid request): the audience counts it (see `routes.ts`). */
  onPlaylist?: (streamId: string, request: FastifyRequest) => void;
}

/**
 * The /live routes of an edge (ONAIR_ROLE=edge): the same URLs, checks and answers as the origin's (`routes.ts`),
 * served from the relay (`EdgeRelay.ts`): the origin's responses, kept and shared, with the viewer's token in URIs.
 */
export function registerEdgeLiveRoutes(app: FastifyInstance, options: EdgeLiveRoutesOptions): void {
  const { relay } = options;
  const limits = { ...LLHLS_LIMIT_DEFAULTS, ...options.limits };
  const parked = new BlockingRequests(limits);
  if (options.registry) {
    const upstream = new Counter({
      name: 'onair_edge_upstream_requests_total',
      help: 'Requests this edge made to origins, by kind (one subscription per stream and rendition, whatever the viewers).',
      labelNames: ['kind'],
      registers: [options.registry],
    });
    relay.on('upstream', ({ kind }) => upstream.inc({ kind }));
    new Gauge({ name: 'onair_edge_streams', help: 'Live streams this edge relays now.', registers: [options.registry], collect() {
      this.set(relay.streams);
    } });
    new Gauge({ name: 'onair_llhls_blocking_requests', help: 'Blocking LL-HLS requests (playlist reloads, hinted parts) parked on this process now.', registers: [options.registry], collect() {
      this.set(parked.size);
    } });
  }
  registerLiveCors(app);

  /** The token check and the discovery lookup, as the origin's `lookup`. */
  const locate = async (request: FastifyRequest, reply: FastifyReply) => {
    const { id } = request.params as { id: string };
    const token = (request.query as Record<string, unknown>)['token'];
    const refusal = playbackRefusal(options.playbackSigningKey, id, token);
    if (refusal) {
      fail(reply, refusal.code, refusal.message);
      return undefined;
    }
    const stream = await relay.stream(id);
    if (!stream) {
      fail(reply, 'ONAIR_ERR_STREAM_NOT_LIVE');
      return undefined;
    }
    const query = options.playbackSigningKey !== undefined ? `?token=${encodeURIComponent(String(token))}` : '';
    return { stream, query };
  };

  /**
   * Waits for the relayed response under the same caps as the origin's parked requests, at most `waitMs`, and only
   * while the viewer is there. Sends the refusal or timeout itself and returns undefined then.
   */
  const wait = async (request: FastifyRequest, reply: FastifyReply, response: Promise<RelayedResponse> | undefined, waitMs: number): Promise<RelayedResponse | undefined> => {
    const retryAfter = String(Math.max(1, Math.round(waitMs / 3000)));
    if (!response) {
      fail(reply, 'ONAIR_ERR_OVERLOADED', 'too many upstream requests for this rendition', 'no-store').header('retry-after', retryAfter);
      return undefined;
    }
    // What the edge holds already is sent at once; only a request that has to wait parks (and counts), as on the origin.
    const now = await Promise.race([response, Promise.resolve(PENDING)]);
    if (now !== PENDING) return now;
    const admission = parked.admit(request.ip);
    if (!admission.ok) {
      reply.header('retry-after', retryAfter);
      if (admission.reason === 'address') fail(reply, 'ONAIR_ERR_RATE_LIMITED', `at most ${limits.maxBlockingPerAddress} blocking requests per client address at once`, 'no-store');
      else fail(reply, 'ONAIR_ERR_OVERLOADED', 'too many blocking requests on this node', 'no-store');
      return undefined;
    }
    let timer: NodeJS.Timeout | undefined;
    let gone: (() => void) | undefined;
    try {
      const outcome = await Promise.race([
        response,
        new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), waitMs); }),
        new Promise<'gone'>((resolve) => { gone = () => resolve('gone'); reply.raw.once('close', gone); }),
      ]);
      if (outcome === 'gone') {
        hungUp(reply);
        return undefined;
      }
      if (outcome === 'timeout') {
        fail(reply, 'ONAIR_ERR_HLS_TIMEOUT', undefined, 'no-store').header('retry-after', retryAfter);
        return undefined;
      }
      return outcome;
    } finally {
      clearTimeout(timer);
      if (gone) reply.raw.off('close', gone);
      admission.release();
    }
  };

  /** Sends what the origin sent; a playlist with the viewer's token in its URIs, gzipped as the origin does. */
  const send = (request: FastifyRequest, reply: FastifyReply, response: RelayedResponse, query: string, playlist: boolean): FastifyReply => {
    if (response.unreachable) {
      return fail(reply, 'ONAIR_ERR_HLS_TIMEOUT', 'the origin of this stream is unreachable', 'no-store').header('retry-after', response.retryAfter ?? '1');
    }
    reply.code(response.status);
    if (response.contentType) reply.header('content-type', response.contentType);
    if (response.cacheControl) reply.header('cache-control', response.cacheControl);
    if (response.retryAfter) reply.header('retry-after', response.retryAfter);
    if (!playlist || response.status !== 200) return reply.send(response.body);
    reply.header('vary', 'accept-encoding');
    const view = viewOf(response, query);
    // A Buffer is written as is; a string would be encoded again for every viewer (and typed text/plain without a type).
    if (!acceptsGzip(request) || view.chars < 1024) return reply.send(response.contentType ? view.body : view.body.toString('utf8'));
    view.gzip ??= gzipSync(view.body);
    return reply.header('content-encoding', 'gzip').send(view.gzip);
  };

  app.get('/live/:id/index.m3u8', async (request, reply) => {
    const found = await locate(request, reply);
    if (!found) return reply;
    const response = await wait(request, reply, relay.multivariant(found.stream), 12_000);
    return response ? send(request, reply, response, found.query, true) : reply;
  });

  app.get('/live/:id/:rendition/index.m3u8', async (request, reply) => {
    const found = await locate(request, reply);
    if (!found) return reply;
    const { rendition } = request.params as { rendition: string };
    if (!RENDITION.test(rendition)) return fail(reply, 'ONAIR_ERR_VALIDATION', 'unknown rendition name');
    const directives = parseDirectives(request.query as Record<string, unknown>);
    if (typeof directives === 'string') return fail(reply, 'ONAIR_ERR_HLS_DIRECTIVE', directives);
    options.onPlaylist?.(found.stream.id, request);
    // The origin answers a blocking request within three target durations; a little more for the hop.
    const response = await wait(request, reply, relay.playlist(found.stream, rendition, directives), relay.blockMs(found.stream.id, rendition) + 1_000);
    return response ? send(request, reply, response, found.query, true) : reply;
  });

  app.get('/live/:id/:rendition/:file', async (request, reply) => {
    const found = await locate(request, reply);
    if (!found) return reply;
    const { rendition, file } = request.params as { rendition: string; file: string };
    if (!RENDITION.test(rendition)) return fail(reply, 'ONAIR_ERR_VALIDATION', 'unknown rendition name');
    if (!MEDIA_FILE.exec(file)) return fail(reply, 'ONAIR_ERR_VALIDATION', 'not a media file name');
    const response = await wait(request, reply, relay.media(found.stream, rendition, file), relay.blockMs(found.stream.id, rendition) + 1_000);
    return response ? send(request, reply, response, found.query, false) : reply;
  });
}
