import type { NodeCapacity } from '../live-transcoder/index.js';

/** A readiness check that takes longer than this fails (a hung dependency must not hang /readyz). */
const READY_CHECK_TIMEOUT_MS = 1_000;

/** What /readyz answers. */
export interface Readiness {
  ok: boolean;
  checks: Record<string, boolean | string>;
  /** The checks that fail now, or whose dependency is being repaired (e.g. `['redis']` while redis-server restarts). */
  degraded: string[];
  /** What the node can still take (live-transcoder's LoadGovernor.capacity); absent on a node without live ingest. */
  capacity?: NodeCapacity;
}

/** What readiness looks at: each a closure over the node's parts, read at every request. */
export interface ReadinessProbes {
  /** Redis answers PING with PONG. */
  redisPing: () => Promise<boolean>;
  /** False while the embedded redis-server restarts; undefined with an external Redis. */
  embeddedRedisUp: () => boolean | undefined;
  /** A query through the database succeeds. */
  database: () => Promise<unknown>;
  encoder: string;
  /** Live recordings waiting for disk space. */
  recordingsDiskFull: () => number;
  /** The WebRTC edge (undefined: off); its `degraded` names a repair in progress, undefined when healthy. */
  edge: { readonly degraded: string | undefined } | undefined;
  closed: () => boolean;
  capacity?: () => NodeCapacity;
}

/**
 * Readiness: Redis and the database answer (each within READY_CHECK_TIMEOUT_MS). `degraded` names what is failing
 * or being repaired (`redis` while the embedded redis-server restarts, `webrtc` while a mediasoup worker does, `disk`
 * while a recording waits for space); it
 * empties on its own once they are back.
 */
export async function checkReady(probes: ReadinessProbes): Promise<Readiness> {
  const checks: Record<string, boolean | string> = {};
  const [redis, database] = await Promise.all([
    // A restarting embedded redis-server is down whatever an old connection still answers.
    probes.embeddedRedisUp() === false ? false : passes(probes.redisPing),
    passes(async () => {
      await probes.database();
      return true;
    }),
  ]);
  checks['redis'] = redis;
  checks['database'] = database;
  checks['encoder'] = probes.encoder;
  // A recording waiting for disk space is listed, not a reason to leave the pool: live playback goes on.
  const full = probes.recordingsDiskFull();
  checks['disk'] = full === 0 ? true : `full: ${full} recording${full === 1 ? '' : 's'} waiting for space`;
  // A WebRTC edge repairing itself is listed, not a reason to leave the pool: LL-HLS and the rest keep serving.
  checks['webrtc'] = probes.edge ? probes.edge.degraded ?? true : 'off';
  const degraded = Object.keys(checks).filter((name) => checks[name] === false || (typeof checks[name] === 'string' && /^(degraded|full)/.test(checks[name])));
  return {
    ok: checks['redis'] === true && checks['database'] === true && !probes.closed(), checks, degraded,
    ...(probes.capacity ? { capacity: probes.capacity() } : {}),
  };
}

/** Whether `check` resolves true within READY_CHECK_TIMEOUT_MS. */
async function passes(check: () => Promise<boolean>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      check().catch(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), READY_CHECK_TIMEOUT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
