import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { createFlvReader } from './nms.js';
import type { PublishSession } from './PublishSession.js';

/**
 * Feeds a session from an ffmpeg of ours that writes FLV on stdout (the WHIP and SRT bridges): its packets go to the
 * session as an RTMP publisher's would, its bytes count as the input, downstream's flow control pauses its stdout.
 * `failed` is called once, with the reason, when the FLV cannot be read or ffmpeg exits (with its last stderr lines).
 */
export function feedSession(ffmpeg: ChildProcessByStdio<Writable | null, Readable, Readable>, session: PublishSession, failed: (reason: string) => void): void {
  let done = false;
  const fail = (reason: string): void => {
    if (done) return;
    done = true;
    failed(reason);
  };
  const read = createFlvReader((packet) => session.handlePacket(packet));
  ffmpeg.stdout.on('data', (chunk: Buffer) => {
    if (done) return;
    try {
      session.received(chunk.length);
      read(chunk);
    } catch (error) {
      fail(`ffmpeg's FLV could not be read: ${(error as Error).message}`);
    }
  });
  session.on('flow', (flowing) => (flowing ? ffmpeg.stdout.resume() : ffmpeg.stdout.pause()));
  let stderr = '';
  ffmpeg.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-2000);
  });
  ffmpeg.on('exit', (code, signal) => fail(`ffmpeg exited (${code ?? signal}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
}
