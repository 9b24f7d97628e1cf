import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { srtFfmpegArgs, srtPassphrase } from '../ingest/SrtIngest.js';
import { SRT_HELPER_SOURCE, srtHelperPath } from '../ingest/srt/helper.js';

async function waitUntil(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const script = await import(pathToFileURL(path.join(root, 'scripts', 'srt-helper.mjs')).href) as { srtHelperPath(): string; SRT_SOURCE: string };

describe('the SRT listener and its passphrases', () => {
  test('setup and the ingest agree on where the compiled listener is cached, keyed by its source', () => {
    assert.equal(script.SRT_SOURCE, SRT_HELPER_SOURCE);
    assert.equal(script.srtHelperPath(), srtHelperPath());
    assert.ok(existsSync(srtHelperPath()), 'npm test\'s setup compiled it');
  });

  test('a passphrase is 32 characters SRT takes, the same on every node, another for another key or another secret', () => {
    const a = srtPassphrase('admin-token', 'abcdefghijkl', 'aa'.repeat(32));
    assert.match(a, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(srtPassphrase('admin-token', 'abcdefghijkl', 'aa'.repeat(32)), a);
    assert.notEqual(srtPassphrase('admin-token', 'abcdefghijkl', 'bb'.repeat(32)), a, 'a rotated key');
    assert.notEqual(srtPassphrase('other-token', 'abcdefghijkl', 'aa'.repeat(32)), a);
    assert.notEqual(srtPassphrase('admin-token', 'abcdefghijkm', 'aa'.repeat(32)), a);
  });

  test('the remux copies H.264 and makes AAC of any audio, FLV on stdout, a stream without audio too', () => {
    const args = srtFfmpegArgs();
    assert.deepEqual(args.slice(args.indexOf('-c:v'), args.indexOf('-c:v') + 2), ['-c:v', 'copy']);
    assert.ok(args.includes('0:a:0?'), 'audio is optional');
    assert.deepEqual(args.slice(-5), ['-f', 'flv', '-flvflags', 'no_duration_filesize', 'pipe:1']);
  });

  test('a sync is answered once the commands before it are in effect; a stream set before 40,000 others came and went still publishes', { timeout: 30_000 }, async () => {
    const helper = spawn(srtHelperPath(), ['127.0.0.1', '0', '200', '4'], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      const port = await new Promise<number>((resolve) => helper.stderr.on('data', (chunk: Buffer) => {
        const match = /listening (\d+)/.exec(String(chunk));
        if (match) resolve(Number(match[1]));
      }));
      const frames: { type: number; id: number; payload: string }[] = [];
      let pending = Buffer.alloc(0);
      helper.stdout.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 9 && pending.length >= 9 + pending.readUInt32BE(5)) {
          const length = pending.readUInt32BE(5);
          frames.push({ type: pending[0]!, id: pending.readUInt32BE(1), payload: pending.subarray(9, 9 + length).toString() });
          pending = pending.subarray(9 + length);
        }
      });
      const synced = (n: number): Promise<void> => waitUntil(() => frames.some((f) => f.type === 5 && f.id === n));
      helper.stdin.write('set abcdefghijkl passphrase123\nsync 1\n');
      await synced(1);
      // Churn: each id set then deleted, past the bound where the table is rebuilt without its tombstones.
      const churn: string[] = [];
      for (let i = 0; i < 40_000; i++) {
        const id = `c${String(i).padStart(11, '0')}`;
        churn.push(`set ${id} passphrase${i}xx`, `del ${id}`);
      }
      helper.stdin.write(`${churn.join('\n')}\nsync 2\n`);
      await synced(2);
      const caller = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=160x120:rate=10', '-t', '1',
        '-c:v', 'libx264', '-preset', 'ultrafast', '-f', 'mpegts', `srt://127.0.0.1:${port}?streamid=abcdefghijkl&passphrase=passphrase123`], { stdio: 'ignore' });
      assert.equal(await new Promise<number | null>((resolve) => caller.on('exit', resolve)), 0, 'the caller published');
      await waitUntil(() => frames.some((f) => f.type === 1 && f.payload.startsWith('abcdefghijkl ')));
    } finally {
      helper.stdin.end();
    }
  });

  test('commands it cannot use are ignored, and it exits when its stdin closes (its node is gone)', { timeout: 10_000 }, async () => {
    const helper = spawn(srtHelperPath(), ['127.0.0.1', '0', '200', '4'], { stdio: ['pipe', 'pipe', 'pipe'] });
    await new Promise<void>((resolve) => helper.stderr.on('data', (chunk: Buffer) => /listening \d+/.test(String(chunk)) && resolve()));
    helper.stdin.write('set short pass\nset abcdefghijkl tiny\nset ABCDEFGHIJKL passphrase123\ndel nope\ndrop 99\nnonsense\n'
      + `${'x'.repeat(10_000)}\nset abcdefghijkl passphrase123\n`);
    helper.stdin.end();
    const code = await new Promise<number | null>((resolve) => helper.on('exit', resolve));
    assert.equal(code, 0);
  });
});
