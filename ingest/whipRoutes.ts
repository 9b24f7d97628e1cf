import type { FastifyInstance, FastifyReply } from 'fastify';
import { OnAirError, type ErrorCode } from '../lib/errors.js';
import { EdgeError, parseWhipOffer, WhepSdpError } from '../webrtc-edge/index.js';
import { WhipRefusal, type WhipIngest } from './WhipIngest.js';

export interface WhipRoutesOptions {
  whip: WhipIngest;
  /** The stream a key belongs to (a constant-time check; never logs the key). */
  verifyKey: (streamKey: string) => Promise<{ id: string } | undefined>;
}

const PUBLISH_ID = /^[0-9a-f-]{36}$/;
const MAX_OFFER_BYTES = 64 * 1024;

function fail(reply: FastifyReply, code: ErrorCode, message?: string): FastifyReply {
  const error = new OnAirError(code, message);
  return reply.code(error.status).header('cache-control', 'no-store').send(error.toJSON());
}

function bearer(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

/**
 * WHIP (RFC 9725): `POST /live/:id/whip` with the stream key as `Authorization: Bearer` and an SDP offer → `201` with
 * the answer and a `Location` to `DELETE` when the broadcast stops. The key and the refusals are RTMP's: a wrong key
 * is 401, a stream someone publishes already 409, a node without room 503. ICE-lite with every candidate in the
 * answer: trickle (`PATCH`) has nothing to do and is refused (405), as RFC 9725 §4.3.1 lets a server that does not
 * support it.
 */
export function registerWhipRoutes(app: FastifyInstance, options: WhipRoutesOptions): void {
  app.register(async (scope) => {
    scope.addContentTypeParser('application/sdp', { parseAs: 'string', bodyLimit: MAX_OFFER_BYTES }, (_request, body, done) => done(null, body));

    /** The stream whose key the request carries, when it is the stream of the URL; else the reply is sent. */
    const authorize = async (id: string, header: string | undefined, reply: FastifyReply): Promise<boolean> => {
      const key = bearer(header);
      const stream = key === undefined ? undefined : await options.verifyKey(key);
      if (stream?.id === id) return true;
      reply.header('www-authenticate', 'Bearer');
      fail(reply, 'ONAIR_ERR_PUBLISH_BAD_KEY', 'WHIP takes the stream key as Authorization: Bearer <stream key>');
      return false;
    };

    scope.post('/live/:id/whip', async (request, reply) => {
      const { id } = request.params as { id: string };
      if (!await authorize(id, request.headers.authorization, reply)) return reply;
      if (!String(request.headers['content-type'] ?? '').startsWith('application/sdp')) {
        return fail(reply, 'ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE', 'a WHIP offer is Content-Type: application/sdp');
      }
      let offer;
      try {
        offer = parseWhipOffer(String(request.body ?? ''));
      } catch (error) {
        if (error instanceof WhepSdpError) return fail(reply, 'ONAIR_ERR_WHIP_SDP', error.reason);
        throw error;
      }
      try {
        const { id: publishId, answer } = await options.whip.publish(id, offer, request.ip);
        return reply.code(201)
          .header('content-type', 'application/sdp')
          .header('location', `/live/${id}/whip/${publishId}`)
          .header('cache-control', 'no-store')
          .header('access-control-expose-headers', 'location')
          .send(answer);
      } catch (error) {
        if (error instanceof WhipRefusal) return fail(reply, error.code, error.detail);
        if (error instanceof WhepSdpError) return fail(reply, 'ONAIR_ERR_WHIP_SDP', error.reason);
        // The WebRTC edge is replacing a worker, or closing: try again shortly.
        if (error instanceof EdgeError) {
          if (error.retryAfterSec !== undefined) reply.header('retry-after', String(error.retryAfterSec));
          return fail(reply, 'ONAIR_ERR_PUBLISH_NO_CAPACITY', error.message);
        }
        throw error;
      }
    });

    scope.delete('/live/:id/whip/:publish', async (request, reply) => {
      const { id, publish } = request.params as { id: string; publish: string };
      if (!await authorize(id, request.headers.authorization, reply)) return reply;
      if (!PUBLISH_ID.test(publish) || !options.whip.end(id, publish)) return fail(reply, 'ONAIR_ERR_WHIP_SESSION_NOT_FOUND');
      return reply.code(200).send();
    });

    scope.patch('/live/:id/whip/:publish', async (_request, reply) => reply.code(405).header('allow', 'DELETE').send());
  });
}
