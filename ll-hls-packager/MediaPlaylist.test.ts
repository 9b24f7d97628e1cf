import assert from 'node:assert/strict';
import { describe, mock, test } from 'node:test';
import Fastify from 'fastify';
import type { Fragment, InitSegment, LadderPlan } from '../live-transcoder/index.js';
import { AdFeed, type AdRendition } from '../lib/media/ads.js';
import { MediaPlaylist, serverControlFor, type MediaPlaylistOptions } from './MediaPlaylist.js';
import { registerLiveRoutes } from './routes.js';
import { StreamPackager } from './StreamPackager.js';

/*
 * The LL-HLS core fed parsed fragments, the way LiveTranscoder hands them on (`fragment` events: a generation, a rendition,
 * a Fragment): no ffmpeg, no node. One test per rfc8216bis rule the packager keeps; test/llhls-conformance.test.ts checks
 * the same rules end to end against a real ladder.
 */

const T0 = Date.UTC(2026, 0, 1, 12);
const PART_MS = 250;
const SEGMENT_MS = 1000;
const WINDOW_MS = 8000;

function initSegment(generation: number, timescale = 90_000): InitSegment {
  return {
    data: Buffer.from(`init${generation}`),
    tracks: [
      { trackId: 1, kind: 'video', timescale, codec: 'avc1.64001f', width: 640, height: 360 },
      { trackId: 2, kind: 'audio', timescale: 48_000, codec: 'mp4a.40.2' },
    ],
  };
}

let fragments = 0;
function fragmentAt(mediaMs: number, durationMs: number, independent: boolean, timescale = 90_000, bytes = 16): Fragment {
  fragments += 1;
  return {
    data: Buffer.alloc(bytes, fragments % 256),
    sequenceNumber: fragments,
    durationMs,
    independent,
    tracks: [{ trackId: 1, baseMediaDecodeTime: Math.round((mediaMs * timescale) / 1000), duration: (durationMs * timescale) / 1000, sampleCount: 1 }],
  };
}

/** A transcoder feeding one rendition: runs (generations) of fragments with a keyframe every `gop` parts, in real time. */
class Feed {
  generation = -1;
  mediaMs = 0;
  now = T0;
  #count = 0;

  constructor(readonly playlist: MediaPlaylist, readonly gop = SEGMENT_MS / PART_MS) {}

  /** A new ffmpeg run: its init, then its fragments from media time `mediaMs`. */
  start(mediaMs = 0): this {
    this.generation += 1;
    this.playlist.addInit(this.generation, initSegment(this.generation));
    this.mediaMs = mediaMs;
    this.#count = 0;
    return this;
  }

