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
    doc: 'Viewer routers per stream per worker: one per set of payload types and header-extension ids that offers use (a browser version each); closed with their last viewer.',
  },
  maxPipesPerStream: {
    env: 'ONAIR_WEBRTC_MAX_PIPES_PER_STREAM', default: 32, min: 1, max: 10_000, unit: 'pipes',
    doc: 'Edge nodes one live stream of this origin feeds (one PipeTransport each); beyond, an edge\'s pipe request is `503 ONAIR_ERR_WHEP_BUSY`.',
  },
  maxPipes: {
    env: 'ONAIR_WEBRTC_MAX_PIPES', default: 256, min: 1, max: 100_000, unit: 'pipes',
    doc: 'Pipes this node holds in all: fed to edges as an origin, or pulled from origins as an edge (streams with viewers here or in their linger).',
  },
} satisfies LimitTable;

export type WhepLimits = { [K in keyof typeof WHEP_LIMITS]: number };
