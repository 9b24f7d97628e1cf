import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium, plays, playhead, sampleVideo, watchMode } from '../support/browser.js';
import { publish, startTestNode, waitFor } from '../support/harness.js';

/** Screenshots of every page, kept after the run (CI artifacts): `artifacts/screenshots/`, or `ONAIR_ARTIFACTS_DIR`. */
const ARTIFACTS = process.env.ONAIR_ARTIFACTS_DIR
  ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../artifacts/screenshots');


describe('the web pages: a broadcaster and two viewers, in Chromium', { timeout: 300_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let studio: Page;
  let alice: Page;
  let bob: Page;
  let publisher: ReturnType<typeof publish> | undefined;
  let rtmpUrl: string;
  let streamKey: string;
  let streamId: string;
  let replayId: string;
  const external: string[] = [];

  const shot = (page: Page, name: string): Promise<Buffer> => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360,240', ONAIR_WEBRTC_LAYERS: 'off', ONAIR_RECONNECT_GRACE_SEC: '8' }));
    chromium = await launchChromium();
    // Every request any page makes must go to OnAir itself.
    chromium.browser.on('request', (request) => {
      const url = new URL(request.url());
      if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== node.httpUrl) external.push(request.url());
    });
    studio = await chromium.browser.newPage();
    await studio.setViewportSize({ width: 1280, height: 900 });
  });

  after(async () => {
    publisher?.stop();
    await chromium?.close();
    await close?.();
  });

  test('the studio: a wrong token is refused; with the admin token, a new stream shows its server, key and OBS settings', async () => {
    await studio.goto(`${node.httpUrl}/studio`);
    await studio.fill('#token', 'not-the-admin-token-at-all');
    await studio.press('#token', 'Enter');
    await studio.waitForSelector('#login-error:has-text("not the admin token")', { timeout: 10_000 });
    await studio.fill('#token', node.adminToken);
    await studio.click('#login-form button[type=submit]');
    await studio.waitForSelector('#studio:not(.hidden)', { timeout: 10_000 });
    await studio.fill('#new-title', 'Friday show');
    await studio.click('#create-form button[type=submit]');
    await studio.waitForFunction(() => /^[A-Za-z0-9_-]{20,}$/.test(document.getElementById('stream-key')!.textContent ?? ''), undefined, { timeout: 10_000 });
    rtmpUrl = (await studio.textContent('#rtmp-url'))!;
    streamKey = (await studio.textContent('#stream-key'))!;
    streamId = new URL(studio.url()).searchParams.get('stream')!;
    assert.equal(rtmpUrl, node.rtmpUrl);
    assert.ok(await studio.isHidden('#rtmps-row'), 'no RTMPS row while RTMPS is off');
    assert.ok(await studio.isHidden('#whip-row'), 'no WHIP row while WebRTC is off');
    assert.ok(await studio.isHidden('#srt-row'), 'no SRT row while SRT is off');
    assert.match(streamId, /^[a-z0-9]{12}$/);
    assert.match((await studio.textContent('#obs-settings'))!, /Keyframe interval 2 s/);
    assert.equal(await studio.textContent('#stream-status'), 'idle');
    await shot(studio, 'studio-new-stream');
  });

  test('ffmpeg publishes with what the studio shows, and the studio shows live health with a measured latency', async () => {
    publisher = publish(`${rtmpUrl}/${streamKey}`, { width: 640, height: 360, videoSource: 'color=c=0x336699' });
    await studio.waitForSelector('#stream-status:has-text("live")', { timeout: 30_000 });
    const health = await waitFor('live health with input, renditions and latency', () => studio.evaluate(() => {
      const kbps = Number(/^(\d+) kbit\/s$/.exec(document.querySelector('[data-metric="Input"] dd')?.textContent ?? '')?.[1] ?? 0);
      const rows = document.querySelectorAll('#renditions tr').length - 1;
      const latency = /^(\d+\.\d) s$/.exec(document.querySelector('[data-metric="Latency"] dd')?.textContent ?? '');
      return kbps > 0 && rows >= 2 && latency ? { kbps, rows, latency: Number(latency[1]) } : undefined;
    }), 45_000, 500);
    assert.ok(health.latency > 0.3 && health.latency < 10, `preview latency ${health.latency}`);
    await shot(studio, 'studio-live');
  });

  test('two viewers play the stream: frames decode on both', async () => {
    alice = await chromium.browser.newPage();
    bob = await chromium.browser.newPage();
    await bob.setViewportSize({ width: 390, height: 844 }); // a phone
    await alice.goto(`${node.httpUrl}/watch/${streamId}`);
    await bob.goto(`${node.httpUrl}/watch/${streamId}`);
    await plays(alice, 'Alice');
    await plays(bob, 'Bob');
    assert.equal(await alice.textContent('#title'), 'Friday show');
    assert.equal(await alice.textContent('#badge'), 'Live');
    assert.match((await alice.textContent('#latency'))!, /^\d+\.\d\d s$/);
    const levels = await alice.$$eval('#quality option', (options) => options.map((o) => o.textContent));
    assert.deepEqual(levels.map((l) => l!.split(' ')[0]), ['Auto', '360p', '240p']);
    await alice.selectOption('#quality', { label: levels[2]! });
    await alice.waitForSelector('#level:has-text("240p")', { timeout: 15_000 });
    const phone = await bob.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
    assert.ok(phone.scroll <= phone.width, `no sideways scrolling on a phone (${phone.scroll} > ${phone.width})`);
  });

  test('a comment and reactions from one viewer are seen by the other (and by the studio)', async () => {
    await alice.fill('#name', 'Alice');
    await alice.press('#name', 'Tab'); // change → re-join under the new name; keyboard only from here
    await alice.waitForSelector('#chat[data-joined-as="Alice"]', { timeout: 10_000 });
    await alice.focus('#comment');
    await alice.keyboard.type('Hello from <b>Alice</b>');
    await alice.keyboard.press('Enter');
    await bob.waitForSelector('#comments li:has-text("Hello from <b>Alice</b>")', { timeout: 10_000 });
    assert.equal(await bob.textContent('#comments li:last-child .name'), 'Alice');
    assert.equal(await bob.$$eval('#comments b', (nodes) => nodes.length), 0, 'comments are text, never markup');
    await studio.waitForSelector('#mod-comments li:has-text("Hello from")', { timeout: 10_000 });
    const buttons = await alice.$$('#reactions button');
    assert.ok(buttons.length > 0, 'reaction buttons from the join answer');
    // Each reaction bursts over Bob's picture (a burst removes itself once its animation ends): count them as they come.
    await bob.evaluate(() => {
      const seen = { bursts: 0 };
      (window as unknown as { seen: typeof seen }).seen = seen;
      new MutationObserver((changes) => { for (const change of changes) seen.bursts += change.addedNodes.length; })
        .observe(document.getElementById('bursts')!, { childList: true });
    });
    for (let i = 0; i < 3; i++) await buttons[0]!.click();
    await waitFor('Bob to see the reactions', () => bob.evaluate(() => (window as unknown as { seen: { bursts: number } }).seen.bursts >= 3), 10_000);
    await shot(bob, 'watch-phone-chat');

    // Moderation: a comment the studio removes goes from every viewer's chat.
    await alice.fill('#comment', 'buy cheap watches');
    await alice.press('#comment', 'Enter');
    await bob.waitForSelector('#comments li:has-text("buy cheap watches")', { timeout: 10_000 });
    await studio.click('#mod-comments li:has-text("buy cheap watches") button:has-text("Remove")');
    await bob.waitForSelector('#comments li:has-text("buy cheap watches")', { state: 'detached', timeout: 10_000 });
    await alice.waitForSelector('#comments li:has-text("buy cheap watches")', { state: 'detached', timeout: 10_000 });

    // Slow mode from the studio: Alice, who just commented, must wait; then it is lifted again.
    await studio.fill('#slow', '30');
    await studio.click('#slow-form button[type=submit]');
    await studio.waitForSelector('#slow-state:has-text("one comment per 30 s")', { timeout: 10_000 });
    await alice.fill('#comment', 'too soon');
    await alice.press('#comment', 'Enter');
    await alice.waitForSelector('#chat-error:has-text("Slow mode")', { timeout: 10_000 });
    await studio.fill('#slow', '0');
    await studio.click('#slow-form button[type=submit]');
    await studio.waitForSelector('#slow-state:has-text("off")', { timeout: 10_000 });
    assert.equal(await bob.$$eval('#comments li', (items) => items.filter((li) => li.textContent!.includes('too soon')).length), 0);
  });

  test('a news flash from the studio shows on the watch page; an ad break shows its indicator', async () => {
    await studio.fill('#news-text', 'Storm warning for the coast');
    await studio.click('#news-form button[type=submit]');
    await alice.waitForSelector('#ticker:not(.hidden):has-text("Storm warning for the coast")', { timeout: 10_000 });
    await bob.waitForSelector('#ticker:not(.hidden)', { timeout: 10_000 });
    await shot(alice, 'watch-news');
    await studio.click('.ad-button[data-seconds="30"]');
    await alice.waitForSelector('#ad:not(.hidden)', { timeout: 10_000 });
    await bob.waitForSelector('#ad:not(.hidden)', { timeout: 10_000 });
    // The viewers hear of the break (socket.io) as the studio's POST is answered: either may come first.
    await studio.waitForSelector('#cue-result:has-text("Ad break of 30 s (markers only)")', { timeout: 5000 });
    await studio.waitForSelector('.ad-button[data-seconds="60"]:disabled', { timeout: 5000 });
    await shot(alice, 'watch-ad-break');
    await shot(studio, 'studio-cues');
  });

  test('pages keep working after a reload mid-stream and when the publisher restarts', async () => {
    await bob.reload();
    await plays(bob, 'Bob after a reload');
    await bob.waitForSelector('#chat[data-joined-as]', { timeout: 10_000 });
    await waitFor('the ad badge to come back for a break still on', () => bob.evaluate(() => !document.getElementById('ad')!.classList.contains('hidden')), 10_000);
    // OBS drops and reconnects (within the grace): the same event goes on after a discontinuity.
    publisher!.stop();
    await publisher!.exited;
    publisher = publish(`${rtmpUrl}/${streamKey}`, { width: 640, height: 360, videoSource: 'color=c=0x336699' });
    await plays(alice, 'Alice after the publisher came back', 3);
    await plays(bob, 'Bob after the publisher came back', 3);
    await alice.fill('#comment', 'still here');
    await alice.press('#comment', 'Enter');
    await bob.waitForSelector('#comments li:has-text("still here")', { timeout: 10_000 });
  });

  test('the studio ends the stream: viewers move to the replay; it is in the catalog and plays with its chat', async () => {
    const archived = node.next('archived', 30_000);
    await studio.click('#end');
    await studio.waitForSelector('#end-note:has-text("Ended")', { timeout: 10_000 });
    const [{ videoId }] = await archived;
    replayId = videoId;
    await waitFor('Alice\'s page to switch to the replay', async () => (await watchMode(alice)) === 'replay', 30_000, 250);

    const home = await chromium.browser.newPage();
    await home.goto(`${node.httpUrl}/`);
    await home.waitForSelector(`#videos a[href="/watch/${videoId}"]:has-text("Friday show")`, { timeout: 15_000 });
    await home.fill('#q', 'friday');
    await home.press('#q', 'Enter');
    await home.waitForSelector(`#videos a[href="/watch/${videoId}"]`, { timeout: 10_000 });
    await shot(home, 'home-catalog');
    await home.click(`#videos a[href="/watch/${videoId}"]`);
    await home.waitForURL(`**/watch/${videoId}`);
    await plays(home, 'the replay');
    assert.equal(await home.textContent('#chat-title'), 'Chat replay');
    // Jump to the end: every comment of the event is behind the playhead, so the replayed chat shows them all.
    await home.evaluate(() => { const v = document.querySelector('video')!; v.currentTime = Math.max(0, v.duration - 1); });
    let last: unknown;
    await waitFor('the replayed chat to show every comment', async () => {
      const state = await home.evaluate(() => ({
        t: document.querySelector('video')!.currentTime,
        duration: document.querySelector('video')!.duration,
        kept: document.getElementById('comments')!.dataset['total'],
        shown: Array.from(document.querySelectorAll('#comments li .text')).map((li) => li.textContent),
      }));
      last = state;
      return state.shown.includes('Hello from <b>Alice</b>') && state.shown.includes('still here');
    }, 15_000, 250).catch((error: Error) => { throw new Error(`${error.message}; the page: ${JSON.stringify(last)}`); });
    await shot(home, 'watch-replay');
    // And back to the start: none yet.
    await home.evaluate(() => { document.querySelector('video')!.currentTime = 0; });
    await waitFor('the chat to rewind with the playhead', () => home.evaluate(() => document.querySelectorAll('#comments li').length === 0), 10_000);
    await home.close();
  });

  test('a title cannot break out of the answer the page carries', async () => {
    const title = '</script><script>window.pwned=1</script><!-- "&';
    const created = await fetch(`${node.httpUrl}/api/streams`, {
      method: 'POST', headers: { authorization: `Bearer ${node.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ title }),
    });
    assert.equal(created.status, 201);
    const { id } = await created.json() as { id: string };
    const html = await (await fetch(`${node.httpUrl}/watch/${id}`)).text();
    assert.equal(html.match(/<\/script>/g)?.length, 4, 'the embedded answer closes once; then the page\'s own three scripts');
    const page = await chromium.browser.newPage();
    try {
      await page.goto(`${node.httpUrl}/watch/${id}`);
      await page.waitForFunction((t) => document.getElementById('title')!.textContent === t, title, { timeout: 10_000 });
      assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
    } finally {
      await page.close();
    }
  });

  test('an upload from the studio: its progress bar fills, and the video is listed with its job', async () => {
    const file = path.join(ARTIFACTS, '..', 'upload.mp4');
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=320x180:rate=25:duration=3', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', file]);
    await studio.setInputFiles('#upload-file', file);
    await studio.fill('#upload-title', 'Studio upload');
    await studio.click('#upload-form button[type=submit]');
    await studio.waitForSelector('#upload-state:has-text("Uploaded")', { timeout: 20_000 });
    assert.equal(await studio.$eval('#upload-progress', (bar) => (bar as HTMLProgressElement).value), 1);
    await studio.waitForSelector('#videos td:has-text("Studio upload")', { timeout: 10_000 });
    assert.match((await studio.textContent('#videos tr:has-text("Studio upload")'))!, /processing/);
    await shot(studio, 'studio-videos');
  });

  test('the watch page is told by the server whether its id is a stream or a video (as the API answers)', async () => {
    const kindOf = async (id: string): Promise<string | undefined> =>
      /<body data-kind="([a-z]+)">/.exec(await (await fetch(`${node.httpUrl}/watch/${id}`)).text())?.[1];
    assert.equal(await kindOf(streamId), 'stream');
    assert.equal(await kindOf(replayId), 'video');
    const unknown = await fetch(`${node.httpUrl}/watch/zzzzzzzzzzzz`);
    assert.equal(unknown.status, 200);
    assert.match(await unknown.text(), /<body>/, 'no such id: no kind, and the page says so');
  });

  test('no page made a request anywhere but OnAir, and every page tells the browser so (CSP)', async () => {
    assert.deepEqual(external, []);
    for (const page of ['/', '/studio', `/watch/${streamId}`]) {
      const response = await fetch(`${node.httpUrl}${page}`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-security-policy') ?? '', /default-src 'self'; script-src 'self';/, page);
    }
  });
});
