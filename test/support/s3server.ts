import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { tieScript } from '../../lib/tiedProcess.js';

const run = promisify(execFile);

/**
 * A real S3-compatible server for tests: OpenStack Swift 2.30 (Debian's swift-proxy, swift-account,
 * swift-container and swift-object) with its s3api middleware, on loopback, one replica, everything in one
 * temporary directory.
 *
 * Client settings that work against it: `forcePathStyle: true` and
 * `requestChecksumCalculation` / `responseChecksumValidation` = `'WHEN_REQUIRED'` (with the SDK's defaults,
 * streamed uploads are sent aws-chunked and Swift rejects them). DeleteObjects needs a `Content-MD5` header,
 * which the current SDK no longer sends (it sends a CRC32 checksum instead): the storage code adds it itself.
 * Bucket CORS and tagging are not implemented by s3api.
 */
export interface S3TestServer {
  /** `http://127.0.0.1:<port>`: the Swift proxy, which speaks S3 through s3api (path-style only). */
  endpoint: string;
  /** A bucket already created. */
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Env vars ONAIR_S3_ENDPOINT/BUCKET/REGION/ACCESS_KEY_ID/SECRET_ACCESS_KEY for a node. */
  env: Record<string, string>;
  /**
   * An outage: SIGKILLs the four Swift servers at once (requests in flight get a reset, new ones a refused
   * connection) and resolves once they are gone. Their directory (the stored objects) is kept for `restart`.
   */
  kill(): Promise<void>;
  /** After `kill` (or a restart that failed): the same servers on the same ports and data again; resolves once the S3 API answers. */
  restart(): Promise<void>;
  /**
   * A hang: SIGSTOPs the four Swift servers (one process each, `workers = 0`). Connections are still accepted by the
   * kernel and never answered. `resume` (SIGCONT) lets them go on where they were.
   */
  pause(): void;
  resume(): void;
  /** Stops the four Swift servers, waits for them to exit and removes the directory. Idempotent. */
  stop(): Promise<void>;
}

/** The Debian Python: the python3 on PATH may be another one (pyenv) that cannot import the swift module. */
const PYTHON = '/usr/bin/python3';
const REGION = 'us-east-1';
/** tempauth's `user_test_tester = testing`: s3api takes `account:user` as the access key id, the key as secret. */
const ACCESS_KEY_ID = 'test:tester';
const SECRET_ACCESS_KEY = 'testing';
const DEFAULT_BUCKET = 'onair-test';
const RING_TIMEOUT_MS = 60_000;
/**
 * How long the S3 API has to answer after the servers were spawned: 2–3 s here, with EVENTLET_NO_GREENDNS set
 * (eventlet's greendns import is what made it ~21 s).
 */
const READY_TIMEOUT_MS = 60_000;
const READY_ATTEMPT_TIMEOUT_MS = 5_000;
const READY_POLL_MS = 200;
/** How long the servers have to exit after SIGTERM before they are SIGKILLed. */
const STOP_TIMEOUT_MS = 5_000;
const LOG_TAIL_CHARS = 3000;
const PID_LINE_RE = /^onair-swift-pid=(\d+)$/m;

const SERVERS = ['account', 'container', 'object', 'proxy'] as const;
type ServerName = (typeof SERVERS)[number];

/**
 * Ties a server's life to our stdin (lib/tiedProcess.ts), its output in a log file, its pid printed. The Swift
 * servers call setsid() when they drop privileges, so killing our process group would not reach them: the watcher
 * and `stop` signal them by pid.
 */
const WRAPPER = tieScript({ signal: 'TERM', pidTag: 'onair-swift', logToFirstArg: true });

/**
 * Runs one Swift WSGI server, like /usr/bin/swift-<name>-server, but with swift.conf (hash prefix, storage
 * policies, constraints) read from our directory instead of /etc/swift: the servers' `swift_dir` option only
 * moves the rings.
 */