  /** `n` fragments of `partMs`, each arriving `arrivalMs` after the last. */
  parts(n: number, partMs = PART_MS, arrivalMs = partMs, bytes = 16): this {
    for (let i = 0; i < n; i++) {
      this.now += arrivalMs;
      this.playlist.addFragment(this.generation, fragmentAt(this.mediaMs, partMs, this.#count % this.gop === 0, 90_000, bytes), this.now);
      this.mediaMs += partMs;
      this.#count += 1;
    }
    return this;
  }
}

function newPlaylist(options: Partial<MediaPlaylistOptions> = {}): MediaPlaylist {
  return new MediaPlaylist({ name: '240p', partTargetMs: PART_MS, segmentTargetMs: SEGMENT_MS, uriPrefix: 'u', windowMs: WINDOW_MS, ...options });
}

const serverControl = (playlist: MediaPlaylist) => serverControlFor(playlist.partTargetMs, playlist.targetDuration * 1000);

function render(playlist: MediaPlaylist, skip?: 'YES'): string {
  return playlist.render({ serverControl: serverControl(playlist), reports: [{ uri: '../480p/index.m3u8', lastMsn: 1, lastPart: 2 }], ...(skip ? { skip } : {}) });
}

interface Listed {
  msn: number;
  discontinuity: boolean;
  map: string | undefined;
  date: number | undefined;
  parts: { durationS: number; uri: string }[];
  /** EXTINF, s; undefined for the open segment. */
  durationS: number | undefined;
  uri: string | undefined;
}

/** A Media Playlist's text, read the way a client reads it. */
function parse(text: string): { tag: (name: string) => string | undefined; count: (name: string) => number; skipped: number; segments: Listed[] } {
  const lines = text.trimEnd().split('\n');
  const tag = (name: string): string | undefined => lines.find((l) => l.startsWith(`#${name}:`))?.slice(name.length + 2);
  const count = (name: string): number => lines.filter((l) => l === `#${name}` || l.startsWith(`#${name}:`)).length;
  const skipped = Number(/SKIPPED-SEGMENTS=(\d+)/.exec(tag('EXT-X-SKIP') ?? '')?.[1] ?? 0);
  let msn = Number(tag('EXT-X-MEDIA-SEQUENCE')) + skipped;
  const segments: Listed[] = [];
  let map: string | undefined;
  const next = (): Listed => ({ msn, discontinuity: false, map, date: undefined, parts: [], durationS: undefined, uri: undefined });
  let current = next();
  let touched = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '#EXT-X-DISCONTINUITY') {
      current.discontinuity = true;
    } else if (line.startsWith('#EXT-X-MAP:')) {
      map = /URI="([^"]+)"/.exec(line)![1];
      current.map = map;
    } else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) {
      current.date = Date.parse(line.slice(25));
    } else if (line.startsWith('#EXT-X-PART:')) {
      current.parts.push({ durationS: Number(/DURATION=([\d.]+)/.exec(line)![1]), uri: /URI="([^"]+)"/.exec(line)![1]! });
    } else if (line.startsWith('#EXTINF:')) {
      current.durationS = Number(line.slice(8, -1));
      current.uri = lines[++i];
      segments.push(current);
      msn += 1;
      current = next();
      touched = false;
      continue;
    } else {
      continue;
    }
    touched = true;
  }
  if (touched) segments.push(current);
  return { tag, count, skipped, segments };
}

