import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { OnAirNode } from '../../server/node.js';
import { CLOSED_CAPTIONS_MEDIA } from '../../lib/media/captions.js';
import { launchChromium } from '../support/browser.js';
import { publishCaptioned } from '../support/captions.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

const run = promisify(execFile);
const LINES = ['HELLO FROM ONAIR 1', 'CAPTIONS ON EVERY RUNG 2', 'THIRD LINE OF THREE 3'];

/**
 * Live closed captions (issue #19): CEA-608 in the publisher's H.264 (A/53 SEI, as OBS sends them) come out of every
 * rendition of the ladder, are declared in the multivariant playlist, and hls.js in Chromium shows them.
 */
describe('live CEA-608 captions, from the publisher through the ladder to the player', { timeout: 180_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let dir: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360,240', ONAIR_RECONNECT_GRACE_SEC: '2' }));
    dir = await mkdtemp(path.join(tmpdir(), 'onair-captions-'));
  });

  after(async () => {
    await close();
    await rm(dir, { recursive: true, force: true });
  });

  async function stream(title: string): Promise<{ id: string; key: string }> {
    const created = await api(node, 'POST', '/api/streams', { body: { title } });
    return { id: created.body.id, key: created.body.streamKey };
  }

  const multivariant = async (id: string) => (await fetch(`${node.httpUrl}/live/${id}/index.m3u8`)).text();

  test('a stream without captions declares none', { timeout: 40_000 }, async () => {
    const { id, key } = await stream('No captions');
    const publisher = publish(`${node.rtmpUrl}/${key}`, { width: 640, height: 360 });
    try {
      await waitFor('segments', () => node.packager(id)?.ready, 30_000);
      const text = await multivariant(id);
      assert.match(text, /#EXT-X-STREAM-INF/);
      assert.doesNotMatch(text, /CLOSED-CAPTIONS/);
      assert.equal((await api(node, 'GET', `/api/streams/${id}`)).body.stats.captions, false);
    } finally {
      publisher.stop();
      await publisher.exited;
    }
  });

  describe('a publisher sending captions', () => {
    let id: string;
    let publisher: ReturnType<typeof publishCaptioned>;

    before(async () => {
      const created = await stream('Captioned');
      id = created.id;
      publisher = publishCaptioned(`${node.rtmpUrl}/${created.key}`, LINES);
      await waitFor('segments', () => node.packager(id)?.ready, 30_000).catch((error: Error) => {
        throw new Error(`${error.message}; publisher: ${publisher.stderr()}`);
      });
    });

    after(async () => {
      publisher?.stop();
      await publisher?.exited;
    });

    test('the multivariant playlist declares CC1, and every variant refers to it', async () => {
      const text = await multivariant(id);
      const media = text.split('\n').filter((line) => line.startsWith('#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS'));
      assert.equal(media.length, 1, text);
      assert.match(media[0]!, /GROUP-ID="cc"/);
      assert.match(media[0]!, /INSTREAM-ID="CC1"/);
      assert.match(media[0]!, /NAME="Captions"/);
      const variants = text.split('\n').filter((line) => line.startsWith('#EXT-X-STREAM-INF:'));
      assert.equal(variants.length, 2);
      for (const variant of variants) assert.match(variant, /,CLOSED-CAPTIONS="cc"(,|$)/, variant);
      // The broadcaster sees that their captions arrive (the studio's Captions line).
      assert.equal((await api(node, 'GET', `/api/streams/${id}`)).body.stats.captions, true);
    });

    test('every rendition carries them: ffprobe sees closed captions, and they decode to the publisher\'s lines', { timeout: 60_000 }, async () => {
      // Three segments' worth: a complete roll-up line needs its control codes and its text.
      await waitFor('three complete segments', () => (node.packager(id)?.playlist('240p')?.segments.filter((s) => s.complete).length ?? 0) >= 3, 30_000, 250);
      for (const rendition of ['360p', '240p']) {
        const base = `${node.httpUrl}/live/${id}/${rendition}/`;
        const playlist = await (await fetch(`${base}index.m3u8`)).text();
        const map = /#EXT-X-MAP:URI="([^"]+)"/.exec(playlist)?.[1];
        assert.ok(map, playlist);
        const segments = [...playlist.matchAll(/^#EXTINF:[^\n]*\n(?:#[^\n]*\n)*([^#\n][^\n]*)$/gm)].map((m) => m[1]!);
        assert.ok(segments.length >= 3, playlist);
        const bodies = await Promise.all([map, ...segments].map(async (uri) => Buffer.from(await (await fetch(new URL(uri, base))).arrayBuffer())));
        const file = path.join(dir, `${rendition}.mp4`);
        await writeFile(file, Buffer.concat(bodies));
        const probe = await run('ffprobe', ['-hide_banner', file]);
        assert.match(probe.stderr, /Video: h264.*Closed Captions/, `${rendition}: ${probe.stderr}`);
        // ffmpeg's own CEA-608 decoder (lavfi movie, subcc) reads the captions back as subtitles.
        const decoded = await run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', `movie=${file}[out0+subcc]`, '-map', '0:s', '-f', 'srt', '-']);
        const found = LINES.filter((line) => decoded.stdout.includes(line));
        assert.ok(found.length >= 1, `${rendition}: no line of the publisher's in what ffmpeg decoded: ${decoded.stdout.slice(0, 500)}`);
      }
    });

    test('hls.js in Chromium turns them into a captions track named from the playlist, with the publisher\'s lines as cues', { timeout: 60_000 }, async () => {
      const chromium = await launchChromium();
      try {
        const page = await chromium.browser.newPage();
        await page.goto(`${node.httpUrl}/watch/${id}`);
        // The viewer turns captions on (the player's CC button): the track shows, its cues fill as the lines come.
        const captions = () => page.evaluate(() => {
          const video = document.querySelector('video')!;
          const track = Array.from(video.textTracks).find((t) => t.kind === 'captions');
          if (!track) return undefined;
          track.mode = 'showing';
          const cues = Array.from(track.cues ?? []).map((cue) => ({ start: cue.startTime, text: (cue as VTTCue).text }));
          return { label: track.label, cues, currentTime: video.currentTime };
        });
        const first = await waitFor('caption cues in a showing captions track', async () => {
          const seen = await captions();
          return seen && seen.cues.length >= 2 ? seen : undefined;
        }, 40_000, 250);
        assert.equal(first.label, 'Captions', 'the label is the playlist\'s NAME (hls.js would say "English" otherwise)');
        const shown = first.cues.map((cue) => cue.text).join('\n');
        assert.ok(LINES.some((line) => shown.includes(line)), `the cues hold the publisher's lines: ${shown}`);
        // And they keep coming once the player is on parts: hls.js loads whole segments to start, then parts, and a
        // caption spanning two parts used to reset its parser (the cues stopped after the first segments).
        const later = first.currentTime + 6;
        const fresh = await waitFor(`cues that start after ${later.toFixed(1)} s`, async () => {
          const seen = await captions();
          const after = seen?.cues.filter((cue) => cue.start > later) ?? [];
          return after.length >= 2 ? after : undefined;
        }, 25_000, 500).catch(async (error: Error) => {
          throw new Error(`${error.message}: ${JSON.stringify(await captions())}`);
        });
        assert.ok(fresh.every((cue) => LINES.some((line) => cue.text.includes(line))), JSON.stringify(fresh));
      } finally {
        await chromium.close();
      }
    });

    test('the replay declares them too, the same way, and the watch page shows them', { timeout: 60_000 }, async () => {
      const archived = node.next('archived', 45_000);
      publisher.stop();
      await publisher.exited;
      const [{ videoId }] = await archived;
      const video = (await api(node, 'GET', `/api/videos/${videoId}`, { token: null })).body;
      const text = await (await fetch(new URL(video.playback.hls, node.httpUrl))).text();
      assert.equal(text.split('\n').filter((line) => line === CLOSED_CAPTIONS_MEDIA).length, 1, text);
      const variants = text.split('\n').filter((line) => line.startsWith('#EXT-X-STREAM-INF:'));
      assert.ok(variants.length >= 1, text);
      for (const variant of variants) assert.match(variant, /,CLOSED-CAPTIONS="cc"(,|$)/, variant);
      // And the watch page shows them on the replay (its segments are the live event's, audio and video muxed).
      const chromium = await launchChromium();
      try {
        const page = await chromium.browser.newPage();
        await page.goto(`${node.httpUrl}/watch/${videoId}`);
        const texts = await waitFor('caption cues on the replay', () => page.evaluate(() => {
          const video = document.querySelector('video')!;
          const track = Array.from(video.textTracks).find((t) => t.kind === 'captions');
          if (!track) return undefined;
          track.mode = 'showing';
          const cues = Array.from(track.cues ?? []).map((cue) => (cue as VTTCue).text);
          return cues.length >= 2 && video.currentTime > 3 ? { label: track.label, cues } : undefined;
        }), 30_000, 250);
        assert.equal(texts.label, 'Captions');
        assert.ok(texts.cues.some((text) => LINES.some((line) => text.includes(line))), texts.cues.join('\n'));
      } finally {
        await chromium.close();
      }
    });
  });
});
