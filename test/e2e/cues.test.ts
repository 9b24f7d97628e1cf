import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { io as connect, type Socket } from 'socket.io-client';
import { tickerFilter } from '../../live-transcoder/liveCommand.js';
import { crc32Mpeg2, dateRangeTag, decodeSpliceInfo, encodeSpliceInsert, type Cue } from '../../cues/index.js';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium } from '../support/browser.js';
import { decodeFirstFrame } from '../support/ffprobe.js';
import { api, publish, startTestNode, waitFor, within } from '../support/harness.js';

describe('SCTE-35 splice_info_section', () => {
  test('the spec\'s splice_insert example (SCTE 35 §14.2) decodes and its CRC_32 verifies', () => {
    // splice_insert, out of network, splice_time pts 0x07369C02E, break_duration 0x00052CCF5 with auto_return, avail_descriptor.
    const info = decodeSpliceInfo(Buffer.from('/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=', 'base64'));
    assert.equal(info.crcValid, true);
    assert.equal(info.crc32, 0x62dba30a);
    assert.equal(info.spliceCommandType, 5);
    assert.equal(info.spliceInsert!.spliceEventId, 0x4800008f);
    assert.equal(info.spliceInsert!.outOfNetwork, true);
    assert.equal(info.spliceInsert!.ptsTime, 0x07369c02en);
    assert.equal(info.spliceInsert!.breakDuration, 0x00052ccf5n);
    assert.equal(info.spliceInsert!.autoReturn, true);
    assert.equal(info.descriptorLoopLength, 10);
  });

  test('a flipped bit fails the CRC; a truncated section is refused', () => {
    const bytes = Buffer.from('/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=', 'base64');
    bytes[20] = bytes[20]! ^ 0x01;
    assert.equal(decodeSpliceInfo(bytes).crcValid, false);
    assert.throws(() => decodeSpliceInfo(bytes.subarray(0, 20)), /section_length|truncated/);
  });

  test('our OUT and IN sections decode to what was encoded, CRC included', () => {
    const out = encodeSpliceInsert({ spliceEventId: 0xdeadbeef, outOfNetwork: true, ptsTime: 123_456_789n, breakDuration: 30n * 90_000n, autoReturn: true });
    const decoded = decodeSpliceInfo(out);
    assert.equal(decoded.crcValid, true);
    assert.equal(crc32Mpeg2(out.subarray(0, out.length - 4)), out.readUInt32BE(out.length - 4));
    assert.deepEqual(
      { id: decoded.spliceInsert!.spliceEventId, out: decoded.spliceInsert!.outOfNetwork, pts: decoded.spliceInsert!.ptsTime, d: decoded.spliceInsert!.breakDuration },
      { id: 0xdeadbeef, out: true, pts: 123_456_789n, d: 2_700_000n },
    );
    const back = decodeSpliceInfo(encodeSpliceInsert({ spliceEventId: 7, outOfNetwork: false }));
    assert.equal(back.spliceInsert!.outOfNetwork, false);
    assert.equal(back.spliceInsert!.spliceImmediate, true);
    assert.equal(back.crcValid, true);
  });

  test('an ended break\'s DATERANGE keeps its ID and START-DATE and adds DURATION, END-DATE and SCTE35-IN', () => {
    const cue: Cue = {
      id: 'ad-1', kind: 'ad', eventId: 42, requestedAt: 0, plannedDurationMs: 30_000,
      startDate: Date.UTC(2026, 0, 1), startPts: 900_000n, endDate: undefined, endPts: undefined,
    };
    const running = dateRangeTag(cue);
    assert.match(running, /^#EXT-X-DATERANGE:ID="ad-1",CLASS="com.onair.ad-break",START-DATE="2026-01-01T00:00:00.000Z",PLANNED-DURATION=30.000,SCTE35-OUT=0xFC[0-9A-F]+$/);
    cue.endDate = cue.startDate! + 30_040;
    cue.endPts = 900_000n + 30_040n * 90n;
    const ended = dateRangeTag(cue);
    assert.ok(ended.startsWith('#EXT-X-DATERANGE:ID="ad-1",CLASS="com.onair.ad-break",START-DATE="2026-01-01T00:00:00.000Z"'));
    assert.match(ended, /DURATION=30\.040,END-DATE="2026-01-01T00:00:30.040Z"/);
    const scteIn = /SCTE35-IN=0x([0-9A-F]+)/.exec(ended)![1]!;
    assert.equal(decodeSpliceInfo(scteIn).spliceInsert!.outOfNetwork, false);
  });
});

/** One attribute of the DATERANGE with `id` in a playlist. */
function dateRange(playlist: string, id: string): Record<string, string> | undefined {
  const line = playlist.split('\n').find((l) => l.startsWith('#EXT-X-DATERANGE:') && l.includes(`ID="${id}"`));
  if (!line) return undefined;
  const attributes: Record<string, string> = {};
  for (const match of line.slice('#EXT-X-DATERANGE:'.length).matchAll(/([A-Z0-9-]+)=("[^"]*"|[^,]*)/g)) attributes[match[1]!] = match[2]!.replace(/^"|"$/g, '');
  return attributes;
}

/** The first frame of the newest independent part of a rendition, decoded to gray at `width`×`height`. */
async function newestFrame(node: OnAirNode, streamId: string, rendition: string, size: { width: number; height: number }): Promise<Buffer> {
  const base = `${node.httpUrl}/live/${streamId}/${rendition}/`;
  const playlist = await (await fetch(`${base}index.m3u8`)).text();
  const map = [...playlist.matchAll(/#EXT-X-MAP:URI="([^"]+)"/g)].pop()![1]!;
  const part = [...playlist.matchAll(/#EXT-X-PART:[^\n]*URI="([^"]+)"[^\n]*INDEPENDENT=YES/g)].pop()![1]!;
  const media = Buffer.concat([Buffer.from(await (await fetch(base + map)).arrayBuffer()), Buffer.from(await (await fetch(base + part)).arrayBuffer())]);
  return decodeFirstFrame(media, size, 'gray');
}

/** Luma standard deviation of the bottom 15 % of the newest part of a rendition (the ticker band). */
async function tickerBandDeviation(node: OnAirNode, streamId: string, rendition: string): Promise<number> {
  const gray = await newestFrame(node, streamId, rendition, { width: 320, height: 180 });
  const band = gray.subarray(320 * Math.floor(180 * 0.85));
  const mean = band.reduce((sum, v) => sum + v, 0) / band.length;
  return Math.sqrt(band.reduce((sum, v) => sum + (v - mean) ** 2, 0) / band.length);
}

/** A gray picture and the ticker band (its bottom 15 %) in it. */
interface Picture { gray: Buffer; width: number; height: number }
const bandTop = (p: Picture): number => Math.floor(p.height * 0.85);

/** The first and last column of the ticker band holding text fill (near white); undefined when there is none. */
function textColumns(p: Picture): { left: number; right: number } | undefined {
  let left = -1;
  let right = -1;
  for (let x = 0; x < p.width; x++) {
    for (let y = bandTop(p); y < p.height; y++) {
      if (p.gray[y * p.width + x]! > 170) {
        if (left < 0) left = x;
        right = x;
        break;
      }
    }
  }
  return left < 0 ? undefined : { left, right };
}

/** Mean absolute luma difference between the ticker bands of `live` and of `reference` moved right by `dx`, over the text. */
function bandDifference(live: Picture, reference: Picture, dx: number, columns: { left: number; right: number }): number {
  let sum = 0;
  let count = 0;
  for (let y = bandTop(live); y < live.height; y++) {
    for (let x = Math.max(0, columns.left - 8); x <= Math.min(reference.width - 1, columns.right + 8); x++) {
      const lx = x + dx;
      if (lx < 0 || lx >= live.width) continue;
      sum += Math.abs(live.gray[y * live.width + lx]! - reference.gray[y * reference.width + x]!);
      count++;
    }
  }
  return sum / count;
}

/**
 * `text` drawn on its own, literally (drawtext with the ticker's own options, expansion off), standing still at `x`
 * over a flat `color` picture of `width`×`height`.
 */
async function drawnAlone(text: string, x: number, color: string, size: { width: number; height: number }): Promise<Picture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-ticker-'));
  try {
    const file = path.join(dir, 'text.txt');
    await writeFile(file, text);
    const filter = `${tickerFilter(file).replace(/:expansion=\w+/, '').replace(/:x=[^:]+/, `:x=${x}`)}:expansion=none`;
    const gray = await new Promise<Buffer>((resolve, reject) => {
      execFile('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', `color=c=${color}:size=${size.width}x${size.height}:rate=1`, '-frames:v', '1',
        '-vf', `format=yuv420p,${filter}`, '-pix_fmt', 'gray', '-f', 'rawvideo', 'pipe:1'],
      { encoding: 'buffer', timeout: 20_000, maxBuffer: 1 << 22 }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
    });
    return { gray, ...size };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const BACKGROUND = '0x336699';

describe('cues on a live stream: ad breaks and news flashes', { timeout: 240_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let streamId: string;
  let publisher: ReturnType<typeof publish>;
  let chat: Socket;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  let adId: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360,240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_RECONNECT_GRACE_SEC: '0' }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Cue show' } });
    streamId = created.body.id;
    // A flat picture: the ticker band is uniform until a flash is burned in.
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360, videoSource: `color=c=${BACKGROUND}` });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    chat = connect(`${node.httpUrl}/chat`, { transports: ['websocket'], forceNew: true });
    await within('chat connect', new Promise((resolve) => chat.once('connect', () => resolve(undefined))), 10_000);
    assert.equal((await chat.timeout(5000).emitWithAck('join', { streamId, name: 'Viewer' })).ok, true);
    chromium = await launchChromium();
    page = await chromium.browser.newPage();
    await page.goto(`${node.httpUrl}/watch/${streamId}`);
    await waitFor('hls.js to play', () => page.evaluate(() => document.querySelector('video')!.currentTime > 1), 30_000, 250);
  });

  after(async () => {
    chat?.close();
    await chromium?.close();
    publisher?.stop();
    await close?.();
  });

  test('an ad break: the same DATERANGE in every rendition on a segment boundary within one GOP, SCTE-35 that decodes, CUE-OUT … CUE-IN', async () => {
    // Within one GOP: the break starts on the boundary that ends the segment open at the request.
    const current = await (await fetch(`${node.httpUrl}/live/${streamId}/360p/index.m3u8`)).text();
    const openSince = Date.parse([...current.matchAll(/#EXT-X-PROGRAM-DATE-TIME:(\S+)/g)].pop()![1]!);
    const chatCue = new Promise<any>((resolve) => chat.once('cue', resolve));
    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'ad', durationSec: 6 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    adId = created.body.id;
    const startDate = Date.parse(created.body.startDate);
    assert.equal(created.body.kind, 'ad');
    assert.ok(startDate > openSince && startDate <= openSince + 2000 + 300, `starts ${startDate - openSince} ms after the segment open at the request`);
    assert.equal((await within('the chat cue', chatCue, 5000)).id, adId);

    const seen: Record<string, string>[] = [];
    for (const rendition of ['360p', '240p']) {
      const playlist = await (await fetch(`${node.httpUrl}/live/${streamId}/${rendition}/index.m3u8`)).text();
      const tag = dateRange(playlist, adId);
      assert.ok(tag, `${rendition} carries the DATERANGE`);
      seen.push(tag);
      // On a segment boundary: the tag sits right after the PROGRAM-DATE-TIME of the segment it starts.
      const lines = playlist.split('\n');
      const at = lines.findIndex((l) => l.startsWith('#EXT-X-DATERANGE') && l.includes(adId));
      assert.equal(lines[at - 1], `#EXT-X-PROGRAM-DATE-TIME:${created.body.startDate}`);
      assert.equal(lines[at + 1], '#EXT-X-CUE-OUT:DURATION=6.000');
    }
    assert.equal(seen[0]!['START-DATE'], seen[1]!['START-DATE']);
    assert.equal(seen[0]!['START-DATE'], created.body.startDate);
    assert.equal(seen[0]!['CLASS'], 'com.onair.ad-break');
    assert.equal(seen[0]!['PLANNED-DURATION'], '6.000');
    assert.equal(seen[0]!['SCTE35-OUT'], seen[1]!['SCTE35-OUT']);
    const out = decodeSpliceInfo(seen[0]!['SCTE35-OUT']!);
    assert.equal(out.crcValid, true);
    assert.equal(out.spliceInsert!.outOfNetwork, true);
    assert.equal(out.spliceInsert!.breakDuration, 6n * 90_000n);

    // After the planned duration: CUE-IN and SCTE35-IN with the real DURATION, same ID, in every rendition.
    for (const rendition of ['360p', '240p']) {
      const ended = await waitFor(`${rendition}: the break to end`, async () => {
        const playlist = await (await fetch(`${node.httpUrl}/live/${streamId}/${rendition}/index.m3u8`)).text();
        const tag = dateRange(playlist, adId);
        return tag?.['SCTE35-IN'] && playlist.includes('#EXT-X-CUE-IN') ? { tag, playlist } : undefined;
      }, 20_000, 250);
      assert.equal(ended.tag['START-DATE'], created.body.startDate);
      const duration = Number(ended.tag['DURATION']);
      assert.ok(duration >= 5.5 && duration <= 8.5, `DURATION=${duration}`);
      assert.equal(decodeSpliceInfo(ended.tag['SCTE35-IN']!).crcValid, true);
      assert.match(ended.playlist, /#EXT-X-CUE-OUT-CONT:ElapsedTime=\d+\.\d{3},Duration=6\.000/);
    }
  });

  test('hls.js in Chromium exposes the DATERANGE as a metadata cue on the video element', async () => {
    const found = await waitFor('the metadata cue', () => page.evaluate((id) => {
      const video = document.querySelector('video')!;
      for (const track of Array.from(video.textTracks)) {
        if (track.kind !== 'metadata') continue;
        if (track.mode === 'disabled') track.mode = 'hidden';
        for (const cue of Array.from(track.cues ?? [])) if ((cue as TextTrackCue).id === id) return { start: cue.startTime, end: cue.endTime };
      }
      return undefined;
    }, adId), 20_000, 250);
    assert.ok(found.end > found.start, JSON.stringify(found));
  });

  test('a news flash: burned into the picture within 2 s and only for its duration, a DATERANGE with X-TEXT, a chat cue', async () => {
    const before = await tickerBandDeviation(node, streamId, '360p');
    assert.ok(before < 4, `the ticker band is flat before the flash (σ ${before.toFixed(1)})`);
    const chatCue = new Promise<any>((resolve) => chat.once('cue', resolve));
    const requestedAt = Date.now();
    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'news', text: 'BREAKING: OnAir ships cues', durationSec: 4 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const shown = await waitFor('the ticker in the picture', async () => (await tickerBandDeviation(node, streamId, '360p')) > 12, 5000, 100);
    assert.ok(shown);
    assert.ok(Date.now() - requestedAt < 2500, `burned in after ${Date.now() - requestedAt} ms`);
    const cue = await within('the chat cue', chatCue, 5000);
    assert.deepEqual({ kind: cue.kind, text: cue.text, durationSec: cue.durationSec }, { kind: 'news', text: 'BREAKING: OnAir ships cues', durationSec: 4 });
    for (const rendition of ['360p', '240p']) {
      const playlist = await (await fetch(`${node.httpUrl}/live/${streamId}/${rendition}/index.m3u8`)).text();
      const tag = dateRange(playlist, created.body.id);
      assert.equal(tag?.['X-TEXT'], 'BREAKING: OnAir ships cues');
      assert.equal(tag?.['CLASS'], 'com.onair.news');
      assert.equal(tag?.['DURATION'], '4.000');
    }
    assert.ok(await tickerBandDeviation(node, streamId, '240p') > 12, 'every rendition shows it');
    await waitFor('the ticker to clear after 4 s', async () => (await tickerBandDeviation(node, streamId, '360p')) < 4, 8000, 250);
    assert.ok(Date.now() - requestedAt >= 4000, 'not before its duration');
  });

  test('a news flash with % \\ : and quotes is shown exactly as typed', async (t) => {
    const text = '50% off: C:\\temp "now"';
    const size = { width: 640, height: 360 };
    const created = await api(node, 'POST', `/api/streams/${streamId}/cues`, { body: { kind: 'news', text, durationSec: 30 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const literal = await drawnAlone(text, 40, BACKGROUND, size);
    // What drawtext would show if it read the backslash as an escape (and the % were let through).
    const escaped = await drawnAlone(text.replace(/\\/g, ''), 40, BACKGROUND, size);
    const expected = textColumns(literal)!;
    // The ticker scrolls: wait for a keyframe that has the whole line on screen, then line it up with the reference.
    const live = await waitFor('the whole flash on screen', async () => {
      const picture = { gray: await newestFrame(node, streamId, '360p', size), ...size };
      const columns = textColumns(picture);
      return columns && columns.left > 4 && columns.right < size.width - 5 ? { picture, columns } : undefined;
    }, 25_000, 150);
    const liveWidth = live.columns.right - live.columns.left;
    const shift = live.columns.left - expected.left;
    const best = (reference: Picture, columns: { left: number; right: number }): number =>
      Math.min(...[-3, -2, -1, 0, 1, 2, 3].map((d) => bandDifference(live.picture, reference, shift + d, columns)));
    const toLiteral = best(literal, expected);
    const toEscaped = best(escaped, textColumns(escaped)!);
    t.diagnostic(`line ${liveWidth} px wide at x=${live.columns.left}; difference to the literal text ${toLiteral.toFixed(2)}, to the escaped one ${toEscaped.toFixed(2)}`);
    assert.ok(Math.abs(liveWidth - (expected.right - expected.left)) <= 2,
      `the line is as wide as the literal text drawn alone (${liveWidth} px, expected ${expected.right - expected.left} px)`);
    assert.ok(toLiteral < 6, `the ticker matches the literal text drawn alone (mean difference ${toLiteral.toFixed(1)})`);
    assert.ok(toLiteral * 2 < toEscaped, `and not the text with its backslash read as an escape (${toLiteral.toFixed(1)} vs ${toEscaped.toFixed(1)})`);
  });

  test('bad cue bodies get catalogued 4xx errors', async () => {
    const post = (body: unknown, id = streamId, token?: string | null) => api(node, 'POST', `/api/streams/${id}/cues`, { body, ...(token === undefined ? {} : { token }) });
    for (const [body, pattern] of [
      [{ kind: 'ad', durationSec: -5 }, /durationSec/],
      [{ kind: 'ad', durationSec: 0 }, /durationSec/],
      [{ kind: 'ad' }, /durationSec/],
      [{ kind: 'news', text: 'x'.repeat(201) }, /text/],
      [{ kind: 'news' }, /text/],
      [{ kind: 'news', text: '   ' }, /text/],
      [{ kind: 'news', text: 'a\u0007b' }, /text/],
      [{ kind: 'fireworks', durationSec: 5 }, /kind/],
      [{ kind: 'ad', durationSec: 5, extra: 1 }, /extra/],
    ] as const) {
      const response = await post(body);
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal(response.body.error.code, 'ONAIR_ERR_VALIDATION');
      assert.match(response.body.error.message, pattern);
    }
    assert.equal((await post({ kind: 'ad', durationSec: 5 }, streamId, null)).status, 401);
    assert.equal((await post({ kind: 'ad', durationSec: 5 }, 'nosuchstream')).body.error.code, 'ONAIR_ERR_STREAM_NOT_FOUND');
    const idle = (await api(node, 'POST', '/api/streams', { body: { title: 'Idle' } })).body;
    const notLive = await post({ kind: 'ad', durationSec: 5 }, idle.id);
    assert.equal(notLive.status, 404);
    assert.equal(notLive.body.error.code, 'ONAIR_ERR_STREAM_NOT_LIVE');
  });

  test('the cues are kept with the event: the replay\'s playlists carry them', async () => {
    const archived = node.next('archived', 30_000);
    publisher.stop();
    const [{ videoId }] = await archived;
    const playlist = await (await fetch(`${node.httpUrl}/vod/${videoId}/replay/360p/index.m3u8`)).text();
    const tag = dateRange(playlist, adId);
    assert.ok(tag?.['SCTE35-IN'], 'the ended break, with its SCTE35-IN');
    assert.match(playlist, /#EXT-X-CUE-OUT:DURATION=6\.000/);
    assert.match(playlist, /#EXT-X-CUE-IN/);
    assert.match(playlist, /X-TEXT="BREAKING: OnAir ships cues"/);
  });
});
