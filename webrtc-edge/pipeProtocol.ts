import { createHash, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { types as ms } from 'mediasoup';

/**
 * The node-to-node pipe protocol (issue #17): an edge asks a stream's origin for one PipeTransport per stream, over
 * HTTP with the cluster secret (`Authorization: Bearer <ONAIR_CLUSTER_SECRET>`):
 *
 * - `POST /internal/webrtc/:id/pipe` `{ ip, port, srtpParameters }` (the edge's pipe transport) → `201`
 *   `{ pipeId, ip, port, srtpParameters, producers: [{ kind, rtpParameters, paused }] }` (the origin's transport and
 *   the pipe consumers' parameters, which the edge produces with);
 * - `GET /internal/webrtc/:id/pipe/:pipeId` → `204` while the pipe runs (and renews its lease), `404` once it is gone
 *   (the stream ended, or its producers were replaced): the edge ends its viewers' sessions and closes its side;
 * - `DELETE /internal/webrtc/:id/pipe/:pipeId` → `204`: the edge has no viewers left.
 */

/** One side of a pipe: where its PipeTransport listens, and its SRTP key. */
export interface PipeEndpoint {
  ip: string;
  port: number;
  srtpParameters: ms.SrtpParameters;
}

export interface PipeOffer extends PipeEndpoint {
  pipeId: string;
  producers: { kind: 'audio' | 'video'; rtpParameters: ms.RtpParameters; paused: boolean }[];
}

/** mediasoup's PipeTransport takes this suite only. */
const CRYPTO_SUITES: readonly string[] = ['AEAD_AES_256_GCM'];
const KEY_BASE64 = /^[A-Za-z0-9+/]{16,120}={0,2}$/;
export const PIPE_ID = /^[0-9a-f-]{36}$/;
/** Stream ids as the API makes them (server/http.ts): the only ones that can be live anywhere. */
export const STREAM_ID = /^[a-z0-9]{12}$/;
/** Bound on each node-to-node request. */
export const PIPE_REQUEST_TIMEOUT_MS = 5_000;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A pipe endpoint from the network, or undefined when it is not one. */
export function parsePipeEndpoint(body: unknown): PipeEndpoint | undefined {
  if (!isRecord(body) || !isRecord(body['srtpParameters'])) return undefined;
  const { ip, port } = body;
  const { cryptoSuite, keyBase64 } = body['srtpParameters'];
  if (typeof ip !== 'string' || net.isIP(ip) === 0) return undefined;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  if (typeof cryptoSuite !== 'string' || !CRYPTO_SUITES.includes(cryptoSuite) || typeof keyBase64 !== 'string' || !KEY_BASE64.test(keyBase64)) return undefined;
  return { ip, port, srtpParameters: { cryptoSuite: cryptoSuite as ms.SrtpCryptoSuite, keyBase64 } };
}

/** An origin's answer, or undefined when it is not one (mediasoup checks the RTP parameters themselves). */
export function parsePipeOffer(body: unknown): PipeOffer | undefined {
  const endpoint = parsePipeEndpoint(body);
  if (!endpoint || !isRecord(body) || typeof body['pipeId'] !== 'string' || !PIPE_ID.test(body['pipeId'])) return undefined;
  const producers = body['producers'];
  if (!Array.isArray(producers) || producers.length === 0 || producers.length > 2) return undefined;
  const parsed: PipeOffer['producers'] = [];
  for (const p of producers) {
    if (!isRecord(p) || (p['kind'] !== 'audio' && p['kind'] !== 'video') || !isRecord(p['rtpParameters']) || typeof p['paused'] !== 'boolean') return undefined;
    if (parsed.some((q) => q.kind === p['kind'])) return undefined;
    parsed.push({ kind: p['kind'], rtpParameters: p['rtpParameters'] as unknown as ms.RtpParameters, paused: p['paused'] });
  }
  return { ...endpoint, pipeId: body['pipeId'], producers: parsed };
}

/** Whether `Authorization: Bearer <secret>` carries `secret`, in constant time (both sides hashed to one length). */
export function clusterSecretMatches(authorization: string | undefined, secret: string): boolean {
  const presented = authorization?.startsWith('Bearer ') ? authorization.slice(7) : '';
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(secret).digest();
  return timingSafeEqual(a, b) && presented.length > 0;
}

/** The edge's side of the protocol: requests to one origin, each bounded in time. */
export class OriginClient {
  readonly #secret: string;

  constructor(secret: string) {
    this.#secret = secret;
  }

  #url(internalUrl: string, streamId: string, pipeId?: string): string {
    const base = internalUrl.replace(/\/+$/, '');
    return `${base}/internal/webrtc/${encodeURIComponent(streamId)}/pipe${pipeId === undefined ? '' : `/${encodeURIComponent(pipeId)}`}`;
  }

  /** Opens a pipe: the origin's offer, `not-live`, or `unavailable` (refused, unreachable, or an answer that is not one). */
  async open(internalUrl: string, streamId: string, local: PipeEndpoint): Promise<PipeOffer | 'not-live' | 'unavailable'> {
    try {
      const response = await fetch(this.#url(internalUrl, streamId), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.#secret}` },
        body: JSON.stringify(local),
        signal: AbortSignal.timeout(PIPE_REQUEST_TIMEOUT_MS),
      });
      const text = await response.text();
      if (response.status === 404 && text.includes('ONAIR_ERR_STREAM_NOT_LIVE')) return 'not-live';
      if (response.status !== 201) return 'unavailable';
      return parsePipeOffer(JSON.parse(text)) ?? 'unavailable';
    } catch {
      return 'unavailable';
    }
  }

  /** Renews the pipe's lease: `alive`, `gone` (the origin closed it), or `unreachable`. */
  async keep(internalUrl: string, streamId: string, pipeId: string): Promise<'alive' | 'gone' | 'unreachable'> {
    try {
      const response = await fetch(this.#url(internalUrl, streamId, pipeId), {
        headers: { authorization: `Bearer ${this.#secret}` }, signal: AbortSignal.timeout(PIPE_REQUEST_TIMEOUT_MS),
      });
      await response.body?.cancel();
      if (response.status === 204) return 'alive';
      return response.status === 404 ? 'gone' : 'unreachable';
    } catch {
      return 'unreachable';
    }
  }

  /** Tells the origin the pipe is no longer needed (best effort: its lease runs out otherwise). */
  async close(internalUrl: string, streamId: string, pipeId: string): Promise<void> {
    try {
      const response = await fetch(this.#url(internalUrl, streamId, pipeId), {
        method: 'DELETE', headers: { authorization: `Bearer ${this.#secret}` }, signal: AbortSignal.timeout(PIPE_REQUEST_TIMEOUT_MS),
      });
      await response.body?.cancel();
    } catch {
      // The lease ends it.
    }
  }
}
