import type { Readiness } from './ready.js';
import { AjvCompiler } from '@fastify/ajv-compiler';
import rateLimit from '@fastify/rate-limit';
import type { Redis } from 'ioredis';
import { addressKey, type TrustedProxies } from '../lib/address.js';
import '../lib/httpEdge.js';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifySchemaCompiler } from 'fastify';
import { OnAirError, ERRORS, type ErrorCode } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import { tokenMatches } from './adminToken.js';
import { ROUTE_LIMITS, type HttpLimits } from './httpLimits.js';
import { protocolOf, type Metrics } from './metrics.js';
import type { StreamView } from './views.js';

/** What the HTTP layer needs from the node: plain functions, so routes stay thin. */
export interface HttpDeps {
  log: Logger;
  /** HTTP/2 over TLS (HTTP/1.1 still accepted) when set. */
  tls?: { cert: Buffer; key: Buffer } | undefined;
  /** Routes owned by rooms (e.g. /live from ll-hls-packager). */
  plugins?: ((app: FastifyInstance) => void)[];
  adminToken: string;
  metrics: Metrics;
  /** The shared Redis the rate limits count on (across OnAir processes); in-process counters when absent. */
  redis?: Redis | undefined;
  limits: HttpLimits;
  /** `ONAIR_TRUST_PROXY`: peers whose X-Forwarded-For names the client (`request.ip`); none: the peer is the client. */
  trustProxy?: TrustedProxies | undefined;
  /** `degraded`: the checks that fail now (e.g. `['redis']` while the embedded redis-server restarts). */
  ready: () => Promise<Readiness>;
  streams: {
    create(input: { title: string; description?: string }): Promise<{ stream: StreamView; streamKey: string }>;
    list(): Promise<StreamView[]>;
    /**
     * `admin`: the caller proved the admin token (playback URLs may then carry a signed token); `token`: the playback
     * token the caller presented (`?token=`), if any.
     */
    get(id: string, admin: boolean, token?: unknown): Promise<StreamView | undefined>;
    rotateKey(id: string): Promise<{ stream: StreamView; streamKey: string } | undefined>;
    delete(id: string): Promise<boolean>;
    /** Ends the live event now (the publisher is disconnected); undefined: no such stream; false: not live. */
    end(id: string): Promise<boolean | undefined>;
  };
}

const streamIdParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^[a-z0-9]{12}$' } },
  required: ['id'],
} as const;

const createStreamBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    title: { type: 'string', minLength: 1, maxLength: 200, pattern: '\\S' },
    description: { type: 'string', maxLength: 5000 },
  },
  required: ['title'],
} as const;

type ValidatorFactory = NonNullable<NonNullable<NonNullable<Parameters<typeof Fastify>[0]>['schemaController']>['compilersFactory']>['buildValidator'];

/**
 * fastify's validators with two changes. Unknown properties are refused, not silently dropped (`removeAdditional`),
 * so that a typo in a field name is a 400 and not a default. JSON bodies are validated as sent, without coercion: JSON
 * has types of its own, and `{"description": 5}` is a client bug to report. Path, query string and headers are text,
 * so they keep fastify's coercion (`?limit=10` is a number).
 */
const buildValidator = ((externalSchemas: Record<string, unknown>, options: { customOptions?: object } = {}) => {
  const pool = AjvCompiler();
  const customOptions = { ...options.customOptions, removeAdditional: false };
  const text = pool(externalSchemas as never, { ...options, customOptions }) as unknown as FastifySchemaCompiler<unknown>;
  const json = pool(externalSchemas as never, { ...options, customOptions: { ...customOptions, coerceTypes: false } }) as unknown as FastifySchemaCompiler<unknown>;
  return (route: Parameters<FastifySchemaCompiler<unknown>>[0]) => (route.httpPart === 'body' ? json : text)(route);
}) as unknown as ValidatorFactory;

