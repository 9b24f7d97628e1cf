import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OnAirError, type ErrorCode } from '../lib/errors.js';
import { playbackRefusal } from '../lib/signing.js';
import { EdgeError, type WebRtcEdge } from './WebRtcEdge.js';
import { buildWhepAnswer, parseWhepOffer, routerMediaCodecsFor, WHEP_SENDS, WhepSdpError } from './whepSdp.js';

export interface WhepRoutesOptions {
  edge: () => WebRtcEdge | undefined;
  playbackSigningKey: string | undefined;
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
      if (!edge.hasStream(id)) return fail(reply, 'ONAIR_ERR_STREAM_NOT_LIVE');
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

    scope.patch('/live/:id/whep/:session', async (request, reply) => {
      const id = authorize(request, reply);
      if (id === undefined) return reply;
      return reply.code(204).send();
    });
  });
}
