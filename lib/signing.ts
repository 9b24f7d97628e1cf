import { createHmac, timingSafeEqual } from 'node:crypto';
import { OnAirError } from './errors.js';

/**
 * Signed playback: `?token=<expiry unix seconds>.<HMAC-SHA256(key, "<streamId>.<expiry>") base64url>`. The same token
 * is carried into every URI a playlist lists, so a player needs only the first URL.
 */
export function signPlaybackToken(key: string, streamId: string, expiresAtSec: number): string {
  return `${expiresAtSec}.${createHmac('sha256', key).update(`${streamId}.${expiresAtSec}`).digest('base64url')}`;
}

/** The shape of a playback token (expiry, then the base64url HMAC): what may go into a URL before it is verified. */
export const PLAYBACK_TOKEN = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/;

export function verifyPlaybackToken(key: string, streamId: string, token: unknown, nowSec = Math.floor(Date.now() / 1000)): boolean {
  if (typeof token !== 'string') return false;
  const match = PLAYBACK_TOKEN.exec(token);
  if (!match) return false;
  const expiresAtSec = Number(match[1]);
  const expected = Buffer.from(signPlaybackToken(key, streamId, expiresAtSec));
  const presented = Buffer.from(token);
  // Same length by construction of the regex; compare in constant time before looking at the expiry.
  const valid = presented.length === expected.length && timingSafeEqual(presented, expected);
  return valid && expiresAtSec >= nowSec;
}

/**
 * The expiry (unix seconds) of a valid, unexpired token for `id`, else undefined. A viewer's token is carried over to
 * what its id leads to (a stream's replay) with this same expiry, so that a link never outlives the token it came with.
 */
export function playbackTokenExpiry(key: string, id: string, token: unknown, nowSec = Math.floor(Date.now() / 1000)): number | undefined {
  return verifyPlaybackToken(key, id, token, nowSec) ? Number((token as string).split('.')[0]) : undefined;
}

const STREAM_ID = /^[a-z0-9]{12}$/;

/**
 * The access check every playback route makes (LL-HLS here, WHEP in webrtc-edge): a well-formed stream id, and with
 * signing on a valid token for it. Returns the error to send, or undefined when playback may go on.
 */
export function playbackRefusal(signingKey: string | undefined, streamId: string, token: unknown): OnAirError | undefined {
  if (!STREAM_ID.test(streamId)) return new OnAirError('ONAIR_ERR_VALIDATION', 'stream id must be 12 characters a-z0-9');
  if (signingKey !== undefined && !verifyPlaybackToken(signingKey, streamId, token)) return new OnAirError('ONAIR_ERR_PLAYBACK_FORBIDDEN');
  return undefined;
}
