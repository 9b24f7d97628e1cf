import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { OnAirNode } from '../../server/node.js';
import { launchChromium } from '../support/browser.js';
import { api, publish, startTestNode, waitFor } from '../support/harness.js';

interface PlayerState {
  connection: string;
  framesDecoded: number;
  audioSamples: number;
  concealedSamples: number;
  brightness: number;
  width: number;
}

/** A WHEP player in the page: recvonly audio + video, offer POSTed as application/sdp, answer applied. */
async function startWhep(page: Page, url: string): Promise<{ status: number; location: string | null; contentType: string | null }> {
  return page.evaluate(async (whepUrl) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    document.body.append(video);
    const stream = new MediaStream();
    pc.ontrack = (event) => {
      stream.addTrack(event.track);
      video.srcObject = stream;
      void video.play().catch(() => {});
    };
    await pc.setLocalDescription(await pc.createOffer());
    const response = await fetch(whepUrl, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription!.sdp });
    if (response.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    (window as unknown as { whep: unknown }).whep = { pc, video };
    return { status: response.status, location: response.headers.get('location'), contentType: response.headers.get('content-type') };
  }, url);
}

async function playerState(page: Page): Promise<PlayerState> {
  return page.evaluate(async () => {
    const { pc, video } = (window as unknown as { whep: { pc: RTCPeerConnection; video: HTMLVideoElement } }).whep;
    let framesDecoded = 0;
    let audioSamples = 0;
    let concealedSamples = 0;
    (await pc.getStats()).forEach((report: { type: string; kind?: string; framesDecoded?: number; totalSamplesReceived?: number; concealedSamples?: number }) => {
      if (report.type !== 'inbound-rtp') return;
      if (report.kind === 'video') framesDecoded = report.framesDecoded ?? 0;
      if (report.kind === 'audio') {
        audioSamples = report.totalSamplesReceived ?? 0;
        concealedSamples = report.concealedSamples ?? 0;
      }
    });
    let brightness = 0;
    if (video.videoWidth > 0) {
      const canvas = document.createElement('canvas');
      canvas.width = 32;
      canvas.height = 18;
      const context = canvas.getContext('2d')!;
      context.drawImage(video, 0, 0, 32, 18);
      const pixels = context.getImageData(0, 0, 32, 18).data;
      let sum = 0;
      for (let i = 0; i < pixels.length; i += 4) sum += pixels[i]! + pixels[i + 1]! + pixels[i + 2]!;
      brightness = sum / (pixels.length / 4) / 3;
    }
    return { connection: pc.connectionState, framesDecoded, audioSamples, concealedSamples, brightness, width: video.videoWidth };
  });
}

