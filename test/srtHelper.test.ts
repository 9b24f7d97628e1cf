import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { srtFfmpegArgs, srtPassphrase } from '../ingest/SrtIngest.js';
import { SRT_HELPER_SOURCE, srtHelperPath } from '../ingest/srt/helper.js';

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
