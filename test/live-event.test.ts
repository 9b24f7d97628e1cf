import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { createLogger } from '../lib/log.js';
import { loadConfig } from '../server/config.js';
import { LiveEvent, type LiveEventOptions } from '../server/LiveEvent.js';

// One live event without a node or ffmpeg: what it builds, and what its close() takes down.

const STREAM_ID = 'abcdefabcdef';

describe('LiveEvent', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function build(): Promise<{ event: LiveEvent; calls: string[]; dataDir: string }> {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'onair-live-event-'));
    dirs.push(dataDir);
    const calls: string[] = [];
    const options: LiveEventOptions = {
      streamId: STREAM_ID,
      eventId: 'eeeeeeeeeeeeeeee',
      startedAt: Date.now(),
      recorder: undefined,
      rtpInputs: undefined,
      config: loadConfig({ ONAIR_DATA_DIR: dataDir }),
      encoder: 'libx264',
      log: createLogger({ level: 'silent' }),
      edge: { setProducers: async () => { calls.push('setProducers'); }, closeStream: (id) => { calls.push(`closeStream ${id}`); } },
      governor: { add: () => { calls.push('governor add'); }, remove: () => { calls.push('governor remove'); } },
      transcoderRestarted: () => calls.push('restart'),
    };
    return { event: new LiveEvent(options), calls, dataDir };
  }

  test('a new event has an empty ticker file for news flashes and its transcoder counts in the load governor', async () => {
    const { event, calls, dataDir } = await build();
    const ticker = path.join(dataDir, 'tickers', `${STREAM_ID}.txt`);
    assert.equal(event.cues.tickerFile, ticker);
    assert.equal(readFileSync(ticker, 'utf8'), '');
    assert.deepEqual(calls, ['governor add']);
    assert.equal(event.publisher, undefined);
    await event.close();
  });

  test('close() twice at once: the playlists end, the WebRTC stream and the governor entry go once, the ticker stops', async () => {
    const { event, calls } = await build();
    let tickerCleared = false;
    event.cues.newsTimer = setTimeout(() => { tickerCleared = true; }, 30);
    await Promise.all([event.close(), event.close()]);
    await event.close();
    assert.equal(event.packager.ended, true, 'the playlists carry ENDLIST');
    assert.deepEqual(calls, ['governor add', 'governor remove', `closeStream ${STREAM_ID}`]);
    await sleep(60);
    assert.equal(tickerCleared, false, 'the ticker\'s timer stopped with the event');
  });
});
