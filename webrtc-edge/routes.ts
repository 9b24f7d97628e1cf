import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OnAirError, type ErrorCode } from '../lib/errors.js';
import { playbackRefusal } from '../lib/signing.js';
import { EdgeError, type WebRtcEdge } from './WebRtcEdge.js';
import { clusterSecretMatches, parsePipeEndpoint, PIPE_ID, STREAM_ID } from './pipeProtocol.js';
import { buildWhepAnswer, parseWhepOffer, routerMediaCodecsFor, WHEP_SENDS, WhepSdpError } from './whepSdp.js';

export interface WhepRoutesOptions {
  edge: () => WebRtcEdge | undefined;
  playbackSigningKey: string | undefined;
  /** `ONAIR_CLUSTER_SECRET`: required by the node-to-node pipe routes, which answer 404 without one. */
  clusterSecret?: string | undefined;
}

const SESSION_ID = /^[0-9a-f-]{36}$/;
/** An SDP offer is a few KB; anything near this is not one. */
const MAX_OFFER_BYTES = 64 * 1024;

function fail(reply: FastifyReply, code: ErrorCode, message?: string): FastifyReply {
  const error = new OnAirError(code, message);
  return reply.code(error.status).header('cache-control', 'no-store').send(error.toJSON());
}

/**
 * WHEP (draft-ietf-wish-whep): `POST /live/:id/whep` with an SDP offer → `201` with the SDP answer and a `Location`
 * to `DELETE` when the viewer leaves. The media server is ICE-lite with all candidates in the answer, so trickle ICE
 * (`PATCH`) has nothing to do and is acknowledged.
 */
export function registerWhepRoutes(app: FastifyInstance, options: WhepRoutesOptions): void {
  app.register(async (scope) => {
    // This scope takes SDP as text; JSON routes elsewhere keep their parser.
    scope.addContentTypeParser('application/sdp', { parseAs: 'string', bodyLimit: MAX_OFFER_BYTES }, (_request, body, done) => done(null, body));

    const authorize = (request: FastifyRequest, reply: FastifyReply): string | undefined => {
      const { id } = request.params as { id: string };
      const refusal = playbackRefusal(options.playbackSigningKey, id, (request.query as Record<string, unknown>)['token']);
      if (refusal) {
        fail(reply, refusal.code, refusal.message);
        return undefined;
      }
      return id;
    };

    scope.post('/live/:id/whep', async (request, reply) => {
      const id = authorize(request, reply);
      if (id === undefined) return reply;
      const edge = options.edge();
      if (!edge) return fail(reply, 'ONAIR_ERR_WEBRTC_DISABLED');
      if (!String(request.headers['content-type'] ?? '').startsWith('application/sdp')) {
        return fail(reply, 'ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE', 'a WHEP offer is Content-Type: application/sdp');
      }
      // A pulling edge asks the stream's origin once the offer is known good (createSession).
      if (!edge.hasStream(id) && !edge.pulls) return fail(reply, 'ONAIR_ERR_STREAM_NOT_LIVE');
      let offer;
      try {
        offer = parseWhepOffer(String(request.body ?? ''));
      } catch (error) {
        if (error instanceof WhepSdpError && error.noCommonCodec) return fail(reply, 'ONAIR_ERR_WHEP_NO_MEDIA', `no codec in common: ${WHEP_SENDS}`);
        if (error instanceof WhepSdpError) return fail(reply, 'ONAIR_ERR_WHEP_SDP', error.reason);
        throw error;
      }
      // A viewer that asks for video (or audio) in codecs we do not send would otherwise get the other kind alone.
      const uncommon = offer.media.filter((m) => m.noCommonCodec).map((m) => m.kind);
      if (uncommon.length > 0) return fail(reply, 'ONAIR_ERR_WHEP_NO_MEDIA', `no ${uncommon.join(' or ')} codec in common: ${WHEP_SENDS}`);
      try {
        const { sessionId, result: answer } = await edge.createSession(id, {
          remoteAddress: request.ip,
          router: routerMediaCodecsFor(offer),
          rtpCapabilities: offer.rtpCapabilities,
          dtlsParameters: offer.dtlsParameters,
          media: offer.media,
          answer: (transport, consumers) => buildWhepAnswer({
            offer,
            streamId: id,
            iceParameters: transport.iceParameters,
            iceCandidates: transport.iceCandidates,
            dtlsParameters: transport.dtlsParameters,
            consumers: consumers.map(({ mid, consumer }) => ({ mid, kind: consumer.kind, rtpParameters: consumer.rtpParameters })),
          }),
        });
        const query = options.playbackSigningKey !== undefined ? `?token=${encodeURIComponent(String((request.query as Record<string, unknown>)['token']))}` : '';
        return reply.code(201)
          .header('content-type', 'application/sdp')
          .header('location', `/live/${id}/whep/${sessionId}${query}`)
          .header('cache-control', 'no-store')
          .header('access-control-expose-headers', 'location')
          .send(answer);
      } catch (error) {
        if (error instanceof EdgeError) {
          if (error.retryAfterSec !== undefined) reply.header('retry-after', String(error.retryAfterSec));
          return fail(reply, error.code, error.message);
        }
        if (error instanceof WhepSdpError) return fail(reply, 'ONAIR_ERR_WHEP_SDP', error.reason);
        throw error;
      }
    });

    scope.delete('/live/:id/whep/:session', async (request, reply) => {
      const id = authorize(request, reply);
      if (id === undefined) return reply;
      const { session } = request.params as { session: string };
      if (!SESSION_ID.test(session)) return fail(reply, 'ONAIR_ERR_WHEP_SESSION_NOT_FOUND');
      const edge = options.edge();
      if (!edge) return fail(reply, 'ONAIR_ERR_WEBRTC_DISABLED');
      try {
        edge.closeSession(id, session);
      } catch (error) {
        if (error instanceof EdgeError) return fail(reply, error.code, error.message);
        throw error;
      }
      return reply.code(200).send();
    });

    registerPipeRoutes(scope, options);

    scope.patch('/live/:id/whep/:session', async (request, reply) => {
      const id = authorize(request, reply);
      if (id === undefined) return reply;
      return reply.code(204).send();
    });
  });
}

