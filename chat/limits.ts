import type { LimitTable } from '../lib/limits.js';

/**
 * What one chat client address may hold at once, its variable and default (the rate limits of messages are token
 * buckets: `ONAIR_CHAT_*_LIMIT` in the config schema). A connection beyond is refused at the Socket.IO handshake with
 * `connect_error` `{ code: 'ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS' }`.
 */
export const CHAT_LIMITS = {
  maxConnectionsPerAddress: {
    env: 'ONAIR_CHAT_MAX_CONNECTIONS_PER_ADDRESS', default: 100, min: 0, max: 1_000_000, unit: 'connections',
    doc: 'Chat connections from one address (IPv6: one /64) across every OnAir process, counted in Redis; a connection '
      + 'beyond is refused with ONAIR_ERR_CHAT_TOO_MANY_CONNECTIONS. Admin connections are not counted; without Redis, '
      + 'connections are let in. 0: off.',
  },
} satisfies LimitTable;
