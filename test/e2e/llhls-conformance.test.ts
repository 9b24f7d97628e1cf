import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import type { LiveTranscoder } from '../../live-transcoder/index.js';
import type { OnAirNode } from '../../server/node.js';
import { api, publish, startTestNode, waitFor, within } from '../support/harness.js';

/*
 * LL-HLS conformance: the server rules of draft-pantos-hls-rfc8216bis §6.2 that an HTTP client can observe, one test
 * per rule, against one node and one live publish. Everything is read over HTTP and parsed by the small parser below;
 * the transcoder's `fragment` events only tell when each part was created, to time the blocking responses.
 */

const run = promisify(execFile);

/** Slack on top of one part target for "within one part target of the part's creation". */
const MARGIN_MS = 150;

// ---------------------------------------------------------------------------------------------------------------------
// A tiny playlist parser: tags → objects.

type Attrs = Record<string, string>;

function parseAttrs(list: string): Attrs {
  const attrs: Attrs = {};
  const pattern = /([A-Z0-9-]+)=("[^"]*"|[^,]*)(?:,|$)/g;
  for (let match = pattern.exec(list); match; match = pattern.exec(list)) {
    const value = match[2]!;
    attrs[match[1]!] = value.startsWith('"') ? value.slice(1, -1) : value;
  }
  return attrs;
}

interface ParsedPart { uri: string; duration: number; independent: boolean }

interface ParsedSegment {
  msn: number;
  /** Absent for the open segment at the live edge (parts only). */
  uri: string | undefined;
  duration: number | undefined;
  parts: ParsedPart[];
  /** EXT-X-MAP URI in effect. */
  map: string | undefined;
  programDateTime: number | undefined;
  discontinuity: boolean;
}

interface MediaDoc {
  text: string;
  lines: string[];
  version: number | undefined;
  targetDuration: number | undefined;
  mediaSequence: number | undefined;
  discontinuitySequence: number;
  serverControl: Attrs | undefined;
  partInf: Attrs | undefined;
  skip: Attrs | undefined;
  independentSegments: boolean;
  segments: ParsedSegment[];
  preloadHints: Attrs[];
  renditionReports: Attrs[];
  endList: boolean;
  /** Line index of the first EXT-X-MAP, and of the first EXTINF or EXT-X-PART. */
  firstMapLine: number;
  firstMediaLine: number;
}

function tagOf(line: string): { name: string; value: string } {
  const colon = line.indexOf(':');
  return colon < 0 ? { name: line.slice(1), value: '' } : { name: line.slice(1, colon), value: line.slice(colon + 1) };
}

function parseMedia(text: string): MediaDoc {
  const lines = text.split('\n');
  assert.equal(lines[0], '#EXTM3U', 'a playlist starts with #EXTM3U');
  const doc: MediaDoc = {
    text, lines, version: undefined, targetDuration: undefined, mediaSequence: undefined, discontinuitySequence: 0,
    serverControl: undefined, partInf: undefined, skip: undefined, independentSegments: false, segments: [],
    preloadHints: [], renditionReports: [], endList: false, firstMapLine: -1, firstMediaLine: -1,
  };
  let nextMsn = 0;
  let map: string | undefined;
  let extinf: number | undefined;
  let pending = { parts: [] as ParsedPart[], programDateTime: undefined as number | undefined, discontinuity: false };
  lines.forEach((line, i) => {
    if (line === '' || line === '#EXTM3U') return;
    if (!line.startsWith('#')) {
      assert.ok(extinf !== undefined, `URI line ${i} "${line}" follows an EXTINF`);
      doc.segments.push({ msn: nextMsn++, uri: line, duration: extinf, parts: pending.parts, map, programDateTime: pending.programDateTime, discontinuity: pending.discontinuity });
      pending = { parts: [], programDateTime: undefined, discontinuity: false };
      extinf = undefined;
      return;
    }
    const { name, value } = tagOf(line);
    switch (name) {
      case 'EXT-X-VERSION': doc.version = Number(value); break;
      case 'EXT-X-TARGETDURATION': doc.targetDuration = Number(value); break;
      case 'EXT-X-MEDIA-SEQUENCE': doc.mediaSequence = Number(value); nextMsn = doc.mediaSequence; break;
      case 'EXT-X-DISCONTINUITY-SEQUENCE': doc.discontinuitySequence = Number(value); break;
      case 'EXT-X-SERVER-CONTROL': doc.serverControl = parseAttrs(value); break;
      case 'EXT-X-PART-INF': doc.partInf = parseAttrs(value); break;
      case 'EXT-X-INDEPENDENT-SEGMENTS': doc.independentSegments = true; break;
      case 'EXT-X-SKIP':
        doc.skip = parseAttrs(value);
        nextMsn += Number(doc.skip['SKIPPED-SEGMENTS']);
        break;
      case 'EXT-X-MAP':
        map = parseAttrs(value)['URI'];
        if (doc.firstMapLine < 0) doc.firstMapLine = i;
        break;
      case 'EXT-X-DISCONTINUITY': pending.discontinuity = true; break;
      case 'EXT-X-PROGRAM-DATE-TIME': pending.programDateTime = Date.parse(value); break;
      case 'EXT-X-PART': {
        const attrs = parseAttrs(value);
        pending.parts.push({ uri: attrs['URI']!, duration: Number(attrs['DURATION']), independent: attrs['INDEPENDENT'] === 'YES' });
        if (doc.firstMediaLine < 0) doc.firstMediaLine = i;
        break;
      }
      case 'EXTINF':
        extinf = Number(value.split(',')[0]);
        if (doc.firstMediaLine < 0) doc.firstMediaLine = i;
        break;
      case 'EXT-X-PRELOAD-HINT': doc.preloadHints.push(parseAttrs(value)); break;
      case 'EXT-X-RENDITION-REPORT': doc.renditionReports.push(parseAttrs(value)); break;
      case 'EXT-X-ENDLIST': doc.endList = true; break;
      default: break;
    }
  });
  if (pending.parts.length > 0) {
    doc.segments.push({ msn: nextMsn, uri: undefined, duration: undefined, parts: pending.parts, map, programDateTime: pending.programDateTime, discontinuity: pending.discontinuity });
  }
  return doc;
}

interface Variant { attrs: Attrs; uri: string }

function parseMultivariant(text: string): { lines: string[]; variants: Variant[]; independentSegments: boolean; version: number | undefined } {
  const lines = text.split('\n');
  assert.equal(lines[0], '#EXTM3U');
  const variants: Variant[] = [];
  let pending: Attrs | undefined;
  let independentSegments = false;
  let version: number | undefined;
  for (const line of lines) {
    if (line === '') continue;
    if (!line.startsWith('#')) {
      assert.ok(pending, `URI "${line}" follows an EXT-X-STREAM-INF`);
      variants.push({ attrs: pending, uri: line });
      pending = undefined;
      continue;
    }
    const { name, value } = tagOf(line);
    if (name === 'EXT-X-STREAM-INF') pending = parseAttrs(value);
    if (name === 'EXT-X-INDEPENDENT-SEGMENTS') independentSegments = true;
    if (name === 'EXT-X-VERSION') version = Number(value);
  }
  return { lines, variants, independentSegments, version };
}

