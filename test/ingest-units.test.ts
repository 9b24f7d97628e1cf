import assert from 'node:assert/strict';
import { describe, mock, test } from 'node:test';
import { PublishSession } from '../ingest/index.js';
import { PacketFlag, type AvPacket } from '../ingest/nms.js';

const T0 = Date.UTC(2026, 0, 1, 12);

function video(dts: number, keyframe: boolean): AvPacket {
  const data = Buffer.from([keyframe ? 0x17 : 0x27, 1, 0, 0, 0, 0, 0, 0, 1]);
  return { codec_id: 7, codec_type: 9, flags: keyframe ? PacketFlag.keyframe : PacketFlag.interframe, pts: dts, dts, size: data.length, data };
}

describe('PublishSession dates what it receives (EXT-X-PROGRAM-DATE-TIME = ingest time)', () => {
  test('the prelude is dated by the least-delayed frame: a keyframe that came late (an encoder starting, then a burst) is dated back', () => {
    mock.timers.enable({ apis: ['Date'], now: T0 });
    try {
      const session = new PublishSession({ id: 's', streamId: 'stream', remoteAddress: '127.0.0.1' });
      assert.equal(session.preludeDate(), undefined, 'nothing to date before a keyframe');
      // The keyframe (dts 0) arrives 600 ms late, the frames after it in a burst, then on time: frame dts d at T0 + d.
      mock.timers.setTime(T0 + 600);
      session.handlePacket(video(0, true));
      for (let dts = 40; dts <= 400; dts += 40) session.handlePacket(video(dts, false));
      const dated = session.preludeDate()!;
      assert.equal(dated(), T0 + 200, 'so far the least-delayed frame is the burst\'s last (dts 400, 200 ms late)');
      for (let dts = 640; dts <= 2000; dts += 40) {
        mock.timers.setTime(T0 + dts);
        session.handlePacket(video(dts, false));
      }
      assert.equal(dated(), T0, 'asked later (the run\'s first fragment out), the keyframe is dated when it was due');
      // A timestamp that jumps far ahead never dates a keyframe more than 2 s before its own arrival.
      mock.timers.setTime(T0 + 2040);
      session.handlePacket(video(1_000_000, false));
      assert.equal(dated(), T0 + 600 - 2000);
    } finally {
      mock.timers.reset();
    }
  });
});
