import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../lib/log.js';
import { loadConfig } from '../../server/config.js';
import { OnAirNode } from '../../server/node.js';

/** A node on loopback with ephemeral ports and a fresh data dir; `env` overrides the environment. */
export async function startTestNode(env: Record<string, string> = {}, dataDir?: string): Promise<{
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
    ...env,
  });
  const node = await OnAirNode.start(config, createLogger({ level: process.env.ONAIR_LOG_LEVEL ?? 'warn' }));
  return {
    node,
    dataDir: dir,
    async close(options = {}) {
      await node.close();
      if (!options.keepData) await rm(dir, { recursive: true, force: true });
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
}

/**
 * An OBS-like publisher: ffmpeg with lavfi test sources, `-re`, x264 with a 2 s keyframe interval, AAC 48 kHz, FLV
 * over RTMP. Resolves `exited` with the exit code when ffmpeg ends.
 */
export function publish(rtmpUrl: string, options: PublishOptions = {}): { child: ChildProcess; exited: Promise<number | null>; stop(): void } {
  const { width = 854, height = 480, fps = 30, audio = true } = options;
  const args = [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=${fps}`,
    ...(audio ? ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'] : []),
    ...(options.durationSec === undefined ? [] : ['-t', String(options.durationSec)]),
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', String(fps * 2), '-keyint_min', String(fps * 2),
    '-b:v', '1500k', '-pix_fmt', 'yuv420p',
    ...(audio ? ['-c:a', 'aac', '-b:a', '128k', '-ar', '48000'] : []),
    '-f', 'flv', rtmpUrl,
  ];
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.resume();
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, exited, stop: () => child.kill('SIGKILL') };
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
