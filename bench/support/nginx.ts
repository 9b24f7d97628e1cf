import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { BenchError } from './benchmark.js';
import { processCpuSec, spawnBounded, type BoundedChild } from './process.js';

/*
 * nginx from Debian (`nginx`, `libnginx-mod-rtmp`) as a baseline: started in the foreground with its own prefix,
 * config, pid and logs in a temp dir, so that it touches nothing of a system installation, and killed at the end.
 */

export const NGINX_BINARY = '/usr/sbin/nginx';
export const RTMP_MODULE = '/usr/lib/nginx/modules/ngx_rtmp_module.so';

/** Why nginx (with the RTMP module when `rtmp`) cannot be used here, or undefined when it can. */
export function nginxMissing(rtmp: boolean): string | undefined {
  if (!existsSync(NGINX_BINARY)) return `${NGINX_BINARY} is not installed (Debian package nginx)`;
  if (rtmp && !existsSync(RTMP_MODULE)) return `${RTMP_MODULE} is not installed (Debian package libnginx-mod-rtmp)`;
  return undefined;
}

/** `1.22.1`, from `nginx -v`. */
export function nginxVersion(): string {
  const result = spawnSync(NGINX_BINARY, ['-v'], { encoding: 'utf8', timeout: 5000 });
  return /nginx\/(\S+)/.exec(`${result.stderr ?? ''}${result.stdout ?? ''}`)?.[1] ?? 'unknown';
}

/** A TCP port free on loopback right now (the kernel's choice; the caller binds it soon after). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts connections on `port`. */
export async function waitForPort(port: number, timeoutMs: number, exited?: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited?.then(() => { gone = true; }, () => { gone = true; });
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (gone) throw new BenchError(`the process meant to listen on port ${port} exited`);
    if (Date.now() > deadline) throw new BenchError(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface NginxOptions {
  /** Its prefix: config, pid, logs and temp paths go here. */
  dir: string;
  /** Directives of the main context besides the ones set here (e.g. `worker_processes 1;`). */
  main?: string;
  /** Module paths to load. */
  modules?: string[];
  /** The `http { … }` block's content, if any. */
  http?: string;
  /** The `rtmp { … }` block's content, if any. */
  rtmp?: string;
  /** Ports it will listen on: start() waits for the first. */
  ports: number[];
  timeoutMs: number;
  signal: AbortSignal;
}

export interface RunningNginx {
  process: BoundedChild;
  /** utime+stime of the master and its workers, seconds (workers that exited are not counted). */
  cpuSec(): number;
  /** Its error log so far (for failure messages). */
  errorLog(): string;
  stop(): Promise<void>;
}

/** Starts nginx in the foreground with a config of its own. */
export async function startNginx(options: NginxOptions): Promise<RunningNginx> {
  const { dir } = options;
  await mkdir(path.join(dir, 'temp'), { recursive: true });
  const errorLog = path.join(dir, 'error.log');
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((name) => `  ${name}_temp_path ${path.join(dir, 'temp', name)};`).join('\n');
  const config = [
    ...(options.modules ?? []).map((module) => `load_module ${module};`),
    'daemon off;',
    `pid ${path.join(dir, 'nginx.pid')};`,
    `error_log ${errorLog} warn;`,
    options.main ?? '',
    'events { worker_connections 16384; }',
    options.rtmp === undefined ? '' : `rtmp {\n${options.rtmp}\n}`,
    options.http === undefined ? '' : `http {\n  access_log off;\n${temp}\n${options.http}\n}`,
  ].join('\n');
  const configFile = path.join(dir, 'nginx.conf');
  await writeFile(configFile, `${config}\n`);
  const child = spawnBounded('nginx', NGINX_BINARY, ['-p', dir, '-e', errorLog, '-c', configFile], {
    // A group: workers outlive a SIGKILLed master, so the kill must reach them too.
    timeoutMs: options.timeoutMs, signal: options.signal, group: true,
  });
  const readLog = (): string => {
    try {
      return readFileSync(errorLog, 'utf8');
    } catch {
      return '';
    }
  };
  try {
    for (const port of options.ports) await waitForPort(port, 10_000, child.exited);
  } catch (error) {
    child.kill();
    await child.exited.catch(() => undefined);
    throw new BenchError(`nginx did not start: ${(error as Error).message}; ${readLog().trim().split('\n').slice(-3).join(' | ')}`);
  }
  const pid = child.child.pid!;
  return {
    process: child,
    cpuSec: () => [pid, ...childrenOf(pid)].reduce((sum, p) => sum + (processCpuSec(p) ?? 0), 0),
    errorLog: readLog,
    async stop() {
      // SIGTERM: the master stops its workers at once; SIGKILL to the group if that takes too long.
      try {
        process.kill(pid, 'SIGTERM');
      } catch { /* gone */ }
      const timer = setTimeout(() => child.kill(), 3000);
      await child.exited.catch(() => undefined);
      clearTimeout(timer);
      child.kill();
    },
  };
}

/** Pids whose parent is `pid` (nginx's workers), from /proc. */
export function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) found.push(Number(entry));
    } catch { /* gone */ }
  }
  return found;
}
