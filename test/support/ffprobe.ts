import { execFile } from 'node:child_process';

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
