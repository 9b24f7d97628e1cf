import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { OnAirNode } from '../../server/node.js';
import { ConfigError } from '../../lib/errors.js';
import { loadConfig } from '../../server/config.js';
import { launchChromium, signInStudio } from '../support/browser.js';
import { api, metric, publish, startTestNode, waitFor, within } from '../support/harness.js';
import { whepPlays } from '../support/whepClient.js';

const run = promisify(execFile);

/**
 * RTMPS (issue #20): RTMP over TLS on ONAIR_RTMPS_PORT with the node's certificate, into the same ingest, ladder and
 * playlists; refusals and the socket guard as on plain RTMP.
 */
describe('RTMPS ingest', { timeout: 150_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let dir: string;
  let rtmpsUrl: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'onair-rtmps-'));
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert], { timeout: 30_000 });
    // The certificate is the node's for HTTPS too; this test's own requests trust it (it is made here, self-signed).
    process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0';
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '240', ONAIR_RTMPS_PORT: '0', ONAIR_TLS_CERT: cert, ONAIR_TLS_KEY: key,
      ONAIR_RTMP_HANDSHAKE_TIMEOUT_MS: '3000', ONAIR_RTMP_MAX_UNAUTHENTICATED_PER_ADDRESS: '3', ONAIR_WEBRTC_LAYERS: '240',
      ONAIR_RECONNECT_GRACE_SEC: '2',
    }));
    rtmpsUrl = node.rtmpsUrl!;
  });

  after(async () => {
    await close?.();
    delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    await rm(dir, { recursive: true, force: true });
  });

  test('RTMPS needs the certificate: ONAIR_RTMPS_PORT alone is a configuration error', () => {
    assert.throws(() => loadConfig({ ONAIR_RTMPS_PORT: '1936' }), (error: unknown) => error instanceof ConfigError && /ONAIR_RTMPS_PORT/.test(error.message));
  });

  test('ffmpeg publishes over rtmps://: the stream goes live, its LL-HLS and WHEP play, its replay follows; the API gives the RTMPS URL', { timeout: 90_000 }, async () => {
    assert.match(rtmpsUrl, /^rtmps:\/\/127\.0\.0\.1:\d+\/live$/);
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Over TLS' } });
    assert.equal(created.body.ingest.rtmpsUrl, rtmpsUrl);
    const publisher = publish(`${rtmpsUrl}/${created.body.streamKey}`, { width: 426, height: 240 });
    try {
      await waitFor('the stream to have segments', () => node.packager(created.body.id)?.ready, 30_000).catch((error: Error) => {
        throw new Error(`${error.message}; ffmpeg: ${publisher.stderr()}`);
      });
      const view = await api(node, 'GET', `/api/streams/${created.body.id}`);
      assert.equal(view.body.status, 'live');
      // A player reads it: ffprobe decodes the LL-HLS rendition (it needs one whole segment; it skips parts).
      await waitFor('a complete segment', () => node.packager(created.body.id)?.playlist('240p')?.segments.some((s) => s.complete), 10_000, 100);
      const probe = await run('ffprobe', ['-hide_banner', '-v', 'error', '-show_entries', 'stream=codec_type,height', '-of', 'csv=p=0',
        `${node.httpUrl}/live/${created.body.id}/index.m3u8`], { timeout: 20_000 });
      assert.match(probe.stdout, /video,240/);
      await whepPlays(node.httpUrl, created.body.id);
    } finally {
      publisher.stop();
      await publisher.exited;
    }
    await waitFor('the replay', async () => (await api(node, 'GET', `/api/streams/${created.body.id}`)).body.replay?.videoId, 30_000, 250);
  });

  test('a wrong key over RTMPS is refused with its code, before any media is accepted', { timeout: 30_000 }, async () => {
    const before = await metric(node, 'onair_publish_refused_total{reason="bad-key"}');
    const publisher = publish(`${rtmpsUrl}/nope_nope`, { width: 426, height: 240 });
    const code = await publisher.exited;
    assert.notEqual(code, 0);
    assert.match(publisher.stderr(), /ONAIR_ERR_PUBLISH_BAD_KEY/);
    assert.equal(await metric(node, 'onair_publish_refused_total{reason="bad-key"}'), before + 1);
  });

  test('plain RTMP on the RTMPS port is a protocol error: counted, and the connection closed', { timeout: 30_000 }, async () => {
    const before = await metric(node, 'onair_rtmp_dropped_total{reason="protocol"}');
    const plain = rtmpsUrl.replace(/^rtmps:/, 'rtmp:');
    const publisher = publish(`${plain}/whatever`, { width: 426, height: 240 });
    await publisher.exited;
    await waitFor('the drop to be counted', async () => (await metric(node, 'onair_rtmp_dropped_total{reason="protocol"}')) === before + 1, 10_000);
    await waitFor('no connection left', () => node.rtmpConnections().open === 0, 5_000);
  });

  test('connections that never finish the TLS handshake count against the caps and are closed at the deadline', { timeout: 30_000 }, async () => {
    const port = Number(new URL(rtmpsUrl.replace(/^rtmps:/, 'http:')).port);
    await waitFor('no connection left from the tests before', () => node.rtmpConnections().open === 0, 5_000);
    const tooManyBefore = await metric(node, 'onair_rtmp_dropped_total{reason="too-many"}');
    const timeoutBefore = await metric(node, 'onair_rtmp_dropped_total{reason="timeout"}');
    const sockets: net.Socket[] = [];
    const closed: Promise<void>[] = [];
    for (let i = 0; i < 4; i++) {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      closed.push(new Promise((resolve) => socket.on('close', () => resolve())));
      sockets.push(socket);
      await new Promise((resolve) => socket.once('connect', resolve));
    }
    try {
      // The 4th is over ONAIR_RTMP_MAX_UNAUTHENTICATED_PER_ADDRESS (3), before any TLS byte.
      await waitFor('the 4th connection to be refused', async () => (await metric(node, 'onair_rtmp_dropped_total{reason="too-many"}')) === tooManyBefore + 1, 5_000);
      // The 3 silent ones are closed at the handshake deadline (3 s).
      await within('the silent connections to be closed', Promise.all(closed), 8_000);
      assert.equal(await metric(node, 'onair_rtmp_dropped_total{reason="timeout"}'), timeoutBefore + 3);
      assert.deepEqual(node.rtmpConnections(), { open: 0, unauthenticated: 0 });
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });

  test('a client cannot make the server renegotiate TLS (each renegotiation would cost a private-key operation)', { timeout: 20_000 }, async () => {
    const port = Number(new URL(rtmpsUrl.replace(/^rtmps:/, 'http:')).port);
    await waitFor('no connection left from the tests before', () => node.rtmpConnections().open === 0, 5_000);
    // TLS 1.3 has no renegotiation; 1.2 does, and Node's server-side limit never sees a socket made outside a tls.Server.
    const socket = tls.connect({ host: '127.0.0.1', port, maxVersion: 'TLSv1.2', rejectUnauthorized: false });
    socket.on('error', () => undefined);
    try {
      await within('the TLS handshake', new Promise((resolve) => socket.once('secureConnect', resolve)), 5_000);
      // Refused (an alert) or ignored (no new handshake): either way not done. A server that renegotiates answers in
      // milliseconds (measured before the fix), so 3 s without a completed renegotiation is a refusal.
      const outcome = await new Promise<string>((resolve) => {
        const timer = setTimeout(() => resolve('not renegotiated within 3 s'), 3_000);
        const asked = socket.renegotiate({ rejectUnauthorized: false }, (error) => {
          clearTimeout(timer);
          resolve(error ? `refused: ${error.message}` : 'renegotiated');
        });
        if (!asked) resolve('refused by the client library');
      });
      assert.notEqual(outcome, 'renegotiated');
    } finally {
      socket.destroy();
    }
  });

  test('the studio shows the RTMPS server beside the RTMP one, each with a copy button', { timeout: 40_000 }, async () => {
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Studio over TLS' } });
    const chromium = await launchChromium({ ignoreHTTPSErrors: true });
    try {
      const studio = await chromium.browser.newPage();
      await signInStudio(studio, node.httpUrl, node.adminToken, `?stream=${created.body.id}`);
      await studio.waitForSelector('#rtmps-row:not([hidden])', { timeout: 10_000 });
      assert.equal(await studio.textContent('#rtmps-url'), rtmpsUrl);
      assert.equal(await studio.textContent('#rtmp-url'), node.rtmpUrl);
      assert.ok(await studio.isVisible('#copy-rtmps-url'));
    } finally {
      await chromium.close();
    }
  });
});
