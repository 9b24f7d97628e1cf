import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { signPlaybackToken, verifyPlaybackToken } from '../../lib/signing.js';
import type { OnAirNode } from '../../server/node.js';
import { api, publish, startTestNode, waitFor, within } from '../support/harness.js';

const run = promisify(execFile);

const SIGNING_KEY = 'access-test-signing-key-0123456789';

async function get(url: string): Promise<{ status: number; text: string; headers: Headers }> {
  const response = await fetch(url);
  return { status: response.status, text: await response.text(), headers: response.headers };
}

function errorCode(text: string): string | undefined {
  try {
    return JSON.parse(text).error?.code;
  } catch {
    return undefined;
  }
}

/** Every URI a playlist names: URI lines and the URI="…" attributes of its tags. */
function urisIn(playlist: string): string[] {
  const uris: string[] = [];
  for (const line of playlist.split('\n')) {
    if (line === '') continue;
    if (!line.startsWith('#')) uris.push(line);
    else for (const match of line.matchAll(/URI="([^"]*)"/g)) uris.push(match[1]!);
  }
  return uris;
}

function withoutQuery(url: string): string {
  const parsed = new URL(url);
  parsed.search = '';
  return parsed.href;
}

function withToken(url: string, token: string): string {
  const parsed = new URL(url);
  parsed.search = `?token=${encodeURIComponent(token)}`;
  return parsed.href;
}

