/**
 * SCTE-35 splice_info_section (ANSI/SCTE 35 §9.6) for ad breaks: the `splice_insert` command OnAir writes into
 * EXT-X-DATERANGE's SCTE35-OUT / SCTE35-IN (rfc8216bis §4.4.5.1.1: the whole section, big-endian, as hex), and a
 * decoder that reads any splice_info_section back (for tests and for a cue passed through from upstream).
 */

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 24;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x80000000 ? (crc << 1) ^ 0x04c11db7 : crc << 1;
    table[i] = crc >>> 0;
  }
  return table;
})();

/** CRC-32/MPEG-2 (polynomial 0x04C11DB7, init 0xFFFFFFFF, not reflected, no final XOR): SCTE 35's CRC_32. */
export function crc32Mpeg2(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ byte) & 0xff]!) >>> 0;
  return crc >>> 0;
}

/** MSB-first bit writer. */
class BitWriter {
  readonly #bytes: number[] = [];
  #current = 0;
  #bits = 0;

  write(value: number | bigint, width: number): this {
    const big = BigInt(value);
    for (let i = width - 1; i >= 0; i--) {
      this.#current = (this.#current << 1) | Number((big >> BigInt(i)) & 1n);
      this.#bits += 1;
      if (this.#bits === 8) {
        this.#bytes.push(this.#current);
        this.#current = 0;
        this.#bits = 0;
      }
    }
    return this;
  }