/** Lets promise callbacks run (waits resolve synchronously, their `then` a microtask later). */
const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('MediaPlaylist: the LL-HLS core fed parsed fragments (rfc8216bis)', () => {
  test('§4.4.3.1 EXT-X-TARGETDURATION is at least every EXTINF rounded to the nearest integer, and never changes', () => {
    // A 1.5 s segment target: segments of 1.5 s round up to 2; a run cut short leaves a shorter one.
    const playlist = newPlaylist({ segmentTargetMs: 1500, windowMs: 20_000 });
    const feed = new Feed(playlist, 6).start();
    const seen = new Set<string>();
    const check = (): void => {
      const { tag, segments } = parse(render(playlist));
      seen.add(tag('EXT-X-TARGETDURATION')!);
      for (const s of segments) if (s.durationS !== undefined) assert.ok(Math.round(s.durationS) <= Number(tag('EXT-X-TARGETDURATION')), `EXTINF ${s.durationS} > TD`);
    };
    for (let i = 0; i < 20; i++) feed.parts(1, 251), check();
    feed.start(0).parts(14, 249);
    check();
    assert.deepEqual([...seen], ['2']);
    assert.ok(parse(render(playlist)).segments.filter((s) => s.durationS !== undefined && s.durationS > 1.5).length > 0, 'segments longer than the target were checked');
  });

  test('§4.4.3.7/§4.4.4.9 EXT-X-PART-INF gives PART-TARGET and every EXT-X-PART DURATION is at most it', () => {
    const playlist = newPlaylist({ partTargetMs: 200 });
    const feed = new Feed(playlist, 5).start().parts(12, 200).parts(1, 120);
    feed.start(feed.mediaMs).parts(7, 200);
    const { tag, segments } = parse(render(playlist));
    assert.equal(tag('EXT-X-PART-INF'), 'PART-TARGET=0.200');
    const parts = segments.flatMap((s) => s.parts);
    assert.ok(parts.length >= 10);
    for (const part of parts) assert.ok(part.durationS <= 0.2, `part of ${part.durationS} s`);
  });

  test('§4.4.3.2/§6.2.2 EXT-X-MEDIA-SEQUENCE advances by one for each segment that slides out; the playlist keeps at least three target durations', () => {
    const playlist = newPlaylist();
    const feed = new Feed(playlist).start();
    let last = -1;
    for (let i = 0; i < 30 * 4; i++) {
      feed.parts(1);
      const { tag, segments } = parse(render(playlist));
      const mediaSequence = Number(tag('EXT-X-MEDIA-SEQUENCE'));
      assert.ok(mediaSequence >= last, 'never goes back');
      last = mediaSequence;
      // The first listed segment is the one numbered MEDIA-SEQUENCE, and the others follow one by one.
      assert.equal(segments[0]!.uri ?? `u-s${mediaSequence}.m4s`, `u-s${mediaSequence}.m4s`);
      segments.forEach((s, k) => s.uri !== undefined && assert.equal(s.uri, `u-s${mediaSequence + k}.m4s`));
      const listedMs = playlist.segments.reduce((sum, s) => sum + s.durationMs, 0);
      if (feed.mediaMs >= 3 * SEGMENT_MS) assert.ok(listedMs >= 3 * playlist.targetDuration * 1000, `${listedMs} ms listed`);
    }
    // 30 s of 1 s segments in an 8 s window: about 22 slid out.
    assert.ok(last >= 20 && last <= 23, `MEDIA-SEQUENCE ${last}`);
    assert.equal(playlist.segments[0]!.mediaSequence, last);
  });

  test('§4.4.3.3 EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuities that slid out: every segment keeps the number of its run', () => {
    const playlist = newPlaylist();
    const feed = new Feed(playlist).start();
    let lastDsn = 0;
    for (let run = 0; run < 8; run++) {
      if (run > 0) feed.start(0); // an ffmpeg restart: new init, new timeline
      for (let i = 0; i < 11; i++) {
        feed.parts(1);
        const { tag, segments } = parse(render(playlist));
        const dsn = Number(tag('EXT-X-DISCONTINUITY-SEQUENCE'));
        assert.ok(dsn >= lastDsn, 'never goes back');
        lastDsn = dsn;
        // Discontinuity Sequence Number of each segment = DSN + the DISCONTINUITY tags up to it = its run (init<g>).
        let number = dsn;
        for (const segment of segments) {
          if (segment.discontinuity) number += 1;
          assert.equal(`u-init${number}.mp4`, segment.map, `segment ${segment.msn}`);
        }
      }
    }
    assert.ok(lastDsn >= 5, `DISCONTINUITY-SEQUENCE ${lastDsn}: discontinuities slid out`);
  });

  test('§4.4.3.3 an event continued at another origin (issue #17) goes on at the next Media Sequence Number, one discontinuity later', () => {
    const a = newPlaylist();
    const feedA = new Feed(a).start().parts(10);
    feedA.start(0);
    feedA.parts(30); // a restart in the window, then its earlier segments slide out
    feedA.start(0);
    feedA.parts(6);
    const listedA = parse(render(a));
    const lastA = listedA.segments.at(-1)!;
    // The Discontinuity Sequence Number of A's last segment, as a player counts it.
    const lastDsnA = Number(listedA.tag('EXT-X-DISCONTINUITY-SEQUENCE')) + listedA.segments.filter((seg) => seg.discontinuity).length;
    const b = newPlaylist({ uriPrefix: 'v', continueFrom: a.continuation });
    assert.equal(parse(render(b)).tag('EXT-X-MEDIA-SEQUENCE'), String(lastA.msn + 1), 'before its first media, the playlist names the next number');
    new Feed(b).start().parts(6);
    const listedB = parse(render(b));
    assert.equal(listedB.segments[0]!.msn, lastA.msn + 1, 'the first segment follows the last one A listed');
    assert.equal(Number(listedB.tag('EXT-X-DISCONTINUITY-SEQUENCE')), lastDsnA + 1, 'and is a discontinuity');
    assert.equal(listedB.segments[0]!.map, 'v-init0.mp4');
    // B's own continuation goes on from there.
    assert.deepEqual(b.continuation, { mediaSequence: listedB.segments.at(-1)!.msn + 1, discontinuitySequence: lastDsnA + 2 });
  });

  test('§4.4.4.6/§6.2.1 EXT-X-PROGRAM-DATE-TIME is on the first segment and after each discontinuity, advances with EXTINF, and a restarted run overlaps the last by under a second', () => {
    const playlist = newPlaylist({ windowMs: 60_000 });
    // The first run arrives faster than real time (a backlog): its dates end 1.2 s ahead of the clock.
    const arrivalMs = 175;
    const feed = new Feed(playlist).start().parts(16, PART_MS, arrivalMs);
    const lastEnd = T0 + arrivalMs - PART_MS + 16 * PART_MS;
    feed.start(0).parts(8);
    const { segments } = parse(render(playlist));
    assert.ok(segments.length >= 5);
    assert.equal(segments[0]!.date, T0 + arrivalMs - PART_MS, 'the first fragment is dated its arrival less its duration');
    for (let i = 0; i < segments.length; i++) {
      const segment = segments[i]!;
      assert.notEqual(segment.date, undefined, `segment ${segment.msn} has a date`);
      const previous = segments[i - 1];
      if (!previous) continue;
      if (segment.discontinuity) {
        assert.ok(segment.date! > lastEnd - 1000, `the new run overlaps the last by ${lastEnd - segment.date!} ms`);
      } else {
        assert.ok(Math.abs(segment.date! - previous.date! - previous.durationS! * 1000) <= 1, 'dates advance with EXTINF');
      }
    }
    assert.equal(segments.filter((s) => s.discontinuity).length, 1);
  });

  test('§4.4.4.5 a run is dated from when its first frame reached the ingest, not from when its first fragment got here', () => {
    // ffmpeg took 1.9 s to start and then caught up: dating from the arrival put every date ~1.9 s in the future.
    const ingested = T0 - 1900;
    const playlist = newPlaylist({ runInputAt: (generation) => (generation === 0 ? ingested : undefined) });
    new Feed(playlist).start().parts(8);
    const { segments } = parse(render(playlist));
    assert.equal(segments[0]!.date, ingested, 'the first segment is dated when its first frame reached the ingest');
    assert.equal(segments[1]!.date, ingested + SEGMENT_MS, 'and the next ones follow the media timeline');

    // An ingest time later than the arrival (clocks disagree) is never taken: a date is never in the future.
    const late = newPlaylist({ runInputAt: () => T0 + 5_000 });
    new Feed(late).start().parts(4);
    assert.equal(parse(render(late)).segments[0]!.date, T0, 'the arrival less the fragment duration');
  });

  test('each part reports how long after its media\'s end reached the ingest it went out (the server\'s share of the latency)', () => {
    const delays: number[] = [];
    // ffmpeg's start-up held the first fragment 1.9 s; the run stays that far behind the ingest.
    const playlist = newPlaylist({ runInputAt: () => T0 - 1900, onPart: (delayMs) => delays.push(delayMs) });
    new Feed(playlist).start().parts(8);
    assert.deepEqual(delays, Array(8).fill(1900));
  });

  test('§4.4.3.8 PART-HOLD-BACK is the configured number of part targets, never under three', () => {
    assert.equal(serverControlFor(200, 2000).partHoldBack, 0.6, 'three parts by default');
    assert.equal(serverControlFor(200, 2000, 5).partHoldBack, 1);
    assert.equal(serverControlFor(200, 2000, 2).partHoldBack, 0.6, 'the spec\'s floor: three part targets');
  });

  test('§4.4.5.3 EXT-X-PRELOAD-HINT names the part the next fragment becomes, across segment boundaries and restarts', () => {
    const playlist = newPlaylist();
    const feed = new Feed(playlist).start();
    for (let i = 0; i < 14; i++) {
      if (i === 9) feed.start(0);
      const hinted = /^TYPE=PART,URI="([^"]+)"$/.exec(parse(render(playlist)).tag('EXT-X-PRELOAD-HINT')!)![1];
      assert.equal(playlist.part(playlist.nextPartSequence), undefined, 'the hinted part does not exist yet');
      feed.parts(1);
      const { segments } = parse(render(playlist));
      assert.equal(segments.at(-1)!.parts.at(-1)!.uri, hinted);
      assert.equal(playlist.part(playlist.nextPartSequence - 1)!.uri, hinted);
    }
  });

  test('§6.2.5.2 a blocking reload for a future part or segment resolves when it arrives, not before', async () => {
    const playlist = newPlaylist();
    const feed = new Feed(playlist).start().parts(6); // segment 1 (the first) complete, segment 2 has two parts
    assert.deepEqual(playlist.last, { msn: 2, part: 1 });
    const arrived: string[] = [];
    const wait = (msn: number, part?: number): Promise<unknown> =>
      playlist.waitUntil(() => playlist.has(msn, part), 60_000).then((ok) => arrived.push(`${msn}.${part ?? '-'}:${ok}`));
    const waits = [wait(2, 2), wait(2), wait(3, 0), wait(2, 4)];
    await settled();
    assert.deepEqual(arrived, []);
    feed.parts(1); // part 2.2
    await settled();
    assert.deepEqual(arrived, ['2.2:true']);
    feed.parts(1); // part 2.3: segment 2 still open (no keyframe yet)
    await settled();
    assert.deepEqual(arrived, ['2.2:true']);
    feed.parts(1); // a keyframe: segment 2 completes, 3.0 arrives; 2.4 is past segment 2's last part, so it is 3.0
    await settled();
    assert.deepEqual(arrived.sort(), ['2.-:true', '2.2:true', '2.4:true', '3.0:true']);
    await Promise.all(waits);
    assert.equal(playlist.waiting, 0);
  });

  test('§6.2.5.2 a wait that nothing answers ends with false when its time is up, and leaves', async () => {
    const playlist = newPlaylist();
    new Feed(playlist).start().parts(3);
    const started = Date.now();
    const arrived = await playlist.waitUntil(() => playlist.has(5, 0), 30);
    assert.equal(arrived, false);
    assert.ok(Date.now() - started >= 25);
    assert.equal(playlist.waiting, 0);
  });

  test('§6.2.5.2 over HTTP: a continued playlist (issue #17) parks a request for the other origin\'s next segment until its first media, not 400', async () => {
    const packager = new StreamPackager({
      streamId: 'abcdefghijkl', partTargetMs: PART_MS, segmentTargetMs: SEGMENT_MS, windowMs: WINDOW_MS, uriPrefix: 'v',
      continueFrom: { '240p': { mediaSequence: 40, discontinuitySequence: 3 } },
    });
    packager.setPlan({ renditions: [{ name: '240p', width: 426, height: 240, fps: 30, videoKbps: 300, audioKbps: 64, passthrough: false }] } as LadderPlan);
    const playlist = packager.playlist('240p')!;
    const app = Fastify();
    registerLiveRoutes(app, { packager: (id) => (id === packager.streamId ? packager : undefined), playbackSigningKey: undefined });
    await app.ready();
    try {
      // A player (or an edge) that followed the other origin blocks on part 3 of its open segment 39.
      let answered = false;
      const pending = app.inject(`/live/${packager.streamId}/240p/index.m3u8?_HLS_msn=39&_HLS_part=3`).finally(() => {
        answered = true;
      });
      while (playlist.waiting === 0 && !answered) await settled();
      assert.equal(playlist.waiting, 1, `parked, not answered at once: ${answered ? (await pending).body : ''}`);
      new Feed(playlist).start().parts(1);
      const answer = await pending;
      assert.equal(answer.statusCode, 200, answer.body);
      assert.match(answer.body, /#EXT-X-MEDIA-SEQUENCE:40\n/);
      assert.match(answer.body, /#EXT-X-DISCONTINUITY-SEQUENCE:3\n/);
    } finally {
      await app.close();
    }
  });

  test('§6.2.5.2 over HTTP: _HLS_msn past the advance limits is 400 at once; a part that does not come in three target durations is 503 ONAIR_ERR_HLS_TIMEOUT, not before', async () => {
    const packager = new StreamPackager({ streamId: 'abcdefghijkl', partTargetMs: PART_MS, segmentTargetMs: SEGMENT_MS, windowMs: WINDOW_MS, uriPrefix: 'u' });
    packager.setPlan({ renditions: [{ name: '240p', width: 426, height: 240, fps: 30, videoKbps: 300, audioKbps: 64, passthrough: false }] } as LadderPlan);
    const playlist = packager.playlist('240p')!;
    new Feed(playlist).start().parts(6);
    const app = Fastify();
    registerLiveRoutes(app, { packager: (id) => (id === packager.streamId ? packager : undefined), playbackSigningKey: undefined });
    await app.ready();
    try {
      const url = (query: string): string => `/live/${packager.streamId}/240p/index.m3u8?${query}`;
      const tooFar = await app.inject(url('_HLS_msn=5')); // the last segment is 2 (an event starts at 1)
      assert.equal(tooFar.statusCode, 400);
      assert.equal(tooFar.json().error.code, 'ONAIR_ERR_HLS_DIRECTIVE');
      // Two past the last segment blocks (the next part would answer it) and times out after 3 × TD.
      mock.timers.enable({ apis: ['setTimeout'] });
      try {
        const pending = app.inject(url('_HLS_msn=4'));
        while (playlist.waiting === 0) await settled();
        mock.timers.tick(3 * playlist.targetDuration * 1000 - 1);
        await settled();
        assert.equal(playlist.waiting, 1, 'still parked just before three target durations');
        mock.timers.tick(1);
        const answer = await pending;
        assert.equal(answer.statusCode, 503);
        assert.equal(answer.json().error.code, 'ONAIR_ERR_HLS_TIMEOUT');
      } finally {
        mock.timers.reset();
      }
    } finally {
      await app.close();
    }
  });

  test('§6.2.5.1/§4.4.5.2 _HLS_skip=YES replaces exactly the segments that start more than CAN-SKIP-UNTIL before the end with EXT-X-SKIP:SKIPPED-SEGMENTS', () => {
    const playlist = newPlaylist({ windowMs: 12_000 });
    const feed = new Feed(playlist).start();
    const canSkipUntilMs = serverControl(playlist).canSkipUntil * 1000;
    for (let i = 0; i < 80; i++) {
      feed.parts(1);
      const full = parse(render(playlist));
      const delta = parse(render(playlist, 'YES'));
      const totalMs = playlist.segments.reduce((sum, s) => sum + s.durationMs, 0);
      let startMs = 0;
      let older = 0;
      for (const segment of playlist.segments) {
        if (totalMs - startMs > canSkipUntilMs) older += 1;
        startMs += segment.durationMs;
      }
      assert.equal(delta.skipped, older, `after ${i + 1} parts`);
      assert.equal(delta.count('EXT-X-SKIP'), older > 0 ? 1 : 0);
      assert.equal(delta.tag('EXT-X-MEDIA-SEQUENCE'), full.tag('EXT-X-MEDIA-SEQUENCE'));
      // What follows the skip is the full playlist's tail, tag for tag.
      assert.deepEqual(delta.segments, full.segments.slice(older));
      if (older > 0) assert.equal(delta.segments[0]!.map, 'u-init0.mp4', 'EXT-X-MAP is repeated after the skip');
    }
    assert.ok(parse(render(playlist, 'YES')).skipped >= 4);
  });

  test('§4.4.3.4 after end() the playlist has EXT-X-ENDLIST and neither a preload hint nor rendition reports; waits resolve and later fragments change nothing', async () => {
    const playlist = newPlaylist();
    const feed = new Feed(playlist).start().parts(6);
    const waiting = playlist.waitUntil(() => playlist.has(9, 0), 60_000);
    assert.ok(!render(playlist).includes('#EXT-X-ENDLIST'));
    playlist.end();
    assert.equal(await waiting, true);
    const text = render(playlist);
    assert.ok(text.endsWith('#EXT-X-ENDLIST\n'));
    assert.ok(!text.includes('#EXT-X-PRELOAD-HINT') && !text.includes('#EXT-X-RENDITION-REPORT') && !text.includes('#EXT-X-PART:'));
    assert.equal(render(playlist, 'YES'), text, '_HLS_skip is ignored');
    assert.ok(parse(text).segments.every((s) => s.uri !== undefined), 'every segment complete');
    feed.parts(4);
    feed.start().parts(4);
    assert.equal(render(playlist), text);
    assert.equal(playlist.partIsComing(playlist.nextPartSequence), false);
  });

  test('§4.4.4.3/§4.4.4.5 an ad break: DISCONTINUITY and the ad\'s EXT-X-MAP before each ad, DISCONTINUITY and the content\'s MAP after, dates run on and MEDIA-SEQUENCE keeps counting', () => {
    const adInit = initSegment(99, 1000);
    const ad = (): AdRendition => {
      const list: Fragment[] = [];
      for (let i = 0; i < 6; i++) list.push(fragmentAt(i * PART_MS, PART_MS, i % 4 === 0, 1000));
      return { init: adInit, fragments: list, durationMs: 6 * PART_MS };
    };
    const breakAt = T0 + 2000;
    let endDate: number | undefined;
    let breakStart: number | undefined;
    const playlist = newPlaylist({
      windowMs: 60_000,
      adBreakAt: (date) => {
        if (breakStart !== undefined || date < breakAt) return undefined;
        breakStart = date;
        return new AdFeed('c1', [ad(), ad()], () => endDate);
      },
    });
    const feed = new Feed(playlist).start().parts(12);
    assert.notEqual(breakStart, undefined, 'the break started on a segment boundary');
    feed.parts(8);
    endDate = breakStart! + 3000;
    feed.parts(16);
    const { tag, segments } = parse(render(playlist));
    assert.equal(tag('EXT-X-MEDIA-SEQUENCE'), '1', 'an event\'s first segment is 1 (hls.js loses a segment 0: PlaylistWindow)');
    segments.forEach((s, k) => assert.equal(s.msn, k + 1));
    assert.ok(segments.every((s, k) => s.uri === undefined || s.uri === `u-s${k + 1}.m4s`), 'one numbering through the break');
    const kinds = segments.map((s) => `${s.discontinuity ? '|' : ''}${s.map === 'u-init0.mp4' ? 'c' : s.map?.startsWith('u-ainit') ? 'a' : '?'}`).join('');
    // Content, then two 1.5 s ads (3 s of break), then content again.
    assert.match(kinds, /^c+\|a+\|a+\|c+$/, kinds);
    segments.forEach((s, k) => k > 0 && s.discontinuity && assert.notEqual(s.map, segments[k - 1]!.map, 'a new EXT-X-MAP after each DISCONTINUITY'));
    const firstAd = segments.find((s) => s.map === 'u-ainit0.mp4')!;
    assert.equal(firstAd.date, breakStart, 'the ads are dated from the break\'s start');
    assert.equal(playlist.initData('u-ainit0.mp4'), adInit.data, 'the ad\'s init is served');
    const ads = segments.filter((s) => s.map?.startsWith('u-ainit'));
    ads.slice(1).forEach((s, k) => assert.equal(s.date, ads[k]!.date! + ads[k]!.durationS! * 1000, 'the ads\' dates run on from the break\'s start'));
    const resumed = segments.find((s, k) => k > 0 && s.discontinuity && s.map === 'u-init0.mp4')!;
    assert.ok(resumed.date! >= endDate - 1, 'the content resumes at the break\'s end');
  });

  test('the window is bounded: an hour of media with restarts keeps only the DVR window of segments, parts and init segments', () => {
    const playlist = newPlaylist();
    const feed = new Feed(playlist).start();
    for (let minute = 0; minute < 60; minute++) {
      if (minute % 10 === 9) feed.start(0);
      feed.parts(240, PART_MS, PART_MS, 1000);
    }
    const segments = playlist.segments;
    assert.ok(segments.length <= WINDOW_MS / SEGMENT_MS + 2, `${segments.length} segments kept`);
    assert.equal(playlist.part(0), undefined, 'old parts are gone');
    assert.notEqual(playlist.part(playlist.nextPartSequence - 1), undefined);
    const bytes = segments.reduce((sum, s) => sum + (s.data?.length ?? s.parts.reduce((n, p) => n + p.data.length, 0)), 0);
    assert.ok(bytes <= (WINDOW_MS / PART_MS + 8) * 1000, `${bytes} bytes kept`);
    assert.equal(playlist.initData('u-init0.mp4'), undefined, 'a run\'s init goes with its last segment');
    assert.notEqual(playlist.initData(`u-init${feed.generation}.mp4`), undefined);
    assert.equal(playlist.waiting, 0);
  });

  test('bad input changes nothing: a fragment before any init, of an old run or of no duration is ignored', () => {
    const playlist = newPlaylist();
    playlist.addFragment(0, fragmentAt(0, PART_MS, true), T0);
    assert.equal(playlist.segments.length, 0);
    const feed = new Feed(playlist).start().parts(3);
    feed.start(0);
    const before = render(playlist);
    playlist.addFragment(0, fragmentAt(5000, PART_MS, true), T0 + 5000);
    playlist.addFragment(feed.generation, fragmentAt(5000, 0, true), T0 + 5000);
    playlist.addFragment(feed.generation, fragmentAt(5000, PART_MS, false), T0 + 5000); // no keyframe to start a segment on
    assert.equal(render(playlist), before);
  });
});
