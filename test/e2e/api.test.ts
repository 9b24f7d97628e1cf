import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../../lib/errors.js';
import { createLogger } from '../../lib/log.js';
import { loadConfig } from '../../server/config.js';
import type { OnAirNode } from '../../server/node.js';
import { api, captureLog, publish, spawnNode, startTestNode, waitFor, within, type NodeProcess } from '../support/harness.js';

/** The SPEC's error shape, exactly: `{ error: { code, message } }` and nothing else. */
function assertError(response: { status: number; body: any }, status: number, code: string): string {
  assert.equal(response.status, status, JSON.stringify(response.body));
  assert.deepEqual(Object.keys(response.body), ['error']);
  assert.deepEqual(Object.keys(response.body.error).sort(), ['code', 'message']);
  assert.equal(response.body.error.code, code);
  assert.equal(typeof response.body.error.message, 'string');
  assert.ok(response.body.error.message.length > 0);
  return response.body.error.message;
}

async function statusOf(node: OnAirNode, id: string): Promise<string | undefined> {
  const { body } = await api(node, 'GET', `/api/streams/${id}`, { token: null });
  return body?.status;
}

describe('the HTTP API of one node', { timeout: 120_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360', ONAIR_RECONNECT_GRACE_SEC: '0' }));
  });

  after(async () => {
    await close();
  });

  test('creating a stream without a token is 401 and with a wrong token is 403', { timeout: 10_000 }, async () => {
    assertError(await api(node, 'POST', '/api/streams', { body: { title: 'No token' }, token: null }), 401, 'ONAIR_ERR_UNAUTHORIZED');
    assertError(await api(node, 'POST', '/api/streams', { body: { title: 'Wrong token' }, token: 'not-the-admin-token' }), 403, 'ONAIR_ERR_FORBIDDEN');
    // The right token with one character changed is no better than any other wrong one.
    const almost = node.adminToken.slice(0, -1) + (node.adminToken.endsWith('A') ? 'B' : 'A');
    assertError(await api(node, 'POST', '/api/streams', { body: { title: 'Almost' }, token: almost }), 403, 'ONAIR_ERR_FORBIDDEN');
    const { body } = await api(node, 'GET', '/api/streams', { token: null });
    assert.deepEqual(body.streams, [], 'no stream was created by the refused requests');
  });

  test('a create request with a bad body is a 400 whose message names the field', { timeout: 10_000 }, async () => {
    const cases: { what: string; body: unknown; field: string }[] = [
      { what: 'missing title', body: { description: 'no title' }, field: 'title' },
      { what: 'empty title', body: { title: '' }, field: 'title' },
      { what: 'whitespace title', body: { title: ' \t\n ' }, field: 'title' },
      { what: 'title of 201 characters', body: { title: 'x'.repeat(201) }, field: 'title' },
      { what: 'title that is a number', body: { title: 42 }, field: 'title' },
      { what: 'extra property', body: { title: 'Show', colour: 'blue' }, field: 'colour' },
      { what: 'description that is a number', body: { title: 'Show', description: 5 }, field: 'description' },
      { what: 'description that is an object', body: { title: 'Show', description: { text: 'x' } }, field: 'description' },
    ];
    for (const c of cases) {
      const message = assertError(await api(node, 'POST', '/api/streams', { body: c.body }), 400, 'ONAIR_ERR_VALIDATION');
      assert.ok(message.includes(c.field), `${c.what}: "${message}" names ${c.field}`);
    }
    const ok = await api(node, 'POST', '/api/streams', { body: { title: 'x'.repeat(200) } });
    assert.equal(ok.status, 201, 'a title of exactly 200 characters is fine');
    assert.equal((await api(node, 'DELETE', `/api/streams/${ok.body.id}`)).status, 204);
  });

  test('a body that is not JSON, not sent as JSON, or over 1 MiB gets its own error code', { timeout: 10_000 }, async () => {
    assertError(await api(node, 'POST', '/api/streams', { rawBody: '{"title": "Show",' }), 400, 'ONAIR_ERR_BAD_JSON');
    assertError(await api(node, 'POST', '/api/streams', { rawBody: 'title=Show', contentType: 'text/plain' }), 415, 'ONAIR_ERR_UNSUPPORTED_MEDIA_TYPE');
    const huge = JSON.stringify({ title: 'Big', description: 'y'.repeat(1024 * 1024 + 1) });
    assertError(await api(node, 'POST', '/api/streams', { rawBody: huge }), 413, 'ONAIR_ERR_PAYLOAD_TOO_LARGE');
    const { body } = await api(node, 'GET', '/api/streams', { token: null });
    assert.deepEqual(body.streams, []);
  });

  test('creating a stream returns its key, what OBS needs and the playback URLs', { timeout: 10_000 }, async () => {
    const { status, body } = await api(node, 'POST', '/api/streams', { body: { title: '  Morning show  ', description: 'News and weather' } });
    assert.equal(status, 201);
    assert.match(body.id, /^[a-z0-9]{12}$/);
    assert.equal(body.title, 'Morning show');
    assert.equal(body.description, 'News and weather');
    assert.equal(body.status, 'idle');
    assert.equal(typeof body.streamKey, 'string');
    assert.ok(body.streamKey.startsWith(`${body.id}_`));
    assert.ok(body.streamKey.length >= 40, 'the key carries a long random secret');
    assert.equal(body.ingest.streamKey, body.streamKey);
    assert.match(body.ingest.rtmpUrl, /^rtmp:\/\/[^/]+\/live$/);
    assert.equal(body.ingest.rtmpUrl, node.rtmpUrl);
    assert.deepEqual(body.playback, {
      hls: `${node.publicUrl}/live/${body.id}/index.m3u8`,
      whep: `${node.publicUrl}/live/${body.id}/whep`,
      watchPage: `${node.publicUrl}/watch/${body.id}`,
    });

    // The public list and the public view show the stream, never its key.
    const list = await api(node, 'GET', '/api/streams', { token: null });
    assert.equal(list.status, 200);
    const listed = list.body.streams.find((s: { id: string }) => s.id === body.id);
    assert.ok(listed, 'the new stream is listed');
    assert.equal(listed.title, 'Morning show');
    assert.equal(listed.status, 'idle');
    const one = await api(node, 'GET', `/api/streams/${body.id}`, { token: null });
    assert.equal(one.status, 200);
    assert.deepEqual(one.body.playback, body.playback);
    const secret = body.streamKey.slice(body.id.length + 1);
    for (const text of [JSON.stringify(list.body), JSON.stringify(one.body)]) {
      assert.ok(!text.includes(secret), 'no key secret in the public views');
      assert.ok(!/streamKey|key_hash|keyHash/.test(text), 'no key field in the public views');
    }
    assert.equal((await api(node, 'DELETE', `/api/streams/${body.id}`)).status, 204);
  });

  test('an unknown stream is 404, a path-traversal id is refused, an unknown route is 404', { timeout: 10_000 }, async () => {
    assertError(await api(node, 'GET', '/api/streams/abcdefghijkl', { token: null }), 404, 'ONAIR_ERR_STREAM_NOT_FOUND');
    for (const id of ['..%2F..%2Fetc', '..%2F..%2Fetc%2Fpasswd', '%2e%2e%2fonair.db', 'ABCDEFGHIJKL', `${'a'.repeat(12)}%00`]) {
      const response = await api(node, 'GET', `/api/streams/${id}`, { token: null });
      assert.ok(response.status >= 400 && response.status < 500, `${id}: ${response.status}`);
      assert.ok(['ONAIR_ERR_VALIDATION', 'ONAIR_ERR_STREAM_NOT_FOUND', 'ONAIR_ERR_NOT_FOUND'].includes(response.body.error.code), `${id}: ${response.body.error.code}`);
      assertError(await api(node, 'DELETE', `/api/streams/${id}`), response.status, response.body.error.code);
    }
    assert.equal((await api(node, 'GET', '/healthz', { token: null })).status, 200, 'the node still answers');
    assertError(await api(node, 'GET', '/api/nothing-here', { token: null }), 404, 'ONAIR_ERR_NOT_FOUND');
    assertError(await api(node, 'POST', '/api/streams/abcdefghijkl/nothing'), 404, 'ONAIR_ERR_NOT_FOUND');
  });

  test('deleting a stream makes it 404, and deleting it again is 404 too', { timeout: 10_000 }, async () => {
    const { body } = await api(node, 'POST', '/api/streams', { body: { title: 'Short-lived' } });
    assertError(await api(node, 'DELETE', `/api/streams/${body.id}`, { token: null }), 401, 'ONAIR_ERR_UNAUTHORIZED');
    const deleted = await api(node, 'DELETE', `/api/streams/${body.id}`);
    assert.equal(deleted.status, 204);
    assert.equal(deleted.body, undefined, 'a 204 has no body');
    assertError(await api(node, 'GET', `/api/streams/${body.id}`, { token: null }), 404, 'ONAIR_ERR_STREAM_NOT_FOUND');
    assertError(await api(node, 'DELETE', `/api/streams/${body.id}`), 404, 'ONAIR_ERR_STREAM_NOT_FOUND');
    assertError(await api(node, 'POST', `/api/streams/${body.id}/key`), 404, 'ONAIR_ERR_STREAM_NOT_FOUND');
  });

  test('ending a stream and checking a token need the admin token; a stream that is not live cannot be ended', { timeout: 10_000 }, async () => {
    const { body } = await api(node, 'POST', '/api/streams', { body: { title: 'Not on air' } });
    assertError(await api(node, 'POST', `/api/streams/${body.id}/end`, { token: null }), 401, 'ONAIR_ERR_UNAUTHORIZED');
    assertError(await api(node, 'POST', `/api/streams/${body.id}/end`, { token: 'x'.repeat(43) }), 403, 'ONAIR_ERR_FORBIDDEN');
    assertError(await api(node, 'POST', `/api/streams/${body.id}/end`), 404, 'ONAIR_ERR_STREAM_NOT_LIVE');
    assertError(await api(node, 'POST', '/api/streams/nosuchstream/end'), 404, 'ONAIR_ERR_STREAM_NOT_FOUND');
    assert.deepEqual((await api(node, 'GET', '/api/session')).body, { admin: true });
    assertError(await api(node, 'GET', '/api/session', { token: null }), 401, 'ONAIR_ERR_UNAUTHORIZED');
    assertError(await api(node, 'GET', '/api/session', { token: 'x'.repeat(43) }), 403, 'ONAIR_ERR_FORBIDDEN');
  });

  describe('a stream whose key was rotated', { timeout: 90_000 }, () => {
    let id: string;
    let oldKey: string;
    let newKey: string;
    let publisher: ReturnType<typeof publish> | undefined;

    after(() => publisher?.stop());

    test('rotating the key returns a new key and needs the admin token', { timeout: 10_000 }, async () => {
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Rotation' } });
      id = created.body.id;
      oldKey = created.body.streamKey;
      assertError(await api(node, 'POST', `/api/streams/${id}/key`, { token: null }), 401, 'ONAIR_ERR_UNAUTHORIZED');
      const rotated = await api(node, 'POST', `/api/streams/${id}/key`);
      assert.equal(rotated.status, 200);
      newKey = rotated.body.streamKey;
      assert.ok(newKey.startsWith(`${id}_`));
      assert.notEqual(newKey, oldKey);
      assert.equal(rotated.body.ingest.streamKey, newKey);
      assert.equal(rotated.body.id, id);
      assert.equal(rotated.body.title, 'Rotation');
    });

    test('publishing with the old key is refused and the stream never goes live', { timeout: 30_000 }, async () => {
      const went: string[] = [];
      const onLive = ({ streamId }: { streamId: string }): void => void went.push(streamId);
      node.on('live', onLive);
      try {
        const refused = publish(`${node.rtmpUrl}/${oldKey}`, { width: 640, height: 360, durationSec: 4 });
        const code = await within('the refused publisher to exit', refused.exited, 20_000);
        assert.notEqual(code, 0, 'the publishing ffmpeg fails');
      } finally {
        node.off('live', onLive);
      }
      assert.deepEqual(went, []);
      assert.equal(await statusOf(node, id), 'idle');
    });

    test('publishing with the new key makes the stream live', { timeout: 30_000 }, async () => {
      publisher = publish(`${node.rtmpUrl}/${newKey}`, { width: 640, height: 360 });
      await waitFor('the stream to go live', async () => (await statusOf(node, id)) === 'live', 20_000);
      const { body } = await api(node, 'GET', `/api/streams/${id}`, { token: null });
      assert.equal(body.stats.publishing, true);
      const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
      assert.match(metrics, /^onair_streams_live 1$/m);
    });

    test('deleting a live stream disconnects its publisher', { timeout: 30_000 }, async () => {
      const ended = node.next('ended', 20_000, ({ streamId }) => streamId === id);
      assert.equal((await api(node, 'DELETE', `/api/streams/${id}`)).status, 204);
      await within('the publisher to be disconnected', publisher!.exited, 15_000);
      await ended;
      assertError(await api(node, 'GET', `/api/streams/${id}`, { token: null }), 404, 'ONAIR_ERR_STREAM_NOT_FOUND');
      const metrics = await (await fetch(`${node.httpUrl}/metrics`)).text();
      assert.match(metrics, /^onair_streams_live 0$/m);
    });
  });

  test('/healthz, /readyz and /metrics answer for monitoring', { timeout: 10_000 }, async () => {
    const health = await api(node, 'GET', '/healthz', { token: null });
    assert.equal(health.status, 200);
    const ready = await api(node, 'GET', '/readyz', { token: null });
    assert.equal(ready.status, 200);
    assert.equal(ready.body.checks.redis, true);
    assert.equal(ready.body.checks.database, true);
    const metrics = await fetch(`${node.httpUrl}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await metrics.text();
    assert.match(text, /^# TYPE onair_process_cpu_seconds_total counter$/m);
    assert.match(text, /^onair_process_cpu_seconds_total \d/m);
    assert.match(text, /^# TYPE onair_streams_live gauge$/m);
    assert.match(text, /^onair_streams_live \d+$/m);
  });
});

describe('secrets stay out of the log', { timeout: 120_000 }, () => {
  test('the logger redacts tokens in URLs and bearer credentials in any field, message or error of any child', { timeout: 5_000 }, () => {
    const log = captureLog();
    const logger = createLogger({ level: 'trace', destination: log.stream }).child({ component: 'test' });
    logger.trace({ url: '/live/a/index.m3u8?token=S1ECRET' }, 'GET /vod/b/manifest.mpd?x=1&token=S2ECRET');
    logger.error({ err: new Error('fetch http://edge/live/a/360p/index.m3u8?_HLS_msn=4&access_token=S3ECRET failed') }, 'failed');
    logger.info({ sent: { authorization: 'Bearer S4ECRET' } }, 'headers');
    logger.debug('retrying with Authorization: Bearer S5ECRET');
    const text = log.text();
    for (const secret of ['S1ECRET', 'S2ECRET', 'S3ECRET', 'S4ECRET', 'S5ECRET']) assert.ok(!text.includes(secret), `${secret} is redacted:\n${text}`);
    assert.match(text, /index\.m3u8\?token=\[redacted\]/);
    assert.match(text, /_HLS_msn=4&access_token=\[redacted\]/, 'other query parameters stay readable');
  });

  test('tokens in playback URLs and the admin bearer never reach the log, even at trace level; the request lines do', { timeout: 40_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-s-'));
    const secret = (): string => `SECRET${randomBytes(12).toString('hex')}`;
    const secrets = [secret(), secret(), secret(), secret(), secret()];
    try {
      const { proc, origin } = await startedNode(nodeEnv(dir, { ONAIR_LOG_LEVEL: 'trace' }));
      let adminToken = '';
      try {
        adminToken = (await readFile(path.join(dir, 'admin-token'), 'utf8')).trim();
        const admin = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };
        const created = await fetch(`${origin}/api/streams`, { method: 'POST', headers: admin, body: JSON.stringify({ title: 'Logged' }) });
        assert.equal(created.status, 201);
        const { id } = await created.json() as { id: string };
        await fetch(`${origin}/live/${id}/index.m3u8?token=${secrets[0]}`);
        await fetch(`${origin}/live/${id}/360p/index.m3u8?_HLS_msn=1&_HLS_part=0&token=${secrets[1]}`);
        await fetch(`${origin}/vod/${id}/index.m3u8?token=${secrets[2]}`);
        await fetch(`${origin}/vod/${id}/manifest.mpd?x=1&token=${secrets[3]}`);
        assert.equal((await fetch(`${origin}/api/streams/${id}`, { headers: admin })).status, 200);
        assert.equal((await fetch(`${origin}/api/session`, { headers: { authorization: `Bearer ${secrets[4]}` } })).status, 403);
        await waitFor('the last request line', () => proc.stdout().includes('/api/session'), 5_000);
      } finally {
        await stopNode(proc);
      }
      const text = proc.stdout() + proc.stderr();
      assert.ok(!text.includes(adminToken), 'the admin token is not in the log');
      for (const [i, s] of secrets.entries()) assert.ok(!text.includes(s), `secret ${i} is not in the log`);
      for (const url of ['/index.m3u8?token=[redacted]', '/360p/index.m3u8?_HLS_msn=1&_HLS_part=0&token=[redacted]', '/manifest.mpd?x=1&token=[redacted]']) {
        assert.ok(text.includes(url), `the request line for ${url} is in the log`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });


  test('neither the admin token nor a stream key appears in the node\'s debug log', { timeout: 80_000 }, async () => {
    const log = captureLog();
    const { node, close } = await startTestNode({ ONAIR_LADDER: '360' }, undefined, { logDestination: log.stream, logLevel: 'debug' });
    let publisher: ReturnType<typeof publish> | undefined;
    let keys: string[] = [];
    try {
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'Secret show' } });
      const id: string = created.body.id;
      await api(node, 'GET', `/api/streams/${id}`);
      await api(node, 'POST', '/api/streams', { body: { title: 'Forbidden' }, token: `${node.adminToken}x` });
      const rotated = await api(node, 'POST', `/api/streams/${id}/key`);
      keys = [created.body.streamKey, rotated.body.streamKey];
      // A refused publish with the old key, then a real one with the new key.
      const refused = publish(`${node.rtmpUrl}/${keys[0]}`, { width: 640, height: 360, durationSec: 3 });
      assert.notEqual(await within('the refused publisher to exit', refused.exited, 20_000), 0);
      const live = node.next('live', 20_000);
      publisher = publish(`${node.rtmpUrl}/${keys[1]}`, { width: 640, height: 360 });
      const [{ transcoder }] = await live;
      await transcoder.next('fragment', 20_000);
      await api(node, 'DELETE', `/api/streams/${id}`);
      await within('the publisher to be disconnected', publisher.exited, 15_000);
    } finally {
      publisher?.stop();
      await close();
    }
    const text = log.text();
    assert.ok(text.split('\n').length > 10, 'the node did log at debug level');
    assert.ok(text.includes('publish accepted'), 'the publish is in the log');
    assert.ok(!text.includes(node.adminToken), 'the admin token is not in the log');
    for (const key of keys) {
      const secret = key.slice(key.indexOf('_') + 1);
      assert.ok(!text.includes(secret), 'no stream key secret is in the log');
    }
  });
});

/** What `npm start` needs here: loopback, free ports, no WebRTC (the banner and the log are what these tests read). */
function nodeEnv(dataDir: string, env: Record<string, string> = {}): Record<string, string> {
  return {
    ONAIR_DATA_DIR: dataDir, ONAIR_HOST: '127.0.0.1', ONAIR_HTTP_PORT: '0', ONAIR_RTMP_PORT: '0', ONAIR_HWACCEL: 'none',
    ONAIR_WEBRTC_LAYERS: 'off', ONAIR_LOG_LEVEL: 'warn', ...env,
  };
}

/** Starts `npm start`, waits for its banner and returns it, the dashboard origin and the banner's admin token line. */
async function startedNode(env: Record<string, string>, options: { terminal?: boolean } = {}): Promise<{ proc: NodeProcess; origin: string; tokenLine: string }> {
  const proc = spawnNode(env, options);
  try {
    const [, origin] = await proc.waitForStdout(/Dashboard:\s+(\S+)\/studio/, 30_000);
    const [, tokenLine] = await proc.waitForStdout(/Admin token: ([^\r\n]*)/, 5_000);
    return { proc, origin: origin!, tokenLine: tokenLine!.trim() };
  } catch (error) {
    proc.kill('SIGKILL');
    throw error;
  }
}

/** SIGTERM, as a process manager stops it: a clean stop, exit code 0. */
async function stopNode(proc: NodeProcess): Promise<void> {
  proc.kill('SIGTERM');
  const { code } = await within('the node to stop', proc.exited, 15_000);
  assert.equal(code, 0, proc.stderr().slice(-2000));
}

describe('the admin token in the start banner', { timeout: 120_000 }, () => {
  let dir: string;
  before(async () => {
    // Short: the redis socket path inside it must fit in 107 bytes.
    dir = await mkdtemp(path.join(os.tmpdir(), 'onair-b-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a first start whose stdout is not a terminal says where the new token is kept, not the token', { timeout: 40_000 }, async () => {
    const first = await mkdtemp(path.join(os.tmpdir(), 'onair-b-'));
    try {
      const { proc, tokenLine } = await startedNode(nodeEnv(first));
      try {
        const token = (await readFile(path.join(first, 'admin-token'), 'utf8')).trim();
        assert.equal(tokenLine, `kept in ${first}/admin-token (not shown)`);
        assert.ok(!proc.stdout().includes(token) && !proc.stderr().includes(token), 'the generated token is not printed');
      } finally {
        await stopNode(proc);
      }
    } finally {
      await rm(first, { recursive: true, force: true });
    }
  });

  test('on a terminal the token is shown by the start that generates it, and never again', { timeout: 60_000 }, async () => {
    const first = await startedNode(nodeEnv(dir), { terminal: true });
    const token = (await readFile(path.join(dir, 'admin-token'), 'utf8')).trim();
    try {
      assert.match(first.tokenLine, new RegExp(`^${token}\\s`));
      assert.match(first.tokenLine, new RegExp(`kept in ${dir}/admin-token`));
      // The shown token is the one the node takes.
      const session = await fetch(`${first.origin}/api/session`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(session.status, 200);
    } finally {
      await stopNode(first.proc);
    }
    const again = await startedNode(nodeEnv(dir), { terminal: true });
    try {
      assert.equal(again.tokenLine, `kept in ${dir}/admin-token (not shown)`);
      assert.ok(!again.proc.stdout().includes(token), 'a later start does not print the kept token');
    } finally {
      await stopNode(again.proc);
    }
  });

  test('a token set by ONAIR_ADMIN_TOKEN is never shown, not even on a terminal', { timeout: 40_000 }, async () => {
    const configured = `configured-${randomBytes(16).toString('hex')}`;
    const { proc, tokenLine } = await startedNode(nodeEnv(dir, { ONAIR_ADMIN_TOKEN: configured }), { terminal: true });
    try {
      assert.equal(tokenLine, 'set by ONAIR_ADMIN_TOKEN');
      assert.ok(!proc.stdout().includes(configured));
    } finally {
      await stopNode(proc);
    }
  });
});

describe('configuration', { timeout: 30_000 }, () => {
  test('a bad value throws a ConfigError that names the variable', { timeout: 5_000 }, () => {
    const bad: [string, string][] = [
      ['ONAIR_HTTP_PORT', 'abc'],
      ['ONAIR_HTTP_PORT', '70000'],
      ['ONAIR_RTMP_PORT', '-1'],
      ['ONAIR_HWACCEL', 'cuda'],
      ['ONAIR_LLHLS_PART_MS', '50'],
      ['ONAIR_DATABASE_URL', 'mysql://x'],
      ['ONAIR_DATABASE_URL', 'not a url'],
      ['ONAIR_ADMIN_TOKEN', 'short'],
      ['ONAIR_LADDER', '720,abc'],
      ['ONAIR_ROLE', 'boss'],
    ];
    for (const [name, value] of bad) {
      assert.throws(() => loadConfig({ [name]: value }), (error: unknown) => {
        assert.ok(error instanceof ConfigError, `${name}=${value}: ${String(error)}`);
        assert.equal(error.variable, name);
        assert.ok(error.message.includes(name), `${name}=${value}: "${error.message}"`);
        return true;
      }, `${name}=${value} is refused`);
    }
  });

  test('the defaults of an empty environment are the documented ones', { timeout: 5_000 }, () => {
    const config = loadConfig({});
    assert.equal(config.httpPort, 8080);
    assert.equal(config.rtmpPort, 1935);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.hwaccel, 'auto');
    assert.equal(config.partTargetMs, 200);
    assert.equal(config.segmentTargetMs, 2000);
    assert.equal(config.reconnectGraceMs, 10_000);
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.redisUrl, undefined);
    assert.equal(config.adminToken, undefined);
  });

  test('`npm start` with a bad port exits with code 2 and says which variable is wrong', { timeout: 20_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'onair-cfg-'));
    const child = spawnNode({ ONAIR_HTTP_PORT: 'abc', ONAIR_DATA_DIR: dir });
    try {
      const { code } = await within('the node to exit', child.exited, 15_000);
      assert.equal(code, 2);
      assert.match(child.stderr(), /ONAIR_HTTP_PORT/);
      assert.doesNotMatch(child.stdout(), /on air/i);
    } finally {
      child.child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
