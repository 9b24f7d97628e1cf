// The mediasoup worker on machines that reach only the npm registry and Debian: mediasoup cannot download its
// prebuilt worker here, and its npm package ships meson wrap files without sources. We build the worker from the npm
// package against Debian's libraries — a tiny stand-in meson project per wrap exports what mediasoup's meson.build
// reads, built from pkg-config dependencies — and cache the binary outside the clone, keyed by version, so that CI and
// every later `npm start` skip the ~7-minute build. mediasoup is pinned to 3.12.16: the last line that builds and
// runs against Debian bookworm's libraries (see README). Before compiling we apply our own patch
// (patches/mediasoup-3.12.16.patch: each consumer sends the RTP header-extension ids its viewer offered, and a simulcast
// consumer keeps its lowest layer when the bandwidth estimate falls below it; see webrtc-edge/README.md); the cache key carries the patch's hash, so a changed patch builds a new worker.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const MEDIASOUP_VERSION = '3.12.16';

/** Debian packages the build needs (they pull in the runtime libraries the worker links to). */
export const BUILD_PACKAGES = ['patch', 'pkg-config', 'libssl-dev', 'libuv1-dev', 'libsrtp2-dev', 'libusrsctp-dev', 'libabsl-dev', 'nlohmann-json3-dev', 'make', 'g++'];

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/** Our patch to the worker's sources (paths relative to `worker/`), applied before every build. */
export const WORKER_PATCH = path.join(ROOT, 'patches', `mediasoup-${MEDIASOUP_VERSION}.patch`);

/**
 * Where the built worker lives: `$ONAIR_CACHE_DIR` or `~/.cache/onair`, per mediasoup version and patch (the first 12
 * hex digits of its SHA-256). webrtc-edge/loadMediasoup.ts computes the same path; test/workerPatch.test.ts checks it.
 */
export function workerBinPath() {
  const cache = process.env.ONAIR_CACHE_DIR || path.join(os.homedir(), '.cache', 'onair');
  const patch = createHash('sha256').update(readFileSync(WORKER_PATCH)).digest('hex').slice(0, 12);
  return path.join(cache, `mediasoup-worker-${MEDIASOUP_VERSION}-${patch}`, 'mediasoup-worker');
}

const EMPTY_C = 'int onair_meson_standin(void) { return 0; }\n';

/** One stand-in per wrap: its directory name (from the .wrap), meson.build, meson_options.txt. */
const STANDINS = {
  'openssl-3.0.8': {
    build: `project('openssl', 'c')
openssl_dep = dependency('openssl')
libssl_dep = dependency('libssl')
libcrypto_dep = dependency('libcrypto')
libssl_lib = static_library('onair_ssl_standin', 'empty.c')
libcrypto_lib = static_library('onair_crypto_standin', 'empty.c')
`,
  },
  'libuv-v1.44.2': {
    build: `project('libuv', 'c')
libuv_dep = dependency('libuv')
libuv = static_library('onair_uv_standin', 'empty.c')
`,
    options: `option('build_tests', type: 'boolean', value: false)
option('build_benchmarks', type: 'boolean', value: false)
`,
  },
  'libsrtp-2.5.0': {
    // Debian's libsrtp2.pc omits the srtp2/ include directory that mediasoup's #include <srtp.h> needs.
    build: `project('libsrtp2', 'c')
srtp = dependency('libsrtp2')
libsrtp2_dep = declare_dependency(dependencies: srtp, compile_args: ['-I' + srtp.get_variable(pkgconfig: 'includedir') / 'srtp2'])
libsrtp2 = static_library('onair_srtp_standin', 'empty.c')
`,
    options: `option('crypto-library', type: 'string', value: 'openssl')
option('crypto-library-kdf', type: 'string', value: 'disabled')
option('tests', type: 'string', value: 'disabled')
`,
  },
  'usrsctp-4e06feb01cadcd127d119486b98a4bd3d64aa1e7': {
    build: `project('usrsctp', 'c')
usrsctp_dep = dependency('usrsctp')
usrsctp = static_library('onair_usrsctp_standin', 'empty.c')
`,
    options: `option('sctp_build_programs', type: 'boolean', value: false)
`,
  },
  'abseil-cpp-20220623.0': {
    build: `project('abseil-cpp', 'c', 'cpp')
absl_container_dep = declare_dependency(dependencies: [
  dependency('absl_flat_hash_map'), dependency('absl_flat_hash_set'), dependency('absl_btree'),
  dependency('absl_inlined_vector'), dependency('absl_node_hash_map'), dependency('absl_node_hash_set'),
  dependency('absl_memory'),
])
absl_strings_dep = dependency('absl_strings')
absl_types_dep = declare_dependency(dependencies: [dependency('absl_optional'), dependency('absl_variant'), dependency('absl_span')])
absl_container_lib = static_library('onair_absl_standin', 'empty.c')
`,
  },
  'nlohmann_json-3.10.5': {
    build: `project('nlohmann_json', 'cpp')
nlohmann_json_dep = dependency('nlohmann_json')
`,
  },
  'Catch2-2.13.7': {
    build: `project('catch2', 'cpp')
catch2_dep = declare_dependency()
`,
  },
};

