import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { readFile } from 'node:fs/promises';

/** A tus 1.0 client made of plain HTTP requests, so the tests see the protocol as any tus client speaks it. */

const TUS = { 'tus-resumable': '1.0.0' };

function metadataHeader(metadata: Record<string, string>): string {
  return Object.entries(metadata).map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`).join(',');
}

/** POST: declares an upload; returns its absolute URL (or the refusal). */
export async function tusCreate(base: string, token: string | null, size: number, metadata: Record<string, string>): Promise<{ status: number; url: string | undefined; body: string }> {
  const response = await fetch(`${base}/api/uploads`, {
    method: 'POST',
    headers: { ...TUS, 'upload-length': String(size), 'upload-metadata': metadataHeader(metadata), ...(token ? { authorization: `Bearer ${token}` } : {}) },
  });
  const location = response.headers.get('location');
  return { status: response.status, url: location ? new URL(location, base).toString() : undefined, body: await response.text() };
}

/** HEAD: how many bytes the server has. */
export async function tusOffset(url: string, token: string): Promise<number> {
  const response = await fetch(url, { method: 'HEAD', headers: { ...TUS, authorization: `Bearer ${token}` } });
  if (response.status !== 200) throw new Error(`HEAD ${url}: ${response.status}`);
  return Number(response.headers.get('upload-offset'));
}

/** PATCH: sends `data` from `offset` to the end; resolves with the new offset. */
export async function tusPatch(url: string, token: string, data: Buffer, offset: number): Promise<number> {
  const response = await fetch(url, {
    method: 'PATCH',
    headers: { ...TUS, authorization: `Bearer ${token}`, 'content-type': 'application/offset+octet-stream', 'upload-offset': String(offset) },
    body: new Uint8Array(data.subarray(offset)),
  });
  if (response.status !== 204) throw new Error(`PATCH ${url}: ${response.status} ${await response.text()}`);
  return Number(response.headers.get('upload-offset'));
}

/**
 * A PATCH whose connection drops once `cutAt` bytes are sent (a dropped Wi-Fi, a closed laptop): the request declares
 * the whole rest, sends part of it, waits until the server has stored some of it, then destroys the socket.
 */
export async function tusPatchInterrupted(url: string, token: string, data: Buffer, cutAt: number, from = 0): Promise<void> {
  const target = new URL(url);
  const request = http.request({
    host: target.hostname,
    port: target.port,
    path: target.pathname,
    method: 'PATCH',
    headers: { ...TUS, authorization: `Bearer ${token}`, 'content-type': 'application/offset+octet-stream', 'upload-offset': String(from), 'content-length': String(data.length - from) },
  });
  request.on('error', () => { /* the drop is the point */ });
  const chunk = 256 * 1024;
  for (let sent = from; sent < cutAt; sent += chunk) {
    const piece = data.subarray(sent, Math.min(sent + chunk, cutAt));
    if (!request.write(piece)) await new Promise((resolve) => request.once('drain', resolve));
  }
  // Let the server write what it got before the line goes dead.
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const response = await fetch(url, { method: 'HEAD', headers: { ...TUS, authorization: `Bearer ${token}` } }).catch(() => undefined);
    if (response && Number(response.headers.get('upload-offset')) >= from + (cutAt - from) / 2) break;
  }
  request.destroy();
}

/**
 * An MP4 of about `megabytes` MB made by ffmpeg from lavfi sources: constant bitrate (filler data) so the size is
 * predictable; `faststart` puts the index first (a truncated copy then still probes, and fails later).
 */
export function makeVideo(file: string, options: { seconds: number; megabytes: number; width?: number; height?: number; faststart?: boolean }): void {
  const kbps = Math.round((options.megabytes * 8 * 1024) / options.seconds) - 128;
  const { width = 1280, height = 720 } = options;
  const result = spawnSync('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=30`,
    '-f', 'lavfi', '-i', 'sine=frequency=330:sample_rate=48000',
    '-t', String(options.seconds),
    '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '60',
    '-b:v', `${kbps}k`, '-minrate', `${kbps}k`, '-maxrate', `${kbps}k`, '-bufsize', `${kbps}k`, '-x264-params', 'nal-hrd=cbr:force-cfr=1',
    '-c:a', 'aac', '-b:a', '128k',
    ...(options.faststart ? ['-movflags', '+faststart'] : []),
    file,
  ], { encoding: 'utf8', timeout: 120_000 });
  if (result.status !== 0) throw new Error(`ffmpeg could not make ${file}: ${result.stderr}`);
}

export async function sha256(file: string | Buffer): Promise<string> {
  return createHash('sha256').update(typeof file === 'string' ? await readFile(file) : file).digest('hex');
}
