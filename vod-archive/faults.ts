/**
 * Transient or permanent: what the VOD room tells apart before it gives up on a video. A dependency outage (S3 or the
 * storage disk unreachable or erroring, the work disk full, the database or Redis unreachable) is transient: work
 * waits and resumes; it never fails or deletes a video. Everything else is left to the attempts count (and an
 * unusable source fails at once: `UnusableSourceError`).
 */

/** What a video can wait for. `disk`: the local work directory (ENOSPC, EDQUOT). */
export type Dependency = 'storage' | 'disk' | 'database' | 'redis';

export const DEPENDENCIES: readonly Dependency[] = ['storage', 'disk', 'database', 'redis'];

/** Errors that came out of a call to a dependency, by the dependency (set by `guardDependency`). */
const origins = new WeakMap<object, Dependency>();

/** Socket-level failures: the peer is down, restarting or unreachable. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN',
  'EAI_AGAIN', 'ENOTCONN', 'ESOCKETTIMEDOUT', 'ERR_SOCKET_CONNECTION_TIMEOUT', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT',
]);
const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);
/** The AWS SDK's names for a server-side or throttling failure (any 5xx counts as well). */
const S3_TRANSIENT_NAMES = new Set([
  'TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'ServiceUnavailable', 'SlowDown', 'InternalError',
  'ThrottlingException', 'Throttling', 'RequestAbortedError',
]);
/** What pg, ioredis and libsql say when the server went away (their errors carry no socket code then). */
const GONE_MESSAGES = /Connection terminated|Connection is closed|connection error|timeout exceeded when trying to connect|Reached the max retries per request|Stream isn't writeable|socket hang up|server closed the connection|database is locked|No space left on device|Disk quota exceeded/i;

interface ErrorLike {
  name?: string;
  code?: string | number;
  message?: string;
  cause?: unknown;
  errors?: unknown[];
  $metadata?: { httpStatusCode?: number };
}

/** The error, its causes and, for an AggregateError, its members (bounded: errors can nest or loop). */
function* chain(error: unknown): Generator<ErrorLike & object> {
  const queue: unknown[] = [error];
  const seen = new Set<unknown>();
  while (queue.length > 0 && seen.size < 16) {
    const next = queue.shift();
    if (typeof next !== 'object' || next === null || seen.has(next)) continue;
    seen.add(next);
    yield next as ErrorLike & object;
    const e = next as ErrorLike;
    if (e.cause !== undefined) queue.push(e.cause);
    if (Array.isArray(e.errors)) queue.push(...e.errors.slice(0, 8));
  }
}

function isOutage(e: ErrorLike): boolean {
  const code = typeof e.code === 'string' ? e.code : undefined;
  if (code && NETWORK_CODES.has(code)) return true;
  // PostgreSQL: class 08 (connection exception), 57P01–57P03 (shut down, cannot connect now), 53 (resources).
  if (code && /^(08|57P0[1-3]|53)/.test(code) && code.length === 5) return true;
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) return true;
  if (e.name && S3_TRANSIENT_NAMES.has(e.name)) return true;
  return GONE_MESSAGES.test(e.message ?? '');
}

/**
 * The dependency an error says is away, or undefined when it is not an outage (a bug, a bad file, a refused
 * request: the attempts count decides). A full disk is `disk` wherever it shows; other outages count for the
 * dependency the failed call went to.
 */
export function dependencyOf(error: unknown): Dependency | undefined {
  let origin: Dependency | undefined;
  let outage = false;
  let sdk = false;
  for (const e of chain(error)) {
    sdk ||= e.$metadata !== undefined;
    const code = typeof e.code === 'string' ? e.code : undefined;
    if ((code && DISK_FULL_CODES.has(code)) || /No space left on device|Disk quota exceeded/i.test(e.message ?? '')) return 'disk';
    origin ??= origins.get(e);
    outage ||= isOutage(e);
  }
  // An untagged AWS SDK error is the storage's (lib-storage's uploads run outside the guarded calls).
  return outage ? origin ?? (sdk ? 'storage' : undefined) : undefined;
}

/** Marks an error as coming out of a call to `dependency` (the error object is not changed). */
export function fromDependency(error: unknown, dependency: Dependency): unknown {
  if (typeof error === 'object' && error !== null && !origins.has(error)) origins.set(error, dependency);
  return error;
}

/**
 * `target` with every method's rejection marked as coming from `dependency`: the storage backend and the catalog
 * handed to the pipeline go through this, so that an ECONNREFUSED can be told apart (S3 or PostgreSQL).
 */
export function guardDependency<T extends object>(target: T, dependency: Dependency): T {
  return new Proxy(target, {
    get(object, property) {
      const value = Reflect.get(object, property, object) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        try {
          const result = (value as (...a: unknown[]) => unknown).apply(object, args);
          return result instanceof Promise ? result.catch((error: unknown) => { throw fromDependency(error, dependency); }) : result;
        } catch (error) {
          throw fromDependency(error, dependency);
        }
      };
    },
  });
}

/** Capped exponential backoff for the `n`th wait (1-based). */
export function waitDelayMs(n: number, firstMs: number, maxMs: number): number {
  return Math.min(maxMs, firstMs * 2 ** Math.min(Math.max(0, n - 1), 30));
}

/** The reason the admin reads while a video waits: the dependency, what it said (short), when the next try is. */
export function waitingReason(dependency: Dependency, error: unknown, nextTryAt: number): string {
  const what: Record<Dependency, string> = {
    storage: 'Waiting for storage (S3 or the storage disk) to answer',
    disk: 'Waiting for space on the work disk',
    database: 'Waiting for the database',
    redis: 'Waiting for Redis',
  };
  const said = (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').slice(0, 160);
  return `${what[dependency]} (${said}); next try at ${new Date(nextTryAt).toISOString()}`;
}
