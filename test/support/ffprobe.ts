import { execFile } from 'node:child_process';

/** The first video frame of an init + media segment (or any media), decoded by ffmpeg at `width`×`height`, raw. */
export function decodeFirstFrame(media: Buffer, size: { width: number; height: number }, pixelFormat: 'gray' | 'rgb24'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile('ffmpeg', ['-v', 'error', '-i', 'pipe:0', '-frames:v', '1', '-vf', `scale=${size.width}:${size.height}`, '-pix_fmt', pixelFormat, '-f', 'rawvideo', 'pipe:1'],
      { encoding: 'buffer', timeout: 20_000, maxBuffer: 1 << 20 }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
    child.stdin!.end(media);
  });
}

/**
 * ffprobe as a classic client: the duration it reads from a playlist or manifest URL. Asynchronous on purpose: the
 * node under test serves from this same process, so a synchronous spawn would deadlock it.
 */
export function probeDuration(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', url], { timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`ffprobe ${url}: ${stderr || error.message}`));
      else resolve(Number(stdout.trim()));
    });
  });
}
