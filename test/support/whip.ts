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
}

/**
 * Runs in a Chromium page with a fake camera (`launchChromium({ fakeCamera: true })`): publishes its camera and
 * microphone to a WHIP endpoint as a WHIP client does (RFC 9725: sendonly transceivers, the offer after ICE gathering,
 * the answer applied). The peer connection stays on `window.onairWhip`, for `whipState` and `whipStop`.
 */
export function whipPublish(page: Page, url: string, options: WhipPublishOptions): Promise<WhipResult> {
  return page.evaluate(async ({ url, key, videoCodec, audio }) => {
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 30 }, audio });
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
    if (response.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: body });
    else pc.close();
    (window as unknown as { onairWhip?: RTCPeerConnection }).onairWhip = pc;
    return { status: response.status, location: response.headers.get('location'), body, offer };
  }, { url, key: options.key, videoCodec: options.videoCodec ?? 'h264', audio: options.audio ?? true });
}

/** The WHIP peer connection's state and the video bytes it has sent. */
export function whipState(page: Page): Promise<{ state: string; videoBytesSent: number }> {
  return page.evaluate(async () => {
    const pc = (window as unknown as { onairWhip?: RTCPeerConnection }).onairWhip;
    if (!pc) return { state: 'none', videoBytesSent: 0 };
    let videoBytesSent = 0;
    (await pc.getStats()).forEach((report: { type: string; kind?: string; bytesSent?: number }) => {
      if (report.type === 'outbound-rtp' && report.kind === 'video') videoBytesSent += report.bytesSent ?? 0;
    });
    return { state: pc.connectionState, videoBytesSent };
  });
}

/** Closes the page's WHIP peer connection without a DELETE: a publisher whose network went away. */
export function whipDrop(page: Page): Promise<void> {
  return page.evaluate(() => {
    (window as unknown as { onairWhip?: RTCPeerConnection }).onairWhip?.close();
  });
}
