import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createLogger } from '../lib/log.js';
import type { InitSegment, Rendition } from '../live-transcoder/index.js';
import type { Segment } from '../ll-hls-packager/index.js';
import { EventRecorder } from '../vod-archive/recorder.js';
import { captureLog, waitFor } from './support/harness.js';

/**
 * The recorder's side of a write that fails (issue #14, a full disk): the fault is real — the rendition's folder is
 * taken by a file, so every write into it fails — and the recording goes on once it is gone.
 */

const RENDITION: Rendition = { name: '240p', width: 426, height: 240, fps: 25, videoKbps: 400, audioKbps: 64, passthrough: false };
const INIT: InitSegment = { data: Buffer.from('init'), tracks: [{ kind: 'video', codec: 'avc1.42c01e' } as InitSegment['tracks'][number]] };

function segment(sequence: number): Segment {
  return {
    mediaSequence: sequence, parts: [], durationMs: 2000, programDateTime: 1_700_000_000_000 + sequence * 2000,
    discontinuity: false, mapUri: '240p-init0.mp4', ad: false, uri: `240p-s${sequence}.m4s`, complete: true,
    data: Buffer.from(`segment ${sequence}`),
  };
}

describe('faults: a recording whose writes fail', () => {
  test('failed segments are left out, diskFull says so until a write succeeds, and the journal reads back the same', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-recorder-'));
    const log = captureLog();
    try {
      const recorder = await EventRecorder.create({ dir, eventId: 'abcdefghij012345', log: createLogger({ level: 'info', destination: log.stream }) });
      const blocker = path.join(dir, 'ladder', '240p');
      // The folder cannot be made: the init and segments 0–1 fail.
      await writeFile(blocker, 'not a folder');
      recorder.addSegment(RENDITION, segment(0), INIT);
      recorder.addSegment(RENDITION, segment(1), INIT);
      await waitFor('the recorder to see the failure', () => recorder.diskFull, 5_000, 10);
      assert.match(log.text(), /the recording waits: a write failed/);
      await rm(blocker);
      for (const sequence of [2, 3, 4]) recorder.addSegment(RENDITION, segment(sequence), INIT);
      await waitFor('the recording to go on', () => !recorder.diskFull, 5_000, 10);
      assert.match(log.text(), /the recording goes on/);

      const result = await recorder.finish();
      const playlist = await readFile(path.join(dir, 'ladder', '240p', 'index.m3u8'), 'utf8');
      assert.deepEqual([...playlist.matchAll(/^(s\d+\.m4s)$/gm)].map((m) => m[1]), ['s2.m4s', 's3.m4s', 's4.m4s']);
      assert.equal(result.durationMs, 6000);
      // The same recording read back from its journal, as a node that died mid-append left it: the torn last line is
      // skipped, nothing else.
      await appendFile(path.join(dir, 'journal.jsonl'), '{"segment":{"rend');
      const recovered = await (await EventRecorder.recover({ dir, eventId: 'abcdefghij012345', log: createLogger({ level: 'silent' }) })).finish();
      assert.deepEqual(recovered.replayFiles, result.replayFiles);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a gap in the recorded sequence (segments missed while the disk was full) is a discontinuity in the replay', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-recorder-'));
    try {
      const recorder = await EventRecorder.create({ dir, eventId: 'abcdefghij012346', log: createLogger({ level: 'silent' }) });
      for (const sequence of [0, 1, 4, 5]) recorder.addSegment(RENDITION, segment(sequence), INIT);
      const result = await recorder.finish();
      const playlist = await readFile(path.join(dir, 'ladder', '240p', 'index.m3u8'), 'utf8');
      const lines = playlist.split('\n');
      assert.equal(lines.filter((l) => l === '#EXT-X-DISCONTINUITY').length, 1);
      assert.equal(lines.slice(lines.indexOf('#EXT-X-DISCONTINUITY')).find((l) => l.endsWith('.m4s')), 's4.m4s', 'the gap is before s4');
      // The chat's timeline: the wall clock goes on over the gap, the video does not.
      assert.deepEqual(result.timeline.map((s) => [s.videoMs, s.durationMs]), [[0, 4000], [4000, 4000]]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
