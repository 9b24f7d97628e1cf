import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../lib/log.js';
import { Supervisor, type ExitInfo, type Supervisable } from '../lib/Supervisor.js';
import { tieScript } from '../lib/tiedProcess.js';

export interface EmbeddedRedis {
  /** The unix socket redis listens on (no TCP port is opened); the same after every restart. */
  socketPath: string;
  /** `unix://<socketPath>`; `redisOptionsFromUrl` turns it into ioredis options. */
  url: string;
  /** The current redis-server process id (not its shell wrapper's); the last one while it is down. */
  readonly pid: number;
  /** Whether redis-server is up now (false between a crash and its restart). */
  readonly up: boolean;
  /** Restarts after crashes since the start; `supervisor` emits `restart`, `up` and `down` as they happen. */
  readonly restarts: number;
  readonly supervisor: Supervisor<RedisProcess>;
  /**
   * Shuts redis down (the append-only file is flushed) and waits for it to exit; no restart follows. After
   * `timeoutMs` (default 10 s) it is killed. Idempotent.
   */
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

/** One run of redis-server, from its ready line to its exit. */
export interface RedisProcess extends Supervisable {
  pid: number;
}

export interface EmbeddedRedisOptions {
  /** Redis keeps its socket and append-only files in `<dataDir>/redis/`. */
  dataDir: string;
  /** Default: `redis-server` from PATH. */
  redisServerPath?: string;
  /** Redis's own log lines go here at debug level; an unexpected exit at error level. */
  logger?: Logger;
  /** How long to wait for the ready line. Default 10 s. */
  readyTimeoutMs?: number;
  /** Waits before restarts after a crash; default lib/Supervisor.ts DEFAULT_BACKOFF_MS. */
  restartBackoffMs?: readonly number[];
}

const READY_RE = /ready to accept connections/i;
const PID_LINE_RE = /^onair-redis-pid=(\d+)$/;
const DEFAULT_READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
/** sun_path is 108 bytes on Linux, NUL included. */
const MAX_SOCKET_PATH_BYTES = 107;
const OUTPUT_TAIL_CHARS = 4000;

/** redis-server tied to our stdin (lib/tiedProcess.ts); SIGTERM at EOF, so that it flushes its append-only file. */
const WRAPPER = tieScript({ signal: 'TERM', pidTag: 'onair-redis' });

/** Whether something already answers on this socket (another node sharing the data dir, say). */
function socketInUse(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Starts redis-server as a child on a unix socket in `<dataDir>/redis/`, with the append-only file on (queued jobs
 * survive a restart) and RDB snapshots off, and keeps it running: a crash is repaired by a restart with backoff on the
 * same socket and append-only file (ioredis clients reconnect by themselves and find their data). Resolves once redis
 * prints its ready line; rejects when the first start fails.
 */
export async function startEmbeddedRedis(options: EmbeddedRedisOptions): Promise<EmbeddedRedis> {
  const dir = path.resolve(options.dataDir, 'redis');
  const socketPath = path.join(dir, 'redis.sock');
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new Error(`embedded redis: socket path ${socketPath} is longer than ${MAX_SOCKET_PATH_BYTES} bytes; use a shorter data dir`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Only before the first start: after a crash the socket file is stale (redis-server replaces it).
  if (await socketInUse(socketPath)) {
    throw new Error(`embedded redis: a server already listens on ${socketPath}; is another OnAir using this data dir?`);
  }
  const supervisor = new Supervisor<RedisProcess>({
    name: 'redis',
    start: () => spawnRedis(options, dir, socketPath),
    ...(options.restartBackoffMs ? { backoffMs: options.restartBackoffMs } : {}),
    ...(options.logger ? { log: options.logger } : {}),
  });
  let pid = (await supervisor.start()).pid;
  supervisor.on('up', ({ child }) => {
    pid = child.pid;
  });
  return {
    socketPath,
    url: `unix://${socketPath}`,
    get pid() {
      return pid;
    },
    get up() {
      return supervisor.up;
    },
    get restarts() {
      return supervisor.restarts;
    },
    supervisor,
    stop: (stopOptions) => supervisor.stop(stopOptions),
  };
}

/** One redis-server run, tied to our life (lib/tiedProcess.ts); resolves once it prints its ready line. */
async function spawnRedis(options: EmbeddedRedisOptions, dir: string, socketPath: string): Promise<RedisProcess> {
  const serverPath = options.redisServerPath ?? 'redis-server';
  const args = [
    '--port', '0',
    '--unixsocket', socketPath,
    '--unixsocketperm', '700',
    '--appendonly', 'yes',
    '--save', '',
    '--dir', dir,
    '--daemonize', 'no',
    '--logfile', '',
  ];
  const logger = options.logger;
  logger?.debug({ command: [serverPath, ...args].join(' ') }, 'starting embedded redis');

  // detached: its own process group, so a Ctrl-C meant for us does not reach redis before we can shut it down.
  const child: ChildProcessWithoutNullStreams = spawn('/bin/sh', ['-c', WRAPPER, 'onair-redis', serverPath, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdin.on('error', () => {});

  let outputTail = '';
  let exited = false;
  const exit = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      // Let the last output lines arrive first: they say why.
      setImmediate(() => resolve({ code, signal, output: outputTail }));
    });
  });

  let pid: number | undefined;
  let ready = false;
  let onProgress: () => void = () => {};

  const onLine = (line: string, stream: 'stdout' | 'stderr'): void => {
    outputTail = (outputTail + line + '\n').slice(-OUTPUT_TAIL_CHARS);
    const pidMatch = stream === 'stdout' ? PID_LINE_RE.exec(line) : null;
    if (pidMatch !== null) {
      pid = Number(pidMatch[1]);
    } else {
      if (READY_RE.test(line)) ready = true;
      logger?.debug({ redis: line }, 'redis');
    }
    onProgress();
  };
  for (const stream of ['stdout', 'stderr'] as const) {
    let pending = '';
    child[stream].setEncoding('utf8');
    child[stream].on('data', (chunk: string) => {
      pending += chunk;
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        onLine(pending.slice(0, newline).replace(/\r$/, ''), stream);
        pending = pending.slice(newline + 1);
      }
    });
  }

