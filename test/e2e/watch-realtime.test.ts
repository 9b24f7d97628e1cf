import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { OnAirNode } from '../../server/node.js';
import { inboundVideo, launchChromium, recordPeerConnections } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

describe('the watch page\'s real-time mode plays over WebRTC (WHEP)', { timeout: 120_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;

  before(async () => {
    ({ node, close } = await startTestNode({ ONAIR_LADDER: '360', ONAIR_WEBRTC_LAYERS: '360', ONAIR_WEBRTC_WORKERS: '1' }));
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'Real-time page' } });
    streamId = created.body.id;
    publisher = publish(`${node.rtmpUrl}/${created.body.streamKey}`, { width: 640, height: 360 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    chromium = await launchChromium();
  });

  after(async () => {
    publisher?.stop();
    await chromium?.close();
    await close();
  });

  test('/watch/:id?mode=webrtc decodes frames from WebRTC, and leaving the page frees the viewer', async () => {
    const page = await chromium.browser.newPage();
    await recordPeerConnections(page);
    await page.goto(`${node.httpUrl}/watch/${streamId}?mode=webrtc`);
    assert.equal(await page.isChecked('#realtime'), true);
    await waitFor('30 frames decoded over WebRTC', async () => ((await inboundVideo(page))?.['framesDecoded'] ?? 0) >= 30, 30_000, 250);
    assert.match(await page.textContent('#state') ?? '', /live \(real-time\)/);
    assert.equal(node.edge!.viewers(streamId), 1);
    await page.close({ runBeforeUnload: true });
    await waitFor('the viewer to be released', () => node.edge!.viewers(streamId) === 0, 15_000);
  });
});
