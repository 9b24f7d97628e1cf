import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, plays } from '../support/browser.js';
import { api, startTestNode, waitFor } from '../support/harness.js';
import { makeVideo, tusCreate, tusPatch } from '../support/tus.js';

const ENGLISH = 'WEBVTT\n\n00:00:00.500 --> 00:00:05.000\nHello from the subtitles\n\n00:00:05.000 --> 00:00:09.000\nSecond line <b>bold</b>\n';
const FRENCH = 'WEBVTT\n\n00:00:00.500 --> 00:00:05.000\nBonjour\n';

describe('subtitles: WebVTT tracks per video, in HLS, DASH and the watch page (issue #19)', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let media: string;
  let videoId: string;

  const put = (lang: string, body: string | Blob, query = '', headers: Record<string, string> = { authorization: '', 'content-type': 'text/vtt' }): Promise<Response> =>
    fetch(`${node.httpUrl}/api/videos/${videoId}/subtitles/${lang}${query}`, {
      method: 'PUT', body, headers: { ...headers, ...(headers.authorization === '' ? { authorization: `Bearer ${node.adminToken}` } : {}) },
    });

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_VOD_CONCURRENCY: '1', ONAIR_VOD_LADDER: '180' }));
    media = await mkdtemp(path.join(os.tmpdir(), 'onair-subtitles-'));
    const file = path.join(media, 'talk.mp4');
    makeVideo(file, { seconds: 10, megabytes: 0.5, width: 320, height: 180, faststart: true });
    const data = await readFile(file);
    const created = await tusCreate(node.httpUrl, node.adminToken, data.length, { filename: 'talk.mp4', title: 'Subtitled' });
    await tusPatch(created.url!, node.adminToken, data, 0);
    videoId = created.url!.split('/').pop()!;
    await waitFor('the video to be ready', async () => (await api(node, 'GET', `/api/videos/${videoId}`)).body.status === 'ready', 150_000, 500);
  });

  after(async () => {
    await close?.();
    if (media) await rm(media, { recursive: true, force: true });
  });

  test('an admin adds tracks; bad ones get coded errors', async () => {
    const refused = async (response: Response, status: number, code: string): Promise<void> => {
      assert.equal(response.status, status);
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, code);
    };
    await refused(await put('en', ENGLISH, '', { 'content-type': 'text/vtt' }), 401, 'ONAIR_ERR_UNAUTHORIZED');
    await refused(await put('english', ENGLISH), 400, 'ONAIR_ERR_VALIDATION');
    await refused(await put('en', '1\n00:00:01,000 --> 00:00:02,000\nan SRT file\n'), 400, 'ONAIR_ERR_VALIDATION');
    await refused(await put('en', 'WEBVTT\n\nno cue here\n'), 400, 'ONAIR_ERR_VALIDATION');
    await refused(await put('en', ENGLISH, '?label=%22quoted%22'), 400, 'ONAIR_ERR_VALIDATION');
    await refused(await put('en', new Blob(['A'.repeat(1024 * 1024 + 10)])), 413, 'ONAIR_ERR_PAYLOAD_TOO_LARGE');
    await refused(await fetch(`${node.httpUrl}/api/videos/zzzzzzzzzzzzzzzz/subtitles/en`, {
      method: 'PUT', body: ENGLISH, headers: { authorization: `Bearer ${node.adminToken}`, 'content-type': 'text/vtt' },
    }), 404, 'ONAIR_ERR_VIDEO_NOT_FOUND');

    assert.equal((await put('en', ENGLISH, '?label=English')).status, 200);
    const added = await put('fr', FRENCH, '?label=Fran%C3%A7ais');
    assert.equal(added.status, 200);
    const view = (await added.json()) as { subtitles: { lang: string; label: string; url: string }[] };
    assert.deepEqual(view.subtitles.map((t) => [t.lang, t.label]), [['en', 'English'], ['fr', 'Français']]);
    assert.equal(await (await fetch(view.subtitles[0]!.url)).text(), ENGLISH);
  });

  test('HLS: a SUBTITLES group in the multivariant playlist, each track a playlist of its file; DASH: a text adaptation set each', async () => {
    const multivariant = await (await fetch(`${node.httpUrl}/vod/${videoId}/index.m3u8`)).text();
    assert.match(multivariant, /#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="en",NAME="English",DEFAULT=YES,AUTOSELECT=YES,URI="subtitles\/en\.m3u8"/);
    assert.match(multivariant, /LANGUAGE="fr",NAME="Français",DEFAULT=NO/);
    const variants = multivariant.split('\n').filter((l) => l.startsWith('#EXT-X-STREAM-INF:'));
    assert.ok(variants.length > 0 && variants.every((l) => l.endsWith(',SUBTITLES="subs"')), multivariant);
    const track = await (await fetch(`${node.httpUrl}/vod/${videoId}/subtitles/en.m3u8`)).text();
    assert.match(track, /#EXT-X-PLAYLIST-TYPE:VOD[\s\S]*#EXTINF:\d+\.\d{3},\nen\.vtt\n#EXT-X-ENDLIST/);
    const mpd = await (await fetch(`${node.httpUrl}/vod/${videoId}/manifest.mpd`)).text();
    assert.match(mpd, /<AdaptationSet id="1000" contentType="text" mimeType="text\/vtt" lang="en">/);
    assert.match(mpd, new RegExp(`<BaseURL>/vod/${videoId}/subtitles/fr\\.vtt</BaseURL>`));
    assert.equal((await fetch(`${node.httpUrl}/vod/${videoId}/subtitles/de.vtt`)).status, 404);
  });

  test('the watch page shows the default track: its cues reach the <video> (hls.js, Chromium)', async () => {
    const chromium = await launchChromium();
    try {
      const page = await chromium.browser.newPage();
      await page.goto(`${node.httpUrl}/watch/${videoId}`);
      await plays(page, 'the video');
      const cues = await waitFor('the English cues on a showing text track', () => page.evaluate(() => {
        const tracks = Array.from(document.querySelector('video')!.textTracks);
        const english = tracks.find((t) => t.language === 'en' && t.mode === 'showing');
        return english?.cues?.length ? Array.from(english.cues).map((c) => (c as VTTCue).text) : undefined;
      }), 20_000, 250);
      assert.deepEqual(cues, ['Hello from the subtitles', 'Second line <b>bold</b>']);
    } finally {
      await chromium.close();
    }
  });

  test('a track removed is gone from the playlists; deleting the video deletes its tracks', async () => {
    const removed = await fetch(`${node.httpUrl}/api/videos/${videoId}/subtitles/fr`, { method: 'DELETE', headers: { authorization: `Bearer ${node.adminToken}` } });
    assert.equal(removed.status, 204);
    assert.doesNotMatch(await (await fetch(`${node.httpUrl}/vod/${videoId}/index.m3u8`)).text(), /LANGUAGE="fr"/);
    assert.equal((await fetch(`${node.httpUrl}/vod/${videoId}/subtitles/fr.vtt`)).status, 404);
    assert.equal((await api(node, 'DELETE', `/api/videos/${videoId}`)).status, 204);
    assert.equal((await fetch(`${node.httpUrl}/vod/${videoId}/subtitles/en.vtt`)).status, 404);
  });
});