  const timeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`embedded redis did not print its ready line within ${timeoutMs} ms; its output:\n${outputTail}`));
      }, timeoutMs);
      const settle = (error?: Error): void => {
        clearTimeout(timer);
        onProgress = () => {};
        if (error === undefined) resolve();
        else reject(error);
      };
      onProgress = () => {
        if (ready && pid !== undefined) settle();
      };
      child.once('error', (error) => settle(new Error(`embedded redis: cannot spawn /bin/sh: ${error.message}`, { cause: error })));
      void exit.then(({ code, signal }) => {
        settle(new Error(`embedded redis (${serverPath}) exited before it was ready (code ${code}, signal ${signal}); its output:\n${outputTail}`));
      });
    });
  } catch (error) {
    await kill(child, pid, exit, () => exited);
    throw error;
  }

  const redisPid = pid!;
  let stopping: Promise<void> | undefined;
  return {
    pid: redisPid,
    exited: exit,
    stop(stopOptions = {}): Promise<void> {
      stopping ??= kill(child, redisPid, exit, () => exited, stopOptions.timeoutMs);
      return stopping;
    },
  };
}

/**
 * Closes the wrapper's stdin (its watcher then sends redis SIGTERM: redis flushes the append-only file and exits)
 * and waits for the wrapper, which waits for redis. SIGKILL both if that takes too long.
 */
async function kill(
  child: ChildProcessWithoutNullStreams,
  redisPid: number | undefined,
  exit: Promise<unknown>,
  hasExited: () => boolean,
  timeoutMs = STOP_TIMEOUT_MS,
): Promise<void> {
  if (hasExited()) return;
  child.stdin.end();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exit.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    for (const target of [redisPid, child.pid]) {
      if (target === undefined) continue;
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await exit;
  }
}

/**
 * ioredis options for `unix:///path/to.sock[?db=N&password=…]` or `redis[s]://[user[:password]@]host[:port][/db]`.
 * `maxRetriesPerRequest: null`, as BullMQ workers need: a command waits for the connection instead of failing.
 */
export function redisOptionsFromUrl(url: string): RedisOptions {
  if (/^unix:/i.test(url)) {
    // Parsed by hand: a socket path may hold characters a URL parser would rewrite.
    let rest = url.replace(/^unix:(\/\/)?/i, '');
    let query = '';
    const q = rest.indexOf('?');
    if (q >= 0) {
      query = rest.slice(q + 1);
      rest = rest.slice(0, q);
    }
    if (rest === '' || !rest.startsWith('/')) throw new Error('redis URL: expected unix:///absolute/path/to.sock');
    const params = new URLSearchParams(query);
    const options: RedisOptions = { path: rest, maxRetriesPerRequest: null };
    const db = params.get('db');
    if (db !== null) options.db = parseDb(db);
    const password = params.get('password');
    if (password !== null) options.password = password;
    return options;
  }

  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error('redis URL: not a valid URL');
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new Error('redis URL: expected redis://, rediss:// or unix://');
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  const options: RedisOptions = {
    host,
    port: parsed.port === '' ? 6379 : Number(parsed.port),
    maxRetriesPerRequest: null,
  };
  if (parsed.username !== '') options.username = decodeURIComponent(parsed.username);
  if (parsed.password !== '') options.password = decodeURIComponent(parsed.password);
  const db = parsed.pathname.replace(/^\//, '') || parsed.searchParams.get('db');
  if (db !== null && db !== '') options.db = parseDb(db);
  if (parsed.protocol === 'rediss:') options.tls = { servername: host };
  return options;
}

function parseDb(text: string): number {
  if (!/^\d+$/.test(text)) throw new Error(`redis URL: database must be a number, got "${text}"`);
  return Number(text);
}
