import type { Page } from 'playwright-core';

export interface WhipResult {
  status: number;
  location: string | null;
  /** The SDP answer (201) or the error body. */
  body: string;
  /** The offer as POSTed. */
  offer: string;
}

export interface WhipPublishOptions {
  /** The stream key, sent as `Authorization: Bearer`; none when undefined. */
  key: string | undefined;
  /** The video codec offered: H.264 alone (as OBS's WHIP output) or VP8 alone (what OnAir cannot take). */
  videoCodec?: 'h264' | 'vp8';
  /** Offer a microphone too; default true. */
  audio?: boolean;
  /**
   * Instead of the fake camera, a canvas of this size showing the wall-clock barcode of bench/support/publisher.ts
   * (`geometry`: its `BARCODE`, scaled to the canvas), drawn `fps` times a second: for glass-to-glass measurements.
   */
  barcode?: { width: number; height: number; fps: number; geometry: BarcodeGeometry };
}

export interface BarcodeGeometry {
  bits: number; sourceWidth: number; sourceHeight: number; stripHeight: number; left: number; pitch: number; width: number; top: number; height: number;
}

/**
 * Runs in a Chromium page with a fake camera (`launchChromium({ fakeCamera: true })`): publishes its camera and
 * microphone to a WHIP endpoint as a WHIP client does (RFC 9725: sendonly transceivers, the offer after ICE gathering,
 * the answer applied). The peer connection stays on `window.onairWhip`, for `whipState` and `whipStop`.
 */
export function whipPublish(page: Page, url: string, options: WhipPublishOptions): Promise<WhipResult> {
  return page.evaluate(async ({ url, key, videoCodec, audio, barcode }) => {
    let media: MediaStream;
    if (barcode) {
      // The capture time of each frame, burnt in as bench/support/publisher.ts does (boxes scaled to the canvas).
      const canvas = document.createElement('canvas');
      canvas.width = barcode.width;
      canvas.height = barcode.height;
      const context = canvas.getContext('2d')!;
      const g = barcode.geometry;
      const sx = barcode.width / g.sourceWidth;
      const sy = barcode.height / g.sourceHeight;
      let n = 0;
      const draw = (): void => {
        const now = Date.now() % 2 ** g.bits;
        context.fillStyle = '#336699';
        context.fillRect(0, 0, barcode.width, barcode.height);
        context.fillStyle = '#dddddd';
        context.fillRect((n++ * 4) % barcode.width, barcode.height / 2, 40 * sx, 40 * sy);
        context.fillStyle = '#000000';
        context.fillRect(0, 0, barcode.width, g.stripHeight * sy);
        context.fillStyle = '#ffffff';
        for (let k = 0; k < g.bits; k++) {
          if (Math.floor(now / 2 ** k) % 2 === 1) context.fillRect((g.left + k * g.pitch) * sx, g.top * sy, g.width * sx, g.height * sy);
        }
      };
      draw();
      setInterval(draw, 1000 / barcode.fps);
      media = canvas.captureStream(barcode.fps);
    } else {
      media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 30 }, audio });
    }
    const pc = new RTCPeerConnection();
    const video = pc.addTransceiver(media.getVideoTracks()[0]!, { direction: 'sendonly', streams: [media] });
    for (const track of media.getAudioTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
    const wanted = videoCodec === 'vp8' ? 'video/vp8' : 'video/h264';
    const codecs = RTCRtpSender.getCapabilities('video')!.codecs;
    video.setCodecPreferences([
      ...codecs.filter((c) => c.mimeType.toLowerCase() === wanted && (wanted !== 'video/h264' || /packetization-mode=1/.test(c.sdpFmtpLine ?? ''))),
      ...codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx'),
    ]);
    await pc.setLocalDescription();
    await new Promise<void>((resolve) => {
      if (pc.iceGatheringState === 'complete') resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 3000);
    });
    const offer = pc.localDescription!.sdp;
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', ...(key === undefined ? {} : { authorization: `Bearer ${key}` }) },
      body: offer,
    });
    const body = await response.text();
    if (response.status === 201) {
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
      // A barcode must stay readable: the encoder may drop frames under load, never the resolution.
      const parameters = video.sender.getParameters();
      parameters.degradationPreference = 'maintain-resolution';
      await video.sender.setParameters(parameters).catch(() => undefined);
    } else {
      pc.close();
    }
    (window as unknown as { onairWhip?: RTCPeerConnection }).onairWhip = pc;
    return { status: response.status, location: response.headers.get('location'), body, offer };
  }, { url, key: options.key, videoCodec: options.videoCodec ?? 'h264', audio: options.audio ?? true, barcode: options.barcode });
}

/** The WHIP peer connection's state and what its video sender reports (bytes, frames, the encoder, what limits it). */
export function whipState(page: Page): Promise<{ state: string; videoBytesSent: number; outbound: Record<string, unknown> }> {
  return page.evaluate(async () => {
    const pc = (window as unknown as { onairWhip?: RTCPeerConnection }).onairWhip;
    if (!pc) return { state: 'none', videoBytesSent: 0, outbound: {} };
    let outbound: Record<string, unknown> = {};
    (await pc.getStats()).forEach((report: { type: string; kind?: string }) => {
      if (report.type === 'outbound-rtp' && report.kind === 'video') outbound = { ...report };
    });
    return { state: pc.connectionState, videoBytesSent: Number(outbound['bytesSent'] ?? 0), outbound };
  });
}

/** Closes the page's WHIP peer connection without a DELETE: a publisher whose network went away. */
export function whipDrop(page: Page): Promise<void> {
  return page.evaluate(() => {
    (window as unknown as { onairWhip?: RTCPeerConnection }).onairWhip?.close();
  });
}
