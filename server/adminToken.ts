import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Where a generated admin token is kept: readable by its owner only. */
export function adminTokenFile(dataDir: string): string {
  return path.join(dataDir, 'admin-token');
}

/** The admin token kept in the data dir; undefined when there is none yet (or none usable: it is then replaced). */
export async function keptAdminToken(dataDir: string): Promise<string | undefined> {
  try {
    const token = (await readFile(adminTokenFile(dataDir), 'utf8')).trim();
    return token.length >= 16 ? token : undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    return undefined;
  }
}

/** `ONAIR_ADMIN_TOKEN`, or one generated on first start and kept (mode 600) in the data dir. */
export async function loadAdminToken(dataDir: string, configured: string | undefined): Promise<string> {
  if (configured !== undefined) return configured;
  const kept = await keptAdminToken(dataDir);
  if (kept !== undefined) return kept;
  const token = randomBytes(32).toString('base64url');
  await writeFile(adminTokenFile(dataDir), `${token}\n`, { mode: 0o600 });
  return token;
}

/** Constant-time comparison of a presented token with the real one (hashing first equalises the lengths). */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