const RUN_SERVER_PY = `import sys
swift_dir, app_section = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
from swift.common import utils
utils.set_swift_dir(swift_dir)
from swift.common import constraints, storage_policy
constraints.reload_constraints()
storage_policy.reload_storage_policies()
from swift.common.wsgi import run_wsgi
conf_file, options = utils.parse_options()
if app_section == 'object-server':
    from swift.obj import server as object_server
    options['global_conf_callback'] = object_server.global_conf_callback
sys.exit(run_wsgi(conf_file, app_section, **options))
`;

/**
 * \`swift-ring-builder <ring>.builder create 8 1 1\`, \`add r1z1-127.0.0.1:<port>/d1 1\`, \`rebalance\` for each
 * ring, in one interpreter (nine separate CLI runs take ~6 s, this ~1 s). Arguments: swift_dir, then name=port.
 */
const MAKE_RINGS_PY = `import os, sys
from swift.cli import ringbuilder
swift_dir = sys.argv[1]
for spec in sys.argv[2:]:
    name, port = spec.split('=')
    builder = os.path.join(swift_dir, name + '.builder')
    for args in (['create', '8', '1', '1'], ['add', 'r1z1-127.0.0.1:%s/d1' % port, '1'], ['rebalance']):
        try:
            ringbuilder.main(['swift-ring-builder', builder] + args)
        except SystemExit as e:
            # EXIT_SUCCESS = 0, EXIT_WARNING = 1, EXIT_ERROR = 2
            if e.code not in (None, 0, 1):
                sys.exit('swift-ring-builder %s %s failed with %r' % (builder, ' '.join(args), e.code))
`;

/**
 * tempauth needs a memcache client in the request environment (\`swift.cache\`), even for S3 requests. Rather than
 * run memcached as well, or point the memcache middleware at nothing (it would log an error on every request),
 * the proxy gets this in-process stand-in for MemcacheRing: values go through JSON as they would through
 * memcached, so callers never share mutable objects with the cache.
 */
const LOCAL_CACHE_PY = `import json, time as _time


class LocalCache(object):
    def __init__(self):
        self._items = {}

    def get(self, key, raise_on_error=False):
        item = self._items.get(key)
        if item is None:
            return None
        value, serialized, expires = item
        if expires is not None and expires <= _time.time():
            del self._items[key]
            return None
        return json.loads(value) if serialized else value

    def set(self, key, value, serialize=True, time=0, min_compress_len=0, raise_on_error=False):
        expires = _time.time() + time if time else None
        self._items[key] = (json.dumps(value) if serialize else value, serialize, expires)

    def incr(self, key, delta=1, time=0):
        value = max(0, int(self.get(key) or 0) + int(delta))
        self.set(key, value, time=time)
        return value

    def decr(self, key, delta=1, time=0):
        return self.incr(key, -int(delta), time)

    def delete(self, key, server_key=None):
        self._items.pop(key, None)

    def set_multi(self, mapping, server_key, serialize=True, time=0, min_compress_len=0):
        for key, value in mapping.items():
            self.set(key, value, serialize=serialize, time=time)

    def get_multi(self, keys, server_key):
        return [self.get(key) for key in keys]


def filter_factory(global_conf, **local_conf):
    cache = LocalCache()

    def make_filter(app):
        def local_cache(env, start_response):
            env['swift.cache'] = cache
            return app(env, start_response)
        return local_cache
    return make_filter
`;

