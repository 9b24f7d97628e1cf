import type { LimitTable } from '../lib/limits.js';

/**
 * Requests per address per minute on the routes a stranger can make expensive, counted on the shared Redis (so that
 * the limits hold across OnAir processes). Beyond: `429 ONAIR_ERR_RATE_LIMITED` with `Retry-After`. 0: no limit.
 */
export const HTTP_LIMITS = {
  adminFailuresPerMinute: {
    env: 'ONAIR_RATE_ADMIN_FAILURES_PER_MIN', default: 10, min: 0, max: 1_000_000, unit: 'wrong tokens/min',
    doc: 'Wrong admin tokens one address may present per minute; beyond, every admin request from it gets 429 until the minute is over.',
  },
  whepOffersPerMinute: {
    env: 'ONAIR_RATE_WHEP_PER_MIN', default: 60, min: 0, max: 1_000_000, unit: 'requests/min',
    doc: 'WHEP offers (`POST /live/:id/whep`) per address per minute.',
  },
  streamCreatesPerMinute: {
    env: 'ONAIR_RATE_STREAM_CREATE_PER_MIN', default: 60, min: 0, max: 1_000_000, unit: 'requests/min',
    doc: 'Stream creations (`POST /api/streams`) per address per minute.',
  },
  uploadCreatesPerMinute: {
    env: 'ONAIR_RATE_UPLOAD_CREATE_PER_MIN', default: 60, min: 0, max: 1_000_000, unit: 'requests/min',
    doc: 'tus upload creations (`POST /api/uploads`) per address per minute.',
  },
  chatHistoryReadsPerMinute: {
    env: 'ONAIR_RATE_CHAT_HISTORY_PER_MIN', default: 600, min: 0, max: 1_000_000, unit: 'requests/min',
    doc: 'Replay chat reads (`GET /api/videos/:id/chat`) per address per minute.',
  },
  qoeReportsPerMinute: {
    env: 'ONAIR_RATE_QOE_PER_MIN', default: 600, min: 0, max: 1_000_000, unit: 'requests/min',
    doc: 'Playback-quality reports (`POST /api/qoe`) per address per minute: a watch page sends one every 10 s, so 100 viewers behind one address.',
  },
} satisfies LimitTable;

export type HttpLimits = { [K in keyof typeof HTTP_LIMITS]: number };

/** Which route each request limit applies to. */
export const ROUTE_LIMITS: { limit: Exclude<keyof HttpLimits, 'adminFailuresPerMinute'>; method: string; url: string }[] = [
  { limit: 'whepOffersPerMinute', method: 'POST', url: '/live/:id/whep' },
  { limit: 'streamCreatesPerMinute', method: 'POST', url: '/api/streams' },
  { limit: 'uploadCreatesPerMinute', method: 'POST', url: '/api/uploads' },
  { limit: 'chatHistoryReadsPerMinute', method: 'GET', url: '/api/videos/:id/chat' },
  { limit: 'qoeReportsPerMinute', method: 'POST', url: '/api/qoe' },
];
