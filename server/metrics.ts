import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the metrics read at scrape time: the composition root's view of every live stream. */
export interface LiveStreamSample {
  streamId: string;
  inputKbps: number;
  inputFps: number;
  encoderSpeed: number | undefined;
  encoderFps: number | undefined;
  renditions: { name: string; kbps: number; fps: number }[];
  /** Media time waiting in ffmpeg's input, ms. */
  backlogMs: number;
  /** Degradation steps taken (0: the full ladder). */
  ladderLevel: number;
}

/** Which protocol an HTTP route serves, for `onair_sent_bytes_total`. */
export function protocolOf(route: string): 'llhls' | 'vod' | 'web' | 'api' | 'other' {
  if (route.startsWith('/live/')) return route.endsWith('/whep') || route.includes('/whep/') ? 'api' : 'llhls';
  if (route.startsWith('/vod/')) return 'vod';
  if (route.startsWith('/api/')) return 'api';
  if (route === '/' || route === '/studio' || route.startsWith('/watch/') || route.startsWith('/assets/') || route === '/favicon.ico') return 'web';
  return 'other';
}

/** Prometheus metrics: process metrics plus per-stream input, encoder and rendition figures. */
export class Metrics {
  readonly registry = new Registry();
  readonly publishRefused: Counter<'reason'>;
  readonly transcoderRestarts: Counter<'stream'>;
  readonly rtmpDropped: Counter<'reason'>;
  readonly rateLimited: Counter<'limit'>;
  readonly childRestarts: Counter<'child'>;
  readonly ladderChanges: Counter<'direction'>;
  /** Every HTTP response, by method, route template (`/live/:id/:rendition/index.m3u8`, not the URL) and status. */
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  /** Bytes sent, by protocol (llhls, vod, web, api, other: HTTP bodies; webrtc: media to WHEP viewers). */
  readonly sentBytes: Counter<'protocol'>;
  /** Ingest → part out, per LL-HLS part of every rendition: where the server's share of the latency goes. */
  readonly partDelay: Histogram;

  /** A gauge read at scrape time from the composition root's state (e.g. event endings waiting). */
  gauge(name: string, help: string, read: () => number): void {
    new Gauge({ name, help, registers: [this.registry], collect() { this.set(read()); } });
  }