  bytes(): Buffer {
    if (this.#bits !== 0) throw new Error('not byte-aligned');
    return Buffer.from(this.#bytes);
  }
}

class BitReader {
  readonly #data: Uint8Array;
  #bit = 0;

  constructor(data: Uint8Array) {
    this.#data = data;
  }

  read(width: number): number {
    return Number(this.readBig(width));
  }

  readBig(width: number): bigint {
    let value = 0n;
    for (let i = 0; i < width; i++) {
      const byte = this.#data[this.#bit >> 3];
      if (byte === undefined) throw new RangeError('splice_info_section is truncated');
      value = (value << 1n) | BigInt((byte >> (7 - (this.#bit & 7))) & 1);
      this.#bit += 1;
    }
    return value;
  }

  get byteOffset(): number {
    return this.#bit >> 3;
  }
}

export interface SpliceInsert {
  spliceEventId: number;
  /** true: leave the network for the break (OUT); false: return (IN). */
  outOfNetwork: boolean;
  /** 90 kHz presentation time of the splice point; undefined: splice immediately. */
  ptsTime?: bigint;
  /** 90 kHz break duration (with auto_return); OUT only. */
  breakDuration?: bigint;
  autoReturn?: boolean;
  uniqueProgramId?: number;
  availNum?: number;
  availsExpected?: number;
}

const PTS_MASK = (1n << 33n) - 1n;

/** A splice_info_section holding one splice_insert (no descriptors, not encrypted), CRC_32 computed. */
export function encodeSpliceInsert(insert: SpliceInsert): Buffer {
  const command = new BitWriter()
    .write(insert.spliceEventId >>> 0, 32)
    .write(0, 1) // splice_event_cancel_indicator
    .write(0x7f, 7)
    .write(insert.outOfNetwork ? 1 : 0, 1)
    .write(1, 1) // program_splice_flag
    .write(insert.breakDuration !== undefined ? 1 : 0, 1)
    .write(insert.ptsTime === undefined ? 1 : 0, 1) // splice_immediate_flag
    .write(0xf, 4);
  if (insert.ptsTime !== undefined) command.write(1, 1).write(0x3f, 6).write(insert.ptsTime & PTS_MASK, 33);
  if (insert.breakDuration !== undefined) command.write(insert.autoReturn === false ? 0 : 1, 1).write(0x3f, 6).write(insert.breakDuration & PTS_MASK, 33);
  command.write(insert.uniqueProgramId ?? 0, 16).write(insert.availNum ?? 0, 8).write(insert.availsExpected ?? 0, 8);
  const body = command.bytes();

  // Everything after section_length: 11 bytes of header fields, the command, descriptor_loop_length, CRC_32.
  const sectionLength = 11 + body.length + 2 + 4;
  const head = new BitWriter()
    .write(0xfc, 8) // table_id
    .write(0, 1) // section_syntax_indicator
    .write(0, 1) // private_indicator
    .write(3, 2) // sap_type: not specified
    .write(sectionLength, 12)
    .write(0, 8) // protocol_version
    .write(0, 1) // encrypted_packet
    .write(0, 6) // encryption_algorithm
    .write(0, 33) // pts_adjustment
    .write(0, 8) // cw_index
    .write(0xfff, 12) // tier
    .write(body.length, 12) // splice_command_length
    .write(0x05, 8) // splice_command_type: splice_insert
    .bytes();
  const withoutCrc = Buffer.concat([head, body, Buffer.from([0, 0])]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32Mpeg2(withoutCrc));
  return Buffer.concat([withoutCrc, crc]);
}

export interface SpliceInfo {
  tableId: number;
  sectionLength: number;
  ptsAdjustment: bigint;
  tier: number;
  spliceCommandType: number;
  /** Present when the command is splice_insert (5). */
  spliceInsert?: SpliceInsert & { cancel: boolean; spliceImmediate: boolean };
  descriptorLoopLength: number;
  crc32: number;
  /** Whether CRC_32 matches the section's bytes. */
  crcValid: boolean;
}

/** Reads a splice_info_section (hex with or without `0x`, or bytes). Throws on a malformed section. */
export function decodeSpliceInfo(input: string | Uint8Array): SpliceInfo {
  const data = typeof input === 'string' ? Buffer.from(input.replace(/^0x/i, ''), 'hex') : Buffer.from(input);
  const r = new BitReader(data);
  const tableId = r.read(8);
  if (tableId !== 0xfc) throw new Error(`not a splice_info_section (table_id 0x${tableId.toString(16)})`);
  r.read(1);
  r.read(1);
  r.read(2);
  const sectionLength = r.read(12);
  if (data.length !== sectionLength + 3) throw new Error(`section_length ${sectionLength} does not match ${data.length} bytes`);
  r.read(8);
  if (r.read(1) === 1) throw new Error('encrypted splice_info_section');
  r.read(6);
  const ptsAdjustment = r.readBig(33);
  r.read(8);
  const tier = r.read(12);
  const spliceCommandLength = r.read(12);
  const spliceCommandType = r.read(8);
  const commandStart = r.byteOffset;
  let spliceInsert: SpliceInfo['spliceInsert'];
  if (spliceCommandType === 0x05) {
    const spliceEventId = r.read(32);
    const cancel = r.read(1) === 1;
    r.read(7);
    const insert: NonNullable<SpliceInfo['spliceInsert']> = { spliceEventId, cancel, outOfNetwork: false, spliceImmediate: false };
    if (!cancel) {
      insert.outOfNetwork = r.read(1) === 1;
      const programSplice = r.read(1) === 1;
      const durationFlag = r.read(1) === 1;
      insert.spliceImmediate = r.read(1) === 1;
      r.read(4);
      if (!programSplice) throw new Error('component splice mode is not supported');
      if (!insert.spliceImmediate) {
        if (r.read(1) === 1) {
          r.read(6);
          insert.ptsTime = r.readBig(33);
        } else {
          r.read(7);
        }
      }
      if (durationFlag) {
        insert.autoReturn = r.read(1) === 1;
        r.read(6);
        insert.breakDuration = r.readBig(33);
      }
      insert.uniqueProgramId = r.read(16);
      insert.availNum = r.read(8);
      insert.availsExpected = r.read(8);
    }
    spliceInsert = insert;
  }
  const commandEnd = spliceCommandLength === 0xfff ? r.byteOffset : commandStart + spliceCommandLength;
  const descriptorLoopLength = data.readUInt16BE(commandEnd);
  const crcOffset = commandEnd + 2 + descriptorLoopLength;
  const crc32 = data.readUInt32BE(crcOffset);
  return {
    tableId,
    sectionLength,
    ptsAdjustment,
    tier,
    spliceCommandType,
    ...(spliceInsert ? { spliceInsert } : {}),
    descriptorLoopLength,
    crc32,
    crcValid: crc32Mpeg2(data.subarray(0, crcOffset)) === crc32,
  };
}

/** `0x…` upper-case hex, as EXT-X-DATERANGE's SCTE35-OUT/IN carry it (a hexadecimal-sequence). */
export function toHexSequence(section: Uint8Array): string {
  return `0x${Buffer.from(section).toString('hex').toUpperCase()}`;
}