/** The part after the last one listed: what a client asks for next with `_HLS_msn`/`_HLS_part`. */
function nextPart(doc: MediaDoc): { msn: number; part: number } {
  const last = doc.segments.at(-1)!;
  return last.uri === undefined ? { msn: last.msn, part: last.parts.length } : { msn: last.msn + 1, part: 0 };
}

/** The last part listed. */
function lastPart(doc: MediaDoc): { msn: number; part: number } {
  const last = doc.segments.at(-1)!;
  return { msn: last.msn, part: last.parts.length - 1 };
}

/** Part `part` of segment `msn`, a part index beyond a complete segment's last meaning part 0 of the next (§6.2.5.2). */
function findPart(doc: MediaDoc, msn: number, part: number): ParsedPart | undefined {
  const segment = doc.segments.find((s) => s.msn === msn);
  if (!segment) return undefined;
  if (part < segment.parts.length) return segment.parts[part];
  return segment.uri !== undefined ? findPart(doc, msn + 1, 0) : undefined;
}

function partSequence(uri: string): number {
  const match = /-p(\d+)\.m4s(?:\?|$)/.exec(uri);
  assert.ok(match, `"${uri}" is a part URI`);
  return Number(match[1]);
}

function maxAge(cacheControl: string | null): number | undefined {
  const match = /max-age=(\d+)/.exec(cacheControl ?? '');
  return match ? Number(match[1]) : undefined;
}

// ---------------------------------------------------------------------------------------------------------------------
// HTTP.

interface Fetched { url: string; status: number; headers: Headers; body: Buffer; text: string; sentAt: number; receivedAt: number }

