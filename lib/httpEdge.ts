import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * The one HTTP edge every room's routes sit behind (built in server/http.ts): one admin gate, one error path (throw an
 * `OnAirError`, or let fastify's own errors through: the edge maps both onto the catalogue), rate limits from one
 * table. Rooms see the gate as decorations of the fastify instance they are given.
 */
declare module 'fastify' {
  interface FastifyInstance {
    /**
     * The admin gate, as an `onRequest` hook: 401 `ONAIR_ERR_UNAUTHORIZED` without a token, 403 `ONAIR_ERR_FORBIDDEN`
     * with a wrong one (compared in constant time), 429 `ONAIR_ERR_RATE_LIMITED` with `Retry-After` once an address
     * has sent too many wrong ones (counted on the shared Redis, so across OnAir processes).
     */
    requireAdmin(request: FastifyRequest, reply: FastifyReply): Promise<void>;
    /** Whether the request carries the admin token (views that show admins more); never throttles or throws. */
    isAdmin(request: FastifyRequest): boolean;
  }
}

export {};