  /**
   * `webrtcBytes`: bytes sent to WebRTC viewers so far (never decreasing; read at each scrape), when this node serves
   * WebRTC.
   */
  constructor(sample: () => LiveStreamSample[], webrtcBytes?: () => Promise<number>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'onair_' });
    const registers = [this.registry];

    this.publishRefused = new Counter({
      name: 'onair_publish_refused_total',
      help: 'RTMP publishes refused, by reason (bad-key, busy, bad-app, play-not-supported, unsupported).',
      labelNames: ['reason'],
      registers,
    });
    this.rtmpDropped = new Counter({
      name: 'onair_rtmp_dropped_total',
      help: 'RTMP connections closed by the ingest guard, by reason (protocol, limit, timeout, too-many, slow-reader).',
      labelNames: ['reason'],
      registers,
    });
    this.rateLimited = new Counter({
      name: 'onair_rate_limited_total',
      help: 'HTTP requests answered 429 or 503 by a limit, by limit name.',
      labelNames: ['limit'],
      registers,
    });
    this.transcoderRestarts = new Counter({
      name: 'onair_transcoder_restarts_total',
      help: 'ffmpeg restarts after a crash or a hang, by stream.',
      labelNames: ['stream'],
      registers,
    });
    this.childRestarts = new Counter({
      name: 'onair_child_restarts_total',
      help: 'Child processes OnAir replaced after they died, by child (redis: the embedded redis-server; mediasoup: a worker, ingest or viewer; whip-bridge: the ffmpeg of a WHIP publish).',
      labelNames: ['child'],
      registers,
    });


    this.httpRequests = new Counter({
      name: 'onair_http_requests_total',
      help: 'HTTP responses by method, route template (unmatched: no route) and status code.',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.httpDuration = new Histogram({
      name: 'onair_http_request_duration_seconds',
      help: 'HTTP request duration, seconds, by method, route template and status class (2xx…5xx; a blocking playlist request includes its wait).',
      labelNames: ['method', 'route', 'status'],
      // Parts and playlists answer in ms; blocking requests wait up to a part or a segment; uploads take longer.
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });

    let webrtcSent = 0;
    this.sentBytes = new Counter({
      name: 'onair_sent_bytes_total',
      help: 'Bytes sent, by protocol: llhls (live playlists and media), vod (on-demand playlists and media), web (pages and assets), ' +
        'api, other (HTTP response bodies); webrtc (media to WHEP viewers, read from the transports at each scrape).',
      labelNames: ['protocol'],
      registers,
      async collect() {
        const total = await webrtcBytes?.().catch(() => undefined);
        if (total !== undefined && total > webrtcSent) {
          this.inc({ protocol: 'webrtc' }, total - webrtcSent);
          webrtcSent = total;
        }
      },
    });
    for (const protocol of ['llhls', 'vod', 'web', 'api', 'webrtc']) this.sentBytes.inc({ protocol }, 0);

    this.partDelay = new Histogram({
      name: 'onair_llhls_part_delay_seconds',
      help: 'LL-HLS parts, seconds from the moment their last media reached the ingest to the part being served ' +
        '(decode, ladder encode, fragment, package); every rendition.',
      // Fine where parts land (tens to hundreds of ms), coarse beyond: a stream falling behind shows in the top buckets.
      buckets: [0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2, 5],
      registers,
    });

    const gauge = (name: string, help: string, labelNames: string[], read: (g: Gauge<string>) => void): void => {
      new Gauge({
        name, help, labelNames, registers,
        collect() {
          this.reset();
          read(this);
        },
      });
    };
    this.ladderChanges = new Counter({
      name: 'onair_ladder_changes_total',
      help: 'Ladder changes made for load: down (a degradation step), up (a step back), catch-up (a restart at live).',
      labelNames: ['direction'],
      registers,
    });
    gauge('onair_encoder_backlog_seconds', 'Media time written to ffmpeg and not read yet (grows when the encoder falls behind).', ['stream'], (g) => {
      for (const s of sample()) g.set({ stream: s.streamId }, s.backlogMs / 1000);
    });
    gauge('onair_ladder_level', 'Degradation steps taken for load (0: the full ladder).', ['stream'], (g) => {
      for (const s of sample()) g.set({ stream: s.streamId }, s.ladderLevel);
    });
    gauge('onair_streams_live', 'Streams with a live event.', [], (g) => g.set(sample().length));
    gauge('onair_stream_input_bits_per_second', 'Publisher input bitrate, bits per second.', ['stream'], (g) => {
      for (const s of sample()) g.set({ stream: s.streamId }, s.inputKbps * 1000);
    });
    gauge('onair_stream_input_fps', 'Publisher video frames per second.', ['stream'], (g) => {
      for (const s of sample()) g.set({ stream: s.streamId }, s.inputFps);
    });
    gauge('onair_encoder_speed', 'ffmpeg speed: media seconds per wall second (below 1 falls behind real time).', ['stream'], (g) => {
      for (const s of sample()) if (s.encoderSpeed !== undefined) g.set({ stream: s.streamId }, s.encoderSpeed);
    });
    gauge('onair_encoder_fps', 'ffmpeg output frames per second.', ['stream'], (g) => {
      for (const s of sample()) if (s.encoderFps !== undefined) g.set({ stream: s.streamId }, s.encoderFps);
    });
    gauge('onair_rendition_bits_per_second', 'Measured output bitrate per rendition, bits per second.', ['stream', 'rendition'], (g) => {
      for (const s of sample()) for (const r of s.renditions) g.set({ stream: s.streamId, rendition: r.name }, r.kbps * 1000);
    });
    gauge('onair_rendition_fps', 'Measured output frame rate per rendition.', ['stream', 'rendition'], (g) => {
      for (const s of sample()) for (const r of s.renditions) g.set({ stream: s.streamId, rendition: r.name }, r.fps);
    });
  }
}
