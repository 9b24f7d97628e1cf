import type { LimitTable } from '../lib/limits.js';

/** What WebRTC viewers may cost the edge. Beyond a session cap: `503 ONAIR_ERR_WHEP_BUSY` with `Retry-After`. */
export const WHEP_LIMITS = {
  maxSessionsPerAddress: {
    env: 'ONAIR_WHEP_MAX_SESSIONS_PER_ADDRESS', default: 20, min: 1, max: 1_000_000, unit: 'sessions',
    doc: 'WHEP sessions one address (IPv6: one /64) may hold on this node.',
  },
  maxSessionsPerWorker: {
    env: 'ONAIR_WHEP_MAX_SESSIONS_PER_WORKER', default: 500, min: 1, max: 1_000_000, unit: 'sessions',
    doc: 'WHEP sessions one mediasoup worker (one core) serves; new viewers beyond every worker\'s cap wait.',
  },
  maxCodecVariants: {
    env: 'ONAIR_WHEP_MAX_CODEC_VARIANTS', default: 8, min: 1, max: 1000, unit: 'routers',
    doc: 'Viewer routers per stream per worker: one per set of payload types that offers use (a browser version each); closed with their last viewer.',
  },
} satisfies LimitTable;

export type WhepLimits = { [K in keyof typeof WHEP_LIMITS]: number };
