import dgram from 'node:dgram';

/** One input of the relay: where ffmpeg sends RTP (`port`) and RTCP (`port + 1`, ffmpeg's default). */
export interface RelayInput {
  port: number;
}

/** An RTP stream the relay keeps continuous, and its clock rate (90000 for video, 48000 for Opus). */
export interface RelayStream {
  ssrc: number;
  clockRate: number;
}

/** Sequence-number steps (signed, mod 2^16) that continue a stream: reordering behind, losses ahead. */
const SEQ_BEHIND = 512;
const SEQ_AHEAD = 3000;
/** Timestamp steps (seconds, signed) that continue a stream; anything else is a new ffmpeg run. */
const TS_BEHIND_SEC = 5;
const TS_AHEAD_SEC = 30;

/**
 * Where one SSRC stands: the last packet in (as ffmpeg numbered it) and out (as mediasoup sees it), and the offsets
 * between them, which change only when a new ffmpeg run starts.
 */
interface StreamState {
  clockRate: number;
  inSeq: number;
  inTs: number;
  outSeq: number;
  outTs: number;
  seqOffset: number;
  tsOffset: number;
  /** Arrival of the highest packet (ms, monotonic): how far the timestamps move across a restart. */
  at: number;
  /** New ffmpeg runs seen (each one rebased). */
  runs: number;
}

/**
 * Funnels ffmpeg's RTP outputs (one UDP source port per output stream) into one UDP flow towards a mediasoup
 * PlainTransport. A PlainTransport accepts RTP from one remote tuple only, and a simulcast producer needs all its layers
 * on one transport; ffmpeg's rtp muxer binds a new local port for each output. Loopback only; a few hundred packets
 * per second.
 *
 * It also keeps each stream continuous across ffmpeg restarts (publisher reconnect, crash, ladder change with the
 * same layers). Each ffmpeg run starts its RTP on the same SSRCs with a random sequence number and timestamp base; the
 * producers stay (same SSRCs), and mediasoup passes such a jump on to every viewer, whose SRTP context (replay window,
 * rollover guess) then refuses packets until the numbers catch up, minutes for audio. So a packet that does not
 * continue its stream starts a new run: its sequence number follows the last one sent, its timestamp the last one plus
 * the wall-clock time since, as if the network had paused. Sender reports get the same timestamp offset.
 */
export class RtpRelay {
  readonly #out: dgram.Socket;
  readonly #inputs: dgram.Socket[] = [];
  #target: { port: number; address: string } | undefined;
  #closed = false;
  /** Keyed by the SSRCs given to `track` only: bounded by the streams the edge hands ffmpeg. */
  readonly #streams = new Map<number, StreamState | { clockRate: number; runs?: undefined }>();
  packetsIn = 0;

  private constructor(out: dgram.Socket) {
    this.#out = out;
  }

