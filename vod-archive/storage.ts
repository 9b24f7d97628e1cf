import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { randomId } from '../lib/ids.js';

/** A byte range, both ends included (HTTP `Range: bytes=start-end`). */
export interface ByteRange {
  start: number;
  end: number;
}

export interface StoredObject {
  body: Readable;
  /** Size of the whole object. */
  size: number;
  /** The range sent, when one was asked for. */
  range: ByteRange | undefined;
}

/**
 * Where VOD sources and outputs live: local disk (default) or an S3-compatible bucket. Keys are `/`-separated, made by
 * OnAir only (`checkKey`): never from a request without a fixed pattern first.
 */
export interface Storage {
  readonly kind: 'disk' | 's3';
  putFile(key: string, file: string, contentType?: string): Promise<void>;
  putBuffer(key: string, data: Buffer | string, contentType?: string): Promise<void>;
  /**
   * Copies a local file in and checks that what storage holds is that file (`expected`: its size and SHA-256, which
   * the caller computed): on disk the copy is read back before it is renamed into place; on S3 the object carries
   * its SHA-256 as metadata (`x-amz-meta-sha256`); a single-part upload sends its Content-MD5 (the server checks the
   * body) and must get it back as its ETag; otherwise a HEAD must show the size and the SHA-256. Throws when they
   * differ. The file is left as it is.
   */
  putVerified(key: string, file: string, expected: FileDigest): Promise<void>;
  /** Moves a local file in (a rename where it can); absent: put, then remove the file. */
  moveFile?(key: string, file: string): Promise<void>;
  /** The object, or undefined when there is none. A range past the end is clamped; an empty object has no range. */
  get(key: string, range?: ByteRange): Promise<StoredObject | undefined>;
  /** Copies an object into a local file (written aside, then renamed). */
  download(key: string, file: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** Keys under a prefix (`prefix/`), sorted. */
  list(prefix: string): Promise<string[]>;
  /** Removes every object under `prefix/`. */
  deletePrefix(prefix: string): Promise<void>;
  close(): void;
}

/** A file's size and hashes (hex), from `digestFile`. */
export interface FileDigest {
  bytes: number;
  sha256: string;
  md5: string;
}

/** One read of the file for both hashes. */
export async function digestFile(file: string): Promise<FileDigest> {
  const sha256 = createHash('sha256');
  const md5 = createHash('md5');
  let bytes = 0;
  for await (const chunk of createReadStream(file)) {
    sha256.update(chunk as Buffer);
    md5.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, sha256: sha256.digest('hex'), md5: md5.digest('hex') };
}

/** Storage holds something other than what was put: the caller retries (the local file is still there). */
export class StorageVerifyError extends Error {
  constructor(key: string, what: string) {
    super(`storage verification failed for ${key}: ${what}`);
    this.name = 'StorageVerifyError';
  }
}

const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;

/** Keys are relative, `/`-separated names of [A-Za-z0-9._-] that never start with a dot: no `..`, no absolute path. */
export function checkKey(key: string): string {
  if (!KEY_RE.test(key) || key.length > 512) throw new Error(`invalid storage key: ${JSON.stringify(key)}`);
  return key;
}

export const CONTENT_TYPES: Record<string, string> = {
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.mpd': 'application/dash+xml',
  '.m4s': 'video/iso.segment',
  '.mp4': 'video/mp4',
  '.jpg': 'image/jpeg',
  '.vtt': 'text/vtt; charset=utf-8',
  '.json': 'application/json',
  '.flv': 'video/x-flv',
};

export function contentTypeFor(key: string): string {
  return CONTENT_TYPES[path.extname(key)] ?? 'application/octet-stream';
}

/** Local disk under one root directory; writes land in a temp file first and are renamed into place. */
export class DiskStorage implements Storage {
  readonly kind = 'disk' as const;
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  #path(key: string): string {
    return path.join(this.root, ...checkKey(key).split('/'));
  }