/**
 * Builds the worker into the cache unless it is there. `say` reports progress; throws with the tail of the build log
 * on failure. The build runs at low priority so that a machine serving streams keeps serving them.
 */
export function ensureWorker(packageDir, say) {
  const target = workerBinPath();
  if (existsSync(target)) return target;
  const source = path.join(packageDir, 'node_modules', 'mediasoup', 'worker');
  if (!existsSync(path.join(source, 'meson.build'))) throw new Error(`mediasoup ${MEDIASOUP_VERSION} is not installed in node_modules`);
  const buildRoot = path.join(path.dirname(target), `build-${process.pid}`);
  rmSync(buildRoot, { recursive: true, force: true });
  mkdirSync(buildRoot, { recursive: true });
  const worker = path.join(buildRoot, 'worker');
  cpSync(source, worker, { recursive: true });
  for (const [dir, { build, options }] of Object.entries(STANDINS)) {
    const at = path.join(worker, 'subprojects', dir);
    mkdirSync(at, { recursive: true });
    writeFileSync(path.join(at, 'meson.build'), build);
    writeFileSync(path.join(at, 'empty.c'), EMPTY_C);
    if (options) writeFileSync(path.join(at, 'meson_options.txt'), options);
  }
  const patched = spawnSync('patch', ['-p1', '--forward', '--batch', '-d', worker, '-i', WORKER_PATCH], { encoding: 'utf8' });
  if (patched.status !== 0) {
    throw new Error(`cannot apply ${WORKER_PATCH} to mediasoup ${MEDIASOUP_VERSION} (is \`patch\` installed?)\n` +
      `${patched.stdout ?? ''}${patched.stderr ?? ''}${patched.error?.message ?? ''}`);
  }
  say(`building the mediasoup ${MEDIASOUP_VERSION} worker (about 7 minutes on 2 cores; cached in ${path.dirname(target)})`);
  const env = { ...process.env };
  delete env.MEDIASOUP_WORKER_BIN; // the Makefile skips compiling when it is set
  Object.assign(env, {
    PYTHON: process.env.PYTHON || 'python3',
    // Debian's meson 1.0 is too old for mediasoup (>= 1.1); pip installs these into the build dir.
    MESON_VERSION: process.env.MESON_VERSION || '1.12.1',
    NINJA_VERSION: process.env.NINJA_VERSION || '1.13.2',
    PIP_RETRIES: '0',
    MESON_ARGS: '--wrap-mode=nodownload',
    MEDIASOUP_OUT_DIR: path.join(buildRoot, 'out'),
    CORES: String(Math.max(1, os.availableParallelism())),
  });
  const log = path.join(buildRoot, 'build.log');
  const result = spawnSync('sh', ['-c', `nice -n 10 make -C "${worker}" mediasoup-worker > "${log}" 2>&1`], { env, stdio: 'inherit' });
  const built = path.join(buildRoot, 'out', 'Release', 'mediasoup-worker');
  if (result.status !== 0 || !existsSync(built)) {
    const tail = spawnSync('tail', ['-n', '40', log], { encoding: 'utf8' }).stdout;
    throw new Error(`mediasoup worker build failed (log: ${log}). Needs Python 3 with pip reaching meson ${env.MESON_VERSION} ` +
      `and ninja ${env.NINJA_VERSION} (Debian bookworm's meson 1.0 is too old).\n${tail}`);
  }
  renameSync(built, target);
  rmSync(buildRoot, { recursive: true, force: true });
  say(`mediasoup worker ready: ${target}`);
  return target;
}

// `node scripts/mediasoup-worker.mjs` builds it by hand.
if (import.meta.url === `file://${process.argv[1]}`) {
  ensureWorker(ROOT, (text) => process.stderr.write(`[mediasoup] ${text}\n`));
}
