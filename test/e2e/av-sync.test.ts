import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

const run = promisify(execFile);

/** Onsets (s, on the file's timeline) of what the detect filter reports as the end of black or of silence. */
function onsets(log: string, key: 'black_end' | 'silence_end'): number[] {
  return [...log.matchAll(new RegExp(`${key}:\\s*([\\d.]+)`, 'g'))].map((m) => Number(m[1]));
}

/**
 * Lip sync through the live ladder: the publisher flashes the picture white and beeps at the same instants, every
 * second; in a segment OnAir serves, each flash and its beep must still be at the same media time. (The ladder's input
 * once had `-fflags nobuffer`, which drops what ffmpeg reads while it probes the input: the copied audio then started
 * 0.5 s early on its own, so every LL-HLS viewer heard the sound half a second before the picture, and had to wait
 * for audio that came half a second after its video.)
 */
describe('audio and video stay in sync through the live ladder', { timeout: 90_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let dir: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: 'off' }));
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-av-sync-'));
  });

  after(async () => {
    publisher?.stop();
    await close();
    await rm(dir, { recursive: true, force: true });
  });

  test('each flash and its beep are at the same media time in a served segment (within 70 ms)', async (t) => {
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'lip sync' } });
    const id: string = created.body.id;
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, {
      width: 426, height: 240, videoSource: 'color=c=black',
      videoFilter: 'drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable=\'lt(mod(t,1),0.2)\'',
      audioSource: 'sine=frequency=1000:sample_rate=48000,volume=volume=\'if(lt(mod(t,1),0.2),1,0)\':eval=frame',
    });
    const playlistUrl = `${node.httpUrl}/live/${id}/240p/index.m3u8`;
    // Two complete segments after the first: past the ladder's start-up.
    const playlist = await waitFor('three complete segments', async () => {
      const response = await fetch(playlistUrl);
      const text = response.ok ? await response.text() : '';
      return text.split('\n').filter((l) => l.startsWith('#EXTINF')).length >= 3 ? text : undefined;
    }, 40_000, 500);
    const map = /#EXT-X-MAP:URI="([^"]+)"/.exec(playlist)![1]!;
    const segments = playlist.split('\n').filter((l) => l && !l.startsWith('#'));
    const segment = segments[segments.length - 1]!;
    const base = `${node.httpUrl}/live/${id}/240p/`;
    const bytes = async (uri: string): Promise<Buffer> => Buffer.from(await (await fetch(base + uri)).arrayBuffer());
    const file = path.join(dir, 'segment.mp4');
    await writeFile(file, Buffer.concat([await bytes(map), await bytes(segment)]));

    const { stderr } = await run('ffmpeg', ['-hide_banner', '-nostdin', '-i', file,
      '-vf', 'blackdetect=d=0.1:pix_th=0.5', '-af', 'silencedetect=n=-30dB:d=0.1', '-f', 'null', '-']);
    const flashes = onsets(stderr, 'black_end');
    const beeps = onsets(stderr, 'silence_end');
    t.diagnostic(`flashes at ${flashes.join(', ')} s; beeps at ${beeps.join(', ')} s`);
    assert.ok(flashes.length >= 1 && beeps.length >= 1, `a flash and a beep in the segment (flashes ${flashes.length}, beeps ${beeps.length})`);
    for (const flash of flashes) {
      const beep = beeps.reduce((best, b) => (Math.abs(b - flash) < Math.abs(best - flash) ? b : best));
      assert.ok(Math.abs(beep - flash) <= 0.07, `the beep is ${Math.round((beep - flash) * 1000)} ms from its flash at ${flash} s`);
    }
  });
});