/** ajv names the offending property in `params`, not in its message; a client needs the name. */
function validationMessage(error: Error & { validation?: unknown; validationContext?: string }): string {
  const first = Array.isArray(error.validation) ? (error.validation[0] as { params?: Record<string, unknown> } | undefined) : undefined;
  const property = first?.params?.['additionalProperty'];
  // fastify already prefixes the part and path (`body/title must …`); older messages lack it.
  const text = /^(body|params|querystring|headers)\b/.test(error.message) ? error.message : `${error.validationContext ?? 'request'} ${error.message}`;
  return typeof property === 'string' ? `${text}: "${property}"` : text;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

function sendError(reply: FastifyReply, code: ErrorCode, message?: string): FastifyReply {
  const error = new OnAirError(code, message);
  return reply.code(error.status).send(error.toJSON());
}

/** Maps fastify's own errors (validation, body parsing) onto the catalogue. */
function toOnAirError(error: Error & { code?: string; statusCode?: number; validation?: unknown; validationContext?: string }): OnAirError {
  if (error instanceof OnAirError) return error;
  if (error.validation) return new OnAirError('ONAIR_ERR_VALIDATION', validationMessage(error));
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new OnAirError('ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE', error.message);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new OnAirError('ONAIR_ERR_PAYLOAD_TOO_LARGE');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new OnAirError('ONAIR_ERR_BAD_JSON', error.message);
  }
  if (error instanceof SyntaxError || error.statusCode === 400) return new OnAirError('ONAIR_ERR_BAD_JSON', error.message);
  if (error.statusCode === 413) return new OnAirError('ONAIR_ERR_PAYLOAD_TOO_LARGE');
  if (error.statusCode === 415) return new OnAirError('ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE', error.message);
  return new OnAirError('ONAIR_ERR_INTERNAL');
}

const IN_FLIGHT = new WeakMap<FastifyInstance, Set<FastifyRequest>>();

/** The requests a server built here is still answering, as `METHOD /route/template` (never a URL: tokens stay out). */
export function inFlightRoutes(app: FastifyInstance): string[] {
  return [...IN_FLIGHT.get(app) ?? []].map((request) => `${request.method} ${request.routeOptions.url ?? 'unmatched'}`);
}

