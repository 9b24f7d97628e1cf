import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, Gauge, type Registry } from 'prom-client';
import { OnAirError, type ErrorCode } from '../lib/errors.js';
import { BlockingRequests } from './BlockingRequests.js';
import { RELAY_HEADER } from './EdgeRelay.js';
import { LLHLS_LIMIT_DEFAULTS, type LlhlsLimits } from './limits.js';
import type { MediaPlaylist } from './MediaPlaylist.js';
import { playbackRefusal } from '../lib/signing.js';
import type { StreamPackager } from './StreamPackager.js';

export interface LiveRoutesOptions {
  packager(streamId: string): StreamPackager | undefined;
  /** HMAC key: when set, every /live URL needs a valid `?token=`. */
  playbackSigningKey: string | undefined;
  /** Caps on parked blocking requests (`limits.ts`); absent ones take the table's defaults. */
  limits?: Partial<LlhlsLimits>;
  /** Where the `onair_llhls_blocking_requests` gauge goes; absent: no gauge. */
  registry?: Registry;
  /**
   * A viewer asked for a media playlist (a valid request, after the token check): the audience counts it. Not called
   * for an OnAir edge relaying the stream (RELAY_HEADER): its viewers are counted where they ask, on the edge.
   */
  onPlaylist?: (streamId: string, request: FastifyRequest) => void;
}

export const RENDITION = /^(?:source|\d{3,4}p)$/;
export const MEDIA_FILE = /^([a-z0-9]{1,16})-(a?init\d{1,9}\.mp4|s\d{1,12}\.m4s|p\d{1,12}\.m4s)$/;
const NON_NEGATIVE_INT = /^\d{1,12}$/;

const CACHE_MEDIA = 'public, max-age=31536000, immutable';
const CACHE_ERROR = 'public, max-age=1';
const PLAYLIST_TYPE = 'application/vnd.apple.mpegurl';

/** Multivariant requests made before the first segments exist wait this long for them. */
const FIRST_SEGMENT_WAIT_MS = 10_000;

export function fail(reply: FastifyReply, code: ErrorCode, message?: string, cacheControl = CACHE_ERROR): FastifyReply {
  const error = new OnAirError(code, message);
  return reply.code(error.status).header('cache-control', cacheControl).send(error.toJSON());
}

/** The client hung up while its request was parked: there is nobody to answer, and fastify is told not to try. */
export function hungUp(reply: FastifyReply): FastifyReply {
  reply.hijack();
  return reply;
}

/** How a parked request ended: what it waited for came, its time ran out, the client hung up, or it was refused (sent). */
type Parked = 'arrived' | 'timeout' | 'gone' | 'refused';

/**
 * Delivery directives (rfc8216bis §6.2.5). Returns an error message for a malformed request.
 */
export function parseDirectives(query: Record<string, unknown>): { msn?: number; part?: number; skip?: 'YES' | 'v2' } | string {
  const msnRaw = query['_HLS_msn'];
  const partRaw = query['_HLS_part'];
  const skipRaw = query['_HLS_skip'];
  const result: { msn?: number; part?: number; skip?: 'YES' | 'v2' } = {};
  if (msnRaw !== undefined) {
    if (typeof msnRaw !== 'string' || !NON_NEGATIVE_INT.test(msnRaw)) return '_HLS_msn must be a non-negative integer';
    result.msn = Number(msnRaw);
  }
  if (partRaw !== undefined) {
    // §6.2.5.2: _HLS_part without _HLS_msn is a Bad Request.
    if (result.msn === undefined) return '_HLS_part requires _HLS_msn';
    if (typeof partRaw !== 'string' || !NON_NEGATIVE_INT.test(partRaw)) return '_HLS_part must be a non-negative integer';
    result.part = Number(partRaw);
  }
  if (skipRaw !== undefined) {
    if (skipRaw !== 'YES' && skipRaw !== 'v2') return '_HLS_skip must be YES or v2';
    result.skip = skipRaw;
  }
  return result;
}

