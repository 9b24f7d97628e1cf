import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ConfigError } from '../../lib/errors.js';
import { BlockingRequests, LLHLS_LIMITS, MediaPlaylist, readLlhlsLimits } from '../../ll-hls-packager/index.js';
import type { OnAirNode } from '../../server/node.js';
import { publish, startTestNode, waitFor, within } from '../support/harness.js';

/*
 * Blocking LL-HLS requests (rfc8216bis §6.2.5.2 playlist reloads, §6.2.6 hinted parts) hold a waiter on the server for up
 * to three target durations. A stranger must not be able to park an unbounded number of them, and a client that hangs
 * up must free its waiter at once. One node over TLS (HTTP/2 and HTTP/1.1 on one port), one live publish, low caps.
 */

const run = promisify(execFile);

const PER_ADDRESS = 5;
const TOTAL = 8;
/** How soon after an abort the server must have let go of the waiter: far below the 3-target-duration timeout. */
const FREED_WITHIN_MS = 1000;

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; text: string }

/**
 * A request over HTTP/1.1 with TLS (the node's certificate is self-signed, which fetch refuses), from a chosen local
 * address: loopback is 127/8, so each 127.x.y.z is a client of its own.
 */
function h1Request(method: string, url: string, options: { localAddress?: string; signal?: AbortSignal; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const { body, ...rest } = options;
  return new Promise((resolve, reject) => {
    const request = https.request(url, { method, rejectUnauthorized: false, agent: false, ...rest }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, text }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(body);
  });
}

const h1Get = (url: string, options: { localAddress?: string; signal?: AbortSignal } = {}): Promise<Answer> => h1Request('GET', url, options);

function errorCode(text: string): string | undefined {
  try {
    return JSON.parse(text).error?.code;
  } catch {
    return undefined;
  }
}

describe('blocking waits and their caps (no node)', () => {
  const newPlaylist = (): MediaPlaylist => new MediaPlaylist({ name: '240p', partTargetMs: 200, segmentTargetMs: 2000, uriPrefix: 'u', windowMs: 30_000 });

  test('an aborted wait leaves the playlist at once and resolves false; the others still wake up first come, first served', async () => {
    const playlist = newPlaylist();
    let open = false;
    const woken: string[] = [];
    const first = playlist.waitUntil(() => open, 60_000).then((arrived) => woken.push(`first:${arrived}`));
    const hangUp = new AbortController();
    const abandoned = playlist.waitUntil(() => open, 60_000, hangUp.signal);
    const second = playlist.waitUntil(() => open, 60_000).then((arrived) => woken.push(`second:${arrived}`));
    assert.equal(playlist.waiting, 3);
    hangUp.abort();
    assert.equal(playlist.waiting, 2, 'removed in the abort itself, not at its timeout');
    assert.equal(await abandoned, false);
    open = true;
    playlist.touch();
    assert.equal(playlist.waiting, 0);
    await Promise.all([first, second]);
    assert.deepEqual(woken, ['first:true', 'second:true']);
  });

  test('a wait whose signal is already aborted never parks; a timed-out wait leaves the playlist', async () => {
    const playlist = newPlaylist();
    assert.equal(await playlist.waitUntil(() => false, 60_000, AbortSignal.abort()), false);
    assert.equal(playlist.waiting, 0);
    const timedOut = playlist.waitUntil(() => false, 20);
    assert.equal(playlist.waiting, 1);
    assert.equal(await timedOut, false);
    assert.equal(playlist.waiting, 0);
    assert.equal(await playlist.waitUntil(() => true, 20, AbortSignal.abort()), true, 'what is already there is answered');
  });

  test('parked requests are counted per address (IPv6 by its /64) and in total, and released once', () => {
    const requests = new BlockingRequests({ maxBlockingPerAddress: 2, maxBlocking: 3 });
    const a = requests.admit('2001:db8:1:2::1');
    const b = requests.admit('2001:db8:1:2:ffff::9');
    assert.ok(a.ok && b.ok);
    assert.deepEqual(requests.admit('2001:db8:1:2::77'), { ok: false, reason: 'address' }, 'the same /64 shares one cap');
    const c = requests.admit('::ffff:192.0.2.7');
    assert.ok(c.ok);
    assert.equal(requests.countFor('192.0.2.7'), 1, 'an IPv4-mapped address is its IPv4 address');
    assert.deepEqual(requests.admit('198.51.100.1'), { ok: false, reason: 'total' });
    assert.equal(requests.size, 3);
    a.release();
    a.release();
    assert.equal(requests.size, 2, 'release is idempotent');
    assert.equal(requests.countFor('2001:db8:1:2::1'), 1);
    assert.ok(requests.admit('198.51.100.1').ok);
    b.release();
    assert.equal(requests.countFor('2001:db8:1:2::1'), 0);
  });

  test('the limits table reads its variables, and a bad value names the variable', () => {
    assert.deepEqual(readLlhlsLimits({}), { maxBlockingPerAddress: 100, maxBlocking: 10_000 });
    assert.deepEqual(readLlhlsLimits({ ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: '5', ONAIR_LLHLS_MAX_BLOCKING: '8' }), { maxBlockingPerAddress: 5, maxBlocking: 8 });
    for (const spec of Object.values(LLHLS_LIMITS)) {
      for (const bad of ['0', '-1', 'ten', String(spec.max + 1)]) {
        assert.throws(() => readLlhlsLimits({ [spec.env]: bad }), (error: unknown) => error instanceof ConfigError && error.variable === spec.env);
      }
    }
  });
});

describe('blocking LL-HLS requests: capped per address and in total, freed the moment the client hangs up', { timeout: 60_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let publisher: ReturnType<typeof publish>;
  let dir: string;
  let streamId: string;
  let rendition: string;
  let playlistUrl: string;
  let playlist: MediaPlaylist;
  let firstMsn: number;

  /** The gauge on /metrics: blocking requests parked on this process now. */
  const parked = async (): Promise<number | undefined> => {
    const answer = await h1Get(`${node.httpUrl}/metrics`);
    const match = /^onair_llhls_blocking_requests (\d+)$/m.exec(answer.text);
    return match ? Number(match[1]) : undefined;
  };
  const waitParked = (count: number, timeoutMs = 5000): Promise<unknown> =>
    waitFor(`${count} parked blocking requests`, async () => (await parked()) === count, timeoutMs, 20);

  /**
   * A blocking reload that stays parked for seconds: part 13 of the segment two ahead of the last one is within the
   * advance limits (§6.2.5.2: 15 parts ahead at a 200 ms part target) but at least two segments (4 s) away.
   */
  const farFutureUrl = (): string => {
    const msn = playlist.lastMediaSequence! + 2;
    return `${playlistUrl}?_HLS_msn=${msn}&_HLS_part=13`;
  };

  /** Parks a far-future blocking reload from `localAddress`; `abort()` hangs up. */
  const parkOne = (localAddress = '127.0.0.1'): { answer: Promise<Answer | 'aborted'>; abort(): void } => {
    const controller = new AbortController();
    const answer = h1Get(farFutureUrl(), { localAddress, signal: controller.signal }).catch((error: Error) => {
      if (error.name === 'AbortError') return 'aborted' as const;
      throw error;
    });
    return { answer, abort: () => controller.abort() };
  };

  before(async () => {
    const limits = { ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS: String(PER_ADDRESS), ONAIR_LLHLS_MAX_BLOCKING: String(TOTAL) };
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-llhls-limits-'));
    const key = path.join(dir, 'k.pem');
    const cert = path.join(dir, 'c.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert], { timeout: 30_000 });
    ({ node, close } = await startTestNode({
      ...limits,
      ONAIR_TLS_CERT: cert,
      ONAIR_TLS_KEY: key,
      ONAIR_LADDER: '240',
      ONAIR_WEBRTC_LAYERS: 'off',
    }));
    const created = await h1Request('POST', `${node.httpUrl}/api/streams`, {
      headers: { authorization: `Bearer ${node.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'Limits' }),
    });
    assert.equal(created.status, 201);
    const stream = JSON.parse(created.text) as { id: string; streamKey: string };
    streamId = stream.id;
    publisher = publish(`${node.rtmpUrl}/${stream.streamKey}`, { width: 426, height: 240, audio: false });
    await waitFor('a complete segment', () => {
      const packager = node.packager(streamId);
      const name = packager?.renditionNames[0];
      return name !== undefined && packager!.playlist(name)!.segments.some((s) => s.complete);
    }, 30_000);
    rendition = node.packager(streamId)!.renditionNames[0]!;
    playlist = node.packager(streamId)!.playlist(rendition)!;
    playlistUrl = `${node.httpUrl}/live/${streamId}/${rendition}/index.m3u8`;
    firstMsn = playlist.lastMediaSequence!;
  });

  after(async () => {
    publisher?.stop();
    await close?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('a sixth parked blocking request from one address gets 429 ONAIR_ERR_RATE_LIMITED with Retry-After; aborting the five lets the next park at once', { timeout: 20_000 }, async () => {
    const five = Array.from({ length: PER_ADDRESS }, () => parkOne());
    await waitParked(PER_ADDRESS);

    assert.equal(playlist.waiting, PER_ADDRESS);
    const sixthCall = new AbortController();
    const sixth = await within('the sixth request\'s answer', h1Get(farFutureUrl(), { signal: sixthCall.signal }), 3000).finally(() => sixthCall.abort());
    assert.equal(sixth.status, 429);
    assert.equal(errorCode(sixth.text), 'ONAIR_ERR_RATE_LIMITED');
    assert.match(String(sixth.headers['retry-after']), /^[1-9]\d?$/);
    assert.equal(sixth.headers['cache-control'], 'no-store');

    // Another address is not held back by this one: a player's reload for the next part is served as usual.
    const last = playlist.last!;
    const player = await within('a player\'s blocking reload', h1Get(`${playlistUrl}?_HLS_msn=${last.msn}&_HLS_part=${last.part + 1}`, { localAddress: '127.0.0.2' }), 5000);
    assert.equal(player.status, 200);

    const abortedAt = Date.now();
    for (const one of five) one.abort();
    for (const one of five) assert.equal(await one.answer, 'aborted');
    await waitParked(0, FREED_WITHIN_MS);
    assert.ok(Date.now() - abortedAt < FREED_WITHIN_MS);
    assert.equal(playlist.waiting, 0, 'the rendition holds no waiter for a client that hung up');

    // The address's share is free again at once: a new far-future request parks instead of getting 429.
    const next = parkOne();
    await waitParked(1, 2000);
    next.abort();
    assert.equal(await next.answer, 'aborted');
    await waitParked(0, FREED_WITHIN_MS);
  });

  test('an aborted blocking request frees its waiter at once, over HTTP/1.1 and over HTTP/2', { timeout: 20_000 }, async () => {
    const blockMs = 3 * playlist.targetDuration * 1000;

    const one = parkOne();
    await waitParked(1);
    let abortedAt = Date.now();
    one.abort();
    assert.equal(await one.answer, 'aborted');
    await waitParked(0, FREED_WITHIN_MS);
    assert.ok(Date.now() - abortedAt < blockMs / 4, 'freed long before the blocking timeout');
    assert.equal(playlist.waiting, 0);

    const session = http2.connect(node.httpUrl, { rejectUnauthorized: false });
    session.on('error', () => {});
    try {
      const url = new URL(farFutureUrl());
      const stream = session.request({ ':method': 'GET', ':path': `${url.pathname}${url.search}` });
      stream.on('error', () => {});
      const closed = new Promise<void>((resolve) => stream.on('close', () => resolve()));
      await waitParked(1);
      abortedAt = Date.now();
      // RST_STREAM(CANCEL): the HTTP/2 session stays open, only this stream ends.
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await closed;
      await waitParked(0, FREED_WITHIN_MS);
      assert.ok(Date.now() - abortedAt < blockMs / 4, 'freed long before the blocking timeout');
      assert.equal(playlist.waiting, 0);
      assert.equal(session.closed, false);
    } finally {
      session.close();
    }
  });

  test('beyond the total cap a parked blocking request gets 503 ONAIR_ERR_OVERLOADED with Retry-After', { timeout: 20_000 }, async () => {
    const first = Array.from({ length: PER_ADDRESS }, () => parkOne('127.0.0.1'));
    const second = Array.from({ length: TOTAL - PER_ADDRESS }, () => parkOne('127.0.0.2'));
    try {
      await waitParked(TOTAL);
      const refused = await within('the answer beyond the total cap', h1Get(farFutureUrl(), { localAddress: '127.0.0.3' }), 3000);
      assert.equal(refused.status, 503);
      assert.equal(errorCode(refused.text), 'ONAIR_ERR_OVERLOADED');
      assert.match(String(refused.headers['retry-after']), /^[1-9]\d?$/);
      assert.equal(refused.headers['cache-control'], 'no-store');
    } finally {
      for (const one of [...first, ...second]) one.abort();
      await Promise.all([...first, ...second].map((one) => one.answer));
    }
    await waitParked(0, FREED_WITHIN_MS);
  });

  test('the live stream keeps advancing its playlist throughout', { timeout: 20_000 }, async () => {
    // A blocking reload for a segment after the one that was last when the file started: answered once it is complete.
    const answer = await within('the next segment', h1Get(`${playlistUrl}?_HLS_msn=${firstMsn + 1}`), 10_000);
    assert.equal(answer.status, 200);
    const sequence = Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(answer.text)?.[1]);
    const segments = answer.text.split('\n').filter((line) => line.startsWith('#EXTINF')).length;
    assert.ok(sequence + segments - 1 >= firstMsn + 1, `the playlist reached segment ${firstMsn + 1}`);
    assert.ok(playlist.lastMediaSequence! > firstMsn);
  });
});