export function buildHttpServer(deps: HttpDeps): FastifyInstance {
  const options = {
    // Request lines only at debug: a busy origin would drown the log, and URLs can carry playback tokens.
    loggerInstance: deps.log.child({ component: 'http' }, { level: deps.log.isLevelEnabled('debug') ? 'debug' : 'warn' }) as FastifyBaseLogger,
    bodyLimit: 1024 * 1024,
    routerOptions: { maxParamLength: 200 },
    schemaController: { compilersFactory: { buildValidator } },
    // `request.ip` (every per-address limit, WHEP's included) is the client behind a trusted proxy, the peer otherwise.
    ...(deps.trustProxy && !deps.trustProxy.empty ? { trustProxy: (address: string) => deps.trustProxy!.has(address) } : {}),
    // Errors fastify raises before routing (a URL that is not valid percent-encoding, a bad content type) go through
    // the same catalogue as everything else, not fastify's own shape.
    frameworkErrors: (error: Error & { code?: string; statusCode?: number }, _request: FastifyRequest, reply: FastifyReply) => {
      const mapped = error.code === 'FST_ERR_BAD_URL' ? new OnAirError('ONAIR_ERR_VALIDATION', 'the URL is not valid (bad percent-encoding)')
        : error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? new OnAirError('ONAIR_ERR_VALIDATION', 'a path parameter is longer than any this server serves')
          : (error.statusCode ?? 500) < 500 ? new OnAirError('ONAIR_ERR_VALIDATION', error.message)
            : toOnAirError(error);
      void reply.code(mapped.status).send(mapped.toJSON());
    },
    ...(deps.tls ? { http2: true, https: { allowHTTP1: true, cert: deps.tls.cert, key: deps.tls.key } } : {}),
  };
  // One code path for both: the HTTP/2 instance differs only in its raw server type.
  const app = Fastify(options as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;
  // fastify parses text/plain by default; every route here takes JSON (or registers its own type), so anything else
  // is a 415, not a string that fails validation as "body must be object".
  app.removeContentTypeParser('text/plain');

  app.setErrorHandler((error, request, reply) => {
    const mapped = toOnAirError(error as Error);
    if (mapped.status >= 500) request.log.error({ err: error }, 'request failed');
    return reply.code(mapped.status).send(mapped.toJSON());
  });
  app.setNotFoundHandler((_request, reply) => sendError(reply, 'ONAIR_ERR_NOT_FOUND'));

  // Requests in flight, for a close that has to cut them (`inFlightRoutes`): bounded by the connections the server holds.
  const inFlight = new Set<FastifyRequest>();
  IN_FLIGHT.set(app, inFlight);
  app.addHook('onRequest', (request, _reply, done) => {
    inFlight.add(request);
    request.raw.once('close', () => inFlight.delete(request));
    done();
  });

  // Per-route request counts and durations. Labels are bounded: the route template, never the URL; a method outside
  // the known few and a request that matched no route each fold into one value.
  app.addHook('onResponse', async (request, reply) => {
    inFlight.delete(request);
    const method = KNOWN_METHODS.has(request.method) ? request.method : 'OTHER';
    const route = request.routeOptions.url ?? 'unmatched';
    deps.metrics.httpRequests.inc({ method, route, status: String(reply.statusCode) });
    deps.metrics.httpDuration.observe({ method, route, status: `${Math.floor(reply.statusCode / 100)}xx` }, reply.elapsedTime / 1000);
    // The body's bytes as sent (compressed playlists compressed); a body streamed without a length is not counted.
    const length = Number(reply.getHeader('content-length'));
    if (length > 0) deps.metrics.sentBytes.inc({ protocol: protocolOf(route) }, length);
  });

  app.register(async (edge) => {
    await registerEdge(edge, deps);
    registerRoutes(edge, deps);
    for (const plugin of deps.plugins ?? []) plugin(edge);
  });

  return app;
}

/** Bearer token of a request, if it has one in the right shape. */
function bearer(request: FastifyRequest): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '')?.[1];
}

function rateLimited(retryAfterSec: number): OnAirError {
  return new OnAirError('ONAIR_ERR_RATE_LIMITED', `Too many requests: try again in ${retryAfterSec} s`);
}

/**
 * The edge every route sits behind: rate limits (from `ROUTE_LIMITS`, counted on the shared Redis) and the one admin
 * gate, both as decorations of the scope that holds every room's routes.
 */
async function registerEdge(edge: FastifyInstance, deps: HttpDeps): Promise<void> {
  // Route limits come from the table: set on each route before the rate-limit plugin's own onRoute hook reads them.
  edge.addHook('onRoute', (route) => {
    const methods = [route.method].flat();
    const entry = ROUTE_LIMITS.find((r) => r.url === route.url && methods.includes(r.method as never));
    const max = entry ? deps.limits[entry.limit] : 0;
    if (entry && max > 0) route.config = { ...(route.config as object), rateLimit: { max, timeWindow: 60_000 } } as never;
  });
  await edge.register(rateLimit, {
    global: false,
    ...(deps.redis ? { redis: deps.redis } : {}),
    nameSpace: 'onair:ratelimit:',
    // A Redis outage must not take the API down with it: limits lapse until it is back.
    skipOnError: true,
    keyGenerator: (request) => addressKey(request.ip),
    errorResponseBuilder: (_request, context) => rateLimited(Math.ceil(context.ttl / 1000)),
    onExceeded: (request) => deps.metrics.rateLimited.inc({ limit: `${request.method} ${request.routeOptions.url}` }),
  });

  const maxFailures = deps.limits.adminFailuresPerMinute;
  const failures = maxFailures > 0
    ? edge.createRateLimit({ max: maxFailures, timeWindow: 60_000, keyGenerator: (request) => `admin-failures:${addressKey(request.ip)}` })
    : undefined;
  const isAdmin = (request: FastifyRequest): boolean => {
    const token = bearer(request);
    return token !== undefined && tokenMatches(token, deps.adminToken);
  };
  edge.decorate('isAdmin', isAdmin);
  edge.decorate('requireAdmin', async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (request.headers.authorization === undefined) throw new OnAirError('ONAIR_ERR_UNAUTHORIZED');
    // Locked out after too many wrong tokens, the right one included: guessing gains nothing during the lock.
    const seen = failures ? await failures(request, { increment: false }) : undefined;
    if (seen && !seen.isAllowed && seen.remaining === 0 && seen.ttl > 0) {
      deps.metrics.rateLimited.inc({ limit: 'admin-failures' });
      reply.header('retry-after', String(Math.max(1, Math.ceil(seen.ttl / 1000))));
      throw rateLimited(Math.max(1, Math.ceil(seen.ttl / 1000)));
    }
    if (isAdmin(request)) return;
    if (failures) await failures(request);
    throw new OnAirError('ONAIR_ERR_FORBIDDEN');
  });
}

