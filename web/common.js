// @ts-check
// What every OnAir page shares: building DOM from text (never from markup: comments, names and titles are user
// input), calling the API, the admin token the studio and uploads use, and the resumable upload. An ES module the pages
// import (`/assets/common.js`); checked by `tsc -p tsconfig.web.json`, served as written: no framework, no bundler, no
// external request.
var TOKEN_KEY = 'onair.adminToken';

/**
 * What `el` takes as attributes: `on…` functions become listeners, `class` the class name, a `style` object goes
 * through the CSSOM; `undefined`, `null` and `false` leave the attribute out, `true` sets it empty.
 * @typedef {Record<string, unknown>} Attributes
 */

/** @typedef {Node | string | number | null | undefined | false} Leaf */
/** @typedef {Leaf | Leaf[]} Child */

/**
 * The page's element with this id. The pages' markup and scripts go together: a missing id is a bug in the page, and
 * says which one.
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  var node = document.getElementById(id);
  if (!node) throw new Error('#' + id + ' is missing from the page');
  return node;
}

/**
 * The page's form field with this id (`<input>`, `<select>`): `byId` typed for its `value`.
 * @param {string} id
 * @returns {HTMLInputElement}
 */
export function field(id) {
  return /** @type {HTMLInputElement} */ (byId(id));
}

/**
 * el('li', { class: 'x', onclick: f }, 'text', childNode…): strings become text nodes, never markup.
 * @param {string} tag
 * @param {Attributes | null} [attributes]
 * @param {...Child} children
 * @returns {HTMLElement}
 */
export function el(tag, attributes, ...children) {
  var node = document.createElement(tag);
  var attrs = attributes || {};
  Object.keys(attrs).forEach(function (name) {
    var value = attrs[name];
    if (value === undefined || value === null || value === false) return;
    if (name.slice(0, 2) === 'on' && typeof value === 'function') node.addEventListener(name.slice(2), /** @type {EventListener} */ (value));
    else if (name === 'class') node.className = String(value);
    else if (name === 'style' && typeof value === 'object') Object.assign(node.style, value);
    else node.setAttribute(name, value === true ? '' : String(value));
  });
  children.forEach(function (child) { append(node, child); });
  return node;
}

/**
 * @param {Node} node
 * @param {Child} child
 */
function append(node, child) {
  if (child === undefined || child === null || child === false) return;
  if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
  node.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
}

/** @returns {string} */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || '';
}

/**
 * @param {string} value
 * @param {boolean} remember
 */
export function setToken(value, remember) {
  sessionStorage.setItem(TOKEN_KEY, value);
  if (remember) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

/**
 * An API answer: the status, and the body parsed as JSON (the text itself when it is not JSON, null when empty).
 * The pages read the fields they know; `any` because the API's types live on the server side.
 * @typedef {{ status: number, body: any }} ApiResult
 */

/**
 * JSON API call; resolves with { status, body }; the admin token goes along when there is one.
 * @param {string} method
 * @param {string} url
 * @param {unknown} [body]
 * @returns {Promise<ApiResult>}
 */
export function api(method, url, body) {
  /** @type {Record<string, string>} */
  var headers = {};
  var t = token();
  if (t) headers.authorization = 'Bearer ' + t;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return fetch(url, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body) })
    .then(function (response) {
      return response.text().then(function (text) {
        var parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = text; }
        return { status: response.status, body: parsed };
      });
    });
}

/**
 * @param {ApiResult | undefined} result
 * @returns {string}
 */
export function errorText(result) {
  var error = result && result.body && result.body.error;
  return error ? error.message + ' (' + error.code + ')' : 'HTTP ' + (result ? result.status : '?');
}

/**
 * @param {number | null | undefined} sec
 * @returns {string}
 */
export function duration(sec) {
  if (sec === null || sec === undefined || isNaN(sec)) return '–';
  sec = Math.round(sec);
  var h = Math.floor(sec / 3600);
  var m = Math.floor((sec % 3600) / 60);
  var s = sec % 60;
  var mm = (h > 0 && m < 10 ? '0' : '') + m;
  return (h > 0 ? h + ':' : '') + mm + ':' + (s < 10 ? '0' : '') + s;
}

/**
 * @param {string | number} at
 * @returns {string}
 */