  async #commit(key: string, write: (temp: string) => Promise<void>): Promise<void> {
    const target = this.#path(key);
    await mkdir(path.dirname(target), { recursive: true });
    await writeAside(target, write);
  }

  putFile(key: string, file: string): Promise<void> {
    return this.#commit(key, (temp) => copyFile(file, temp));
  }

  putVerified(key: string, file: string, expected: FileDigest): Promise<void> {
    return this.#commit(key, async (temp) => {
      await copyFile(file, temp);
      const copy = await digestFile(temp);
      if (copy.bytes !== expected.bytes || copy.sha256 !== expected.sha256) {
        throw new StorageVerifyError(key, `the copy has ${copy.bytes} bytes, sha256 ${copy.sha256.slice(0, 12)}…; expected ${expected.bytes}, ${expected.sha256.slice(0, 12)}…`);
      }
    });
  }

  /** A rename when the file is on the same filesystem; a copy and a removal otherwise. */
  async moveFile(key: string, file: string): Promise<void> {
    const target = this.#path(key);
    await mkdir(path.dirname(target), { recursive: true });
    try {
      await rename(file, target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
      await this.putFile(key, file);
      await rm(file, { force: true });
    }
  }

  putBuffer(key: string, data: Buffer | string): Promise<void> {
    return this.#commit(key, (temp) => pipeline(Readable.from([Buffer.from(data)]), createWriteStream(temp)));
  }

  async get(key: string, range?: ByteRange): Promise<StoredObject | undefined> {
    const file = this.#path(key);
    let size: number;
    try {
      const info = await stat(file);
      if (!info.isFile()) return undefined;
      size = info.size;
    } catch {
      return undefined;
    }
    const clamped = clampRange(range, size);
    const body = createReadStream(file, clamped ? { start: clamped.start, end: clamped.end } : {});
    return { body, size, range: clamped };
  }

  download(key: string, file: string): Promise<void> {
    return writeAside(file, (temp) => copyFile(this.#path(key), temp));
  }

  async exists(key: string): Promise<boolean> {
    try {
      return (await stat(this.#path(key))).isFile();
    } catch {
      return false;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const base = this.#path(prefix);
    const keys: string[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const entry of entries) {
        if (entry.name.endsWith('.part')) continue;
        const name = `${rel}/${entry.name}`;
        if (entry.isDirectory()) await walk(path.join(dir, entry.name), name);
        else if (entry.isFile()) keys.push(name);
      }
    };
    await walk(base, prefix);
    return keys.sort();
  }

  async deletePrefix(prefix: string): Promise<void> {
    await rm(this.#path(prefix), { recursive: true, force: true });
  }

  close(): void {}
}

export interface S3StorageOptions {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** Concurrent part uploads per multipart upload, and concurrent deletes. */
const S3_CONCURRENCY = 4;
const S3_PART_SIZE = 8 * 1024 * 1024;

/**
 * An S3-compatible bucket through @aws-sdk/client-s3 and lib-storage (multipart for large files). Path-style
 * addressing and checksums only when required: what self-hosted S3 servers (Swift s3api, radosgw, MinIO) accept;
 * with the SDK's defaults streamed uploads go out aws-chunked and fail there.
 */
export class S3Storage implements Storage {
  readonly kind = 's3' as const;
  readonly bucket: string;
  readonly client: S3Client;

  constructor(options: S3StorageOptions) {
    this.bucket = options.bucket;
    this.client = new S3Client({
      endpoint: options.endpoint,
      region: options.region,
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey },
      // Without them a server that accepts and never answers hangs a job forever; with them it is an outage (a
      // TimeoutError: the job waits and tries again). The request limit is on an idle socket, not a whole transfer.
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
    });
  }

  async putFile(key: string, file: string, contentType = contentTypeFor(key)): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: checkKey(key), Body: createReadStream(file), ContentType: contentType },
      queueSize: S3_CONCURRENCY,
      partSize: S3_PART_SIZE,
      leavePartsOnError: false,
    });
    await upload.done();
  }

  async putVerified(key: string, file: string, expected: FileDigest): Promise<void> {
    const single = expected.bytes < S3_PART_SIZE;
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.bucket,
        Key: checkKey(key),
        Body: createReadStream(file),
        ContentType: contentTypeFor(key),
        Metadata: { sha256: expected.sha256 },
        // One PutObject: the server refuses a body whose MD5 differs (BadDigest). Parts of a multipart upload have
        // their own; the HEAD below checks size and hash either way.
        ...(single ? { ContentMD5: Buffer.from(expected.md5, 'hex').toString('base64') } : {}),
      },
      queueSize: S3_CONCURRENCY,
      partSize: S3_PART_SIZE,
      leavePartsOnError: false,
    });
    const done = await upload.done();
    // One PutObject whose Content-MD5 the server checked: its ETag is that MD5, nothing more to ask.
    if (single && done.ETag?.replace(/"/g, '') === expected.md5) return;
    const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
    const size = head.ContentLength ?? -1;
    const sha256 = head.Metadata?.['sha256'];
    if (size !== expected.bytes || sha256 !== expected.sha256) {
      throw new StorageVerifyError(key, `the object has ${size} bytes, sha256 ${sha256?.slice(0, 12) ?? 'none'}; expected ${expected.bytes}, ${expected.sha256.slice(0, 12)}…`);
    }
  }

  async putBuffer(key: string, data: Buffer | string, contentType = contentTypeFor(key)): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: checkKey(key), Body: Buffer.from(data), ContentType: contentType },
    });
    await upload.done();
  }

  async get(key: string, range?: ByteRange): Promise<StoredObject | undefined> {
    let size: number;
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: checkKey(key) }));
      size = head.ContentLength ?? 0;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    const clamped = clampRange(range, size);
    let output: GetObjectCommandOutput;
    try {
      output = await this.client.send(new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        ...(clamped ? { Range: `bytes=${clamped.start}-${clamped.end}` } : {}),
      }));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    return { body: output.Body as Readable, size, range: clamped };
  }

  async download(key: string, file: string): Promise<void> {
    const object = await this.get(key);
    if (!object) throw new Error(`storage object ${key} not found`);
    await writeAside(file, (temp) => pipeline(object.body, createWriteStream(temp)));
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: checkKey(key) }));
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: `${checkKey(prefix)}/`,
        ...(token ? { ContinuationToken: token } : {}),
      }));
      for (const item of page.Contents ?? []) if (item.Key) keys.push(item.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }

  /**
   * One DeleteObject per key, a few at a time: the batch DeleteObjects call needs a Content-MD5 header that the SDK
   * no longer sends (it sends a CRC32), and Swift's s3api refuses it without one.
   */
  async deletePrefix(prefix: string): Promise<void> {
    const keys = await this.list(prefix);
    for (let i = 0; i < keys.length; i += S3_CONCURRENCY * 4) {
      await Promise.all(keys.slice(i, i + S3_CONCURRENCY * 4).map((Key) => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }))));
    }
  }

  close(): void {
    this.client.destroy();
  }
}

/** Writes `file` through a temp file beside it, renamed into place: a reader never sees half a file. */
async function writeAside(file: string, write: (temp: string) => Promise<unknown>): Promise<void> {
  const temp = `${file}.${randomId(8)}.part`;
  try {
    await write(temp);
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

function isNotFound(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404;
}

function clampRange(range: ByteRange | undefined, size: number): ByteRange | undefined {
  if (!range || size === 0) return undefined;
  const start = Math.min(range.start, size - 1);
  return { start, end: Math.min(Math.max(range.end, start), size - 1) };
}

/** Disk under `<dataDir>/storage` unless S3 is configured. */
export function createStorage(options: { dataDir: string; s3?: S3StorageOptions | undefined }): Storage {
  return options.s3 ? new S3Storage(options.s3) : new DiskStorage(path.join(options.dataDir, 'storage'));
}