describe('WebRTC playback over WHEP (mediasoup fed by the live ffmpeg)', { timeout: 170_000 }, () => {
  let node: OnAirNode;
  let close: () => Promise<void>;
  let chromium: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  let publisher: ReturnType<typeof publish>;
  let streamId: string;
  let streamKey: string;
  let location: string;

  before(async () => {
    ({ node, close } = await startTestNode({
      ONAIR_LADDER: '360', ONAIR_WEBRTC_LAYERS: '360,180', ONAIR_WEBRTC_WORKERS: '2', ONAIR_RECONNECT_GRACE_SEC: '20',
    }));
    assert.ok(node.edge, 'the WebRTC edge started');
    const created = await api(node, 'POST', '/api/streams', { body: { title: 'WebRTC test' } });
    streamId = created.body.id;
    streamKey = created.body.streamKey;
    publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 640, height: 360 });
    await waitFor('the stream to have segments', () => node.packager(streamId)?.ready, 30_000);
    chromium = await launchChromium();
    page = await chromium.browser.newPage();
    await page.goto(`${node.httpUrl}/healthz`);
  });

  after(async () => {
    publisher?.stop();
    await chromium?.close();
    await close();
  });

  test('Chromium as a WHEP client connects, decodes video that is not black, and decodes audio', async () => {
    const response = await startWhep(page, `/live/${streamId}/whep`);
    assert.equal(response.status, 201);
    assert.equal(response.contentType, 'application/sdp');
    assert.match(response.location ?? '', new RegExp(`^/live/${streamId}/whep/[0-9a-f-]{36}$`));
    location = response.location!;
    const state = await waitFor('60 decoded frames', async () => {
      const s = await playerState(page);
      return s.framesDecoded >= 60 && s.width > 0 ? s : undefined;
    }, 30_000, 250);
    assert.equal(state.connection, 'connected');
    assert.ok(state.brightness > 20, `the picture is not black (mean ${state.brightness.toFixed(1)})`);
    const audio = await waitFor('a second of decoded audio', async () => {
      const s = await playerState(page);
      return s.audioSamples > 48_000 ? s : undefined;
    }, 20_000, 250);
    assert.ok(audio.concealedSamples < audio.audioSamples * 0.5, `audio mostly decoded, not concealed (${audio.concealedSamples}/${audio.audioSamples})`);
    assert.equal(node.edge!.viewers(streamId), 1);
    const { body } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(body.stats.viewers, 1);
  });

  test('the WHEP session survives two publisher reconnects within the grace period: video and audio decode again within 5 s', async (t) => {
    for (const round of [1, 2]) {
      publisher.stop();
      await publisher.exited;
      const reconnected = node.transcoder(streamId)!.next('discontinuity', 20_000, (d) => d.reason === 'reconnect');
      publisher = publish(`${node.rtmpUrl}/${streamKey}`, { width: 640, height: 360 });
      await reconnected;
      const at = Date.now();
      const before = await playerState(page);
      // Audio that is decoded, not concealed (NetEq fills silence with concealment while no packet arrives).
      const decodedAudio = (s: PlayerState): number => s.audioSamples - s.concealedSamples;
      let videoMs: number | undefined;
      let audioMs: number | undefined;
      await waitFor(`round ${round}: 30 frames and half a second of decoded audio after the reconnect`, async () => {
        const s = await playerState(page);
        if (videoMs === undefined && s.framesDecoded > before.framesDecoded + 30) videoMs = Date.now() - at;
        if (audioMs === undefined && decodedAudio(s) > decodedAudio(before) + 24_000) audioMs = Date.now() - at;
        return videoMs !== undefined && audioMs !== undefined;
      }, 5_000, 100);
      t.diagnostic(`round ${round}: after the new ffmpeg run started Chromium had decoded 30 frames at ${videoMs} ms, half a second of audio at ${audioMs} ms`);
    }
    assert.equal(node.edge!.viewers(streamId), 1, 'the same session');
  });

  test('DELETE of the session Location frees the consumer', async () => {
    const response = await fetch(`${node.httpUrl}${location}`, { method: 'DELETE' });
    assert.equal(response.status, 200);
    assert.equal(node.edge!.viewers(streamId), 0);
    const { body } = await api(node, 'GET', `/api/streams/${streamId}`, { token: null });
    assert.equal(body.stats.viewers, 0);
    const again = await fetch(`${node.httpUrl}${location}`, { method: 'DELETE' });
    assert.equal(again.status, 404);
    assert.equal((await again.json()).error.code, 'ONAIR_ERR_WHEP_SESSION_NOT_FOUND');
  });

  test('malformed SDP, a wrong content type, an unknown stream and a stream that is not live get catalogued 4xx', async () => {
    const post = (path: string, body: string, type = 'application/sdp'): Promise<Response> =>
      fetch(`${node.httpUrl}${path}`, { method: 'POST', headers: { 'content-type': type }, body });
    const malformed = await post(`/live/${streamId}/whep`, 'this is not SDP');
    assert.equal(malformed.status, 400);
    assert.equal((await malformed.json()).error.code, 'ONAIR_ERR_WHEP_SDP');
    const json = await post(`/live/${streamId}/whep`, '{}', 'application/json');
    assert.equal(json.status, 415);
    const unknown = await post('/live/aaaaaaaaaaaa/whep', 'v=0');
    assert.equal(unknown.status, 404);
    assert.equal((await unknown.json()).error.code, 'ONAIR_ERR_STREAM_NOT_LIVE');
    const idle = await api(node, 'POST', '/api/streams', { body: { title: 'Not live' } });
    const notLive = await post(`/live/${idle.body.id}/whep`, 'v=0');
    assert.equal(notLive.status, 404);
    const bad = await post('/live/..%2Fetc/whep', 'v=0');
    assert.ok(bad.status >= 400 && bad.status < 500);
    assert.equal((await fetch(`${node.httpUrl}/healthz`)).status, 200);
  });
});
