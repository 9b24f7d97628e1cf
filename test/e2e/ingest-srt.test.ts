import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, signInStudio } from '../support/browser.js';
import { api, metric, publish, startTestNode, waitFor } from '../support/harness.js';
import { whepPlays } from '../support/whepClient.js';

const run = promisify(execFile);
const INSIDE = process.env['ONAIR_TEST_PRIVATE_NET'] === '1';
/**
 * The lossy loopbacks this test can make, best first, each as the `tc` commands that make it (in a private network
 * namespace, whose loopback gets an Ethernet MTU):
 * - `netem`: the issue's link, 2 % random loss, where the kernel has sch_netem;
 * - `random-drop`: the same 2 % random loss without netem (this project's machines lack it): an htb root sends each
 *   packet a classic-BPF classifier picks (`ld rand`: a random 32-bit number, below 2 % of 2^32) to a class whose queue
 *   holds nothing (`pfifo limit 0`), so it is dropped;
 * - `tbf`: a bottleneck that drops the bursts past it (tail drop), where cls_bpf is missing too.
 */
const LINKS: Record<string, string[][]> = {
  netem: [['qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'loss', '2%']],
  'random-drop': [
    ['qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '1', 'r2q', '100000'],
    ['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '10gbit'],
    ['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:2', 'htb', 'rate', '10gbit'],
    ['qdisc', 'add', 'dev', 'lo', 'parent', '1:2', 'handle', '20:', 'pfifo', 'limit', '0'],
    // ld rand (SKF_AD_OFF + SKF_AD_RANDOM); jge 2 % of 2^32 → no match; else → match (class 1:2, dropped).
    ['filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'bpf', 'bytecode',
      '4,32 0 0 4294963256,53 1 0 85899346,6 0 0 4294967295,6 0 0 0', 'classid', '1:2'],
  ],
  tbf: [['qdisc', 'add', 'dev', 'lo', 'root', 'tbf', 'rate', '4mbit', 'burst', '3k', 'limit', '6k']],
};

/**
 * SRT ingest (issue #20): ffmpeg publishes MPEG-TS over srt:// with the stream id and the passphrase the API gives with
 * the key, into the same ingest, ladder and playlists; a wrong passphrase, an unknown stream, a busy stream and a
 * rotated key are refused; over a lossy link (2 % random loss, in a private network namespace) nothing is lost.
 */
type Created = { id: string; streamKey: string; ingest: { srtUrl?: string; srtPassphrase?: string } };

async function onAir(node: OnAirNode, id: string, publisher: ReturnType<typeof publish>): Promise<void> {
  await waitFor('the stream to have segments', () => node.packager(id)?.ready, 30_000).catch((error: Error) => {
    throw new Error(`${error.message}; ffmpeg: ${publisher.stderr()}`);
  });
}

if (!INSIDE) {
  describe('SRT ingest', { timeout: 180_000 }, () => {
    let node: OnAirNode;
    let close: () => Promise<void>;
    let stream: Created;

    before(async () => {
      ({ node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_SRT_PORT: '0', ONAIR_WEBRTC_LAYERS: '240', ONAIR_RECONNECT_GRACE_SEC: '2' }));
      stream = (await api(node, 'POST', '/api/streams', { body: { title: 'Over SRT' } })).body;
    });

    after(async () => {
      await close?.();
    });

    test('the key comes with an SRT URL holding the stream id and its passphrase; the stream view has the URL without it', async () => {
      assert.match(stream.ingest.srtUrl ?? '', new RegExp(`^srt://127\\.0\\.0\\.1:\\d+\\?streamid=${stream.id}&passphrase=[A-Za-z0-9_-]{32}$`));
      assert.equal(stream.ingest.srtUrl, `${node.srtUrl(stream.id)}&passphrase=${stream.ingest.srtPassphrase}`);
      const view = (await api(node, 'GET', `/api/streams/${stream.id}`)).body;
      assert.equal(view.ingest.srtUrl, node.srtUrl(stream.id), 'no passphrase outside the answers that give the key');
      assert.doesNotMatch(JSON.stringify(view), /passphrase/);
    });

    test('ffmpeg publishes over srt://: the stream goes live, its LL-HLS (the ladder\'s H.264 and AAC) and WHEP play, its replay follows', { timeout: 90_000 }, async () => {
      const publisher = publish(stream.ingest.srtUrl!, { width: 426, height: 240, format: 'mpegts' });
      try {
        await onAir(node, stream.id, publisher);
        assert.equal((await api(node, 'GET', `/api/streams/${stream.id}`)).body.status, 'live');
        await waitFor('a complete segment', () => node.packager(stream.id)?.playlist('240p')?.segments.some((s) => s.complete), 10_000, 100);
        const probe = await run('ffprobe', ['-hide_banner', '-v', 'error', '-show_entries', 'stream=codec_name,codec_type,height', '-of', 'csv=p=0',
          `${node.httpUrl}/live/${stream.id}/index.m3u8`], { timeout: 20_000 });
        assert.match(probe.stdout, /h264,video,240/);
        assert.match(probe.stdout, /aac,audio/);
        assert.equal(await metric(node, 'onair_srt_connections'), 1);

        // Busy: a second caller with the right passphrase is let through SRT's handshake, then dropped by the ingest.
        const refusedBefore = await metric(node, 'onair_publish_refused_total{reason="busy"}');
        const second = publish(stream.ingest.srtUrl!, { width: 426, height: 240, format: 'mpegts', durationSec: 20 });
        await waitFor('the second caller refused', async () => (await metric(node, 'onair_publish_refused_total{reason="busy"}')) === refusedBefore + 1, 15_000);
        second.stop();
        assert.equal((await api(node, 'GET', `/api/streams/${stream.id}`)).body.status, 'live', 'the first publisher is still on');
        await whepPlays(node.httpUrl, stream.id);
      } finally {
        publisher.stop();
        await publisher.exited;
      }
      await waitFor('the replay', async () => (await api(node, 'GET', `/api/streams/${stream.id}`)).body.replay?.videoId, 30_000, 250);
    });

    test('a wrong passphrase, none, or an unknown stream never connect, and start nothing', { timeout: 60_000 }, async () => {
      const other = (await api(node, 'POST', '/api/streams', { body: { title: 'Not this one' } })).body as Created;
      const base = node.srtUrl(other.id)!;
      const attempts: [string, string][] = [
        ['another stream\'s passphrase', `${base}&passphrase=${stream.ingest.srtPassphrase}`],
        ['no passphrase', base],
        ['an unknown stream', `${node.srtUrl('zzzzzzzzzzzz')}&passphrase=${other.ingest.srtPassphrase}`],
      ];
      for (const [what, url] of attempts) {
        const publisher = publish(url, { width: 320, height: 240, format: 'mpegts', durationSec: 3 });
        const code = await publisher.exited;
        assert.notEqual(code, 0, `${what}: ffmpeg could not connect`);
        assert.match(publisher.stderr(), /REJECT|Connection setup failure|rejected/i, `${what}: ${publisher.stderr()}`);
      }
      assert.equal(node.packager(other.id), undefined, 'no event started');
    });

    test('callers with the passphrase but no picture are let go: one sending sound only at once, a silent one after 10 s', { timeout: 60_000 }, async () => {
      const silent = (await api(node, 'POST', '/api/streams', { body: { title: 'Silent' } })).body as Created;
      const letGo = async (what: string, caller: ChildProcess, fromMs: number, toMs: number): Promise<void> => {
        try {
          const began = Date.now();
          await waitFor(`${what}: connected`, async () => (await metric(node, 'onair_srt_connections')) === 1, 15_000, 100);
          await waitFor(`${what}: let go`, async () => (await metric(node, 'onair_srt_connections')) === 0, 30_000, 250);
          const after = Date.now() - began;
          assert.ok(after >= fromMs && after < toMs, `${what}: let go after ${after} ms`);
          await waitFor(`${what}: the stream not publishing`, async () => (await api(node, 'GET', `/api/streams/${silent.id}`)).body.stats?.publishing !== true, 10_000, 250);
        } finally {
          caller.kill('SIGKILL');
        }
      };
      // Sound alone: the remux finds no video to copy.
      await letGo('sound only', spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
        '-c:a', 'aac', '-f', 'mpegts', silent.ingest.srtUrl!], { stdio: 'ignore' }), 0, 8_000);
      // Debian's srt-live-transmit with nothing on its input: SRT's keepalives would hold the connection for ever.
      await letGo('silent', spawn('srt-live-transmit', ['-q', 'file://con', silent.ingest.srtUrl!], { stdio: ['pipe', 'ignore', 'ignore'] }), 9_000, 14_000);
    });

    test('the studio shows the SRT URL with its passphrase when it made the key, with a copy button', { timeout: 40_000 }, async () => {
      const chromium = await launchChromium();
      try {
        const studio = await chromium.browser.newPage();
        await signInStudio(studio, node.httpUrl, node.adminToken);
        await studio.fill('#new-title', 'SRT from the studio');
        await studio.click('#create-form button[type=submit]');
        await studio.waitForSelector('#srt-row:not([hidden])', { timeout: 10_000 });
        await studio.waitForFunction(() => /passphrase=/.test(document.getElementById('srt-url')!.textContent ?? ''), undefined, { timeout: 10_000 });
        const id = new URL(studio.url()).searchParams.get('stream')!;
        assert.match((await studio.textContent('#srt-url'))!, new RegExp(`^srt://127\\.0\\.0\\.1:\\d+\\?streamid=${id}&passphrase=`));
        assert.ok(await studio.isEnabled('#copy-srt-url'));
        assert.match((await studio.textContent('#obs-settings'))!, /the whole SRT URL/);
      } finally {
        await chromium.close();
      }
    });

    test('after a key rotation the old passphrase is refused and the new one works', { timeout: 60_000 }, async () => {
      // The earlier publish's event is over first (its grace is 2 s): the new publish must make a new one.
      await waitFor('the earlier event to end', async () => (await api(node, 'GET', `/api/streams/${stream.id}`)).body.status !== 'live', 20_000, 200);
      const rotated = (await api(node, 'POST', `/api/streams/${stream.id}/key`)).body as Created;
      assert.notEqual(rotated.ingest.srtPassphrase, stream.ingest.srtPassphrase);
      const old = publish(stream.ingest.srtUrl!, { width: 320, height: 240, format: 'mpegts', durationSec: 3 });
      assert.notEqual(await old.exited, 0);
      assert.match(old.stderr(), /passphrase/i);
      const fresh = publish(rotated.ingest.srtUrl!, { width: 320, height: 240, format: 'mpegts', durationSec: 8 });
      try {
        await waitFor('the new passphrase to publish', async () => (await api(node, 'GET', `/api/streams/${stream.id}`)).body.status === 'live', 30_000, 200);
      } finally {
        fresh.stop();
        await fresh.exited;
      }
    });
  });

  /** The best lossy loopback this machine can make (`LINKS`); why none, when none can be had. */
  const lossyLink = (): { how: string } | { why: string } => {
    let last: ReturnType<typeof spawnSync> | undefined;
    for (const [how, commands] of Object.entries(LINKS)) {
      const script = ['ip link set lo up', ...commands.map((c) => `tc ${c.map((word) => `'${word}'`).join(' ')}`)].join(' && ');
      last = spawnSync('unshare', ['--net', 'sh', '-c', script], { encoding: 'utf8', timeout: 10_000 });
      if (last.error) return { why: `cannot run unshare: ${last.error.message}` };
      if (last.status === 0) return { how };
    }
    return { why: `no private network namespace with a lossy link here (needs unshare, tc, CAP_NET_ADMIN): ${String(last?.stderr).trim()}` };
  };
  const link = lossyLink();
  const reason = 'why' in link ? link.why : undefined;
  test(`SRT over a lossy link (${'how' in link ? link.how : 'none'}, private network namespace): losses recovered, nothing dropped`, { timeout: 180_000, skip: reason ?? false }, async () => {
    const file = fileURLToPath(import.meta.url);
    // NODE_TEST_CONTEXT would make the inner `node --test` a reporting child of this runner, which runs nothing.
    const { NODE_TEST_CONTEXT: _context, ...env } = process.env;
    const child = spawn('unshare', ['--net', 'sh', '-c', 'ip link set lo mtu 1500 up && exec "$@"', 'sh',
      process.execPath, '--enable-source-maps', '--test', '--test-reporter=spec', '--test-timeout=170000', file], {
      env: { ...env, ONAIR_TEST_PRIVATE_NET: '1', ONAIR_TEST_LOSS: 'how' in link ? link.how : '' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 175_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    process.stdout.write(output.split('\n').filter((l) => /[✔✖ℹ]|Error|assert|packets/.test(l)).map((l) => `# ${l}`).join('\n') + '\n');
    assert.equal(code, 0, `the run in the private namespace failed:\n${output.slice(-6000)}`);
    assert.match(output, /ℹ pass 1\b/, `the run in the private namespace ran its test:\n${output.slice(-6000)}`);
  });
} else {
  test('inside: 12 s published over SRT through a lossy loopback: losses recovered, none dropped, the stream plays', { timeout: 150_000 }, async () => {
    // What an operator whose publishers are on lossy links sets: room for a packet lost twice (a retransmission can be
    // lost too, and a bottleneck drops in bursts).
    const { node, close } = await startTestNode({ ONAIR_LADDER: '240', ONAIR_SRT_PORT: '0', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_SRT_LATENCY_MS: '800' });
    const qdisc = process.env['ONAIR_TEST_LOSS'] ?? 'tbf';
    try {
      for (const command of LINKS[qdisc] ?? LINKS['tbf']!) await run('tc', command);
      const stream = (await api(node, 'POST', '/api/streams', { body: { title: 'Lossy' } })).body as Created;
      const publisher = publish(stream.ingest.srtUrl!, { width: 426, height: 240, format: 'mpegts' });
      try {
        await onAir(node, stream.id, publisher);
        // 12 s of media through the link, counted while the publisher is still on (its last packets, lost as it hangs
        // up, can never come again: that is the end of the stream, not a glitch in it).
        await waitFor('6 complete segments', () => (node.packager(stream.id)?.playlist('240p')?.segments.filter((s) => s.complete).length ?? 0) >= 6, 60_000, 250);
        await new Promise((resolve) => setTimeout(resolve, 1500)); // one more report of the counters
        const received = await metric(node, 'onair_srt_packets_received');
        const lost = await metric(node, 'onair_srt_packets_lost');
        const dropped = await metric(node, 'onair_srt_packets_dropped');
        const { stdout } = await run('tc', ['-s', 'qdisc', 'show', 'dev', 'lo']);
        console.log(`packets (${qdisc}): received ${received}, lost on the way ${lost}, dropped ${dropped}; link: ${stdout.replace(/\s+/g, ' ').trim()}`);
        assert.ok(received > 500, `received ${received} packets`);
        assert.ok(lost > 0, 'the link did lose packets (else this test proves nothing)');
        // 2 % random loss: about 2 % of the data packets (binomial: 1 % is ~4 standard deviations below).
        if (qdisc !== 'tbf') assert.ok(lost >= received * 0.01, `${lost} of ${received} packets lost: the link drops ~2 %`);
        assert.equal(dropped, 0, 'every lost packet came again in time: nothing a viewer would see');
        assert.equal((await api(node, 'GET', `/api/streams/${stream.id}`)).body.status, 'live');
      } finally {
        publisher.stop();
        await publisher.exited;
      }
    } finally {
      await run('tc', ['qdisc', 'del', 'dev', 'lo', 'root']).catch(() => undefined);
      await close();
    }
  });
}
