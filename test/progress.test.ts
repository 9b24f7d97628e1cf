import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { ProgressParser, type Progress } from '../live-transcoder/progress.js';

// Two blocks as FFmpeg 5.1 prints them: the first before any output, the second from a file output.
const REPORT = [
  'frame=0',
  'fps=0.00',
  'stream_0_0_q=0.0',
  'bitrate=N/A',
  'total_size=N/A',
  'out_time_us=N/A',
  'out_time_ms=N/A',
  'out_time=N/A',
  'dup_frames=0',
  'drop_frames=0',
  'speed=N/A',
  'progress=continue',
  'frame=151',
  'fps=29.97',
  'stream_0_0_q=23.0',
  'bitrate=  512.3kbits/s',
  'total_size=323584',
  'out_time_us=5053333',
  'out_time_ms=5053333',
  'out_time=00:00:05.053333',
  'dup_frames=2',
  'drop_frames=1',
  'speed=1.01x',
  'progress=end',
  '',
].join('\n');

const EXPECTED: Progress[] = [
  { frame: 0, fps: 0, bitrateKbps: undefined, totalSize: 0, outTimeMs: 0, speed: undefined, dupFrames: 0, dropFrames: 0, end: false },
  { frame: 151, fps: 29.97, bitrateKbps: 512.3, totalSize: 323584, outTimeMs: 5053, speed: 1.01, dupFrames: 2, dropFrames: 1, end: true },
];

function collect(parser: ProgressParser): Progress[] {
  const reports: Progress[] = [];
  parser.on('progress', (progress) => reports.push(progress));
  return reports;
}

test('the parser reads each block of key=value lines into one progress report', { timeout: 30000 }, () => {
  const parser = new ProgressParser();
  const reports = collect(parser);
  parser.push(REPORT);
  assert.deepEqual(reports, EXPECTED);
});

test('the parser gives the same reports wherever the chunks cut the lines', { timeout: 30000 }, () => {
  const bytes = Buffer.from(REPORT);
  for (const size of [1, 2, 3, 7, 64]) {
    const parser = new ProgressParser();
    const reports = collect(parser);
    for (let offset = 0; offset < bytes.length; offset += size) parser.push(bytes.subarray(offset, offset + size));
    assert.deepEqual(reports, EXPECTED, `chunks of ${size} bytes`);
  }
});

test('the parser emits a block only once its progress line is complete', { timeout: 30000 }, () => {
  const parser = new ProgressParser();
  const reports = collect(parser);
  parser.push('frame=10\nout_time_ms=400000\nprogress=contin');
  assert.equal(reports.length, 0);
  parser.push('ue\r\n');
  assert.equal(reports.length, 1);
  assert.equal(reports[0]!.frame, 10);
  assert.equal(reports[0]!.outTimeMs, 400, 'out_time_ms is microseconds despite its name');
  assert.equal(reports[0]!.end, false);
});

test('the parser reads out_time when FFmpeg gives no microsecond fields, and a negative time as 0', { timeout: 30000 }, () => {
  const parser = new ProgressParser();
  const reports = collect(parser);
  parser.push('out_time=01:02:03.500000\nprogress=continue\n');
  parser.push('out_time_us=-9223372036854775807\nout_time=-577014:32:22.775808\nprogress=continue\n');
  assert.deepEqual(reports.map((report) => report.outTimeMs), [3_723_500, 0]);
});

test('a real FFmpeg run reports progress up to a final block at the end of its input', { timeout: 30000 }, async () => {
  const parser = new ProgressParser();
  const reports = collect(parser);
  const child = spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-nostats',
    '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30', '-t', '2',
    '-c:v', 'libx264', '-preset', 'ultrafast',
    '-progress', 'pipe:1',
    '-f', 'null', '-',
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.on('data', (chunk: Buffer) => parser.push(chunk));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  assert.equal(code, 0);
  assert.ok(reports.length >= 1);
  const last = reports.at(-1)!;
  assert.equal(last.end, true);
  assert.equal(reports.filter((report) => report.end).length, 1);
  assert.equal(last.frame, 60);
  assert.ok(Math.abs(last.outTimeMs - 2000) <= 40, `out time ${last.outTimeMs} ms`);
  assert.ok(last.speed === undefined || last.speed > 0);
  assert.equal(last.dropFrames, 0);
});


test('a block with a quality key for each of hundreds of output streams still reads its time', { timeout: 30000 }, () => {
  const parser = new ProgressParser();
  const reports = collect(parser);
  const qualities = Array.from({ length: 300 }, (_, i) => `stream_${i}_0_q=23.0`);
  parser.push(['frame=151', 'fps=29.97', ...qualities, 'out_time_us=5053333', 'speed=1.01x', 'progress=continue', ''].join('\n'));
  assert.equal(reports.length, 1);
  assert.equal(reports[0]!.outTimeMs, 5053);
  assert.equal(reports[0]!.speed, 1.01);
});