/**
 * The node-to-node pipe routes (pipeProtocol.ts): an edge opens, renews and closes its pipe of a stream live here. Only
 * with `ONAIR_CLUSTER_SECRET` set (404 otherwise), and only for a caller that presents it (401 otherwise).
 */
function registerPipeRoutes(scope: FastifyInstance, options: WhepRoutesOptions): void {
  const { clusterSecret } = options;
  /** The stream and edge when the caller may use the route; else the reply is sent. */
  const admit = (request: FastifyRequest, reply: FastifyReply): { id: string; edge: WebRtcEdge } | undefined => {
    if (!clusterSecret) {
      fail(reply, 'ONAIR_ERR_NOT_FOUND');
      return undefined;
    }
    if (!clusterSecretMatches(request.headers.authorization, clusterSecret)) {
      fail(reply, 'ONAIR_ERR_UNAUTHORIZED', 'node-to-node routes need Authorization: Bearer <ONAIR_CLUSTER_SECRET>');
      return undefined;
    }
    const edge = options.edge();
    if (!edge) {
      fail(reply, 'ONAIR_ERR_WEBRTC_DISABLED');
      return undefined;
    }
    const { id } = request.params as { id: string };
    if (!STREAM_ID.test(id)) {
      fail(reply, 'ONAIR_ERR_STREAM_NOT_LIVE');
      return undefined;
    }
    return { id, edge };
  };

  scope.post('/internal/webrtc/:id/pipe', async (request, reply) => {
    const admitted = admit(request, reply);
    if (!admitted) return reply;
    const endpoint = parsePipeEndpoint(request.body);
    if (!endpoint) return fail(reply, 'ONAIR_ERR_VALIDATION', 'a pipe request is { ip, port, srtpParameters: { cryptoSuite, keyBase64 } }');
    try {
      const offer = await admitted.edge.openPipe(admitted.id, endpoint);
      return reply.code(201).header('cache-control', 'no-store').send(offer);
    } catch (error) {
      if (error instanceof EdgeError) {
        if (error.retryAfterSec !== undefined) reply.header('retry-after', String(error.retryAfterSec));
        return fail(reply, error.code, error.message);
      }
      throw error;
    }
  });

  scope.get('/internal/webrtc/:id/pipe/:pipe', async (request, reply) => {
    const admitted = admit(request, reply);
    if (!admitted) return reply;
    const { pipe } = request.params as { pipe: string };
    if (!PIPE_ID.test(pipe) || !admitted.edge.keepPipe(admitted.id, pipe)) return fail(reply, 'ONAIR_ERR_STREAM_NOT_LIVE', 'no such pipe: the stream ended or its producers changed');
    return reply.code(204).send();
  });

  scope.delete('/internal/webrtc/:id/pipe/:pipe', async (request, reply) => {
    const admitted = admit(request, reply);
    if (!admitted) return reply;
    const { pipe } = request.params as { pipe: string };
    if (!PIPE_ID.test(pipe) || !admitted.edge.closePipe(admitted.id, pipe)) return fail(reply, 'ONAIR_ERR_STREAM_NOT_LIVE', 'no such pipe');
    return reply.code(204).send();
  });
}
