import net from 'node:net';

/*
 * A deliberately small HTTP/1.1 client for load generation: one keep-alive TCP connection, one request at a time,
 * GET only, `Content-Length` or chunked bodies. Node's http client spends several times more CPU per request, and a
 * load generator sharing a small machine with the server must spend as little as it can. No compression is asked
 * for (the servers compared must send the same bytes).
 */

export interface HttpResponse {
  status: number;
  body: Buffer;
  /** `Content-Encoding: gzip` (only when the connection asks for it): the body is as sent, still compressed. */
  gzipped: boolean;
}

/** A request failed at the transport level (connection refused or reset, timeout, malformed response). */
export class HttpClientError extends Error {
  override name = 'HttpClientError';
}

const HEADER_END = Buffer.from('\r\n\r\n');
const MAX_HEADER_BYTES = 16 * 1024;

interface Pending {
  resolve(response: HttpResponse): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class HttpConnection {
  readonly #host: string;
  readonly #port: number;
  readonly #timeoutMs: number;
  readonly #extraHeaders: string;
  #socket: net.Socket | undefined;
  #pending: Pending | undefined;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #closed = false;
  /** Connections opened so far (1 when keep-alive held throughout). */
  connects = 0;

  /**
   * `acceptGzip`: ask for gzip as browsers do (an LL-HLS server then gzips its playlists). `sessionId`: sent as
   * `X-Playback-Session-Id` on every request, as Apple's players and the watch page do (the server counts viewers by it).
   */
  constructor(host: string, port: number, timeoutMs = 10_000, options: { acceptGzip?: boolean; sessionId?: string } = {}) {
    this.#host = host;
    this.#port = port;
    this.#timeoutMs = timeoutMs;
    this.#extraHeaders = (options.acceptGzip ? 'Accept-Encoding: gzip\r\n' : '')
      + (options.sessionId === undefined ? '' : `X-Playback-Session-Id: ${options.sessionId}\r\n`);
  }

  /** GET `path`; resolves with any status (the caller judges it), rejects on transport errors and on close(). */
  get(path: string): Promise<HttpResponse> {
    if (this.#closed) return Promise.reject(new HttpClientError('connection closed'));
    if (this.#pending) return Promise.reject(new HttpClientError('a request is already in flight'));
    const socket = this.#socket ?? this.#connect();
    return new Promise<HttpResponse>((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(new HttpClientError(`no response within ${this.#timeoutMs} ms: GET ${path}`)), this.#timeoutMs);
      this.#pending = { resolve, reject, timer };
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${this.#host}:${this.#port}\r\nAccept: */*\r\n${this.#extraHeaders}\r\n`);
    });
  }

  /** Destroys the connection; a request in flight rejects. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#fail(new HttpClientError('connection closed'));
  }

  #connect(): net.Socket {
    const socket = net.connect({ host: this.#host, port: this.#port, noDelay: true });
    this.connects += 1;
    this.#socket = socket;
    this.#chunks = [];
    this.#buffered = 0;
    socket.on('data', (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      this.#parse();
    });
    socket.on('error', (error) => this.#fail(new HttpClientError(error.message), socket));
    socket.on('close', () => this.#fail(new HttpClientError('connection closed by the server'), socket));
    return socket;
  }

  /** Ends the current socket and rejects the request in flight, if any. */
  #fail(error: Error, socket = this.#socket): void {
    if (socket !== this.#socket) return;
    this.#socket?.destroy();
    this.#socket = undefined;
    this.#chunks = [];
    this.#buffered = 0;
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }

  #parse(): void {
    const pending = this.#pending;
    if (!pending) {
      this.#fail(new HttpClientError('bytes received with no request in flight'));
      return;
    }
    const data = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#buffered);
    this.#chunks = [data];
    const headerEnd = data.indexOf(HEADER_END);
    if (headerEnd < 0) {
      if (data.length > MAX_HEADER_BYTES) this.#fail(new HttpClientError('response header too long'));
      return;
    }
    const head = data.toString('latin1', 0, headerEnd);
    const status = Number(head.slice(9, 12));
    if (!head.startsWith('HTTP/1.') || !Number.isInteger(status)) {
      this.#fail(new HttpClientError(`malformed status line: ${head.split('\r\n')[0]}`));
      return;
    }
    const lower = head.toLowerCase();
    const bodyStart = headerEnd + HEADER_END.length;
    let body: Buffer | undefined;
    let end = 0;
    const lengthMatch = /\r\ncontent-length:\s*(\d+)/.exec(lower);
    if (lengthMatch) {
      const length = Number(lengthMatch[1]);
      if (data.length < bodyStart + length) return;
      body = data.subarray(bodyStart, bodyStart + length);
      end = bodyStart + length;
    } else if (/\r\ntransfer-encoding:[^\r]*chunked/.test(lower)) {
      const decoded = decodeChunked(data, bodyStart);
      if (!decoded) return;
      ({ body, end } = decoded);
    } else if (status === 204 || status === 304) {
      body = Buffer.alloc(0);
      end = bodyStart;
    } else {
      this.#fail(new HttpClientError('response without a length'));
      return;
    }
    if (end !== data.length) {
      this.#fail(new HttpClientError('bytes after the response'));
      return;
    }
    this.#chunks = [];
    this.#buffered = 0;
    this.#pending = undefined;
    clearTimeout(pending.timer);
    if (/\r\nconnection:\s*close/.test(lower)) {
      const socket = this.#socket;
      this.#socket = undefined;
      socket?.destroy();
    }
    pending.resolve({ status, body, gzipped: /\r\ncontent-encoding:\s*gzip/.test(lower) });
  }
}

/** A complete chunked body from `start`, or undefined while more bytes are needed (RFC 9112 §7.1). */
function decodeChunked(data: Buffer, start: number): { body: Buffer; end: number } | undefined {
  const parts: Buffer[] = [];
  let offset = start;
  for (;;) {
    const lineEnd = data.indexOf('\r\n', offset);
    if (lineEnd < 0) return undefined;
    const size = Number.parseInt(data.toString('latin1', offset, lineEnd).split(';')[0]!, 16);
    if (!Number.isFinite(size)) throw new HttpClientError('bad chunk size');
    offset = lineEnd + 2;
    if (size === 0) {
      // No trailers expected: the last chunk is followed by an empty line.
      if (data.length < offset + 2) return undefined;
      return { body: Buffer.concat(parts), end: offset + 2 };
    }
    if (data.length < offset + size + 2) return undefined;
    parts.push(data.subarray(offset, offset + size));
    offset += size + 2;
  }
}