async function get(url: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Fetched> {
  const sentAt = Date.now();
  const response = await fetch(url, { method: init.method ?? 'GET', headers: init.headers ?? {} });
  const body = Buffer.from(await response.arrayBuffer());
  return { url, status: response.status, headers: response.headers, body, text: body.toString('utf8'), sentAt, receivedAt: Date.now() };
}

/** A GET with node:http: the raw bytes (fetch would gunzip) and the path exactly as written (fetch would normalize). */
function rawGet(origin: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${origin}${path}`, { headers, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end();
  });
}

function errorCode(fetched: Fetched): string | undefined {
  try {
    return JSON.parse(fetched.text).error?.code;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------------

describe('LL-HLS server conformance (rfc8216bis §6.2) of a live stream', { timeout: 360_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let streamId: string;
  let publisher: ReturnType<typeof publish>;
  let transcoder: LiveTranscoder;
  let renditions: string[];
  let streamEnded: Promise<void>;
  /** When each part was created, by rendition and part sequence number (the `p<n>` of its URI). */
  const created = new Map<string, Map<number, number>>();
  /** Every URI any playlist listed, with what it named: a URI must never name two things. */
  const named = new Map<string, string>();
  const conflicts: string[] = [];

  const base = (): string => `${node.httpUrl}/live/${streamId}`;
  const mediaUrl = (name: string, query = ''): string => `${base()}/${name}/index.m3u8${query}`;

  const remember = (name: string, doc: MediaDoc): void => {
    const note = (uri: string, what: string): void => {
      const key = `${name}/${uri}`;
      const known = named.get(key);
      if (known === undefined) named.set(key, what);
      else if (known !== what) conflicts.push(`${key} named ${known} and then ${what}`);
    };
    for (const segment of doc.segments) {
      if (segment.uri !== undefined) note(segment.uri, `segment ${segment.msn}`);
      segment.parts.forEach((part, i) => note(part.uri, `part ${segment.msn}.${i}`));
    }
  };

  /** A media playlist over HTTP, asserted 200 and parsed. */
  const load = async (name: string, query = ''): Promise<{ doc: MediaDoc; res: Fetched }> => {
    const res = await get(mediaUrl(name, query));
    assert.equal(res.status, 200, `GET ${name}/index.m3u8${query}: ${res.status} ${res.text.slice(0, 200)}`);
    assert.equal(res.headers.get('content-type'), 'application/vnd.apple.mpegurl');
    const doc = parseMedia(res.text);
    remember(name, doc);
    return { doc, res };
  };

  /** `count` successive playlists, each after the first a blocking reload for the part after the last one listed. */
  const reloads = async (name: string, count: number): Promise<MediaDoc[]> => {
    const docs = [(await load(name)).doc];
    while (docs.length < count) {
      const { msn, part } = nextPart(docs.at(-1)!);
      docs.push((await load(name, `?_HLS_msn=${msn}&_HLS_part=${part}`)).doc);
    }
    return docs;
  };

  const createdAt = (name: string, uri: string): number => {
    const at = created.get(name)?.get(partSequence(uri));
    assert.ok(at !== undefined, `the creation of ${name} ${uri} was observed`);
    return at;
  };

  /** Resolves right after the next fragment of `name` (a keyframe one when `independent`) became a part. */
  const nextFragment = async (name: string, independent = false): Promise<void> => {
    await transcoder.next('fragment', 10_000, ({ rendition, fragment }) => rendition.name === name && (!independent || fragment.independent));
  };

  const partTargetMs = (doc: MediaDoc): number => Number(doc.partInf!['PART-TARGET']) * 1000;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360,240', ONAIR_RECONNECT_GRACE_SEC: '12' }));
    const createdStream = await api(node, 'POST', '/api/streams', { body: { title: 'Conformance' } });
    assert.equal(createdStream.status, 201);
    streamId = createdStream.body.id;
    streamEnded = new Promise((resolve) => node.on('ended', (event) => {
      if (event.streamId === streamId) resolve();
    }));
    publisher = publish(`${node.rtmpUrl}/${createdStream.body.streamKey}`, { width: 640, height: 360 });
    await waitFor('the stream to have segments in every rendition', () => node.packager(streamId)?.ready, 30_000);
    transcoder = node.transcoder(streamId)!;
    renditions = node.packager(streamId)!.renditionNames;
    assert.deepEqual(renditions, ['360p', '240p']);
    // Registered after the node's own listener: by the time this runs, the packager has made the fragment a part.
    transcoder.on('fragment', ({ rendition }) => {
      const playlist = node.packager(streamId)?.playlist(rendition.name);
      if (!playlist) return;
      const times = created.get(rendition.name) ?? new Map<number, number>();
      created.set(rendition.name, times);
      const sequence = playlist.nextPartSequence - 1;
      if (sequence >= 0 && !times.has(sequence)) times.set(sequence, Date.now());
    });
  });

  after(async () => {
    publisher?.stop();
    await close?.();
  });

  test('§6.2.1 EXT-X-VERSION is present; EXT-X-TARGETDURATION is present, the same in every rendition and never changes across 10 reloads; every EXTINF rounds to at most it', { timeout: 30_000 }, async () => {
    const docs = await reloads('360p', 10);
    const other = (await load('240p')).doc;
    const targetDuration = docs[0]!.targetDuration;
    assert.ok(Number.isInteger(targetDuration) && targetDuration! > 0, `EXT-X-TARGETDURATION ${targetDuration}`);
    assert.equal(other.targetDuration, targetDuration, '§6.2.4: every Media Playlist has the same Target Duration');
    for (const doc of [...docs, other]) {
      assert.ok(Number.isInteger(doc.version) && doc.version! >= 1, `EXT-X-VERSION ${doc.version}`);
      assert.equal(doc.targetDuration, targetDuration, 'EXT-X-TARGETDURATION never changes');
      for (const segment of doc.segments) {
        if (segment.duration === undefined) continue;
        assert.ok(Math.round(segment.duration) <= targetDuration!, `EXTINF ${segment.duration} of segment ${segment.msn} rounds above ${targetDuration}`);
      }
    }
  });

  test('§4.4.3.8/§6.2.4 EXT-X-SERVER-CONTROL: CAN-BLOCK-RELOAD=YES, PART-HOLD-BACK ≥ 3 × PART-TARGET, HOLD-BACK ≥ 3 × TD, CAN-SKIP-UNTIL ≥ 6 × TD, CAN-SKIP-DATERANGES=YES, identical across renditions', { timeout: 10_000 }, async () => {
    const docs = await Promise.all(renditions.map(async (name) => (await load(name)).doc));
    const first = docs[0]!;
    const sc = first.serverControl;
    assert.ok(sc, 'EXT-X-SERVER-CONTROL is present');
    const td = first.targetDuration!;
    const partTarget = Number(first.partInf!['PART-TARGET']);
    assert.equal(sc['CAN-BLOCK-RELOAD'], 'YES');
    // In ms: the attributes are decimal (0.600 is 3 × 0.200; in binary floating point 3 * 0.2 is 0.6000000000000001).
    assert.ok(Math.round(Number(sc['PART-HOLD-BACK']) * 1000) >= 3 * Math.round(partTarget * 1000), `PART-HOLD-BACK ${sc['PART-HOLD-BACK']} < 3 × ${partTarget}`);
    assert.ok(Number(sc['HOLD-BACK']) >= 3 * td, `HOLD-BACK ${sc['HOLD-BACK']} < 3 × ${td}`);
    assert.ok(Number(sc['CAN-SKIP-UNTIL']) >= 6 * td, `CAN-SKIP-UNTIL ${sc['CAN-SKIP-UNTIL']} < 6 × ${td}`);
    assert.equal(sc['CAN-SKIP-DATERANGES'], 'YES');
    const line = (doc: MediaDoc): string => doc.lines.find((l) => l.startsWith('#EXT-X-SERVER-CONTROL:'))!;
    for (const doc of docs.slice(1)) assert.equal(line(doc), line(first), '§6.2.4: the same attributes and values in every Media Playlist');
  });

  test('§4.4.3.7/§4.4.4.9 EXT-X-PART-INF gives PART-TARGET; every EXT-X-PART DURATION ≤ PART-TARGET; parts neither INDEPENDENT nor last of their segment are ≥ 85 % of it', { timeout: 30_000 }, async () => {
    const docs = [...await reloads('360p', 10), (await load('240p')).doc];
    let checked = 0;
    for (const doc of docs) {
      assert.ok(doc.partInf, 'EXT-X-PART-INF is present');
      const target = Number(doc.partInf['PART-TARGET']);
      assert.ok(target > 0, `PART-TARGET ${doc.partInf['PART-TARGET']}`);
      for (const segment of doc.segments) {
        segment.parts.forEach((part, i) => {
          assert.ok(part.duration > 0 && part.duration <= target, `part ${segment.msn}.${i} lasts ${part.duration} s, PART-TARGET ${target}`);
          if (!part.independent && i < segment.parts.length - 1) {
            assert.ok(part.duration >= 0.85 * target, `part ${segment.msn}.${i} lasts ${part.duration} s < 85 % of ${target}`);
          }
          checked += 1;
        });
      }
    }
    assert.ok(checked > 50, `${checked} parts checked`);
  });

  test('§4.4.4.5 EXT-X-PROGRAM-DATE-TIME is when the media reached the ingest: the newest part is never dated in the future', { timeout: 30_000 }, async (t) => {
    // Right after a blocking reload answers, its newest part has just been made from media the publisher sent a
    // moment ago: that media's date, ending with the part, lies in the past (by the ladder's encoding delay), never
    // ahead. Anchoring the dates when ffmpeg's first fragment came out put them ~1.9 s ahead for the whole event.
    const name = renditions[0]!;
    let doc = (await load(name)).doc;
    const aheadMs: number[] = [];
    while (aheadMs.length < 12) {
      const { msn, part } = nextPart(doc);
      doc = (await load(name, `?_HLS_msn=${msn}&_HLS_part=${part}`)).doc;
      const answeredAt = Date.now();
      const newest = doc.segments.at(-1)!;
      if (newest.programDateTime === undefined) continue;
      const endMs = newest.programDateTime + newest.parts.reduce((sum, p) => sum + p.duration * 1000, 0);
      aheadMs.push(endMs - answeredAt);
    }
    const worst = Math.max(...aheadMs);
    const shown = aheadMs.map((ms) => Math.round(ms)).join(', ');
    t.diagnostic(`the newest part's end, ms ahead of the blocking answer: ${shown}`);
    assert.ok(worst <= 100, `the newest part ends ${Math.round(worst)} ms in the future (ms ahead of the answer: ${shown})`);
    assert.ok(Math.min(...aheadMs) > -3_000, `dates are not far behind either (ms ahead of the answer: ${shown})`);
  });

  test('§4.4.4.5/§6.2.1/§6.2.4 EXT-X-MAP precedes the first segment; EXT-X-PROGRAM-DATE-TIME is on every segment, advances with EXTINF (± 50 ms) and dates a segment alike in every rendition', { timeout: 30_000 }, async () => {
    for (const name of renditions) {
      const docs = await reloads(name, 5);
      const dates = new Map<number, number>();
      for (const doc of docs) {
        assert.ok(doc.firstMapLine >= 0 && doc.firstMapLine < doc.firstMediaLine, 'EXT-X-MAP comes before the first EXTINF/EXT-X-PART');
        doc.segments.forEach((segment, i) => {
          assert.ok(segment.map, `segment ${segment.msn} has an EXT-X-MAP in effect`);
          assert.ok(segment.programDateTime !== undefined && Number.isFinite(segment.programDateTime), `segment ${segment.msn} has a PROGRAM-DATE-TIME`);
          // The mapping of a segment to a date never changes from one reload to the next (§6.2.1: never ambiguous).
          const known = dates.get(segment.msn);
          if (known !== undefined) assert.equal(segment.programDateTime, known, `segment ${segment.msn} keeps its date`);
          dates.set(segment.msn, segment.programDateTime);
          const previous = doc.segments[i - 1];
          if (!previous || segment.discontinuity) return;
          const step = segment.programDateTime - previous.programDateTime!;
          const duration = previous.duration! * 1000;
          assert.ok(Math.abs(step - duration) <= 50, `${name}: PDT advances ${step} ms from segment ${previous.msn}, whose EXTINF is ${duration} ms`);
        });
      }
    }
    // §6.2.4: every rendition maps dates to media the same way: a segment has the same date in each of them.
    await load(renditions[0]!, '?_HLS_msn=2'); // at least two complete segments to compare (an event's first is 1)
    const docs = await Promise.all(renditions.map(async (name) => (await load(name)).doc));
    const [first, ...others] = docs;
    for (const [i, other] of others.entries()) {
      let common = 0;
      for (const segment of other.segments) {
        const twin = first!.segments.find((s) => s.msn === segment.msn);
        if (!twin) continue;
        common += 1;
        const skew = segment.programDateTime! - twin.programDateTime!;
        assert.ok(Math.abs(skew) <= 50, `segment ${segment.msn}: ${renditions[i + 1]} is dated ${skew} ms from ${renditions[0]}`);
      }
      assert.ok(common >= 2, `${common} segments in common`);
    }
  });

  test('§6.2.2 the Media Sequence Number never goes back across reloads; segment URIs are unique, each segment starts with an INDEPENDENT part, and a segment is the byte-exact concatenation of its parts', { timeout: 30_000 }, async () => {
    const docs = await reloads('360p', 10);
    let previous = -1;
    for (const doc of docs) {
      assert.ok(doc.mediaSequence !== undefined, 'EXT-X-MEDIA-SEQUENCE is present');
      assert.ok(doc.mediaSequence >= previous, `EXT-X-MEDIA-SEQUENCE went from ${previous} to ${doc.mediaSequence}`);
      previous = doc.mediaSequence;
      const uris = doc.segments.filter((s) => s.uri !== undefined).map((s) => s.uri);
      assert.equal(new Set(uris).size, uris.length, 'segment URIs are unique within a playlist');
      for (const segment of doc.segments) {
        if (segment.parts.length > 0) assert.ok(segment.parts[0]!.independent, `the first part of segment ${segment.msn} is INDEPENDENT`);
      }
    }
    assert.deepEqual(conflicts, [], 'no URI ever names two segments or parts');

    const last = docs.at(-1)!;
    const withParts = last.segments.filter((s) => s.uri !== undefined && s.parts.length > 0);
    assert.ok(withParts.length >= 1, 'a complete segment still lists its parts');
    for (const segment of withParts) {
      const playlistUrl = mediaUrl('360p');
      const [whole, ...parts] = await Promise.all([segment.uri!, ...segment.parts.map((p) => p.uri)].map((uri) => get(new URL(uri, playlistUrl).href)));
      assert.equal(whole!.status, 200, `segment ${segment.msn}`);
      for (const part of parts) assert.equal(part.status, 200, part.url);
      assert.ok(whole!.body.equals(Buffer.concat(parts.map((p) => p.body))), `segment ${segment.msn} is its ${parts.length} parts, byte for byte`);
    }
  });

  test('§6.2.6 EXT-X-PRELOAD-HINT TYPE=PART: a GET of the hinted part blocks and returns 200 within one part target of the part\'s creation', { timeout: 20_000 }, async () => {
    let blocked = 0;
    for (let attempt = 0; attempt < 6 && blocked < 3; attempt++) {
      await nextFragment('360p');
      const { doc } = await load('360p');
      const hints = doc.preloadHints.filter((h) => h['TYPE'] === 'PART');
      assert.equal(hints.length, 1, 'one EXT-X-PRELOAD-HINT of TYPE=PART');
      const uri = hints[0]!['URI']!;
      assert.ok(!doc.segments.some((s) => s.parts.some((p) => p.uri === uri)), 'the hinted part is not listed yet');
      const res = await get(new URL(uri, mediaUrl('360p')).href);
      assert.equal(res.status, 200, res.text.slice(0, 200));
      const at = createdAt('360p', uri);
      // Made right after a part was added, the request normally precedes the hinted part (unless ffmpeg burst).
      if (at >= res.sentAt) blocked += 1;
      const lateMs = res.receivedAt - Math.max(at, res.sentAt);
      assert.ok(lateMs <= partTargetMs(doc) + MARGIN_MS, `the hinted part came ${lateMs} ms after its creation`);
      // §6.2.6: the hinted resource is what the playlist then lists as that part, with the same bytes.
      const { doc: later } = await load('360p');
      assert.ok(later.segments.some((s) => s.parts.some((p) => p.uri === uri)), 'the playlist now lists the hinted part');
      const again = await get(new URL(uri, mediaUrl('360p')).href);
      assert.ok(again.body.equals(res.body), 'the hinted part and the listed part are the same bytes');
    }
    assert.equal(blocked, 3, 'three requests for a hinted part were made before it existed and waited for it');
  });

  test('§6.2.6 a resource that is neither listed nor hinted is 404 at once', { timeout: 10_000 }, async () => {
    const { doc } = await load('360p');
    const hinted = partSequence(doc.preloadHints[0]!['URI']!);
    const prefix = /^([a-z0-9]+)-p\d+\.m4s/.exec(doc.preloadHints[0]!['URI']!)![1];
    for (const file of [`${prefix}-p${hinted + 50}.m4s`, `${prefix}-s${doc.segments.at(-1)!.msn + 50}.m4s`, `${prefix}-init99.mp4`, `zzzzzzzz-p${hinted}.m4s`]) {
      const res = await get(`${base()}/360p/${file}`);
      assert.equal(res.status, 404, file);
      assert.ok(res.receivedAt - res.sentAt < 1000, `${file} answered in ${res.receivedAt - res.sentAt} ms`);
    }
  });

  test('§6.2.5.3 EXT-X-RENDITION-REPORT for every other rendition, with a LAST-MSN/LAST-PART that rendition has (or within one part of it)', { timeout: 10_000 }, async () => {
    await nextFragment('360p');
    const docs = await Promise.all(renditions.map(async (name) => (await load(name)).doc));
    renditions.forEach((name, i) => {
      const doc = docs[i]!;
      const reports = doc.renditionReports;
      assert.equal(reports.length, renditions.length - 1, `${name}: one report per other rendition`);
      renditions.forEach((otherName, j) => {
        if (j === i) return;
        const report = reports.find((r) => new URL(r['URI']!, mediaUrl(name)).href === mediaUrl(otherName));
        assert.ok(report, `${name} reports ${otherName}`);
        const reported = { msn: Number(report['LAST-MSN']), part: Number(report['LAST-PART']) };
        assert.ok(Number.isInteger(reported.msn) && Number.isInteger(reported.part), JSON.stringify(report));
        const other = docs[j]!;
        // The other rendition's parts in order, and the one it will add next: the report may be one behind or ahead.
        const listed = other.segments.flatMap((s) => s.parts.map((_, k) => ({ msn: s.msn, part: k })));
        const candidates = [listed.at(-2), listed.at(-1), nextPart(other), { msn: lastPart(other).msn + 1, part: 0 }];
        assert.ok(candidates.some((c) => c && c.msn === reported.msn && c.part === reported.part),
          `${name} reports ${otherName} at ${reported.msn}.${reported.part}; ${otherName} lists up to ${JSON.stringify(lastPart(other))}`);
      });
    });
  });

  test('§6.2.5.2 a blocking request for the next part returns a playlist containing it, within one part target of the part\'s creation', { timeout: 30_000 }, async () => {
    let doc = (await load('360p')).doc;
    let blocked = 0;
    for (let i = 0; i < 8; i++) {
      const { msn, part } = nextPart(doc);
      const { doc: next, res } = await load('360p', `?_HLS_msn=${msn}&_HLS_part=${part}`);
      const found = findPart(next, msn, part);
      assert.ok(found, `the playlist answering ${msn}.${part} contains it`);
      const at = createdAt('360p', found.uri);
      if (at >= res.sentAt) blocked += 1;
      const lateMs = res.receivedAt - Math.max(at, res.sentAt);
      assert.ok(lateMs <= partTargetMs(next) + MARGIN_MS, `part ${msn}.${part} answered ${lateMs} ms after its creation`);
      doc = next;
    }
    assert.ok(blocked >= 3, `${blocked} of 8 requests waited for their part`);
  });

  test('§6.2.5.2 a part index beyond the last part of a segment is treated as part 0 of the next segment', { timeout: 20_000 }, async () => {
    await nextFragment('360p', true);
    const { doc } = await load('360p');
    const open = doc.segments.at(-1)!;
    assert.equal(open.uri, undefined, 'a segment has just opened');
    // More parts than a segment has (segment target / part target), yet within the Advance Part Limit.
    const beyond = 12;
    const { doc: answer, res } = await load('360p', `?_HLS_msn=${open.msn}&_HLS_part=${beyond}`);
    const segment = answer.segments.find((s) => s.msn === open.msn)!;
    assert.ok(segment.uri !== undefined, `segment ${open.msn} is complete in the answer`);
    assert.ok(segment.parts.length <= beyond, `segment ${open.msn} has ${segment.parts.length} parts: ${beyond} is beyond its last`);
    const following = answer.segments.find((s) => s.msn === open.msn + 1);
    assert.ok(following && following.parts.length >= 1, `part 0 of segment ${open.msn + 1} is in the answer`);
    const at = createdAt('360p', following.parts[0]!.uri);
    assert.ok(at >= res.sentAt, 'the request waited for part 0 of the next segment');
    assert.ok(res.receivedAt - at <= partTargetMs(answer) + MARGIN_MS, `answered ${res.receivedAt - at} ms after part 0 of the next segment`);

    // Beyond the last part of a segment already complete: answered at once, since the next segment has its part 0.
    const { doc: done, res: immediate } = await load('360p', `?_HLS_msn=${open.msn}&_HLS_part=${beyond}`);
    assert.ok(immediate.receivedAt - immediate.sentAt < 500, `answered in ${immediate.receivedAt - immediate.sentAt} ms`);
    assert.ok(findPart(done, open.msn, beyond));
  });

  test('§6.2.5.2 _HLS_msn alone waits until the playlist contains that complete Media Segment', { timeout: 20_000 }, async () => {
    await nextFragment('360p', true);
    const { doc } = await load('360p');
    const open = doc.segments.at(-1)!;
    assert.equal(open.uri, undefined, 'a segment has just opened');
    const { doc: answer, res } = await load('360p', `?_HLS_msn=${open.msn}`);
    const segment = answer.segments.find((s) => s.msn === open.msn);
    assert.ok(segment?.uri !== undefined, `segment ${open.msn} is listed with its EXTINF and URI`);
    // The segment completes when the next one starts: the answer waits for that, and comes promptly after it.
    const following = answer.segments.find((s) => s.msn === open.msn + 1);
    assert.ok(following && following.parts.length >= 1);
    const at = createdAt('360p', following.parts[0]!.uri);
    assert.ok(at >= res.sentAt, 'the request waited for the segment to complete');
    assert.ok(res.receivedAt - at <= partTargetMs(answer) + MARGIN_MS, `answered ${res.receivedAt - at} ms after segment ${open.msn} completed`);
  });

  test('§6.2.5.2 _HLS_part without _HLS_msn is 400 Bad Request', { timeout: 10_000 }, async () => {
    for (const query of ['?_HLS_part=0', '?_HLS_part=3', '?_HLS_part=1&_HLS_skip=YES']) {
      const res = await get(mediaUrl('360p', query));
      assert.equal(res.status, 400, query);
      assert.equal(errorCode(res), 'ONAIR_ERR_HLS_DIRECTIVE', query);
    }
  });

  test('§6.2.5.2 _HLS_msn more than two past the last Media Sequence Number is 400 at once (two past blocks and is answered)', { timeout: 20_000 }, async () => {
    await nextFragment('360p', true);
    const { doc } = await load('360p');
    const lastMsn = doc.segments.at(-1)!.msn;
    for (const msn of [lastMsn + 3, lastMsn + 100]) {
      const res = await get(mediaUrl('360p', `?_HLS_msn=${msn}`));
      assert.equal(res.status, 400, `_HLS_msn=${msn} with the last at ${lastMsn}`);
      assert.equal(errorCode(res), 'ONAIR_ERR_HLS_DIRECTIVE');
      assert.ok(res.receivedAt - res.sentAt < 500, `answered in ${res.receivedAt - res.sentAt} ms`);
    }
    const { doc: answer } = await load('360p', `?_HLS_msn=${lastMsn + 2}&_HLS_part=0`);
    assert.ok(findPart(answer, lastMsn + 2, 0), `part 0 of segment ${lastMsn + 2} is in the answer`);
  });

  test('§6.2.5.2 a part beyond the Advance Part Limit is 400 at once (within it, the request blocks and is answered)', { timeout: 20_000 }, async () => {
    await nextFragment('360p', true);
    const { doc } = await load('360p');
    const partTarget = Number(doc.partInf!['PART-TARGET']);
    const limit = partTarget < 1 ? Math.floor(3 / partTarget) : 3;
    const last = lastPart(doc);
    // The next segment has no part yet: its part `limit` is limit + 1 past the last part of the playlist.
    for (const query of [`?_HLS_msn=${last.msn + 1}&_HLS_part=${limit}`, `?_HLS_msn=${last.msn + 1}&_HLS_part=${limit + 40}`, `?_HLS_msn=${last.msn}&_HLS_part=${last.part + 100}`]) {
      const res = await get(mediaUrl('360p', query));
      assert.equal(res.status, 400, `${query} with the last part at ${last.msn}.${last.part}, limit ${limit}`);
      assert.equal(errorCode(res), 'ONAIR_ERR_HLS_DIRECTIVE');
      assert.ok(res.receivedAt - res.sentAt < 500);
    }
    const within = `?_HLS_msn=${last.msn}&_HLS_part=${last.part + limit}`;
    const { doc: answer } = await load('360p', within);
    assert.ok(findPart(answer, last.msn, last.part + limit), `${within} is answered with that part (or part 0 of the next segment)`);
  });

  test('§6.2.5 malformed delivery directives (-1, abc, 1e3, very long, empty) are 400 ONAIR_ERR_HLS_DIRECTIVE', { timeout: 10_000 }, async () => {
    const { doc } = await load('360p');
    const msn = doc.segments.at(-1)!.msn;
    const bad = ['-1', 'abc', '1e3', '1.5', '0x10', ' 1', '', '9'.repeat(40)];
    const queries = [
      ...bad.map((v) => `?_HLS_msn=${encodeURIComponent(v)}`),
      ...bad.map((v) => `?_HLS_msn=${msn}&_HLS_part=${encodeURIComponent(v)}`),
      `?_HLS_msn=${msn}&_HLS_msn=${msn}`,
    ];
    for (const query of queries) {
      const res = await get(mediaUrl('360p', query));
      assert.equal(res.status, 400, query);
      assert.equal(errorCode(res), 'ONAIR_ERR_HLS_DIRECTIVE', query);
      assert.ok(maxAge(res.headers.get('cache-control'))! <= 1, `${query}: ${res.headers.get('cache-control')}`);
    }
  });

  test('§6.2.4/§4.4.6.2 the multivariant playlist: EXT-X-STREAM-INF with BANDWIDTH ≥ AVERAGE-BANDWIDTH > 0, CODECS avc1+mp4a.40.2, RESOLUTION, FRAME-RATE; EXT-X-INDEPENDENT-SEGMENTS', { timeout: 10_000 }, async () => {
    const res = await get(`${base()}/index.m3u8`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/vnd.apple.mpegurl');
    const master = parseMultivariant(res.text);
    assert.ok(master.independentSegments, 'EXT-X-INDEPENDENT-SEGMENTS');
    assert.ok(master.version !== undefined && master.version >= 1);
    assert.equal(master.variants.length, renditions.length);
    const sizes: string[] = [];
    for (const { attrs, uri } of master.variants) {
      const bandwidth = Number(attrs['BANDWIDTH']);
      const average = Number(attrs['AVERAGE-BANDWIDTH']);
      assert.ok(Number.isInteger(average) && average > 0, `AVERAGE-BANDWIDTH ${attrs['AVERAGE-BANDWIDTH']}`);
      assert.ok(Number.isInteger(bandwidth) && bandwidth >= average, `BANDWIDTH ${bandwidth} ≥ AVERAGE-BANDWIDTH ${average}`);
      assert.match(attrs['CODECS'] ?? '', /^avc1\.[0-9a-fA-F]{6},mp4a\.40\.2$/);
      assert.match(attrs['RESOLUTION'] ?? '', /^\d+x\d+$/);
      sizes.push(attrs['RESOLUTION']!);
      const fps = Number(attrs['FRAME-RATE']);
      assert.ok(fps > 20 && fps <= 60, `FRAME-RATE ${attrs['FRAME-RATE']}`);
      const media = await get(new URL(uri, res.url).href);
      assert.equal(media.status, 200, `${uri} is a media playlist`);
      parseMedia(media.text);
    }
    assert.ok(sizes.includes('640x360'), sizes.join(' '));
  });

  test('§6.2.4 a classic HLS client (ffprobe) reads the multivariant playlist and its renditions', { timeout: 45_000 }, async () => {
    const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type,width,height', '-of', 'json', `${base()}/index.m3u8`], { timeout: 40_000 });
    const streams = (JSON.parse(stdout) as { streams: { codec_type: string; width?: number; height?: number }[] }).streams;
    const video = streams.filter((s) => s.codec_type === 'video').map((s) => `${s.width}x${s.height}`);
    assert.ok(video.includes('640x360'), `video streams ${video.join(' ')}`);
    assert.ok(video.some((size) => size.endsWith('x240')), `video streams ${video.join(' ')}`);
    assert.ok(streams.some((s) => s.codec_type === 'audio'), 'an audio stream');
  });

  test('HTTP: playlists are application/vnd.apple.mpegurl, init segments video/mp4, media immutable; blocking answers have a short max-age and plain reloads max-age ≤ 1', { timeout: 10_000 }, async () => {
    const { doc, res } = await load('360p');
    assert.ok(maxAge(res.headers.get('cache-control'))! <= 1, `plain reload: ${res.headers.get('cache-control')}`);
    const init = await get(new URL(doc.segments.at(-1)!.map!, mediaUrl('360p')).href);
    assert.equal(init.status, 200);
    assert.equal(init.headers.get('content-type'), 'video/mp4');
    assert.match(init.headers.get('cache-control') ?? '', /immutable/);
    const complete = doc.segments.filter((s) => s.uri !== undefined).at(-1)!;
    for (const uri of [complete.uri!, doc.segments.at(-1)!.parts[0]!.uri]) {
      const media = await get(new URL(uri, mediaUrl('360p')).href);
      assert.equal(media.status, 200, uri);
      assert.match(media.headers.get('content-type') ?? '', /^video\//, uri);
      assert.match(media.headers.get('cache-control') ?? '', /immutable/, uri);
      assert.ok(maxAge(media.headers.get('cache-control'))! >= 3600, uri);
    }
    const { msn, part } = nextPart(doc);
    const { res: blocking } = await load('360p', `?_HLS_msn=${msn}&_HLS_part=${part}`);
    const age = maxAge(blocking.headers.get('cache-control'));
    assert.ok(age !== undefined && age >= 1 && age <= 3 * doc.targetDuration!, `blocking answer: ${blocking.headers.get('cache-control')}`);
    const master = await get(`${base()}/index.m3u8`);
    assert.equal(master.headers.get('content-type'), 'application/vnd.apple.mpegurl');
  });

  test('HTTP: 404s carry max-age ≤ 1', { timeout: 10_000 }, async () => {
    const { doc } = await load('360p');
    const prefix = /^([a-z0-9]+)-/.exec(doc.segments.at(-1)!.parts[0]!.uri)![1];
    for (const url of [`${node.httpUrl}/live/zzzzzzzzzzzz/index.m3u8`, `${base()}/1080p/index.m3u8`, `${base()}/360p/${prefix}-s999999.m4s`]) {
      const res = await get(url);
      assert.equal(res.status, 404, url);
      const age = maxAge(res.headers.get('cache-control'));
      assert.ok(age !== undefined && age <= 1, `${url}: ${res.headers.get('cache-control')}`);
    }
  });

  test('HTTP: Access-Control-Allow-Origin: * on playlists, media and errors; an OPTIONS preflight is answered 204', { timeout: 10_000 }, async () => {
    const { doc, res } = await load('360p');
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    const master = await get(`${base()}/index.m3u8`, { headers: { origin: 'https://player.example' } });
    assert.equal(master.headers.get('access-control-allow-origin'), '*');
    const part = await get(new URL(doc.segments.at(-1)!.parts[0]!.uri, mediaUrl('360p')).href, { headers: { origin: 'https://player.example' } });
    assert.equal(part.headers.get('access-control-allow-origin'), '*');
    const missing = await get(`${node.httpUrl}/live/zzzzzzzzzzzz/index.m3u8`);
    assert.equal(missing.headers.get('access-control-allow-origin'), '*');
    const preflight = await get(mediaUrl('360p', '?_HLS_msn=1&_HLS_part=0'), {
      method: 'OPTIONS',
      headers: { origin: 'https://player.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'range' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
    assert.match(preflight.headers.get('access-control-allow-methods') ?? '', /GET/);
    assert.ok(preflight.headers.get('access-control-allow-headers'), 'allowed headers are listed');
  });

  test('§6.2.1 Accept-Encoding: gzip gives a gzip playlist that gunzips to the same text', { timeout: 10_000 }, async () => {
    const { doc } = await load('360p');
    const { msn, part } = nextPart(doc);
    const path = `/live/${streamId}/360p/index.m3u8?_HLS_msn=${msn}&_HLS_part=${part}`;
    // Both wait for the same part, so both are rendered from the same state of the playlist.
    const [zipped, plain] = await Promise.all([rawGet(node.httpUrl, path, { 'accept-encoding': 'gzip' }), rawGet(node.httpUrl, path)]);
    assert.equal(zipped.status, 200);
    assert.equal(plain.status, 200);
    assert.equal(zipped.headers['content-encoding'], 'gzip');
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.match(String(zipped.headers['vary']), /accept-encoding/i);
    assert.equal(gunzipSync(zipped.body).toString('utf8'), plain.body.toString('utf8'));
    assert.ok(zipped.body.length < plain.body.length, `gzip ${zipped.body.length} B, plain ${plain.body.length} B`);
    const master = await rawGet(node.httpUrl, `/live/${streamId}/index.m3u8`, { 'accept-encoding': 'gzip' });
    const text = master.headers['content-encoding'] === 'gzip' ? gunzipSync(master.body).toString('utf8') : master.body.toString('utf8');
    assert.match(text, /^#EXTM3U\n/);
  });

  test('§6.2.5.1 _HLS_skip=YES and v2: EXT-X-SKIP replaces exactly the segments older than CAN-SKIP-UNTIL; the media sequence and every other tag stay', { timeout: 60_000 }, async () => {
    // Delta updates need more playlist than CAN-SKIP-UNTIL (plus a segment) to skip anything.
    await waitFor('a playlist longer than CAN-SKIP-UNTIL plus a target duration', async () => {
      const { doc } = await load('360p');
      const total = doc.segments.reduce((sum, s) => sum + (s.duration ?? s.parts.reduce((p, part) => p + part.duration, 0)), 0);
      return total > Number(doc.serverControl!['CAN-SKIP-UNTIL']) + 2 * doc.targetDuration!;
    }, 40_000, 500);
    const { msn, part } = nextPart((await load('360p')).doc);
    const query = `?_HLS_msn=${msn}&_HLS_part=${part}`;
    // All three wait for the same part: one state of the playlist, three renderings.
    const [full, yes, v2] = (await Promise.all([load('360p', query), load('360p', `${query}&_HLS_skip=YES`), load('360p', `${query}&_HLS_skip=v2`)])).map((r) => r.doc);
    const canSkipUntil = Number(full!.serverControl!['CAN-SKIP-UNTIL']);
    const durationOf = (s: ParsedSegment): number => s.duration ?? s.parts.reduce((sum, p) => sum + p.duration, 0);
    // Distance from each segment's start to the end of the last (Parent) segment.
    const fromEnd: number[] = [];
    let acc = 0;
    for (const segment of [...full!.segments].reverse()) {
      acc += durationOf(segment);
      fromEnd.unshift(acc);
    }
    for (const delta of [yes!, v2!]) {
      assert.ok(delta.skip, 'EXT-X-SKIP is present');
      assert.equal(full!.skip, undefined, 'no EXT-X-SKIP without _HLS_skip');
      const skipped = Number(delta.skip['SKIPPED-SEGMENTS']);
      assert.ok(Number.isInteger(skipped) && skipped >= 1, `SKIPPED-SEGMENTS=${delta.skip['SKIPPED-SEGMENTS']}`);
      assert.equal(delta.mediaSequence, full!.mediaSequence, 'the same EXT-X-MEDIA-SEQUENCE');
      assert.equal(delta.discontinuitySequence, full!.discontinuitySequence);
      fromEnd.forEach((distance, i) => {
        if (i < skipped) assert.ok(distance > canSkipUntil, `skipped segment ${full!.segments[i]!.msn} starts ${distance.toFixed(3)} s from the end`);
        else assert.ok(distance <= canSkipUntil + 0.001, `kept segment ${full!.segments[i]!.msn} starts ${distance.toFixed(3)} s from the end, beyond CAN-SKIP-UNTIL ${canSkipUntil}`);
      });
      // §6.2.5.1: every tag that was not skipped stays.
      assert.deepEqual(delta.segments.map((s) => ({ ...s })), full!.segments.slice(skipped).map((s) => ({ ...s })));
      for (const tag of ['EXT-X-VERSION', 'EXT-X-TARGETDURATION', 'EXT-X-SERVER-CONTROL', 'EXT-X-PART-INF', 'EXT-X-MEDIA-SEQUENCE', 'EXT-X-DISCONTINUITY-SEQUENCE', 'EXT-X-INDEPENDENT-SEGMENTS', 'EXT-X-PRELOAD-HINT', 'EXT-X-RENDITION-REPORT']) {
        const pick = (doc: MediaDoc): string[] => doc.lines.filter((l) => l === `#${tag}` || l.startsWith(`#${tag}:`));
        assert.deepEqual(pick(delta), pick(full!), tag);
      }
      assert.ok(delta.version! >= 9, 'EXT-X-SKIP needs EXT-X-VERSION 9');
    }
    for (const bad of ['NO', 'yes', 'v3', '', 'YES,v2']) {
      const res = await get(mediaUrl('360p', `?_HLS_skip=${encodeURIComponent(bad)}`));
      assert.equal(res.status, 400, `_HLS_skip=${bad}`);
      assert.equal(errorCode(res), 'ONAIR_ERR_HLS_DIRECTIVE');
    }
  });

  test('bad input is refused and the node keeps serving: unknown stream 404, malformed id 400, path traversal 4xx', { timeout: 20_000 }, async () => {
    const unknown = await get(`${node.httpUrl}/live/zzzzzzzzzzzz/index.m3u8`);
    assert.equal(unknown.status, 404);
    assert.equal(errorCode(unknown), 'ONAIR_ERR_STREAM_NOT_LIVE');
    assert.equal((await get(`${node.httpUrl}/live/zzzzzzzzzzzz/360p/index.m3u8`)).status, 404);
    for (const id of ['ABCDEFGHIJKL', 'short', 'a'.repeat(13), 'abc_def-ghij']) {
      const res = await get(`${node.httpUrl}/live/${id}/index.m3u8`);
      assert.equal(res.status, 400, id);
      assert.equal(errorCode(res), 'ONAIR_ERR_VALIDATION', id);
    }
    const hostile = [
      '/live/..%2F..%2Fetc%2Fpasswd/index.m3u8',
      `/live/${streamId}/..%2F..%2Fx/index.m3u8`,
      `/live/${streamId}/360p/..%2Fpackage.json`,
      `/live/${streamId}/360p/..%2F..%2F..%2F..%2Fpackage.json`,
      `/live/${streamId}/360p/%2e%2e%2f%2e%2e%2fpackage.json`,
      `/live/${streamId}/360p/x%00.m4s`,
      `/live/${streamId}/360p/${'a'.repeat(300)}.m4s`,
      `/live/${streamId}/%2e%2e/index.m3u8`,
    ];
    for (const path of hostile) {
      const res = await get(`${node.httpUrl}${path}`);
      assert.ok(res.status >= 400 && res.status < 500, `${path}: ${res.status}`);
      assert.ok(!res.text.includes('"name"'), `${path} did not leak a file`);
    }
    // Dot segments as sent, without a client normalizing them away.
    for (const path of [`/live/${streamId}/360p/../../../../package.json`, `/live/${streamId}/../../package.json`, '/live/../package.json']) {
      const res = await rawGet(node.httpUrl, path);
      assert.ok(res.status >= 400 && res.status < 500, `${path}: ${res.status}`);
      assert.ok(!res.body.toString('utf8').includes('"devDependencies"'), `${path} did not leak package.json`);
    }
    assert.equal((await get(`${node.httpUrl}/healthz`)).status, 200);
    const { doc } = await load('360p');
    assert.ok(!doc.endList && doc.segments.length > 0, 'the live playlist is still served');
  });

  test('§6.2.1/§6.2.2 an ffmpeg crash: EXT-X-DISCONTINUITY then a new EXT-X-MAP with a different URI; DISCONTINUITY-SEQUENCE never goes back; media URIs never repeat', { timeout: 60_000 }, async () => {
    const before = await Promise.all(renditions.map(async (name) => (await load(name)).doc));
    const urisBefore = new Set(named.keys());
    const mapsBefore = new Set(before.flatMap((doc) => doc.segments.map((s) => s.map)));
    const discontinuitySequences = new Map(renditions.map((name, i) => [name, [before[i]!.discontinuitySequence]]));
    const restarted = transcoder.next('discontinuity', 15_000);
    process.kill(transcoder.pid!, 'SIGKILL');
    const [{ reason }] = await restarted;
    assert.equal(reason, 'restart');

    for (const [i, name] of renditions.entries()) {
      let doc = before[i]!;
      const hasBreak = (d: MediaDoc): boolean => d.segments.some((s) => s.discontinuity && !mapsBefore.has(s.map) && s.parts.length >= 2);
      const deadline = Date.now() + 30_000;
      while (!hasBreak(doc)) {
        assert.ok(Date.now() < deadline, `${name}: no discontinuity within 30 s`);
        const { msn, part } = nextPart(doc);
        const res = await get(mediaUrl(name, `?_HLS_msn=${msn}&_HLS_part=${part}`));
        if (res.status === 503) continue; // the restart took longer than a blocking request may wait: ask again
        assert.equal(res.status, 200, res.text.slice(0, 200));
        doc = parseMedia(res.text);
        remember(name, doc);
        discontinuitySequences.get(name)!.push(doc.discontinuitySequence);
      }
      // A few more reloads past the break.
      for (let k = 0; k < 5; k++) {
        const { msn, part } = nextPart(doc);
        doc = (await load(name, `?_HLS_msn=${msn}&_HLS_part=${part}`)).doc;
        discontinuitySequences.get(name)!.push(doc.discontinuitySequence);
      }

      const at = doc.lines.findIndex((line) => line === '#EXT-X-DISCONTINUITY');
      assert.ok(at > 0, `${name}: EXT-X-DISCONTINUITY is listed`);
      const following = doc.lines.slice(at + 1);
      const mapAt = following.findIndex((line) => line.startsWith('#EXT-X-MAP:'));
      const mediaAt = following.findIndex((line) => line.startsWith('#EXT-X-PART:') || line.startsWith('#EXTINF:'));
      assert.ok(mapAt >= 0 && mapAt < mediaAt, `${name}: a new EXT-X-MAP follows EXT-X-DISCONTINUITY before its first media`);
      const newMap = parseAttrs(following[mapAt]!.slice('#EXT-X-MAP:'.length))['URI']!;
      assert.ok(!mapsBefore.has(newMap), `${name}: the new EXT-X-MAP ${newMap} differs from the old ones`);
      const init = await get(new URL(newMap, mediaUrl(name)).href);
      assert.equal(init.status, 200);
      assert.equal(init.headers.get('content-type'), 'video/mp4');

      const breakIndex = doc.segments.findIndex((s) => s.discontinuity && s.map === newMap);
      const first = doc.segments[breakIndex]!;
      const previous = doc.segments[breakIndex - 1];
      assert.ok(first.programDateTime !== undefined, '§6.2.1: the segment after a discontinuity has a PROGRAM-DATE-TIME');
      if (previous) {
        // Only a sub-second overlap of dates is allowed (§6.2.1).
        const previousEnd = previous.programDateTime! + previous.duration! * 1000;
        assert.ok(first.programDateTime > previousEnd - 1000, `${name}: PDT after the break ${first.programDateTime - previousEnd} ms from the end of the previous segment`);
        assert.equal(first.msn, previous.msn + 1, 'Media Sequence Numbers continue across the break');
      }
      assert.ok(first.parts[0]!.independent, 'the first part after the break is INDEPENDENT');
      const sequences = discontinuitySequences.get(name)!;
      for (let k = 1; k < sequences.length; k++) assert.ok(sequences[k]! >= sequences[k - 1]!, `${name}: DISCONTINUITY-SEQUENCE went ${sequences.join(' → ')}`);
      for (const segment of doc.segments.slice(breakIndex)) {
        for (const uri of [segment.uri, ...segment.parts.map((p) => p.uri)]) {
          if (uri !== undefined) assert.ok(!urisBefore.has(`${name}/${uri}`), `${name}: ${uri} after the break was listed before it`);
        }
      }
    }
    assert.deepEqual(conflicts, [], 'no URI ever names two segments or parts');
  });

  test('§6.2.5.2 a server that cannot provide the requested part within three target durations answers 503 — after ≈ 3 × TD, not before', { timeout: 40_000 }, async () => {
    const exited = transcoder.next('exit', 15_000);
    publisher.stop();
    await publisher.exited;
    // Once the transcoder has flushed and exited, no part can arrive until the publisher returns.
    await exited;
    const { doc } = await load('360p');
    const { msn, part } = nextPart(doc);
    const limitMs = 3 * doc.targetDuration! * 1000;
    const hint = new URL(doc.preloadHints[0]!['URI']!, mediaUrl('360p')).href;
    const [playlist, hinted] = await Promise.all([get(mediaUrl('360p', `?_HLS_msn=${msn}&_HLS_part=${part}`)), get(hint)]);
    for (const [what, res] of [['blocking playlist reload', playlist], ['hinted part', hinted]] as const) {
      assert.equal(res.status, 503, `${what}: ${res.status} ${res.text.slice(0, 200)}`);
      assert.equal(errorCode(res), 'ONAIR_ERR_HLS_TIMEOUT');
      const waitedMs = res.receivedAt - res.sentAt;
      assert.ok(waitedMs >= limitMs - 50, `${what}: 503 after ${waitedMs} ms, before 3 × TD = ${limitMs} ms`);
      assert.ok(waitedMs <= limitMs + 1500, `${what}: 503 after ${waitedMs} ms, well past 3 × TD = ${limitMs} ms`);
      assert.ok(maxAge(res.headers.get('cache-control'))! <= 1, `${what}: ${res.headers.get('cache-control')}`);
    }
  });

  test('§6.2.1/§6.2.5 when the stream ends the playlist gets EXT-X-ENDLIST and delivery directives are ignored', { timeout: 40_000 }, async () => {
    await within('the stream to end after the reconnect grace', streamEnded, 30_000);
    for (const name of renditions) {
      const { doc } = await load(name);
      assert.ok(doc.endList, `${name}: EXT-X-ENDLIST`);
      assert.equal(doc.lines.filter((l) => l !== '').at(-1), '#EXT-X-ENDLIST', 'EXT-X-ENDLIST is the last tag');
      assert.equal(doc.preloadHints.length, 0, 'nothing is hinted in a finished playlist');
      assert.ok(doc.segments.every((s) => s.uri !== undefined), 'every segment is complete');
      const last = doc.segments.at(-1)!.msn;
      for (const query of [`?_HLS_msn=${last + 100}`, `?_HLS_msn=${last + 1}&_HLS_part=0`, `?_HLS_msn=${last}&_HLS_part=99`]) {
        const { doc: answer, res } = await load(name, query);
        assert.ok(res.receivedAt - res.sentAt < 500, `${query} answered in ${res.receivedAt - res.sentAt} ms`);
        assert.equal(answer.text, doc.text, `${query} gets the final playlist`);
      }
      // §6.2.5.1: _HLS_skip is ignored too once the playlist has EXT-X-ENDLIST.
      const { doc: unskipped } = await load(name, '?_HLS_skip=YES');
      assert.equal(unskipped.skip, undefined);
      assert.equal(unskipped.text, doc.text);
      const finalSegment = await get(new URL(doc.segments.at(-1)!.uri!, mediaUrl(name)).href);
      assert.equal(finalSegment.status, 200, 'the final segment is served');
    }
    const master = await get(`${base()}/index.m3u8`);
    assert.equal(master.status, 200, 'the multivariant playlist of a finished stream is still served');
  });
});