/** The node's own routes: health, readiness, metrics, the streams API. */
function registerRoutes(app: FastifyInstance, deps: HttpDeps): void {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    const result = await deps.ready();
    return reply.code(result.ok ? 200 : 503).send({
      status: result.ok ? 'ready' : 'not-ready', checks: result.checks, degraded: result.degraded,
      ...(result.capacity ? { capacity: result.capacity } : {}),
    });
  });

  app.get('/metrics', async (_request, reply) => {
    const text = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(text);
  });

  app.post('/api/streams', {
    onRequest: app.requireAdmin,
    schema: { body: createStreamBody },
  }, async (request, reply) => {
    const body = request.body as { title: string; description?: string };
    const { stream, streamKey } = await deps.streams.create({ title: body.title.trim(), ...(body.description === undefined ? {} : { description: body.description }) });
    return reply.code(201).send({ ...stream, streamKey, ingest: { ...stream.ingest, streamKey } });
  });

  app.get('/api/streams', async () => ({ streams: await deps.streams.list() }));

  // The studio's sign-in check: 200 with the admin token, 401 without one, 403 with a wrong one.
  app.get('/api/session', { onRequest: app.requireAdmin }, async () => ({ admin: true }));

  app.get('/api/streams/:id', { schema: { params: streamIdParams } }, async (request, reply) => {
    const stream = await deps.streams.get((request.params as { id: string }).id, app.isAdmin(request), (request.query as Record<string, unknown>)['token']);
    if (!stream) return sendError(reply, 'ONAIR_ERR_STREAM_NOT_FOUND');
    return stream;
  });

  app.post('/api/streams/:id/key', { onRequest: app.requireAdmin, schema: { params: streamIdParams } }, async (request, reply) => {
    const result = await deps.streams.rotateKey((request.params as { id: string }).id);
    if (!result) return sendError(reply, 'ONAIR_ERR_STREAM_NOT_FOUND');
    return { ...result.stream, streamKey: result.streamKey, ingest: { ...result.stream.ingest, streamKey: result.streamKey } };
  });

  app.post('/api/streams/:id/end', { onRequest: app.requireAdmin, schema: { params: streamIdParams } }, async (request, reply) => {
    const ended = await deps.streams.end((request.params as { id: string }).id);
    if (ended === undefined) return sendError(reply, 'ONAIR_ERR_STREAM_NOT_FOUND');
    if (!ended) return sendError(reply, 'ONAIR_ERR_STREAM_NOT_LIVE');
    return reply.code(202).send({ status: 'ending' });
  });

  app.delete('/api/streams/:id', { onRequest: app.requireAdmin, schema: { params: streamIdParams } }, async (request, reply) => {
    const deleted = await deps.streams.delete((request.params as { id: string }).id);
    if (!deleted) return sendError(reply, 'ONAIR_ERR_STREAM_NOT_FOUND');
    return reply.code(204).send();
  });

}

export { ERRORS };