describe('signed playback: with ONAIR_PLAYBACK_SIGNING_KEY every /live URL needs a valid token', { timeout: 120_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  let hlsUrl: string;
  let token: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360,240', ONAIR_PLAYBACK_SIGNING_KEY: SIGNING_KEY }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Signed' } });
    assert.equal(created.status, 201);
    streamId = created.body.id;
    hlsUrl = created.body.playback.hls;
    token = new URL(hlsUrl).searchParams.get('token') ?? '';
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360 });
    // A complete segment in every rendition, so that the playlists list segment URIs as well as parts.
    await waitFor('a complete segment in every rendition', () => {
      const packager = node.packager(streamId);
      return packager?.ready && packager.renditionNames.every((name) => packager.playlist(name)!.segments.some((s) => s.complete));
    }, 30_000);
  });

  after(async () => {
    publisher?.stop();
    await close?.();
  });

  /** The multivariant, one media playlist and its media, all through the URIs the playlists list. */
  const signedUrls = async (): Promise<{ multivariant: string; media: string; init: string; part: string; segment: string }> => {
    const multivariant = await get(hlsUrl);
    assert.equal(multivariant.status, 200, multivariant.text);
    const media = new URL(urisIn(multivariant.text)[0]!, hlsUrl).href;
    const playlist = await get(media);
    assert.equal(playlist.status, 200, playlist.text);
    const lines = playlist.text.split('\n');
    const uriOf = (prefix: string): string => new URL(/URI="([^"]*)"/.exec(lines.find((l) => l.startsWith(prefix))!)![1]!, media).href;
    const segment = new URL(lines.find((l) => l !== '' && !l.startsWith('#'))!, media).href;
    return { multivariant: hlsUrl, media, init: uriOf('#EXT-X-MAP:'), part: uriOf('#EXT-X-PART:'), segment };
  };

  test('the admin API hands out playback URLs that carry a valid token; the public view of the stream carries none', { timeout: 10_000 }, async () => {
    assert.match(hlsUrl, new RegExp(`/live/${streamId}/index\\.m3u8\\?token=[^&]+$`));
    assert.ok(verifyPlaybackToken(SIGNING_KEY, streamId, token), `${token} verifies`);
    const expiresAt = Number(token.split('.')[0]);
    assert.ok(expiresAt > Date.now() / 1000 + 3600, 'the token lasts the configured lifetime');
    const admin = await api(node, 'GET', `/api/streams/${streamId}`);
    assert.match(admin.body.playback.hls, /\?token=/);
    const viewer = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(viewer.status, 200);
    assert.equal(viewer.body.playback.hls, `${node.publicUrl}/live/${streamId}/index.m3u8`);
    for (const url of Object.values(viewer.body.playback as Record<string, string>)) assert.ok(!url.includes('token='), url);
    const list = await api(node, 'GET', '/api/streams', { token: null });
    for (const stream of list.body.streams) assert.ok(!JSON.stringify(stream.playback).includes('token='));
  });

  test('without a token the multivariant playlist, a media playlist, an init segment, a part and a segment are 403 ONAIR_ERR_PLAYBACK_FORBIDDEN', { timeout: 10_000 }, async () => {
    const urls = await signedUrls();
    for (const [what, url] of Object.entries(urls)) {
      assert.equal((await get(url)).status, 200, `${what} ${url} works with its token`);
      for (const bare of [withoutQuery(url), `${withoutQuery(url)}?token=`, `${withoutQuery(url)}?_HLS_msn=1`]) {
        const res = await get(bare);
        assert.equal(res.status, 403, `${what} ${bare}: ${res.status}`);
        assert.equal(errorCode(res.text), 'ONAIR_ERR_PLAYBACK_FORBIDDEN', what);
      }
    }
  });

  test('a tampered token is 403: changed signature, extended expiry, another stream\'s token, another key\'s token', { timeout: 10_000 }, async () => {
    const urls = await signedUrls();
    const [expiry, signature] = token.split('.') as [string, string];
    const flipped = signature.slice(0, 10) + (signature[10] === 'A' ? 'B' : 'A') + signature.slice(11);
    const otherStream = (await api(node, 'POST', '/api/streams', { body: { title: 'Other' } })).body;
    const tampered = [
      `${expiry}.${flipped}`,
      `${Number(expiry) + 3600}.${signature}`,
      new URL(otherStream.playback.hls).searchParams.get('token')!,
      signPlaybackToken('some-other-key', streamId, Number(expiry)),
      `${token}x`,
      'garbage',
    ];
    for (const bad of tampered) {
      for (const url of [urls.multivariant, urls.media, urls.part]) {
        const res = await get(withToken(url, bad));
        assert.equal(res.status, 403, `${bad} on ${withoutQuery(url)}`);
        assert.equal(errorCode(res.text), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
      }
    }
  });

  test('an expired token is 403', { timeout: 10_000 }, async () => {
    const urls = await signedUrls();
    const expired = signPlaybackToken(SIGNING_KEY, streamId, Math.floor(Date.now() / 1000) - 60);
    for (const url of Object.values(urls)) {
      const res = await get(withToken(url, expired));
      assert.equal(res.status, 403, withoutQuery(url));
      assert.equal(errorCode(res.text), 'ONAIR_ERR_PLAYBACK_FORBIDDEN');
    }
    // The same stream with a fresh signature still plays: it is the expiry that is refused.
    const fresh = signPlaybackToken(SIGNING_KEY, streamId, Math.floor(Date.now() / 1000) + 60);
    assert.equal((await get(withToken(urls.multivariant, fresh))).status, 200);
  });

  test('with the token, every URI the playlists list carries the same token and works: media playlists, init, parts, segments, hints, reports, blocking reloads', { timeout: 20_000 }, async () => {
    const multivariant = await get(hlsUrl);
    assert.equal(multivariant.status, 200);
    const variants = urisIn(multivariant.text);
    assert.equal(variants.length, 2);
    for (const variant of variants) {
      const media = new URL(variant, hlsUrl);
      assert.equal(media.searchParams.get('token'), token, `${variant} carries the token`);
      const playlist = await get(media.href);
      assert.equal(playlist.status, 200, `${variant}: ${playlist.text}`);
      const uris = urisIn(playlist.text);
      assert.ok(uris.length > 10, `${uris.length} URIs`);
      for (const uri of uris) assert.equal(new URL(uri, media).searchParams.get('token'), token, `${uri} carries the token`);
      const lines = playlist.text.split('\n');
      const pick = (prefix: string): string => new URL(/URI="([^"]*)"/.exec(lines.find((l) => l.startsWith(prefix))!)![1]!, media).href;
      const segment = new URL(lines.find((l) => l !== '' && !l.startsWith('#'))!, media).href;
      for (const url of [pick('#EXT-X-MAP:'), pick('#EXT-X-PART:'), segment, pick('#EXT-X-RENDITION-REPORT:'), pick('#EXT-X-PRELOAD-HINT:')]) {
        const res = await get(url);
        assert.equal(res.status, 200, `${url}: ${res.status} ${res.text.slice(0, 200)}`);
      }
      // A blocking reload, built as a client does: the directives added to the listed URI.
      // The segment after the open one at the live edge: the first segment's number plus the complete ones, plus one.
      const firstMsn = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(playlist.text)![1]);
      const nextMsn = firstMsn + lines.filter((l) => l.startsWith('#EXTINF:')).length + 1;
      const blocking = new URL(media);
      blocking.searchParams.set('_HLS_msn', String(nextMsn));
      blocking.searchParams.set('_HLS_part', '0');
      const reloaded = await get(blocking.href);
      assert.equal(reloaded.status, 200, reloaded.text);
      assert.ok(reloaded.text.split('\n').some((l) => l.startsWith('#EXTINF:')), 'a playlist came back');
      for (const uri of urisIn(reloaded.text)) assert.equal(new URL(uri, media).searchParams.get('token'), token);
    }
  });
});