/** §6.2.5.2: more than two segments ahead, or more parts ahead than the Advance Part Limit, is a Bad Request. */
function beyondAdvanceLimits(playlist: MediaPlaylist, msn: number, part: number | undefined): boolean {
  // No segment yet: the one before the first to come (an event starts at 1; one continued from another origin, later).
  const lastMsn = playlist.lastMediaSequence ?? playlist.mediaSequence - 1;
  if (msn > lastMsn + 2) return true;
  if (part === undefined) return false;
  const partTargetSec = playlist.partTargetMs / 1000;
  const advancePartLimit = partTargetSec < 1 ? Math.floor(3 / partTargetSec) : 3;
  const lastPart = msn === lastMsn ? (playlist.segment(lastMsn)?.parts.length ?? 0) - 1 : -1;
  return msn >= lastMsn && part - lastPart > advancePartLimit;
}

export function acceptsGzip(request: FastifyRequest): boolean {
  return /\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''));
}

/** Playlists are text a few KB long, requested by every viewer: rendered and gzipped once per change. */
class RenderCache {
  #key = '';
  #text = '';
  #gzip: Buffer | undefined;

  get(key: string, render: () => string, gzip: boolean): { body: string | Buffer; gzipped: boolean } {
    if (key !== this.#key) {
      this.#key = key;
      this.#text = render();
      this.#gzip = undefined;
    }
    if (!gzip || this.#text.length < 1024) return { body: this.#text, gzipped: false };
    this.#gzip ??= gzipSync(this.#text);
    return { body: this.#gzip, gzipped: true };
  }
}

/** CORS for /live (players on other origins), preflights included: the origin's routes and the edge's alike. */
export function registerLiveCors(app: FastifyInstance): void {
  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/live/')) return;
    reply.header('access-control-allow-origin', '*');
    reply.header('access-control-expose-headers', 'content-length, content-type, date, age, location');
    if (request.method === 'OPTIONS') {
      // /live is shared with WHEP (webrtc-edge): players POST offers and DELETE sessions cross-origin too.
      reply.header('access-control-allow-methods', 'GET, HEAD, POST, PATCH, DELETE, OPTIONS');
      reply.header('access-control-allow-headers', '*');
      reply.header('access-control-max-age', '86400');
      await reply.code(204).send();
    }
  });
  // Hooks run only for requests that match a route of their scope: preflights need one (answered by the hook above).
  app.options('/live/*', async (_request, reply) => reply.code(204).send());
}

