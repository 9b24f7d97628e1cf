/*
 * Just enough FLV (Adobe FLV spec v10.1, annex E) to time frames: the tag header's type and timestamp, and whether a
 * video tag carries a coded frame (AVCPacketType 1) rather than a sequence header.
 */

const TAG_HEADER = 11;
const FILE_HEADER = 9;
const PREVIOUS_TAG_SIZE = 4;
const TYPE_VIDEO = 9;
const AVC_NALU = 1;

export interface FlvTagInfo {
  /** 8 audio, 9 video, 18 script data. */
  type: number;
  /** Decode timestamp in ms (24 bits + 8 extended bits). */
  dts: number;
  /** A video tag holding a coded picture (not a sequence header, not end of sequence). */
  videoFrame: boolean;
}

/** The tag whose header starts at `offset` of `buffer` (11 header bytes and the first two of the body needed). */
export function readFlvTag(buffer: Buffer, offset = 0): FlvTagInfo {
  const type = buffer[offset]! & 0x1f;
  const dts = (buffer.readUIntBE(offset + 4, 3) | (buffer[offset + 7]! << 24)) >>> 0;
  const videoFrame = type === TYPE_VIDEO && buffer.length > offset + TAG_HEADER + 1 && buffer[offset + TAG_HEADER + 1] === AVC_NALU;
  return { type, dts, videoFrame };
}

/** The tags of a complete FLV byte string (file header first), e.g. a transcoder prelude. */
export function* flvTags(buffer: Buffer): Generator<FlvTagInfo> {
  let offset = FILE_HEADER + PREVIOUS_TAG_SIZE;
  while (offset + TAG_HEADER <= buffer.length) {
    const size = buffer.readUIntBE(offset + 1, 3);
    yield readFlvTag(buffer, offset);
    offset += TAG_HEADER + size + PREVIOUS_TAG_SIZE;
  }
}

/**
 * Finds tag boundaries in an FLV byte stream as it arrives (a publisher's `-f flv pipe:1`), calling `onTag` when the
 * last byte of a tag has arrived. The bytes themselves are not kept beyond what a header needs.
 */
export class FlvTagScanner {
  readonly #onTag: (tag: FlvTagInfo) => void;
  /** Bytes to skip before the next tag header (file header, tag bodies, previous-tag-size fields). */
  #skip = FILE_HEADER + PREVIOUS_TAG_SIZE;
  #header = Buffer.alloc(TAG_HEADER + 2);
  #headerFill = 0;
  #pending: FlvTagInfo | undefined;
  #bodyLeft = 0;

  constructor(onTag: (tag: FlvTagInfo) => void) {
    this.#onTag = onTag;
  }

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - offset);
        this.#skip -= n;
        offset += n;
        continue;
      }
      if (this.#pending) {
        // Inside a tag body: the two first body bytes were read with the header.
        const n = Math.min(this.#bodyLeft, chunk.length - offset);
        this.#bodyLeft -= n;
        offset += n;
        if (this.#bodyLeft === 0) {
          const tag = this.#pending;
          this.#pending = undefined;
          this.#skip = PREVIOUS_TAG_SIZE;
          this.#onTag(tag);
        }
        continue;
      }
      const n = Math.min(this.#header.length - this.#headerFill, chunk.length - offset);
      chunk.copy(this.#header, this.#headerFill, offset, offset + n);
      this.#headerFill += n;
      offset += n;
      if (this.#headerFill < this.#header.length) continue;
      this.#headerFill = 0;
      const size = this.#header.readUIntBE(1, 3);
      if (size < 2) {
        // A body shorter than what the header buffer read: rewind is not worth it for a timing scanner.
        throw new Error(`FLV tag with a ${size}-byte body`);
      }
      this.#pending = readFlvTag(this.#header);
      this.#bodyLeft = size - 2;
      if (this.#bodyLeft === 0) {
        const tag = this.#pending;
        this.#pending = undefined;
        this.#skip = PREVIOUS_TAG_SIZE;
        this.#onTag(tag);
      }
    }
  }
}
