import dgram from 'node:dgram';

/** One input of the relay: where ffmpeg sends RTP (`port`) and RTCP (`port + 1`, ffmpeg's default). */
export interface RelayInput {
  port: number;
}

/**
 * Funnels ffmpeg's RTP outputs (one UDP source port per output stream) into one UDP flow towards a mediasoup
 * PlainTransport. A PlainTransport accepts RTP from one remote tuple only, and a simulcast producer needs all its layers
 * on one transport; ffmpeg's rtp muxer binds a new local port for each output. Loopback only; a few hundred packets
 * per second.
 */
export class RtpRelay {
  readonly #out: dgram.Socket;
  readonly #inputs: dgram.Socket[] = [];
  #target: { port: number; address: string } | undefined;
  #closed = false;
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
      for (const socket of [rtp, rtcp]) {
        socket.on('message', (message) => relay.#forward(message));
        relay.#inputs.push(socket);
      }
      result.push({ port: rtp.address().port });
    }
    return { relay, inputs: result };
  }

  /** The PlainTransport's local tuple (comedia: it learns our address from the first packet). */
  connect(target: { port: number; address: string }): void {
    this.#target = target;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const socket of [...this.#inputs, this.#out]) socket.close();
  }

  #forward(message: Buffer): void {
    if (!this.#target || this.#closed) return;
    this.packetsIn += 1;
    this.#out.send(message, this.#target.port, this.#target.address);
  }
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
