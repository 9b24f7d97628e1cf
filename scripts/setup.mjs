#!/usr/bin/env node
// Idempotent set-up for `npm start`, `npm test` and `npm run bench` on a fresh Debian machine: checks Node, installs the
// Debian packages OnAir runs (as root: apt-get; otherwise prints the exact command), installs npm dependencies when
// they are missing or stale, and compiles the TypeScript. Plain JavaScript so that it runs before anything is built.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUILD_PACKAGES, ensureWorker, workerBinPath } from './mediasoup-worker.mjs';
import { ensureSrtHelper, SRT_BUILD_PACKAGES, srtHelperPath } from './srt-helper.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const mode = process.argv.includes('--test') ? 'test' : process.argv.includes('--bench') ? 'bench' : 'run';

const say = (text) => process.stderr.write(`[onair setup] ${text}\n`);

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, ...options });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    say(`failed: ${command} ${args.join(' ')} (exit ${result.status})`);
    process.exit(result.status ?? 1);
  }
}

const onPath = (binary) => spawnSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' }).status === 0;

// 1. Node
const major = Number(process.versions.node.split('.')[0]);
if (major < 20) {
  say(`Node ${process.versions.node} is too old: OnAir needs Node 20 or newer.`);
  process.exit(1);
}

// 2. Debian packages: what each mode needs, and how to tell whether it is there.
const packages = [
  { name: 'ffmpeg', present: () => onPath('ffmpeg') && onPath('ffprobe'), modes: ['run', 'test', 'bench'] },
  { name: 'redis-server', present: () => onPath('redis-server'), modes: ['run', 'test', 'bench'] },
  // The news ticker's font (live-transcoder/liveCommand.ts TICKER_FONT); usually there already through fontconfig.
  { name: 'fonts-dejavu-core', present: () => existsSync('/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf'), modes: ['run', 'test', 'bench'] },
  { name: 'postgresql', present: () => existsSync('/usr/lib/postgresql/15/bin/initdb'), modes: ['test', 'bench'] },
  { name: 'chromium', present: () => existsSync('/usr/bin/chromium'), modes: ['test', 'bench'] },
  // Debian's SRT tools: srt-live-transmit is the silent SRT caller of e2e/ingest-srt.
  { name: 'srt-tools', present: () => existsSync('/usr/bin/srt-live-transmit'), modes: ['test'] },
  // Emoji glyphs for the reaction buttons in the page tests' screenshots (a viewer's own browser has its own).
  { name: 'fonts-noto-color-emoji', present: () => existsSync('/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf'), modes: ['test'] },
  // OpenStack Swift with its s3api middleware: the real S3-compatible server the S3 storage tests start
  // (test/support/s3server.ts).
  {
    name: 'swift-proxy swift-account swift-container swift-object',
    present: () => ['proxy', 'account', 'container', 'object'].every((s) => existsSync(`/usr/bin/swift-${s}-server`)),
    modes: ['test'],
  },
  // Debian's nginx: the tested LL-HLS cache in front of OnAir (test/e2e/scale-nginx, deploy/nginx/), and with its RTMP
  // module the latency anchor of the benchmarks.
  { name: 'nginx libnginx-mod-rtmp', present: () => existsSync('/usr/sbin/nginx') && existsSync('/usr/lib/nginx/modules/ngx_rtmp_module.so'), modes: ['test', 'bench'] },
];
const debInstalled = (name) => spawnSync('dpkg-query', ['-W', '-f=${Status}', name], { encoding: 'utf8' }).stdout?.includes('install ok installed');
const missing = packages.filter((p) => p.modes.includes(mode) && !p.present()).map((p) => p.name);
// The mediasoup worker is built once per machine (see scripts/mediasoup-worker.mjs); its build needs these.
if (!existsSync(workerBinPath())) missing.push(...BUILD_PACKAGES.filter((name) => !debInstalled(name)));
// The SRT listener (ONAIR_SRT_PORT) is compiled once per machine too (scripts/srt-helper.mjs).
if (!existsSync(srtHelperPath())) missing.push(...SRT_BUILD_PACKAGES.filter((name) => !debInstalled(name) && !missing.includes(name)));
if (missing.length > 0) {
  const command = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(' ')}`;
  if (process.getuid?.() !== 0) {
    say(`missing Debian packages: ${missing.join(', ')}. Install them with:\n\n    sudo sh -c '${command}'\n`);
    process.exit(1);
  }
  say(`installing Debian packages: ${missing.join(', ')}`);
  run('sh', ['-c', command], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

// 3. npm dependencies, when node_modules is missing or older than the lockfile.
const lock = path.join(root, 'package-lock.json');
const installed = path.join(root, 'node_modules', '.package-lock.json');
const stale = !existsSync(installed) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(installed).mtimeMs + 1000);
if (stale) {
  say('installing npm dependencies');
  // With MEDIASOUP_WORKER_BIN set, mediasoup's postinstall neither downloads nor builds: we build it below.
  run('npm', existsSync(lock) ? ['ci', '--no-audit', '--no-fund'] : ['install', '--no-audit', '--no-fund'],
    { env: { ...process.env, MEDIASOUP_WORKER_BIN: workerBinPath() } });
}

// 4. The mediasoup worker, built from the npm package against Debian's libraries and cached outside the clone.
try {
  ensureWorker(root, say);
} catch (error) {
  say(error.message);
  process.exit(1);
}

// 4b. The SRT listener, compiled against Debian's libsrt and cached beside the worker.
try {
  ensureSrtHelper(say);
} catch (error) {
  say(error.message);
  process.exit(1);
}

// 5. Compile.
say('compiling TypeScript');
run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')]);
// The pages' scripts are served as written (ES modules, no bundler): checked here, with nothing to emit.
say('type-checking the pages (web/)');
run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.web.json')]);
