import { ConfigError } from '../lib/errors.js';
import { createLogger } from '../lib/log.js';
import { loadConfig } from './config.js';
import { OnAirNode } from './node.js';
import { startWorker } from './worker.js';

/** `npm start`: the all-in-one node. Exit codes: 0 after a clean stop, 2 for bad config, 1 for anything else. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`onair: bad configuration: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const log = createLogger({ level: config.logLevel });
  if (config.role === 'worker') {
    const worker = await startWorker(config, log);
    const stopWorker = (): void => {
      worker.close().then(() => process.exit(0), () => process.exit(1));
    };
    process.once('SIGINT', stopWorker);
    process.once('SIGTERM', stopWorker);
    log.info({ concurrency: Math.max(1, config.vod.concurrency) }, 'VOD worker ready');
    return;
  }
  const node = await OnAirNode.start(config, log);
  // Before the banner: whoever reads "on air" may send SIGTERM at once, and must get a clean stop.
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    node.close().then(() => process.exit(0), (error: unknown) => {
      log.error({ err: error }, 'error while stopping');
      process.exit(1);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const banner = [
    '',
    `  OnAir is on air.`,
    `  Dashboard:   ${node.publicUrl}/studio`,
    `  RTMP server: ${node.rtmpUrl}   (OBS: Settings → Stream → Service "Custom…")`,
    `  Admin token: ${node.adminToken}`,
    `  Create a stream: curl -X POST -H "Authorization: Bearer <admin token>" -H "Content-Type: application/json" \\`,
    `                   -d '{"title":"My show"}' ${node.publicUrl}/api/streams`,
    '',
  ].join('\n');
  // The banner is for the operator's terminal, not for the log stream (it carries the admin token).
  process.stdout.write(`${banner}\n`);
  log.info({ http: node.httpUrl, rtmp: node.rtmpUrl, encoder: node.encoder.kind }, 'listening');
}

main().catch((error: unknown) => {
  process.stderr.write(`onair: ${(error as Error)?.stack ?? String(error)}\n`);
  process.exit(1);
});
