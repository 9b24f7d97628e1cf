#!/usr/bin/env node
// Runs every compiled test file (dist/**/*.test.js) with node's test runner, one file at a time: the suites start real
// ffmpeg, redis-server and PostgreSQL processes, and two cores are better spent on one of them than fought over.
// `npm test -- <filter>` runs only the files whose path contains <filter>.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const filters = process.argv.slice(2);

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : find(full);
    return entry.name.endsWith('.test.js') ? [full] : [];
  });
}

// Tests compiled from sources that no longer exist must not run.
const files = find(path.join(root, 'dist')).filter((file) => {
  const source = path.join(root, path.relative(path.join(root, 'dist'), file)).replace(/\.js$/, '.ts');
  if (existsSync(source)) return true;
  rmSync(file);
  return false;
}).filter((file) => filters.length === 0 || filters.some((f) => file.includes(f))).sort();

if (files.length === 0) {
  process.stderr.write('no test files found\n');
  process.exit(1);
}

// --test-timeout bounds every test without its own bound and each FILE as a whole (node runs a file as one test): the
// longest file (e2e/overload: streams added until the node is short of CPU, 60 s held at live, then the recovery)
// takes about five minutes on two cores; each test inside sets its own tighter bound.
const result = spawnSync(process.execPath, [
  '--enable-source-maps', '--test', '--test-concurrency=1', '--test-reporter=spec', '--test-timeout=600000', ...files,
], { stdio: 'inherit', cwd: root, env: { ...process.env, ONAIR_LOG_LEVEL: process.env.ONAIR_LOG_LEVEL ?? 'warn' } });
process.exit(result.status ?? 1);
