import { startPostgres, type TestPostgres } from './postgres.js';
import { startS3Server, type S3TestServer } from './s3server.js';

/** The storage and database a VOD suite runs against: the embedded defaults, and the production pair. */
export interface Backend {
  name: string;
  /** Environment for the node (valid between start and stop). */
  env(): Record<string, string>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function vodBackends(): Backend[] {
  let pg: TestPostgres | undefined;
  let s3: S3TestServer | undefined;
  return [
    { name: 'local disk + SQLite (the embedded defaults)', env: () => ({}), start: async () => {}, stop: async () => {} },
    {
      name: 'S3 storage on a real S3 server (OpenStack Swift s3api) + PostgreSQL',
      env: () => ({ ...s3!.env, ONAIR_DATABASE_URL: pg!.url }),
      start: async () => {
        [pg, s3] = await Promise.all([startPostgres(), startS3Server({ bucket: 'onair-vod' })]);
      },
      stop: async () => {
        await Promise.all([pg?.stop(), s3?.stop()]);
      },
    },
  ];
}