/** Ports that are free when we look: all four listeners are open at once, so they are distinct. */
async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => {
            const address = server.address();
            if (address !== null && typeof address === 'object') resolve(address.port);
            else reject(new Error('no port from the loopback listener'));
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

function swiftConf(): string {
  return `[swift-hash]
swift_hash_path_prefix = ${randomBytes(8).toString('hex')}
swift_hash_path_suffix = ${randomBytes(8).toString('hex')}

[storage-policy:0]
name = Policy-0
default = yes
`;
}

function defaultSection(root: string, port: number): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
# A port taken between our look and the bind fails in 5 s rather than Swift's default 30.
bind_timeout = 5
workers = 0
user = ${os.userInfo().username}
swift_dir = ${root}
devices = ${path.join(root, 'devices')}
mount_check = false
log_level = INFO
`;
}

function serverConf(name: Exclude<ServerName, 'proxy'>, root: string, port: number): string {
  return `${defaultSection(root, port)}
[pipeline:main]
pipeline = ${name}-server

[app:${name}-server]
use = egg:swift#${name}
`;
}

function proxyConf(root: string, port: number): string {
  // s3api before the auth middleware; slo after it for multipart uploads; versioned_writes because the proxy
  // would add it anyway (and log that it did); account_autocreate so that the first request of tempauth's user
  // creates its account.
  return `${defaultSection(root, port)}
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# A backend that refused 10 connections within a minute is not tried for a minute (the proxy's error limiting): a
# restart after kill() (the proxy up before the others listen) would answer 503 for that minute.
error_suppression_limit = 100000

[filter:s3api]
use = egg:swift#s3api
location = ${REGION}

[filter:tempauth]
use = egg:swift#tempauth
user_${ACCESS_KEY_ID.replace(':', '_')} = ${SECRET_ACCESS_KEY} .admin

[filter:cache]
paste.filter_factory = onair_local_cache:filter_factory

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
`;
}

function pythonEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, EVENTLET_NO_GREENDNS: 'yes', PYTHONDONTWRITEBYTECODE: '1' };
  // Whatever another Python's environment points at must not leak into Debian's.
  delete env.PYTHONPATH;
  delete env.PYTHONHOME;
  return env;
}

/** The client settings Swift's s3api needs (see the note on `S3TestServer`). */
function s3ClientConfig(server: Pick<S3TestServer, 'endpoint' | 'region' | 'accessKeyId' | 'secretAccessKey'>) {
  return {
    endpoint: server.endpoint,
    region: server.region,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED' as const,
    responseChecksumValidation: 'WHEN_REQUIRED' as const,
  };
}

interface RunningServer {
  name: ServerName;
  logFile: string;
  child: ChildProcessWithoutNullStreams;
  /** The Python server's pid (not its shell wrapper's), once the wrapper printed it. */
  pid: number | undefined;
  exited: boolean;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The wrapper's own output (its pid line; a shell error). */
  output: string;
}

function spawnServer(name: ServerName, root: string, script: string): RunningServer {
  const conf = path.join(root, `${name}-server.conf`);
  const logFile = path.join(root, `${name}-server.log`);
  // -v: log to stderr (our log file) as well as to syslog; without it, Swift's logs would go nowhere here.
  const command = [PYTHON, script, root, `${name}-server`, conf, '-v'];
  // detached: a Ctrl-C meant for the test runner does not reach the wrapper before stop() can run.
  const child = spawn('/bin/sh', ['-c', WRAPPER, 'onair-swift', logFile, ...command], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    env: pythonEnv(),
  });
  child.stdin.on('error', () => {});
  const server: RunningServer = {
    name,
    logFile,
    child,
    pid: undefined,
    exited: false,
    exit: new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        server.exited = true;
        resolve({ code, signal });
      });
    }),
    output: '',
  };
  // A failed spawn emits 'error' and maybe no 'exit': count it as one, so that stop() does not wait forever.
  child.once('error', (error) => {
    server.output += `cannot spawn /bin/sh: ${error.message}\n`;
    child.emit('exit', null, null);
  });
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      server.output = (server.output + chunk).slice(-LOG_TAIL_CHARS);
      const match = PID_LINE_RE.exec(server.output);
      if (match !== null) server.pid = Number(match[1]);
    });
  }
  return server;
}

/** Closes each wrapper's stdin (its watcher SIGTERMs the server), waits, and SIGKILLs what is left. */
async function stopServers(servers: RunningServer[]): Promise<void> {
  for (const server of servers) server.child.stdin.end();
  let timer: NodeJS.Timeout | undefined;
  const allExited = Promise.all(servers.map((server) => server.exit));
  const timedOut = await Promise.race([
    allExited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  if (!timedOut) {
    await groupsGone(servers);
    return;
  }
  for (const server of servers) {
    if (server.exited) continue;
    // The Python server has its own session (setsid): by pid. The wrapper and its watcher: by process group.
    for (const target of [server.pid, server.child.pid === undefined ? undefined : -server.child.pid]) {
      if (target === undefined) continue;
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
  await allExited;
}

/**
 * Once the wrappers have exited: waits (at most STOP_TIMEOUT_MS) until nothing is left in their process groups. The
 * wrapper's stdin watcher (a subshell in its group) may still be going, or not yet reaped, for a moment after the
 * wrapper itself exits; a check right after stop() saw it once (s3server.test, CI).
 */
async function groupsGone(servers: RunningServer[]): Promise<void> {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  for (const server of servers) {
    const group = server.child.pid;
    while (group !== undefined && Date.now() < deadline && pidAlive(-group)) await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A signal to each Python server, by pid (SIGSTOP, SIGCONT). */
function signalServers(servers: RunningServer[], signal: NodeJS.Signals): void {
  for (const server of servers) {
    if (server.pid === undefined || server.exited) throw new Error(`the Swift ${server.name} server is not running`);
    process.kill(server.pid, signal);
  }
}

/** SIGKILL, no grace: the Python servers by pid (they run in their own session), the wrappers by process group. */
async function killServers(servers: RunningServer[]): Promise<void> {
  for (const server of servers) {
    for (const target of [server.pid, server.child.pid === undefined ? undefined : -server.child.pid]) {
      if (target === undefined) continue;
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
  await Promise.all(servers.map((server) => server.exit));
  // The Python servers are not our children: gone once signal 0 finds nothing (their listening ports are free).
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  for (const server of servers) {
    while (server.pid !== undefined && Date.now() < deadline && pidAlive(server.pid)) await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function logTails(servers: RunningServer[]): Promise<string> {
  const parts: string[] = [];
  for (const server of servers) {
    const log = await readFile(server.logFile, 'utf8').catch(() => '');
    const state = server.exited ? 'exited' : 'running';
    const wrapperOutput = server.output.replace(PID_LINE_RE, '').trim();
    parts.push(`--- ${server.name}-server (${state}) ---\n${(wrapperOutput + log).slice(-LOG_TAIL_CHARS)}`);
  }
  return parts.join('\n');
}

/**
 * Creates the bucket, retrying until the whole chain (proxy, tempauth, account, container servers) answers.
 * An existing bucket counts as created: an attempt that timed out on our side may have succeeded on Swift's.
 */
async function createBucketWhenReady(client: S3Client, bucket: string, servers: RunningServer[], startedAt: number): Promise<void> {
  let lastError: unknown;
  while (Date.now() - startedAt < READY_TIMEOUT_MS) {
    const dead = servers.find((server) => server.exited);
    if (dead !== undefined) {
      await new Promise((resolve) => setTimeout(resolve, 100)); // let its last log lines land
      throw new Error(`swift ${dead.name}-server exited before the S3 API was ready; logs:\n${await logTails(servers)}`);
    }
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }), { abortSignal: AbortSignal.timeout(READY_ATTEMPT_TIMEOUT_MS) });
      return;
    } catch (error) {
      const name = (error as { name?: string }).name;
      if (name === 'BucketAlreadyOwnedByYou' || name === 'BucketAlreadyExists') return;
      // Waiting would not help with that one.
      if (name === 'InvalidBucketName') throw new Error(`swift s3api refuses the bucket name "${bucket}"`, { cause: error });
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  const reason = lastError instanceof Error ? `${lastError.name}: ${lastError.message}` : String(lastError);
  throw new Error(
    `swift s3api did not answer within ${READY_TIMEOUT_MS} ms (last attempt: ${reason}); logs:\n${await logTails(servers)}`,
  );
}

/**
 * Starts Swift's account, container, object and proxy servers (s3api + tempauth) on free loopback ports, with
 * config files, one-replica rings, the device and the logs in a fresh directory under the temp dir, and
 * resolves once `bucket` (default `onair-test`) has been created through the S3 API (2–5 s on a 2-core machine).
 */
export async function startS3Server(options: { bucket?: string } = {}): Promise<S3TestServer> {
  for (const name of SERVERS) {
    if (!existsSync(`/usr/bin/swift-${name}-server`)) {
      throw new Error(
        `/usr/bin/swift-${name}-server is missing: install Swift with ` +
          '`apt-get install swift-proxy swift-account swift-container swift-object` (npm test\'s setup does)',
      );
    }
  }
  const bucket = options.bucket ?? DEFAULT_BUCKET;
  // The object server keeps metadata in extended attributes: the temp dir must be on a file system with user
  // xattrs (ext4, xfs, btrfs; tmpfs only on recent kernels).
  const root = await mkdtemp(path.join(os.tmpdir(), 'onair-s3-'));
  const servers: RunningServer[] = [];
  try {
    const [accountPort, containerPort, objectPort, proxyPort] = (await freePorts(4)) as [number, number, number, number];
    const runServerScript = path.join(root, 'onair_run_server.py');
    const makeRingsScript = path.join(root, 'onair_make_rings.py');
    await mkdir(path.join(root, 'devices', 'd1'), { recursive: true });
    await Promise.all([
      writeFile(path.join(root, 'swift.conf'), swiftConf()),
      writeFile(runServerScript, RUN_SERVER_PY),
      writeFile(makeRingsScript, MAKE_RINGS_PY),
      writeFile(path.join(root, 'onair_local_cache.py'), LOCAL_CACHE_PY),
      writeFile(path.join(root, 'account-server.conf'), serverConf('account', root, accountPort)),
      writeFile(path.join(root, 'container-server.conf'), serverConf('container', root, containerPort)),
      writeFile(path.join(root, 'object-server.conf'), serverConf('object', root, objectPort)),
      writeFile(path.join(root, 'proxy-server.conf'), proxyConf(root, proxyPort)),
    ]);

    try {
      await run(PYTHON, [makeRingsScript, root, `account=${accountPort}`, `container=${containerPort}`, `object=${objectPort}`], {
        env: pythonEnv(),
        timeout: RING_TIMEOUT_MS,
      });
    } catch (error) {
      const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
      throw new Error(`swift rings could not be built: ${(error as Error).message}\n${(stdout + stderr).slice(-LOG_TAIL_CHARS)}`, {
        cause: error,
      });
    }

    const startedAt = Date.now();
    for (const name of SERVERS) servers.push(spawnServer(name, root, runServerScript));

    const endpoint = `http://127.0.0.1:${proxyPort}`;
    const credentials = { endpoint, region: REGION, accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET_ACCESS_KEY };
    // maxAttempts 1: the loop does the retrying, without the SDK's back-off in between.
    const probe = new S3Client({ ...s3ClientConfig(credentials), maxAttempts: 1 });
    try {
      await createBucketWhenReady(probe, bucket, servers, startedAt);
    } finally {
      probe.destroy();
    }

    let stopping: Promise<void> | undefined;
    return {
      ...credentials,
      bucket,
      env: {
        ONAIR_S3_ENDPOINT: endpoint,
        ONAIR_S3_BUCKET: bucket,
        ONAIR_S3_REGION: REGION,
        ONAIR_S3_ACCESS_KEY_ID: ACCESS_KEY_ID,
        ONAIR_S3_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
      },
      async kill(): Promise<void> {
        await killServers(servers);
      },
      pause(): void {
        signalServers(servers, 'SIGSTOP');
      },
      resume(): void {
        signalServers(servers, 'SIGCONT');
      },
      async restart(): Promise<void> {
        await killServers(servers); // what a failed restart left
        servers.splice(0, Infinity, ...SERVERS.map((name) => spawnServer(name, root, runServerScript)));
        const client = new S3Client({ ...s3ClientConfig(credentials), maxAttempts: 1 });
        try {
          await createBucketWhenReady(client, bucket, servers, Date.now());
        } finally {
          client.destroy();
        }
      },
      stop(): Promise<void> {
        stopping ??= (async () => {
          try {
            await stopServers(servers);
          } finally {
            await rm(root, { recursive: true, force: true });
          }
        })();
        return stopping;
      },
    };
  } catch (error) {
    await stopServers(servers);
    await rm(root, { recursive: true, force: true });
    throw error;
  }
}
