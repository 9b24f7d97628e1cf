import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { startS3Server, type S3TestServer } from './support/s3server.js';

const run = promisify(execFile);

const MiB = 1024 * 1024;

/** Our descendants (pid → command line), from /proc: Linux only, as Swift is here. */
function descendants(ancestor: number): Map<number, string> {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid …: comm may hold spaces and parentheses, so split after its last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(Number(entry), ppid);
    } catch {
      // Gone meanwhile.
    }
  }
  const found = new Map<number, string>();
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (found.has(pid) || (ppid !== ancestor && !found.has(ppid))) continue;
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      } catch {
        // Gone meanwhile.
      }
      found.set(pid, cmdline);
      grew = true;
    }
  }
  return found;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function clientFor(server: S3TestServer): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

test('a real Swift s3api server takes puts, ranged gets, multipart uploads and paged listings, and stops without leftovers', { timeout: 120_000 }, async (t) => {
  const startedAt = Date.now();
  const server = await startS3Server({ bucket: 'onair-s3server-test' });
  t.diagnostic(`swift s3api ready in ${Date.now() - startedAt} ms at ${server.endpoint}`);
  const client = clientFor(server);
  try {
    assert.match(server.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.deepEqual(server.env, {
      ONAIR_S3_ENDPOINT: server.endpoint,
      ONAIR_S3_BUCKET: 'onair-s3server-test',
      ONAIR_S3_REGION: server.region,
      ONAIR_S3_ACCESS_KEY_ID: server.accessKeyId,
      ONAIR_S3_SECRET_ACCESS_KEY: server.secretAccessKey,
    });
    const Bucket = server.bucket;

    // put + get round trip
    await client.send(new PutObjectCommand({ Bucket, Key: 'hello.txt', Body: 'hello, swift', ContentType: 'text/plain' }));
    const got = await client.send(new GetObjectCommand({ Bucket, Key: 'hello.txt' }));
    assert.equal(await got.Body!.transformToString(), 'hello, swift');
    assert.equal(got.ContentType, 'text/plain');

    // ranged get
    const ranged = await client.send(new GetObjectCommand({ Bucket, Key: 'hello.txt', Range: 'bytes=7-11' }));
    assert.equal(await ranged.Body!.transformToString(), 'swift');
    assert.equal(ranged.ContentRange, 'bytes 7-11/12');

    // a 12 MiB multipart upload from a stream, in 5 MiB parts
    const big = randomBytes(12 * MiB);
    const upload = new Upload({
      client,
      params: { Bucket, Key: 'big.bin', Body: Readable.from(chunks(big, 256 * 1024)) },
      partSize: 5 * MiB,
      queueSize: 2,
    });
    let parts = 0;
    upload.on('httpUploadProgress', (progress) => {
      if (progress.part !== undefined) parts = Math.max(parts, progress.part);
    });
    await upload.done();
    assert.equal(parts, 3);
    const bigBack = await client.send(new GetObjectCommand({ Bucket, Key: 'big.bin' }));
    assert.equal(bigBack.ContentLength, big.length);
    // s3api gives a multipart object S3's `<md5 of the parts' md5s>-<parts>` ETag.
    assert.match(bigBack.ETag ?? '', /-3"$/);
    const hash = createHash('sha256');
    for await (const chunk of bigBack.Body as Readable) hash.update(chunk as Buffer);
    assert.equal(hash.digest('hex'), createHash('sha256').update(big).digest('hex'));

    // listObjectsV2, two keys a page over five
    const keys = ['page/a', 'page/b', 'page/c', 'page/d', 'page/e'];
    for (const Key of keys) await client.send(new PutObjectCommand({ Bucket, Key, Body: Key }));
    const pages: string[][] = [];
    let ContinuationToken: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: 'page/', MaxKeys: 2, ContinuationToken }));
      pages.push((page.Contents ?? []).map((object) => object.Key!));
      assert.equal(page.IsTruncated, pages.length < 3);
      ContinuationToken = page.NextContinuationToken;
    } while (ContinuationToken !== undefined);
    assert.deepEqual(pages, [['page/a', 'page/b'], ['page/c', 'page/d'], ['page/e']]);
  } finally {
    client.destroy();
    const swift = [...descendants(process.pid)].filter(([, cmdline]) => cmdline.includes('onair_run_server.py'));
    // The directory every server's command line names (its config file lies there).
    const root = /\s(\/\S*\/onair-s3-[^/\s]+)\//.exec(swift[0]?.[1] ?? '')?.[1];
    await server.stop();
    assert.equal(swift.filter(([, cmdline]) => !cmdline.startsWith('/bin/sh')).length, 4, `four swift servers ran: ${JSON.stringify(swift)}`);
    assert.ok(root !== undefined, 'the servers run from a temp dir');
    assert.deepEqual(swift.filter(([pid]) => isAlive(pid)), [], 'no swift process outlives stop()');
    const pgrep = await run('pgrep', ['-f', root]).then(({ stdout }) => stdout.trim(), () => '');
    assert.equal(pgrep, '', `processes still name ${root}`);
    assert.equal(existsSync(root), false, 'stop() removes the directory');
    await server.stop(); // idempotent
  }
});

function* chunks(buffer: Buffer, size: number): Generator<Buffer> {
  for (let offset = 0; offset < buffer.length; offset += size) yield buffer.subarray(offset, offset + size);
}