describe('HTTP/2 over TLS: with ONAIR_TLS_CERT and ONAIR_TLS_KEY the node speaks h2 and HTTP/1.1', { timeout: 60_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-tls-'));
    const key = path.join(dir, 'k.pem');
    const cert = path.join(dir, 'c.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert], { timeout: 30_000 });
    ({ node, close } = await startTestNode({ ONAIR_TLS_CERT: cert, ONAIR_TLS_KEY: key, ONAIR_LADDER: '360' }));
  });

  after(async () => {
    await close?.();
    await rm(dir, { recursive: true, force: true });
  });

  test('GET /healthz answers 200 over HTTP/2 (ALPN h2) and over HTTP/1.1 with TLS', { timeout: 20_000 }, async () => {
    assert.match(node.httpUrl, /^https:\/\//);
    const session = http2.connect(node.httpUrl, { rejectUnauthorized: false });
    try {
      const h2 = await within('an HTTP/2 answer', new Promise<{ status: number; body: string; protocol: string | undefined }>((resolve, reject) => {
        session.on('error', reject);
        const request = session.request({ ':method': 'GET', ':path': '/healthz' });
        let status = 0;
        let body = '';
        request.setEncoding('utf8');
        request.on('response', (headers) => {
          status = Number(headers[':status']);
        });
        request.on('data', (chunk: string) => {
          body += chunk;
        });
        request.on('end', () => resolve({ status, body, protocol: session.alpnProtocol }));
        request.on('error', reject);
        request.end();
      }), 10_000);
      assert.equal(h2.protocol, 'h2');
      assert.equal(h2.status, 200);
      assert.deepEqual(JSON.parse(h2.body), { status: 'ok' });
    } finally {
      session.close();
    }

    const h1 = await within('an HTTP/1.1 answer', new Promise<{ status: number; version: string; body: string }>((resolve, reject) => {
      const request = https.get(`${node.httpUrl}/healthz`, { rejectUnauthorized: false, agent: false }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode!, version: response.httpVersion, body }));
        response.on('error', reject);
      });
      request.on('error', reject);
    }), 10_000);
    assert.equal(h1.version, '1.1');
    assert.equal(h1.status, 200);
    assert.deepEqual(JSON.parse(h1.body), { status: 'ok' });
  });
});
