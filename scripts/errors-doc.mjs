#!/usr/bin/env node
// Writes docs/errors.md from the error catalogue (lib/errors.ts, compiled to dist/ first: `npm run docs` does both).
// `--check` writes nothing and exits 1 when the checked-in file differs (test/docs.test.ts checks the same in CI).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = path.join(root, 'docs', 'errors.md');
const { errorsMarkdown } = await import(path.join(root, 'dist', 'lib', 'errorsDoc.js'));
const wanted = errorsMarkdown();

if (process.argv.includes('--check')) {
  let current = '';
  try { current = readFileSync(target, 'utf8'); } catch { /* missing: differs */ }
  if (current !== wanted) {
    process.stderr.write('docs/errors.md is not what lib/errors.ts gives: run `npm run docs`\n');
    process.exit(1);
  }
} else {
  writeFileSync(target, wanted);
  process.stdout.write(`wrote ${path.relative(root, target)}\n`);
}