/** The /live routes: multivariant and media playlists with blocking reload and delta updates, parts, segments, inits. */
export function registerLiveRoutes(app: FastifyInstance, options: LiveRoutesOptions): void {
  const caches = new WeakMap<object, Map<string, RenderCache>>();
  const cacheFor = (owner: object, name: string): RenderCache => {
    let map = caches.get(owner);
    if (!map) caches.set(owner, (map = new Map()));
    let cache = map.get(name);
    if (!cache) map.set(name, (cache = new RenderCache()));
    return cache;
  };

  const sendPlaylist = (request: FastifyRequest, reply: FastifyReply, rendered: { body: string | Buffer; gzipped: boolean }, cacheControl: string): FastifyReply => {
    reply.header('content-type', PLAYLIST_TYPE).header('cache-control', cacheControl).header('vary', 'accept-encoding');
    if (rendered.gzipped) reply.header('content-encoding', 'gzip');
    return reply.send(rendered.body);
  };

  /** Resolves the stream and checks the playback token; sends the error and returns undefined on failure. */
  const lookup = (request: FastifyRequest, reply: FastifyReply): { packager: StreamPackager; query: string } | undefined => {
    const { id } = request.params as { id: string };
    const token = (request.query as Record<string, unknown>)['token'];
    const refusal = playbackRefusal(options.playbackSigningKey, id, token);
    if (refusal) {
      fail(reply, refusal.code, refusal.message);
      return undefined;
    }
    const packager = options.packager(id);
    if (!packager) {
      fail(reply, 'ONAIR_ERR_STREAM_NOT_LIVE');
      return undefined;
    }
    const query = options.playbackSigningKey !== undefined ? `?token=${encodeURIComponent(String(token))}` : '';
    return { packager, query };
  };

  const limits = { ...LLHLS_LIMIT_DEFAULTS, ...options.limits };
  const parkedRequests = new BlockingRequests(limits);
  // Requests by kind: how many reach this process (an edge in front asks once per new part, whatever its viewers).
  const requests = options.registry ? new Counter({
    name: 'onair_llhls_requests_total',
    help: 'LL-HLS requests answered by this process, by kind (multivariant, playlist, blocking, part, segment, init).',
    labelNames: ['kind'],
    registers: [options.registry],
  }) : undefined;
  if (options.registry) {
    new Gauge({
      name: 'onair_llhls_blocking_requests',
      help: 'Blocking LL-HLS requests (playlist reloads, hinted parts) parked on this process now.',
      registers: [options.registry],
      collect() {
        this.set(parkedRequests.size);
      },
    });
  }

  /**
   * The one place a request parks: under the caps per address and in total (else refused with Retry-After, not
   * cached), and only while its client is there. `wait` gets a signal that aborts when the client hangs up.
   */
  const park = async (request: FastifyRequest, reply: FastifyReply, retryAfterSec: number, wait: (signal: AbortSignal) => Promise<boolean>): Promise<Parked> => {
    const admission = parkedRequests.admit(request.ip);
    if (!admission.ok) {
      reply.header('retry-after', String(retryAfterSec));
      if (admission.reason === 'address') {
        fail(reply, 'ONAIR_ERR_RATE_LIMITED', `at most ${limits.maxBlockingPerAddress} blocking requests per client address at once`, 'no-store');
      } else {
        fail(reply, 'ONAIR_ERR_OVERLOADED', 'too many blocking requests on this node', 'no-store');
      }
      return 'refused';
    }
    const hangUp = new AbortController();
    const gone = (): void => hangUp.abort();
    // The response's 'close' comes when the client goes away before the answer, for HTTP/1.1 (socket closed) and HTTP/2
    // (stream reset, the session stays) alike; the socket is not watched: under HTTP/2 it is the whole session's.
    reply.raw.once('close', gone);
    try {
      if (request.raw.destroyed) return 'gone';
      const arrived = await wait(hangUp.signal);
      if (hangUp.signal.aborted) return 'gone';
      return arrived ? 'arrived' : 'timeout';
    } finally {
      reply.raw.off('close', gone);
      admission.release();
    }
  };

  registerLiveCors(app);

  app.get('/live/:id/index.m3u8', async (request, reply) => {
    requests?.inc({ kind: 'multivariant' });
    const found = lookup(request, reply);
    if (!found) return reply;
    const { packager, query } = found;
    if (!packager.ready && !packager.ended) {
      const parked = await park(request, reply, 1, async (signal) => {
        const deadline = Date.now() + FIRST_SEGMENT_WAIT_MS;
        while (!packager.ready && !packager.ended && !signal.aborted && Date.now() < deadline) await sleep(100, undefined, { signal }).catch(() => {});
        return packager.ready;
      });
      if (parked === 'refused') return reply;
      if (parked === 'gone') return hungUp(reply);
    }
    if (!packager.ready) return fail(reply, 'ONAIR_ERR_HLS_TIMEOUT', 'the stream has no media yet').header('retry-after', '1');
    const rendered = cacheFor(packager, '').get(`${packager.version}|${query}`, () => packager.renderMultivariant(query), acceptsGzip(request));
    return sendPlaylist(request, reply, rendered, 'public, max-age=2');
  });

  app.get('/live/:id/:rendition/index.m3u8', async (request, reply) => {
    const found = lookup(request, reply);
    if (!found) return reply;
    const { packager, query } = found;
    const { rendition } = request.params as { rendition: string };
    if (!RENDITION.test(rendition)) return fail(reply, 'ONAIR_ERR_VALIDATION', 'unknown rendition name');
    const playlist = packager.playlist(rendition);
    if (!playlist) return fail(reply, 'ONAIR_ERR_NOT_FOUND', 'no such rendition');
    const directives = parseDirectives(request.query as Record<string, unknown>);
    if (typeof directives === 'string') return fail(reply, 'ONAIR_ERR_HLS_DIRECTIVE', directives);
    requests?.inc({ kind: directives.msn === undefined ? 'playlist' : 'blocking' });
    if (request.headers[RELAY_HEADER] === undefined) options.onPlaylist?.((request.params as { id: string }).id, request);

    const blockMs = 3 * playlist.targetDuration * 1000;
    const retryAfterSec = playlist.targetDuration;
    // §6.2.5: directives are ignored once the playlist has EXT-X-ENDLIST.
    const blocking = directives.msn !== undefined && !playlist.ended;
    if (blocking) {
      if (beyondAdvanceLimits(playlist, directives.msn!, directives.part)) {
        return fail(reply, 'ONAIR_ERR_HLS_DIRECTIVE', 'the requested segment or part is beyond the advance limits');
      }
      // §6.2.5.2: hold the request until the playlist has the segment/part, at most three target durations.
      const ready = (): boolean => playlist.has(directives.msn!, directives.part);
      if (!ready()) {
        const parked = await park(request, reply, retryAfterSec, (signal) => playlist.waitUntil(ready, blockMs, signal));
        if (parked === 'refused') return reply;
        if (parked === 'gone') return hungUp(reply);
        if (parked === 'timeout') return fail(reply, 'ONAIR_ERR_HLS_TIMEOUT');
      }
    } else if (playlist.segments.length === 0 && !playlist.ended) {
      const parked = await park(request, reply, retryAfterSec, (signal) => playlist.waitUntil(() => playlist.segments.length > 0, blockMs, signal));
      if (parked === 'refused') return reply;
      if (parked === 'gone') return hungUp(reply);
      if (parked === 'timeout') return fail(reply, 'ONAIR_ERR_HLS_TIMEOUT', 'the stream has no media yet');
    }
    const skip = playlist.ended ? undefined : directives.skip;
    const rendered = cacheFor(packager, rendition).get(`${packager.version}|${skip ?? ''}|${query}`, () => playlist.render({
      serverControl: packager.serverControl,
      reports: packager.reportsFor(rendition),
      ...(skip === undefined ? {} : { skip }),
      query,
    }), acceptsGzip(request));
    const cacheControl = playlist.ended ? 'public, max-age=60' : blocking ? `public, max-age=${3 * playlist.targetDuration}` : 'public, max-age=1';
    return sendPlaylist(request, reply, rendered, cacheControl);
  });

  app.get('/live/:id/:rendition/:file', async (request, reply) => {
    const found = lookup(request, reply);
    if (!found) return reply;
    const { packager } = found;
    const { rendition, file } = request.params as { rendition: string; file: string };
    if (!RENDITION.test(rendition)) return fail(reply, 'ONAIR_ERR_VALIDATION', 'unknown rendition name');
    const match = MEDIA_FILE.exec(file);
    if (!match) return fail(reply, 'ONAIR_ERR_VALIDATION', 'not a media file name');
    const playlist = packager.playlist(rendition);
    if (!playlist || match[1] !== packager.uriPrefix) return fail(reply, 'ONAIR_ERR_NOT_FOUND');
    const name = match[2]!;
    requests?.inc({ kind: name.startsWith('p') ? 'part' : name.startsWith('s') ? 'segment' : 'init' });
    let data: Buffer | undefined;
    let type = 'video/iso.segment';
    if (name.startsWith('init') || name.startsWith('ainit')) {
      data = playlist.initData(file);
      type = 'video/mp4';
    } else if (name.startsWith('s')) {
      const segment = playlist.segment(Number(name.slice(1, -4)));
      data = segment?.complete ? segment.data : undefined;
    } else {
      const sequence = Number(name.slice(1, -4));
      // §6.2.6: a request for the hinted part waits until the part exists.
      if (!playlist.part(sequence) && playlist.partIsComing(sequence)) {
        const ready = (): boolean => playlist.part(sequence) !== undefined || playlist.ended;
        const parked = await park(request, reply, playlist.targetDuration, (signal) => playlist.waitUntil(ready, 3 * playlist.targetDuration * 1000, signal));
        if (parked === 'refused') return reply;
        if (parked === 'gone') return hungUp(reply);
        if (parked === 'timeout') return fail(reply, 'ONAIR_ERR_HLS_TIMEOUT');
      }
      data = playlist.part(sequence)?.data;
    }
    if (!data) return fail(reply, 'ONAIR_ERR_NOT_FOUND');
    return reply.header('content-type', type).header('cache-control', CACHE_MEDIA).send(data);
  });
}
