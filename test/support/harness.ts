import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../../lib/log.js';
import { loadConfig } from '../../server/config.js';
import { OnAirNode, type NodeWiring } from '../../server/node.js';

export interface TestNodeOptions {
  /** Where the node's log lines go (see `captureLog`); default stdout. */
  logDestination?: Writable;
  /** Log level; default `ONAIR_LOG_LEVEL` or `warn`. */
  logLevel?: string;
  /** What the node gets as code rather than configuration (e.g. a WebRTC edge's origin lookup). */
  wiring?: NodeWiring;
}

/**
 * `count` consecutive ports, free for both TCP and UDP on 127.0.0.1, below the kernel's ephemeral range (32768 up), so
 * that no connection another test opens is given one of them between this check and the server's bind: for a server
 * that must listen on a fixed port, as a mediasoup WebRtcServer restarted on its worker's port does.
 */
export async function fixedFreePorts(count: number): Promise<number> {
  const bindable = async (port: number): Promise<boolean> => {
    const tcp = net.createServer();
    const udp = dgram.createSocket('udp4');
    try {
      await new Promise<void>((resolve, reject) => { tcp.once('error', reject); tcp.listen(port, '127.0.0.1', resolve); });
      await new Promise<void>((resolve, reject) => { udp.once('error', reject); udp.bind(port, '127.0.0.1', resolve); });
      return true;
    } catch {
      return false;
    } finally {
      tcp.close();
      try { udp.close(); } catch { /* never bound */ }
    }
  };
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const base = randomInt(20_000, 32_000 - count);
    let free = true;
    for (let i = 0; i < count && free; i += 1) free = await bindable(base + i);
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free ports between 20000 and 32000`);
}

/** A node on loopback with ephemeral ports and a fresh data dir; `env` overrides the environment. */
export async function startTestNode(env: Record<string, string> = {}, dataDir?: string, options: TestNodeOptions = {}): Promise<{
  node: OnAirNode; dataDir: string; close(options?: { keepData?: boolean }): Promise<void>;
}> {
  const dir = dataDir ?? await mkdtemp(path.join(os.tmpdir(), 'onair-test-'));
  const config = loadConfig({
    ONAIR_HOST: '127.0.0.1',
    ONAIR_HTTP_PORT: '0',
    ONAIR_RTMP_PORT: '0',
    ONAIR_DATA_DIR: dir,
    ONAIR_HWACCEL: 'none',
    ONAIR_X264_PRESET: 'ultrafast',
    // Free ports for the WebRTC servers: tests never collide with each other or with a node on the default port.
    ONAIR_WEBRTC_PORT: '0',
    // A small, fast VOD ladder: tests check the path, the bench measures the real one. No VOD worker unless a test
    // asks for one (ONAIR_VOD_CONCURRENCY=1): every ended publish would otherwise transcode beside the next test.
    ONAIR_VOD_CONCURRENCY: '0',
    ONAIR_VOD_LADDER: '360,240',
    ONAIR_VOD_X264_PRESET: 'ultrafast',
    ONAIR_VOD_SEGMENT_SEC: '2',
    ...env,
  });
  const log = createLogger({
    level: options.logLevel ?? process.env.ONAIR_LOG_LEVEL ?? 'warn',
    ...(options.logDestination === undefined ? {} : { destination: options.logDestination }),
  });
  const node = await OnAirNode.start(config, log, options.wiring);
  return {
    node,
    dataDir: dir,
    async close(options = {}) {
      try {
        await node.close();
      } finally {
        if (!options.keepData) await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** JSON over HTTP against a node, with the admin token unless `token: null`. */
export async function api(node: OnAirNode, method: string, url: string, options: {
  body?: unknown; rawBody?: string; token?: string | null; contentType?: string;
} = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = {};
  const token = options.token === undefined ? node.adminToken : options.token;
  if (token !== null) headers['authorization'] = `Bearer ${token}`;
  let body: string | undefined;
  if (options.rawBody !== undefined) body = options.rawBody;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
  const response = await fetch(`${node.httpUrl}${url}`, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch { /* not JSON */ }
  return { status: response.status, body: parsed, headers: response.headers };
}

export interface PublishOptions {
  width?: number;
  height?: number;
  fps?: number;
  /** Seconds of media; default: until stopped. */
  durationSec?: number;
  audio?: boolean;
  /** lavfi video source instead of testsrc2 (e.g. `color=c=0x336699`); size and rate are appended. */
  videoSource?: string;
  /** A `-vf` chain applied to the video source. */
  videoFilter?: string;
  /** lavfi audio source (a filtergraph) instead of a 440 Hz sine. */
  audioSource?: string;
  /** The container: FLV (RTMP, RTMPS) or MPEG-TS (SRT, as OBS sends it there); default flv. */
  format?: 'flv' | 'mpegts';
}

/**
 * An OBS-like publisher: ffmpeg with lavfi test sources, `-re`, x264 with a 2 s keyframe interval, AAC 48 kHz, FLV
 * over RTMP. Resolves `exited` with the exit code when ffmpeg ends.
 */
export function publish(rtmpUrl: string, options: PublishOptions = {}): { child: ChildProcess; exited: Promise<number | null>; stop(): void; stderr(): string } {
  const { width = 854, height = 480, fps = 30, audio = true } = options;
  const args = [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', `${options.videoSource ?? 'testsrc2'}${options.videoSource?.includes('=') ? ':' : '='}size=${width}x${height}:rate=${fps}`,
    ...(audio ? ['-f', 'lavfi', '-i', options.audioSource ?? 'sine=frequency=440:sample_rate=48000'] : []),
    ...(options.durationSec === undefined ? [] : ['-t', String(options.durationSec)]),
    ...(options.videoFilter === undefined ? [] : ['-vf', options.videoFilter]),
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', String(fps * 2), '-keyint_min', String(fps * 2),
    '-b:v', '1500k', '-pix_fmt', 'yuv420p',
    ...(audio ? ['-c:a', 'aac', '-b:a', '128k', '-ar', '48000'] : []),
    '-f', options.format ?? 'flv', rtmpUrl,
  ];
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-8192);
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, exited, stop: () => child.kill('SIGKILL'), stderr: () => stderr };
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes (for state with no event to wait on). */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs: number, intervalMs = 100): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The child processes of `pid`, by the parent field of /proc/<pid>/stat, with their command names. */
export function childrenOf(pid: number): { pid: number; comm: string }[] {
  const found: { pid: number; comm: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const match = /^\d+ \((.*)\) \S+ (\d+)/.exec(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      if (match && Number(match[2]) === pid) found.push({ pid: Number(entry), comm: match[1]! });
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

/** Gone, or a zombie nobody has reaped yet: either way no longer running. */
export function isRunning(pid: number): boolean {
  if (!isAlive(pid)) return false;
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** A writable that keeps everything written to it, for asserting on a node's log output. */
export function captureLog(): { stream: Writable; text(): string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
      callback();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

/** `dist/server/main.js`, what `npm start` runs. */
export const MAIN_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../server/main.js');

export interface NodeProcess {
  /** The node's process; with `terminal`, script(1) around it. */
  child: ChildProcess;
  /** Sends `signal` to the node itself (with `terminal`, past script(1), which would hang up on it). */
  kill(signal: NodeJS.Signals): void;
  /** Resolves with the exit code and signal once the process has exited and its pipes are closed. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout(): string;
  stderr(): string;
  /** Resolves once stdout matches `pattern`; rejects when the process exits first or `timeoutMs` passes. */
  waitForStdout(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
}

/**
 * `node dist/server/main.js` as a child process, with `env` added to this process's environment. Its stdout is a pipe
 * (what a process manager gives it), or with `terminal` a pseudo-terminal (an operator's shell) from script(1).
 */
export function spawnNode(env: Record<string, string>, options: { terminal?: boolean } = {}): NodeProcess {
  const spawnOptions = { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'] };
  const child = options.terminal
    ? spawn('script', ['--quiet', '--flush', '--return', '--command', `exec '${process.execPath}' '${MAIN_JS}'`, '/dev/null'], spawnOptions)
    : spawn(process.execPath, [MAIN_JS], spawnOptions);
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  let done = false;
  child.stdout!.setEncoding('utf8').on('data', (text: string) => {
    out += text;
    for (const waiter of waiters) waiter();
  });
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    err += text;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => {
      done = true;
      for (const waiter of waiters) waiter();
      resolve({ code, signal });
    });
  });
  return {
    child,
    kill(signal) {
      if (!options.terminal) return void child.kill(signal);
      // The node is script(1)'s only child (`exec` replaced the shell); none left: script is ending on its own.
      let node = 0;
      try {
        node = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ')[0]);
      } catch { /* script has exited */ }
      if (node > 0) process.kill(node, signal);
      else child.kill(signal);
    },
    exited,
    stdout: () => out,
    stderr: () => err,
    waitForStdout(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const finish = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        const check = (): void => {
          const match = pattern.exec(out);
          if (match) {
            finish();
            resolve(match);
          } else if (done) {
            finish();
            reject(new Error(`the node exited before printing ${pattern}; stderr:\n${err.slice(-4000)}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} on stdout; stderr:\n${err.slice(-4000)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}

/** Resolves as `promise` does, or rejects once `timeoutMs` passes first (for a promise with no deadline of its own). */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** One series of a node's `/metrics` (`name{labels}` as printed), 0 while it is absent. */
export async function metric(node: OnAirNode, series: string): Promise<number> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
