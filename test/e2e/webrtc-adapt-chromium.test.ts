/**
 * Issue #18: a Chromium WHEP viewer behind a throttled link drops to the low simulcast layer within 10 s and returns
 * to the top one when the limit is lifted, and its picture never freezes for more than 1 s.
 *
 * The throttle is Linux traffic control on a PRIVATE loopback: this file re-runs itself under `unshare --net` (a
 * network namespace of its own, `lo` brought up), so the shaping never touches the machine's loopback that other tests
 * share. The issue asks for netem's `rate 600kbit`, but this machine's kernel has no sch_netem ("Specified qdisc kind
 * is unknown"): an htb class of 600 kbit/s (ceil 600 kbit/s, under it a 1000-packet fifo: netem's default queue) does the same rate limit, and
 * a u32 filter sends only the server → viewer UDP (source port = the WebRtcServer's) through it. Deleting the filter
 * lifts the limit. Skipped, with the reason, where unshare, tc or CAP_NET_ADMIN are missing.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

const run = promisify(execFile);
const INSIDE = process.env['ONAIR_TEST_PRIVATE_NET'] === '1';
/** The WebRtcServer's port: fixed, so that the filter can name it (the namespace is ours alone). */
const PORT = 41_000;
const LIMIT_KBPS = 600;

/**
 * The namespace's interfaces: `lo`, and a veth pair with private addresses, because Chromium gathers no ICE candidate
 * on a loopback interface: from the veth address it reaches the server's 127.0.0.1 candidate, and the packets still
 * travel over `lo`, where the shaping is.
 */
const NAMESPACE_SETUP = 'ip link set lo up && ip link add onair0 type veth peer name onair1 && ip addr add 10.203.0.1/24 dev onair0 '
  + '&& ip addr add 10.203.0.2/24 dev onair1 && ip link set onair0 up && ip link set onair1 up';

/** Why the namespace and shaping cannot be had here, or undefined when they can. */
function unavailable(): string | undefined {
  const probe = spawnSync('unshare', ['--net', 'sh', '-c',
    `${NAMESPACE_SETUP} && tc qdisc add dev lo root handle 1: htb default 10 && tc class add dev lo parent 1: classid 1:10 htb rate 10gbit`],
  { encoding: 'utf8', timeout: 10_000 });
  if (probe.error) return `cannot run unshare: ${probe.error.message}`;
  if (probe.status !== 0) return `no private network namespace with htb shaping here (needs unshare, iproute2's tc, CAP_NET_ADMIN): ${probe.stderr.trim()}`;
  return undefined;
}

