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

/**
 * Which feed the relay forwards: ffmpeg's live ladder, or the short-lived ffmpeg that plays an ad break's ads on the
 * same SSRCs (`adInputs`).
 */
export type RelaySource = 'live' | 'ad';

/** How long a switch waits for a keyframe of the source switched to before it takes any packet (ms). */
export const SWITCH_FORCE_AFTER_MS = 2500;

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
  /** The feed this SSRC is forwarded from now; the other one's packets are dropped. */
  source: RelaySource;
  /** A `use()` is waiting for this SSRC's switch (at a keyframe of the feed asked for). */
  pending: boolean;
}

/** A tracked SSRC before its first packet. */
interface Tracked {
  clockRate: number;
  runs?: undefined;
  source?: undefined;
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
  readonly #inputCount: number;
  /** The second set of inputs, for the ad feed: bound on the first `adInputs()`, at most one set. */
  #adInputs: Promise<RelayInput[]> | undefined;
  /** The feed asked for (`use`), since when, and how long a switch waits for a keyframe. */
  #wanted: { source: RelaySource; at: number; forceAfterMs: number; counted: boolean } = {
    source: 'live', at: 0, forceAfterMs: SWITCH_FORCE_AFTER_MS, counted: true,
  };
  #target: { port: number; address: string } | undefined;
  #closed = false;
  /** Keyed by the SSRCs given to `track` only: bounded by the streams the edge hands ffmpeg. */
  readonly #streams = new Map<number, StreamState | Tracked>();
  /** By input index (`stamp`). */
  #stamps: { ssrc: number; payloadType: number }[] = [];
  packetsIn = 0;
  /** Switches done from one feed to the other (counted once per switch, on its first video SSRC, or audio alone). */
  switches = 0;

  private constructor(out: dgram.Socket, inputCount: number) {
    this.#out = out;
    this.#inputCount = inputCount;
  }

  /** Binds `inputs` RTP/RTCP port pairs and the output socket on 127.0.0.1. */
  static async create(inputs: number): Promise<{ relay: RtpRelay; inputs: RelayInput[] }> {
    const out = await bind(0);
    const relay = new RtpRelay(out, inputs);
    return { relay, inputs: await relay.#bindInputs('live') };
  }

  async #bindInputs(source: RelaySource): Promise<RelayInput[]> {
    const result: RelayInput[] = [];
    for (let i = 0; i < this.#inputCount; i++) {
      const [rtp, rtcp] = await bindPair();
      rtp.on('message', (message) => this.#forward(message, 'rtp', source, i));
      rtcp.on('message', (message) => this.#forward(message, 'rtcp', source, i));
      this.#inputs.push(rtp, rtcp);
      if (this.#closed) {
        rtp.close();
        rtcp.close();
        throw new Error('the relay was closed');
      }
      result.push({ port: rtp.address().port });
    }
    return result;
  }

  /**
   * The ad feed's inputs: as many RTP/RTCP port pairs as the live ones, in the same order (layer i, then audio), bound
   * on the first call; later calls get the same ports. What arrives there is dropped until `use('ad')`.
   */
  adInputs(): Promise<RelayInput[]> {
    this.#adInputs ??= this.#bindInputs('ad');
    return this.#adInputs;
  }

  /**
   * Switches the tracked SSRCs to `source`: each video SSRC at that feed's next keyframe (an SPS or IDR starting in
   * the packet), audio with the first video SSRC that switched (alone, with no video tracked); until then the other
   * feed goes on. A switch that finds no keyframe within `forceAfterMs` takes the next packet. Every switch rebases
   * the numbers (the sequence follows the last one sent, the timestamp moves on by the wall-clock time since), whatever
   * the two feeds' numbers are. Asking for the source in use arms a rebase on its next keyframe (a new ffmpeg run).
   */
  use(source: RelaySource, options: { forceAfterMs?: number } = {}): void {
    this.#wanted = { source, at: performance.now(), forceAfterMs: options.forceAfterMs ?? SWITCH_FORCE_AFTER_MS, counted: false };
    for (const state of this.#streams.values()) if (state.runs !== undefined) state.pending = true;
  }

  /** The feed an SSRC is forwarded from now. */
  source(ssrc: number): RelaySource {
    return this.#streams.get(ssrc >>> 0)?.source ?? 'live';
  }

  /** The PlainTransport's local tuple (comedia: it learns our address from the first packet). */
  connect(target: { port: number; address: string }): void {
    this.#target = target;
  }

  /**
   * What each input's packets are sent on, input i (live or ad) taking `stamps[i]`: RTP gets that SSRC and payload
   * type, a sender report that SSRC. ffmpeg sends them already; a sender that cannot choose its own (a mediasoup
   * consumer: a WHIP publisher's own media, issue #20) is numbered as the producer expects here.
   */
  stamp(stamps: readonly { ssrc: number; payloadType: number }[]): void {
    this.#stamps = stamps.map(({ ssrc, payloadType }) => ({ ssrc: ssrc >>> 0, payloadType: payloadType & 0x7f }));
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

  #forward(message: Buffer, kind: 'rtp' | 'rtcp', from: RelaySource, input: number): void {
    if (!this.#target || this.#closed) return;
    this.packetsIn += 1;
    const stamp = this.#stamps[input];
    if (stamp && message.length >= 12 && message[0]! >> 6 === 2) {
      if (kind === 'rtp') {
        message[1] = (message[1]! & 0x80) | stamp.payloadType;
        message.writeUInt32BE(stamp.ssrc, 8);
      } else if (message[1] === 200) {
        message.writeUInt32BE(stamp.ssrc, 4);
      }
    }
    // Version 2 only; anything else from the live feed goes on untouched (mediasoup drops what it cannot parse).
    const ok = message.length >= 12 && message[0]! >> 6 === 2
      ? (kind === 'rtp' ? this.#rtp(message, from) : this.#rtcp(message, from))
      : from === 'live';
    if (ok) this.#out.send(message, this.#target.port, this.#target.address);
  }

  /** Rewrites an RTP packet's sequence number and timestamp in place; false: drop it (the other feed's). */
  #rtp(packet: Buffer, from: RelaySource): boolean {
    const ssrc = packet.readUInt32BE(8);
    const known = this.#streams.get(ssrc);
    // Untracked SSRCs pass from the live feed as they come; the ad feed sends tracked ones only.
    if (!known) return from === 'live';
    const seq = packet.readUInt16BE(2);
    const ts = packet.readUInt32BE(4);
    const now = performance.now();
    let state: StreamState;
    if (known.runs === undefined) {
      // The first packet ever, from the feed in use: numbers pass as they are.
      if (from !== this.#wanted.source) return false;
      state = {
        clockRate: known.clockRate, inSeq: seq, inTs: ts, outSeq: seq, outTs: ts, seqOffset: 0, tsOffset: 0, at: now, runs: 0,
        source: from, pending: false,
      };
      this.#streams.set(ssrc, state);
    } else {
      state = known as StreamState;
      if (state.pending && from === this.#wanted.source && this.#switchesAt(state, packet, now)) {
        // The switch (or a new run of the feed in use, announced): forced rebase, whatever the numbers look like.
        rebase(state, seq, ts, now);
        state.source = from;
        state.pending = false;
        if (!this.#wanted.counted) {
          this.#wanted.counted = true;
          this.switches += 1;
        }
      } else if (from !== state.source) {
        return false;
      } else {
        const seqStep = signed(seq - state.inSeq, 16);
        const tsStep = signed(ts - state.inTs, 32);
        const continues = seqStep > -SEQ_BEHIND && seqStep < SEQ_AHEAD
          && tsStep > -TS_BEHIND_SEC * state.clockRate && tsStep < TS_AHEAD_SEC * state.clockRate;
        if (!continues) {
          // A new ffmpeg run: go on from the last packet sent, as if the network had paused since.
          rebase(state, seq, ts, now);
          state.runs += 1;
        } else if (seqStep > 0) {
          state.inSeq = seq;
          state.inTs = ts;
          state.outSeq = (seq + state.seqOffset) & 0xffff;
          state.outTs = (ts + state.tsOffset) >>> 0;
          state.at = now;
        }
      }
    }
    packet.writeUInt16BE((seq + state.seqOffset) & 0xffff, 2);
    packet.writeUInt32BE((ts + state.tsOffset) >>> 0, 4);
    return true;
  }

  /**
   * May this packet of the feed asked for switch its SSRC? Video at a keyframe (SPS or IDR: where a decoder can
   * start), audio once a video SSRC has switched (or with no video), anything once the switch has waited too long.
   */
  #switchesAt(state: StreamState, packet: Buffer, now: number): boolean {
    if (now - this.#wanted.at >= this.#wanted.forceAfterMs) return true;
    if (state.clockRate === VIDEO_CLOCK_RATE) return isH264Keyframe(packet);
    let video = false;
    for (const other of this.#streams.values()) {
      if (other.clockRate !== VIDEO_CLOCK_RATE || other.runs === undefined) continue;
      if (!other.pending && other.source === this.#wanted.source) return true;
      video = true;
    }
    return !video;
  }

  /**
   * A sender report (first in its compound packet, as ffmpeg sends it) gets its stream's timestamp offset. One that
   * does not fit the stream as sent (a new run's report ahead of its first RTP packet) is dropped: mediasoup would map
   * wall clock to the wrong timestamps until the next one. So is every report of the feed not in use.
   */
  #rtcp(packet: Buffer, from: RelaySource): boolean {
    const state = packet.length >= 8 ? this.#streams.get(packet.readUInt32BE(4)) : undefined;
    if (!state || state.runs === undefined) return from === 'live';
    if (from !== state.source) return false;
    if (packet[1] !== 200 || packet.length < 28) return true;
    const ts = (packet.readUInt32BE(16) + state.tsOffset) >>> 0;
    const distance = Math.abs(signed(ts - state.outTs, 32));
    if (distance > TS_AHEAD_SEC * state.clockRate) return false;
    packet.writeUInt32BE(ts, 16);
    return true;
  }
}

const VIDEO_CLOCK_RATE = 90000;

/** Numbers `ssrc`'s packets from this one on after the last one sent, as if the network had paused since. */
function rebase(state: StreamState, seq: number, ts: number, now: number): void {
  const elapsed = Math.max(1, Math.round(((now - state.at) * state.clockRate) / 1000));
  state.seqOffset = (state.outSeq + 1 - seq) & 0xffff;
  state.tsOffset = (state.outTs + elapsed - ts) >>> 0;
  state.inSeq = seq;
  state.inTs = ts;
  state.outSeq = (seq + state.seqOffset) & 0xffff;
  state.outTs = (ts + state.tsOffset) >>> 0;
  state.at = now;
}

/** NAL unit types (H.264 Table 7-1; RFC 6184 §5.2). */
const NAL_IDR = 5;
const NAL_SPS = 7;
const NAL_STAP_A = 24;
const NAL_FU_A = 28;

/**
 * Does this H.264 RTP packet (RFC 6184) start a keyframe: an SPS or an IDR slice as a single NAL unit, inside a
 * STAP-A, or as the first fragment of an FU-A? ffmpeg sends SPS and PPS before every IDR (`dump_extra`), so the SPS
 * packet is where a decoder can start. Malformed packets are not keyframes (never a throw).
 */
export function isH264Keyframe(packet: Buffer): boolean {
  if (packet.length < 13) return false;
  let offset = 12 + (packet[0]! & 0x0f) * 4;
  if (packet[0]! & 0x10) {
    if (packet.length < offset + 4) return false;
    offset += 4 + packet.readUInt16BE(offset + 2) * 4;
  }
  if (packet.length <= offset) return false;
  const type = packet[offset]! & 0x1f;
  if (type === NAL_IDR || type === NAL_SPS) return true;
  if (type === NAL_FU_A) {
    const header = packet[offset + 1];
    return header !== undefined && (header & 0x80) !== 0 && ((header & 0x1f) === NAL_IDR || (header & 0x1f) === NAL_SPS);
  }
  if (type === NAL_STAP_A) {
    let at = offset + 1;
    while (at + 2 < packet.length) {
      const size = packet.readUInt16BE(at);
      if (size === 0 || at + 2 + size > packet.length) return false;
      const inner = packet[at + 2]! & 0x1f;
      if (inner === NAL_IDR || inner === NAL_SPS) return true;
      at += 2 + size;
    }
  }
  return false;
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