  /** Binds `inputs` RTP/RTCP port pairs and the output socket on 127.0.0.1. */
  static async create(inputs: number): Promise<{ relay: RtpRelay; inputs: RelayInput[] }> {
    const out = await bind(0);
    const relay = new RtpRelay(out);
    const result: RelayInput[] = [];
    for (let i = 0; i < inputs; i++) {
      const [rtp, rtcp] = await bindPair();
      rtp.on('message', (message) => relay.#forward(message, 'rtp'));
      rtcp.on('message', (message) => relay.#forward(message, 'rtcp'));
      relay.#inputs.push(rtp, rtcp);
      result.push({ port: rtp.address().port });
    }
    return { relay, inputs: result };
  }

  /** The PlainTransport's local tuple (comedia: it learns our address from the first packet). */
  connect(target: { port: number; address: string }): void {
    this.#target = target;
  }

  /** The SSRCs to keep continuous across ffmpeg runs (others are forwarded as they come). */
  track(streams: RelayStream[]): void {
    for (const { ssrc, clockRate } of streams) this.#streams.set(ssrc >>> 0, { clockRate });
  }

  /** New ffmpeg runs seen on `ssrc` (0 before the second run). */
  restarts(ssrc: number): number {
    return this.#streams.get(ssrc >>> 0)?.runs ?? 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const socket of [...this.#inputs, this.#out]) socket.close();
  }

  #forward(message: Buffer, kind: 'rtp' | 'rtcp'): void {
    if (!this.#target || this.#closed) return;
    this.packetsIn += 1;
    // Version 2 only; anything else goes on untouched (mediasoup drops what it cannot parse).
    const ok = message.length >= 12 && message[0]! >> 6 === 2 ? (kind === 'rtp' ? this.#rtp(message) : this.#rtcp(message)) : true;
    if (ok) this.#out.send(message, this.#target.port, this.#target.address);
  }

  /** Rewrites an RTP packet's sequence number and timestamp in place. */
  #rtp(packet: Buffer): boolean {
    const ssrc = packet.readUInt32BE(8);
    const known = this.#streams.get(ssrc);
    if (!known) return true;
    const seq = packet.readUInt16BE(2);
    const ts = packet.readUInt32BE(4);
    const now = performance.now();
    let state: StreamState;
    if (known.runs === undefined) {
      // The first packet ever: numbers pass as they are.
      state = { clockRate: known.clockRate, inSeq: seq, inTs: ts, outSeq: seq, outTs: ts, seqOffset: 0, tsOffset: 0, at: now, runs: 0 };
      this.#streams.set(ssrc, state);
    } else {
      state = known as StreamState;
      const seqStep = signed(seq - state.inSeq, 16);
      const tsStep = signed(ts - state.inTs, 32);
      const continues = seqStep > -SEQ_BEHIND && seqStep < SEQ_AHEAD
        && tsStep > -TS_BEHIND_SEC * state.clockRate && tsStep < TS_AHEAD_SEC * state.clockRate;
      if (!continues) {
        // A new ffmpeg run: go on from the last packet sent, as if the network had paused since.
        const elapsed = Math.max(1, Math.round(((now - state.at) * state.clockRate) / 1000));
        state.seqOffset = (state.outSeq + 1 - seq) & 0xffff;
        state.tsOffset = (state.outTs + elapsed - ts) >>> 0;
        state.runs += 1;
      }
      if (!continues || seqStep > 0) {
        state.inSeq = seq;
        state.inTs = ts;
        state.outSeq = (seq + state.seqOffset) & 0xffff;
        state.outTs = (ts + state.tsOffset) >>> 0;
        state.at = now;
      }
    }
    packet.writeUInt16BE((seq + state.seqOffset) & 0xffff, 2);
    packet.writeUInt32BE((ts + state.tsOffset) >>> 0, 4);
    return true;
  }

  /**
   * A sender report (first in its compound packet, as ffmpeg sends it) gets its stream's timestamp offset. One that
   * does not fit the stream as sent (a new run's report ahead of its first RTP packet) is dropped: mediasoup would map
   * wall clock to the wrong timestamps until the next one.
   */
  #rtcp(packet: Buffer): boolean {
    if (packet[1] !== 200 || packet.length < 28) return true;
    const state = this.#streams.get(packet.readUInt32BE(4));
    if (!state || state.runs === undefined) return true;
    const ts = (packet.readUInt32BE(16) + state.tsOffset) >>> 0;
    const distance = Math.abs(signed(ts - state.outTs, 32));
    if (distance > TS_AHEAD_SEC * state.clockRate) return false;
    packet.writeUInt32BE(ts, 16);
    return true;
  }
}

/** `value` as a signed number of `bits` bits (the step between two RTP sequence numbers or timestamps). */
function signed(value: number, bits: 16 | 32): number {
  const modulo = 2 ** bits;
  const v = ((value % modulo) + modulo) % modulo;
  return v >= modulo / 2 ? v - modulo : v;
}

function bind(port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(port, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/** Two consecutive ports (RTP on an even one, RTCP on the next), as ffmpeg's rtp muxer expects. */
async function bindPair(): Promise<[dgram.Socket, dgram.Socket]> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const rtp = await bind(0);
    const port = rtp.address().port;
    if (port % 2 !== 0 || port >= 65535) {
      rtp.close();
      continue;
    }
    try {
      return [rtp, await bind(port + 1)];
    } catch {
      rtp.close();
    }
  }
  throw new Error('could not bind a pair of consecutive UDP ports on 127.0.0.1');
}
