import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { redisOptionsFromUrl, startEmbeddedRedis } from '../server/redis.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Polls until `pid` is gone; fails after `deadlineMs`. */
async function waitForExit(pid: number, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) assert.fail(`process ${pid} still runs after ${deadlineMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function killQuietly(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

async function withClient<T>(url: string, use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ ...redisOptionsFromUrl(url), lazyConnect: true });
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

describe('embedded redis', { timeout: 60_000 }, () => {
  let dataDir: string;

  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-redis-'));
  });

  after(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  test('it answers PING through ioredis on its unix socket', { timeout: 20_000 }, async () => {
    const redis = await startEmbeddedRedis({ dataDir });
    try {
      assert.equal(redis.socketPath, path.join(dataDir, 'redis', 'redis.sock'));
      assert.equal(redis.url, `unix://${redis.socketPath}`);
      assert.ok(isAlive(redis.pid));
      assert.equal(await withClient(redis.url, (client) => client.ping()), 'PONG');
    } finally {
      await redis.stop();
    }
  });

  test('after stop no redis-server process remains and its socket is gone', { timeout: 20_000 }, async () => {
    const redis = await startEmbeddedRedis({ dataDir });
    await redis.stop();
    assert.equal(isAlive(redis.pid), false);
    assert.equal(existsSync(redis.socketPath), false);
    await redis.stop(); // idempotent
  });

  test('data written before a stop is there after the next start (append-only file)', { timeout: 20_000 }, async () => {
    const first = await startEmbeddedRedis({ dataDir });
    try {
      await withClient(first.url, (client) => client.set('onair:test:persist', 'kept'));
    } finally {
      await first.stop();
    }
    const second = await startEmbeddedRedis({ dataDir });
    try {
      assert.equal(await withClient(second.url, (client) => client.get('onair:test:persist')), 'kept');
    } finally {
      await second.stop();
    }
  });

  test('a second embedded redis on the same data dir is refused', { timeout: 20_000 }, async () => {
    const redis = await startEmbeddedRedis({ dataDir });
    try {
      await assert.rejects(startEmbeddedRedis({ dataDir }), /already listens/);
      assert.equal(await withClient(redis.url, (client) => client.ping()), 'PONG');
    } finally {
      await redis.stop();
    }
  });

  test('a redis-server that cannot start is reported with its output', { timeout: 20_000 }, async () => {
    await assert.rejects(
      startEmbeddedRedis({ dataDir, redisServerPath: path.join(dataDir, 'no-such-redis-server') }),
      /exited before it was ready[\s\S]*no-such-redis-server/,
    );
  });

  test('a SIGKILLed parent leaves no redis-server behind', { timeout: 30_000 }, async () => {
    const moduleUrl = pathToFileURL(fileURLToPath(new URL('../server/redis.js', import.meta.url))).href;
    const script = path.join(dataDir, 'parent.mjs');
    await writeFile(
      script,
      [
        `import { startEmbeddedRedis } from ${JSON.stringify(moduleUrl)};`,
        `const redis = await startEmbeddedRedis({ dataDir: ${JSON.stringify(path.join(dataDir, 'orphan'))} });`,
        `process.stdout.write(redis.pid + '\\n');`,
        `setInterval(() => {}, 60_000);`,
      ].join('\n'),
    );
    const parent = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let redisPid: number | undefined;
    try {
      redisPid = await new Promise<number>((resolve, reject) => {
        let stdout = '';
        let stderr = '';
        parent.stdout.setEncoding('utf8').on('data', (chunk: string) => {
          stdout += chunk;
          const match = /^(\d+)\n/.exec(stdout);
          if (match) resolve(Number(match[1]));
        });
        parent.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
        parent.once('exit', (code) => reject(new Error(`the parent exited (${code}) before starting redis: ${stderr}`)));
      });
      assert.ok(isAlive(redisPid));

      const parentExit = new Promise((resolve) => parent.once('exit', resolve));
      parent.kill('SIGKILL');
      await parentExit;
      await waitForExit(redisPid, 5_000);
    } finally {
      killQuietly(parent.pid);
      if (redisPid !== undefined && isAlive(redisPid)) killQuietly(redisPid);
    }
  });
});

describe('redisOptionsFromUrl', () => {
  test('a unix URL becomes a socket path, with retries left to the connection', { timeout: 5_000 }, () => {
    assert.deepEqual(redisOptionsFromUrl('unix:///var/lib/onair/redis/redis.sock'), {
      path: '/var/lib/onair/redis/redis.sock',
      maxRetriesPerRequest: null,
    });
    assert.deepEqual(redisOptionsFromUrl('unix:///tmp/a b/redis.sock?db=2'), {
      path: '/tmp/a b/redis.sock',
      db: 2,
      maxRetriesPerRequest: null,
    });
  });

  test('a redis URL becomes host, port, credentials and database', { timeout: 5_000 }, () => {
    assert.deepEqual(redisOptionsFromUrl('redis://user:p%40ss@cache.internal:6380/3'), {
      host: 'cache.internal',
      port: 6380,
      username: 'user',
      password: 'p@ss',
      db: 3,
      maxRetriesPerRequest: null,
    });
    assert.deepEqual(redisOptionsFromUrl('redis://127.0.0.1'), { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null });
    assert.deepEqual(redisOptionsFromUrl('rediss://cache.example.com'), {
      host: 'cache.example.com',
      port: 6379,
      maxRetriesPerRequest: null,
      tls: { servername: 'cache.example.com' },
    });
  });

  test('other schemes and bad databases are refused', { timeout: 5_000 }, () => {
    assert.throws(() => redisOptionsFromUrl('http://localhost'), /expected redis/);
    assert.throws(() => redisOptionsFromUrl('redis://localhost/x'), /database must be a number/);
    assert.throws(() => redisOptionsFromUrl('unix://relative.sock'), /absolute/);
  });
});