export function clock(at) {
  var date = new Date(at);
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * Copies text to the clipboard (falls back to selecting it where the Clipboard API is not allowed).
 * @param {string} text
 * @param {HTMLElement} [button]
 */
export function copy(text, button) {
  var done = function () {
    if (!button) return;
    var label = button.textContent;
    button.textContent = 'Copied';
    setTimeout(function () { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, done);
  else {
    var area = /** @type {HTMLTextAreaElement} */ (el('textarea', { style: { position: 'fixed', opacity: '0' } }, text));
    document.body.appendChild(area);
    area.select();
    try { document.execCommand('copy'); } catch (e) { /* the text stays selectable on the page */ }
    area.remove();
    done();
  }
}

// A resumable upload over tus 1.0 (`/api/uploads`, admin token): the upload URL is remembered per file (name, size,
// date) so that a reload or a dropped connection resumes where the server got to (HEAD gives the offset).
var CHUNK = 4 * 1024 * 1024;
var TUS = { 'tus-resumable': '1.0.0' };

/** @param {string} text */
function b64(text) { return btoa(unescape(encodeURIComponent(text))); }

/**
 * @param {Record<string, string>} [extra]
 * @returns {Record<string, string>}
 */
function headers(extra) {
  var h = Object.assign({ authorization: 'Bearer ' + token() }, TUS, extra || {});
  return h;
}

/** @typedef {{ url: string, offset: number }} UploadState */

/**
 * upload(file, { title, description, tags }, onProgress(fraction)) → Promise<videoId>
 * @param {File} file
 * @param {Record<string, string | undefined>} metadata
 * @param {(fraction: number) => void} onProgress
 * @returns {Promise<string>}
 */
export function upload(file, metadata, onProgress) {
  var key = 'onair.upload.' + [file.name, file.size, file.lastModified].join('/');
  /** @type {Record<string, string | undefined>} */
  var fields = Object.assign({ filename: file.name }, metadata);
  var meta = Object.keys(fields).filter(function (k) { return fields[k]; }).map(function (k) { return k + ' ' + b64(String(fields[k])); }).join(',');

  /** @returns {Promise<UploadState>} */
  function create() {
    return fetch('/api/uploads', { method: 'POST', headers: headers({ 'upload-length': String(file.size), 'upload-metadata': meta }) })
      .then(function (response) {
        if (response.status !== 201) return response.text().then(function (text) { throw new Error(text || 'upload refused: HTTP ' + response.status); });
        var url = new URL(response.headers.get('location') || '', location.href).pathname;
        localStorage.setItem(key, url);
        return { url: url, offset: 0 };
      });
  }

  /** @returns {Promise<UploadState>} */
  function resume() {
    var url = localStorage.getItem(key);
    if (!url) return create();
    var known = url;
    return fetch(known, { method: 'HEAD', headers: headers() }).then(function (response) {
      if (response.status !== 200) { localStorage.removeItem(key); return create(); }
      return { url: known, offset: Number(response.headers.get('upload-offset')) };
    });
  }

  /**
   * @param {UploadState} state
   * @param {number} attempt
   * @returns {Promise<string>}
   */
  function send(state, attempt) {
    onProgress(file.size ? state.offset / file.size : 1);
    if (state.offset >= file.size) {
      localStorage.removeItem(key);
      return Promise.resolve(state.url.split('/').pop() || '');
    }
    var end = Math.min(state.offset + CHUNK, file.size);
    return fetch(state.url, {
      method: 'PATCH',
      headers: headers({ 'content-type': 'application/offset+octet-stream', 'upload-offset': String(state.offset) }),
      body: file.slice(state.offset, end),
    }).then(function (response) {
      if (response.status !== 204) throw new Error('HTTP ' + response.status);
      return send({ url: state.url, offset: Number(response.headers.get('upload-offset')) }, 0);
    }, function (error) {
      // A dropped connection: ask the server where it got to, and go on from there (a few times, backing off).
      if (attempt >= 5) throw error;
      return new Promise(function (resolve) { setTimeout(resolve, 1000 * Math.pow(2, attempt)); })
        .then(resume).then(function (again) { return send(again, attempt + 1); });
    });
  }

  return resume().then(function (state) { return send(state, 0); });
}

/**
 * Wires the page's upload form (#upload-form, #upload-file, #upload-progress, #upload-state): `metadata()` gives the
 * fields; `done` says what to show once the last byte is in, and what to do then.
 * @param {() => Record<string, string | undefined>} metadata
 * @param {{ message: string, then?: (videoId: string) => void }} done
 */
export function bindUploadForm(metadata, done) {
  var $ = byId;
  $('upload-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var file = field('upload-file').files?.[0];
    if (!file) return;
    var bar = /** @type {HTMLProgressElement} */ ($('upload-progress'));
    var state = $('upload-state');
    var name = file.name;
    bar.classList.remove('hidden');
    state.textContent = 'uploading ' + name + '…';
    upload(file, metadata(), function (fraction) {
      bar.value = fraction;
      state.textContent = 'uploading ' + name + ': ' + Math.floor(fraction * 100) + '%';
    }).then(function (id) {
      state.textContent = done.message;
      if (done.then) done.then(id);
    }).catch(function (error) {
      state.textContent = 'Upload stopped: ' + error.message + ' — choose the same file again to resume.';
    });
  });
}

/**
 * hls.js's caption timeline (`timelineController`), mended for OnAir's streams. hls.js 1.7.4 dropped every in-band
 * CEA-608 caption of a live stream, for two reasons (e2e/captions):
 * - It resets its CEA-608 parsers whenever a loaded fragment is not the one after the last (`sn !== lastSn + 1 ||
 *   ...`), and every part after a segment's first has the number of the one before: with low-latency parts, every
 *   caption that spanned two parts was thrown away (upstream video-dev/hls.js#4297 was about the same check). A part
 *   that follows the previous one of the same segment now counts as contiguous; a seek, a switch or a discontinuity
 *   still resets.
 * - It holds the cues back until video is appended to the buffer (`type === 'video'`), and a live rendition is one
 *   muxed track (`audiovideo`): the cues were never let out. An append of muxed media now counts as video.
 * @param {any} Hls
 * @returns {any} the class, or undefined where hls.js has none to extend
 */
export function captionsTimeline(Hls) {
  var Base = Hls && Hls.DefaultConfig && Hls.DefaultConfig.timelineController;
  if (!Base) return undefined;
  return class extends Base {
    /** @param {string} event @param {any} data */
    onFragLoading(event, data) {
      var frag = data && data.frag;
      if (frag && data.part && frag.sn === this.lastSn && frag.cc === this.lastCc && data.part.index === this.lastPartIndex + 1) {
        this.lastSn = frag.sn - 1;
      }
      super.onFragLoading(event, data);
    }

    /** @param {string} event @param {any} data */
    onBufferAppended(event, data) {
      var muxed = data && data.type === 'audiovideo' && data.timeRanges && data.timeRanges.audiovideo;
      super.onBufferAppended(event, muxed ? { type: 'video', timeRanges: { video: muxed } } : data);
    }
  };
}

/**
 * hls.js's audio stream controller (for separate audio renditions: OnAir's on-demand videos), mended so that audio that
 * arrives first starts as soon as the video's does. hls.js 1.7.4 holds an audio fragment until the video's first
 * timestamp is known (WAITING_INIT_PTS), and when that becomes known it moves on only at its next 100 ms tick (it
 * ticks at once only when the discontinuity differs): the first frame waited 0–100 ms more, ~50 ms on average, about a
 * quarter of a cold start (BENCHMARKS.md, ttff). It now ticks at once.
 * @param {any} Hls
 * @returns {any} the class, or undefined where hls.js has none to extend
 */
export function promptAudioStreamController(Hls) {
  var Base = Hls && Hls.DefaultConfig && Hls.DefaultConfig.audioStreamController;
  if (!Base) return undefined;
  return class extends Base {
    /** @param {string} event @param {any} data */
    onInitPtsFound(event, data) {
      super.onInitPtsFound(event, data);
      if (this.state === 'WAITING_INIT_PTS' && this.waitingData && typeof this.tickImmediate === 'function') this.tickImmediate();
    }
  };
}

/**
 * An hls.js playlist loader (`pLoader`) that takes a playlist the page came with instead of asking for it: the watch
 * page of an on-demand video carries the playlists its player loads first (`#onair-playlists`, server/web.ts), two
 * round trips (multivariant, then media playlists) that no longer stand between the page and its first frame. Each is
 * taken once: a reload after an error asks the server as before, and so does every playlist the page did not carry.
 * Only the public loader API is used (load, abort, destroy, context, stats); anything not carried goes to hls.js's own.
 * @param {any} Hls
 * @param {Record<string, string>} playlists by path and query, as the page's player asks for them
 * @param {(url: string) => void} taken told of each playlist taken from the page (its path and query)
 * @returns {any} the loader class, or undefined where hls.js has none to wrap
 */
export function pagePlaylistLoader(Hls, playlists, taken) {
  var Base = Hls && Hls.DefaultConfig && Hls.DefaultConfig.loader;
  if (!Base) return undefined;
  /** @param {string} url */
  function take(url) {
    var parsed = new URL(url, location.href);
    var key = parsed.pathname + parsed.search;
    if (parsed.origin !== location.origin || !Object.prototype.hasOwnProperty.call(playlists, key)) return undefined;
    var text = playlists[key];
    delete playlists[key];
    taken(key);
    return text;
  }
  return class {
    /** @param {any} config */
    constructor(config) {
      /** @type {any} */
      this.inner = new Base(config);
      this.stats = this.inner.stats;
      /** @type {any} the context of a playlist taken from the page */
      this.own = null;
      /** @type {any} its callbacks, until it is answered */
      this.pending = null;
    }

    get context() { return this.own || this.inner.context; }

    /** @param {any} context @param {any} config @param {any} callbacks */
    load(context, config, callbacks) {
      var text = typeof context.url === 'string' ? take(context.url) : undefined;
      if (text === undefined) { this.inner.load(context, config, callbacks); return; }
      var stats = this.stats;
      stats.loading.start = stats.loading.first = stats.loading.end = performance.now();
      stats.loaded = stats.total = text.length;
      this.own = context;
      this.pending = callbacks;
      var self = this;
      // Answered as a request is: later, never from inside load().
      Promise.resolve().then(function () {
        if (self.pending !== callbacks) return;
        self.pending = null;
        callbacks.onSuccess({ url: context.url, data: text, code: 200 }, stats, context, null);
      });
    }

    abort() {
      if (!this.own) { this.inner.abort(); return; }
      var callbacks = this.pending;
      this.pending = null;
      if (callbacks && callbacks.onAbort) callbacks.onAbort(this.stats, this.own, null);
    }

    destroy() {
      this.pending = null;
      this.inner.destroy();
    }

    getCacheAge() { return this.own ? null : this.inner.getCacheAge ? this.inner.getCacheAge() : null; }

    /** @param {string} name */
    getResponseHeader(name) { return this.own ? null : this.inner.getResponseHeader ? this.inner.getResponseHeader(name) : null; }
  };
}

/**
 * The hls.js settings of a low-latency live player (the watch page, the studio's preview), with `liveCatchUp`:
 * - `startOnSegmentBoundary`: start where the first loaded part begins. A start position PART-HOLD-BACK behind the
 *   edge often lies in parts that cannot be decoded alone (only a segment's first part is INDEPENDENT); hls.js then
 *   loads from the segment's start and, by default, jumps ahead to its start position before the parts up to it have
 *   loaded: the first frames froze (a stall at the join), and hls.js held back a second more for good.
 *   `e2e/llhls-player` joins just after a segment boundary and counts stalls from the join.
 * - `maxLiveSyncPlaybackRate: 1`: the rate is `liveCatchUp`'s.
 * - `timelineController`: in-band captions that show (`captionsTimeline`).
 * @param {any} Hls
 */
export function liveHlsConfig(Hls) {
  /** @type {Record<string, unknown>} */
  var config = { lowLatencyMode: true, startOnSegmentBoundary: true, maxLiveSyncPlaybackRate: 1 };
  var timeline = captionsTimeline(Hls);
  if (timeline) config.timelineController = timeline;
  return config;
}

/**
 * Keeps a low-latency hls.js player at its target latency (PART-HOLD-BACK, plus what hls.js adds after a stall). hls.js
 * (1.7) speeds up only while more than a second is buffered ahead, so a stream held back 0.6–1 s stayed ~0.5 s behind
 * its target for good (measured: hls.latency 1.15 s with a 0.6 s target). Here: 1 + behind / 2, up to 1.25x (pitch
 * kept), while the player is more than 50 ms behind and more than two parts are buffered ahead, 1x otherwise; a join up
 * to a segment behind (`liveHlsConfig`) is made up in ~11 s. Give hls.js `maxLiveSyncPlaybackRate: 1` so that it leaves
 * the rate alone. Returns the interval (to clear).
 * @param {{ latency: number, targetLatency: number | null, latestLevelDetails?: { live: boolean, partTarget: number } | null }} hls
 * @param {HTMLVideoElement} video
 */
export function liveCatchUp(hls, video) {
  return setInterval(function () {
    var details = hls.latestLevelDetails;
    var target = hls.targetLatency;
    if (!details || !details.live || !target || !(hls.latency > 0) || video.paused) return;
    var ahead = video.buffered.length ? video.buffered.end(video.buffered.length - 1) - video.currentTime : 0;
    var behind = hls.latency - target;
    var rate = behind > 0.05 && ahead > 2 * (details.partTarget || 1) ? Math.min(1.25, 1 + behind / 2) : 1;
    // Whole hundredths: no stream of tiny rate changes.
    rate = Math.round(rate * 100) / 100;
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }, 250);
}