if (!INSIDE) {
  const reason = unavailable();
  test('Chromium adapts to a throttled link (run in a private network namespace)', { timeout: 300_000, skip: reason ?? false }, async () => {
    const file = fileURLToPath(import.meta.url);
    // NODE_TEST_CONTEXT would make the inner `node --test` a reporting child of this runner, which runs nothing.
    const { NODE_TEST_CONTEXT: _context, ...env } = process.env;
    const child = spawn('unshare', ['--net', 'sh', '-c', `${NAMESPACE_SETUP} && exec "$@"`, 'sh',
      process.execPath, '--enable-source-maps', '--test', '--test-reporter=spec', '--test-timeout=280000', file], {
      env: { ...env, ONAIR_TEST_PRIVATE_NET: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 290_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    // The inner run's report, for the log either way.
    process.stdout.write(output.split('\n').filter((l) => /[✔✖ℹ]|Error|assert|measured|timeline/.test(l)).map((l) => `# ${l}`).join('\n') + '\n');
    assert.equal(code, 0, `the run in the private namespace failed:\n${output.slice(-6000)}`);
    assert.match(output, /ℹ pass 2\b/, `the run in the private namespace ran its tests:\n${output.slice(-6000)}`);
  });
} else {
  interface Sample { t: number; frameHeight: number; framesDecoded: number; bytesReceived: number }

  /** In the page: a recvonly WHEP player with a <video>, and getStats sampled every 100 ms into `window.samples`. */
  async function startPlayer(page: Page, url: string): Promise<{ status: number; answer: string }> {
    return page.evaluate(async (whepUrl) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const video = document.createElement('video');
      video.muted = true;
      video.autoplay = true;
      document.body.append(video);
      pc.ontrack = (event) => {
        if (event.track.kind === 'video') video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
      };
      await pc.setLocalDescription(await pc.createOffer());
      const response = await fetch(whepUrl, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription!.sdp });
      const answer = await response.text();
      if (response.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      const samples: Sample[] = [];
      (window as unknown as { samples: Sample[] }).samples = samples;
      setInterval(() => {
        void pc.getStats().then((stats) => stats.forEach((r: { type: string; kind?: string; frameHeight?: number; framesDecoded?: number; bytesReceived?: number }) => {
          if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
          samples.push({ t: performance.now(), frameHeight: r.frameHeight ?? 0, framesDecoded: r.framesDecoded ?? 0, bytesReceived: r.bytesReceived ?? 0 });
          if (samples.length > 3000) samples.splice(0, samples.length - 3000);
        }));
      }, 100);
      return { status: response.status, answer };
    }, url);
  }

  const samples = (page: Page): Promise<Sample[]> => page.evaluate(() => (window as unknown as { samples: Sample[] }).samples.slice());
  const now = (page: Page): Promise<number> => page.evaluate(() => performance.now());

  /** Bytes the 600 kbit/s class has sent so far (`tc -s class show`). */
  async function shapedBytes(): Promise<number> {
    const { stdout } = await run('tc', ['-s', 'class', 'show', 'dev', 'lo', 'classid', '1:30']);
    return Number(/Sent (\d+) bytes/.exec(stdout)?.[1] ?? NaN);
  }

  /** The longest time framesDecoded stood still over these samples (ms). */
  function freezeOf(watched: Sample[]): number {
    let longest = 0;
    let lastChange = watched[0]?.t ?? 0;
    for (let i = 1; i < watched.length; i++) {
      if (watched[i]!.framesDecoded !== watched[i - 1]!.framesDecoded) lastChange = watched[i]!.t;
      longest = Math.max(longest, watched[i]!.t - lastChange);
    }
    return longest;
  }

  /** Video kbit/s the page received over the samples in [from, to] (page clock). */
  function receivedKbps(all: Sample[], from: number, to: number): number {
    const window = all.filter((s) => s.t >= from && s.t <= to);
    const first = window[0];
    const last = window[window.length - 1];
    if (!first || !last || last.t === first.t) return NaN;
    return ((last.bytesReceived - first.bytesReceived) * 8) / (last.t - first.t);
  }

  describe('Chromium WHEP viewer behind a 600 kbit/s link (htb in a private network namespace)', { timeout: 280_000 }, () => {
    let node: OnAirNode;
    let close: () => Promise<void>;
    let publisher: ReturnType<typeof publish>;
    let chromium: Awaited<ReturnType<typeof launchChromium>> | undefined;
    let page: Page;
    let streamId = '';
    const layer = (): number | undefined => node.edge!.sessionStats(streamId)[0]?.spatialLayer;
    const height = async (): Promise<number> => (await samples(page)).at(-1)?.frameHeight ?? 0;
    /** Playing steadily at the top (the estimate starts at 600 kbit/s and climbs): 2 s on end, server and page. */
    const steadyAtTop = async (): Promise<void> => {
      let topSince = Date.now();
      await waitFor('2 s on end at the top layer', async () => {
        if (layer() !== 1 || (await height()) !== 480) topSince = Date.now();
        return Date.now() - topSince >= 2000;
      }, 30_000, 100);
    };
    const limit = (): Promise<unknown> => run('tc', ['filter', 'add', 'dev', 'lo', 'parent', '1:', 'prio', '1', 'protocol', 'ip', 'u32',
      'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', 'sport', String(PORT), '0xffff', 'flowid', '1:30']);
    const lift = (): Promise<unknown> => run('tc', ['filter', 'del', 'dev', 'lo', 'parent', '1:', 'prio', '1']);

    before(async () => {
      await run('tc', ['qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10']);
      await run('tc', ['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '10gbit']);
      await run('tc', ['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:30', 'htb', 'rate', `${LIMIT_KBPS}kbit`, 'ceil', `${LIMIT_KBPS}kbit`]);
      // netem's default queue (1000 packets), as the issue's `netem rate 600kbit` would have: a link that delays before
      // it drops, as a home router does.
      await run('tc', ['qdisc', 'add', 'dev', 'lo', 'parent', '1:30', 'handle', '30:', 'pfifo', 'limit', '1000']);
      ({ node, close } = await startTestNode({
        ONAIR_LADDER: '240', ONAIR_WEBRTC_LAYERS: '480,240', ONAIR_WEBRTC_WORKERS: '1', ONAIR_WEBRTC_PORT: String(PORT),
      }));
      assert.ok(node.edge, 'the WebRTC edge started');
    });

    after(async () => {
      await chromium?.close();
      publisher?.stop();
      await close?.();
    });

    test('it drops to the low layer within 10 s, returns when the limit is lifted, and never freezes over 1 s', async () => {
      const created = await api(node, 'POST', '/api/streams', { body: { title: 'throttled viewer' } });
      streamId = created.body.id;
      publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 854, height: 480, fps: 30 });
      await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);

      chromium = await launchChromium();
      page = await chromium.browser.newPage();
      await page.goto(`${node.httpUrl}/healthz`);
      const player = await startPlayer(page, `/live/${streamId}/whep`);
      assert.equal(player.status, 201, player.answer);
      const video = player.answer.split(/\r\n(?=m=)/).find((s) => s.startsWith('m=video')) ?? '';
      assert.match(video, /^a=extmap:\d+ http:\/\/www\.ietf\.org\/id\/draft-holmer-rmcat-transport-wide-cc-extensions-01$/m, 'transport-cc negotiated');
      assert.match(video, /^a=rtcp-fb:\d+ transport-cc$/m);

      await waitFor('the top layer (480 lines) decoded', async () => layer() === 1 && (await height()) === 480, 40_000, 200);
      await steadyAtTop();
      const watchFrom = await now(page);
      const beforeKbps = receivedKbps(await samples(page), watchFrom - 2000, watchFrom);

      // Throttle: the server's packets (source port = the WebRtcServer's) through the 600 kbit/s class.
      await limit();
      const throttledAt = await now(page);
      const shapedStart = await shapedBytes();
      const started = Date.now();
      // The server's layer every 500 ms, for the timeline printed at the end.
      const layers: string[] = [];
      const poll = setInterval(() => layers.push(`${((Date.now() - started) / 1000).toFixed(1)}:${layer() ?? 'none'}`), 500);
      await waitFor('the low layer on the server', () => layer() === 0, 10_000, 100);
      await waitFor('the page decoding the low layer (240 lines)', async () => (await height()) === 240, Math.max(1, 10_000 - (Date.now() - started)), 100);
      const droppedMs = Date.now() - started;
      // The shaping bites: what passed the class, and what the page received, over 4 s at the low layer.
      const measureFrom = await now(page);
      const shapedFrom = await shapedBytes();
      await new Promise((resolve) => setTimeout(resolve, 4000));
      const shapedKbps = ((await shapedBytes()) - shapedFrom) * 8 / ((await now(page)) - measureFrom);
      const lowKbps = receivedKbps(await samples(page), measureFrom, await now(page));
      assert.ok(shapedStart >= 0 && shapedKbps > 50, `the filter sends the viewer's packets through the class (${shapedKbps.toFixed(0)} kbit/s)`);
      assert.ok(shapedKbps <= LIMIT_KBPS * 1.1, `the class holds its rate (${shapedKbps.toFixed(0)} kbit/s)`);

      // Lift the limit: the estimate climbs by probing, and the top layer comes back.
      await lift();
      const liftedAt = Date.now();
      const liftedAtPage = await now(page);
      await waitFor('the top layer on the server again', () => layer() === 1, 30_000, 200);
      await waitFor('the page decoding the top layer again', async () => (await height()) === 480, 10_000, 100);
      const returnedMs = Date.now() - liftedAt;
      await new Promise((resolve) => setTimeout(resolve, 1000));

      // Never frozen over 1 s, from the limit to now: the longest time framesDecoded stood still.
      const watched = (await samples(page)).filter((s) => s.t >= throttledAt - 500);
      const longestFreeze = freezeOf(watched);
      const gaps = watched.slice(1).map((s, i) => s.t - watched[i]!.t);
      console.log(`measured: top ${beforeKbps.toFixed(0)} kbit/s received; low layer ${droppedMs} ms after the limit; `
        + `shaped class ${shapedKbps.toFixed(0)} kbit/s, page ${lowKbps.toFixed(0)} kbit/s at the low layer; top again ${returnedMs} ms after lifting; `
        + `longest freeze ${longestFreeze.toFixed(0)} ms; longest sampling gap ${Math.max(...gaps).toFixed(0)} ms`);
      assert.ok(beforeKbps > LIMIT_KBPS, `the top layer needs more than the limit (${beforeKbps.toFixed(0)} kbit/s)`);
      clearInterval(poll);
      // Seconds since the limit: the page's frame height / frames decoded / kB received, and the server's layer.
      console.log(`timeline (limit lifted at ${((liftedAtPage - throttledAt) / 1000).toFixed(1)} s): page `
        + watched.filter((_, i) => i % 5 === 0).map((s) => `${((s.t - throttledAt) / 1000).toFixed(1)}:${s.frameHeight}/${s.framesDecoded}/${Math.round(s.bytesReceived / 1000)}`).join(' ')
        + `; server layer ${layers.join(' ')}`);
      assert.ok(longestFreeze <= 1000, `the picture froze for ${longestFreeze.toFixed(0)} ms`);
    });

    test('behind a link that drops early (a 60-packet queue) the viewer keeps the low layer: its video never stops', async () => {
      // The top layer overruns a short queue: a loss burst, and the estimate falls below even the low layer's bitrate.
      // Stock mediasoup then sends no video until probing finds the link again (4–10 s frozen, measured); our worker
      // keeps the lowest layer as a floor (webrtc-edge/README.md).
      await run('tc', ['qdisc', 'change', 'dev', 'lo', 'parent', '1:30', 'handle', '30:', 'pfifo', 'limit', '60']);
      await steadyAtTop();
      const throttledAt = await now(page);
      await limit();
      let withoutVideo = 0;
      let longestWithout = 0;
      let since: number | undefined;
      for (const end = Date.now() + 12_000; Date.now() < end;) {
        if (layer() === undefined) since ??= Date.now();
        else since = undefined;
        if (since !== undefined) { withoutVideo += 1; longestWithout = Math.max(longestWithout, Date.now() - since); }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const lowAtEnd = layer();
      const freeze = freezeOf((await samples(page)).filter((s) => s.t >= throttledAt));
      await lift();
      await waitFor('the top layer on the server again', () => layer() === 1, 40_000, 200);
      console.log(`measured (60-packet queue): no layer sent for ${longestWithout} ms at most (${withoutVideo} of 120 checks); `
        + `layer ${lowAtEnd} after 12 s; longest freeze ${freeze.toFixed(0)} ms`);
      assert.equal(lowAtEnd, 0, 'the low layer after 12 s behind the limit');
      assert.ok(longestWithout <= 500, `the server sent no video layer for ${longestWithout} ms`);
      assert.ok(freeze <= 3000, `the picture froze for ${freeze.toFixed(0)} ms`);
    });
  });
}
