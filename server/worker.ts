import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../lib/log.js';
import type { Config } from './config.js';
import { openDatabase } from './db.js';
import { Redis } from 'ioredis';
import type { VodArchive } from '../vod-archive/index.js';
import { startVodArchive, startWebhooks, videoFinished } from './rooms.js';
import { redisOptionsFromUrl } from './redis.js';

/**
 * `ONAIR_ROLE=worker`: a process that only runs VOD jobs — no HTTP, no RTMP. It needs the same Redis, database and
 * storage as the origin: `ONAIR_REDIS_URL`, `ONAIR_DATABASE_URL`, `ONAIR_S3_*` on another machine; on the origin's
 * machine, the same data dir is enough (it joins the embedded Redis's socket and the SQLite file).
 */
export async function startWorker(config: Config, log: Logger): Promise<{ close(): Promise<void> }> {
  let redisUrl = config.redisUrl;
  if (redisUrl === undefined) {
    const socket = path.join(config.dataDir, 'redis', 'redis.sock');
    if (!existsSync(socket)) {
      throw new Error(`ONAIR_ROLE=worker needs ONAIR_REDIS_URL, or an all-in-one node running on the same data dir (${config.dataDir})`);
    }
    redisUrl = `unix://${socket}`;
  }
  const database = await openDatabase({ dataDir: config.dataDir, ...(config.databaseUrl === undefined ? {} : { databaseUrl: config.databaseUrl }) });
  // Videos this worker finishes are told to the webhooks (queued in the shared Redis; delivered here too).
  const redis = new Redis({ ...redisOptionsFromUrl(redisUrl), maxRetriesPerRequest: 1 });
  redis.on('error', (error) => log.debug({ err: error.message }, 'redis connection error'));
  const webhooks = startWebhooks(config, log, database, redis, redisOptionsFromUrl(redisUrl), true);
  const vod: VodArchive = startVodArchive(config, log, database, redisOptionsFromUrl(redisUrl), Math.max(1, config.vod.concurrency),
    (videoId, outcome, reason) => void videoFinished(webhooks, vod, videoId, outcome, reason, config.publicUrl));
  await vod.worker!.worker.waitUntilReady();
  return {
    async close() {
      await vod.close();
      await webhooks.close();
      redis.disconnect();
      await database.close();
    },
  };
}
