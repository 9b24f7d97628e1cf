// @ts-check
// The watch page: a live stream in LL-HLS (hls.js in low-latency mode, or the browser's own HLS as in Safari) with its
// latency and a quality choice, or in real time over WebRTC (WHEP); the chat with reaction bursts; the news ticker and
// the ad-break badge from cues. After the event the same URL plays the replay with its chat in step with the playhead.
// Everything is served by OnAir: no external requests.
//
// What the page is doing shows on the page itself, for styles, assistive tools and anyone inspecting it (tests
// included; there is no test hook): the <video>'s `data-mode` (live, offline, ended, replay, vod), the latency
// readout's `data-seconds` (hls.js's estimate, unrounded), the chat's `data-joined-as` (the name the server
// accepted), the replayed chat's `data-total` (comments kept for the replay). Fatal playback errors go to the console.
import { byId, captionsTimeline, clock, duration, el, liveCatchUp, liveHlsConfig, pagePlaylistLoader, promptAudioStreamController } from './common.js';

var parts = location.pathname.split('/');
var id = parts[parts.length - 1];
var params = new URLSearchParams(location.search);
var token = params.get('token');
var query = token ? '?token=' + encodeURIComponent(token) : '';
// The server says what the id is (`<body data-kind>`, as its API answers it): a stream (live, or its replay once the
// event is over) or a catalog video. Without it (no such stream or video) the page asks for a stream and says there is none.
var isVideo = document.body.dataset.kind === 'video';
var video = /** @type {HTMLVideoElement & { getStartDate?: () => Date }} */ (byId('video'));
var state = byId('state');
var latency = byId('latency');
var level = byId('level');
var quality = /** @type {HTMLSelectElement} */ (byId('quality'));
var badge = byId('badge');
var realtime = /** @type {HTMLInputElement} */ (byId('realtime'));
/**
 * The page's players and what it plays.
 * @type {{ mode: 'live' | 'offline' | 'ended' | 'replay' | 'vod', hls: import('hls.js').default | null, pc: RTCPeerConnection | null,
 *   whepLocation: string | null }}
 */
var onair = { mode: 'live', hls: null, pc: null, whepLocation: null };
/** @type {ReturnType<typeof setTimeout>[]} */
var timers = [];
/** What hls.js (or the browser) plays: set before any player starts. */
var src = '';
/**
 * This page's playback session, sent as `X-Playback-Session-Id` (the header Apple's players send) with its media
 * playlist requests: the server counts a viewer per session (server/Audience.ts). Random, this page load only.
 */
var playbackSession = (function () {
  var bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, function (b) { return (b < 16 ? '0' : '') + b.toString(16); }).join('');
})();
setMode(isVideo ? 'vod' : 'live');
// The browser's own controls come with the first frame (or when the browser will not start by itself, or after a
// second): on a cold start, drawing them (their icons are SVG documents) cost ~20 ms of style and layout before the
// first frame (BENCHMARKS.md, ttff).
function showControls() { video.controls = true; }
video.addEventListener('loadeddata', showControls, { once: true });
setTimeout(showControls, 1000);

/** @param {'live' | 'offline' | 'ended' | 'replay' | 'vod'} mode */
function setMode(mode) {
  onair.mode = mode;
  video.dataset.mode = mode;
}

video.addEventListener('playing', function () {
  state.textContent = onair.pc ? 'live (real-time)' : onair.mode === 'live' ? 'live' : onair.mode === 'replay' ? 'replay' : 'playing';
});

realtime.checked = params.get('mode') === 'webrtc';
realtime.addEventListener('change', function () {
  if (realtime.checked) params.set('mode', 'webrtc'); else params.delete('mode');
  location.search = params.toString();
});

// ---- Quality reports ------------------------------------------------------------------------------------------
/**
 * What this viewer's player sees, reported every 10 s and when the page goes (`POST /api/qoe`, issue #19): time to
 * first frame (once), stalls and their length (a stall still going on is reported as far as it went), time played,
 * rendition switches, fatal errors and the live latency. Nothing about the viewer: the stream or video, the protocol,
 * the figures.
 * @type {{ target: string | null, startupMs: number | undefined, started: boolean, stalls: number, stallMs: number,
 *   stalledAt: number, playedMs: number, lastTick: number, switches: number, level: number | undefined, errors: number }}
 */
var qoe = {
  target: null, startupMs: undefined, started: false, stalls: 0, stallMs: 0, stalledAt: 0, playedMs: 0, lastTick: 0,
  switches: 0, level: undefined, errors: 0,
};
video.addEventListener('playing', function () {
  var now = performance.now();
  if (!qoe.started) { qoe.started = true; qoe.startupMs = now; }
  if (qoe.stalledAt) { qoe.stallMs += now - qoe.stalledAt; qoe.stalledAt = 0; }
});
video.addEventListener('waiting', function () {
  if (!qoe.started || qoe.stalledAt || video.currentTime <= 0) return;
  qoe.stalls += 1;
  qoe.stalledAt = performance.now();
});
timers.push(setInterval(function () {
  var now = performance.now();
  if (qoe.started && !qoe.stalledAt && !video.paused && qoe.lastTick) qoe.playedMs += now - qoe.lastTick;
  qoe.lastTick = now;
}, 500));
timers.push(setInterval(sendQoe, 10000));
window.addEventListener('pagehide', sendQoe);

function sendQoe() {
  if (!qoe.target || !qoe.started) return;
  var now = performance.now();
  if (qoe.stalledAt) { qoe.stallMs += now - qoe.stalledAt; qoe.stalledAt = now; }
  /** @type {Record<string, unknown>} */
  var report = { id: qoe.target, protocol: onair.pc ? 'webrtc' : onair.mode === 'live' ? 'llhls' : 'hls' };
  if (qoe.startupMs !== undefined) report.startupMs = Math.min(120000, Math.round(qoe.startupMs));
  if (qoe.stalls) report.stalls = Math.min(1000, qoe.stalls);
  if (qoe.stallMs) report.stallMs = Math.min(600000, Math.round(qoe.stallMs));
  if (qoe.playedMs) report.playedMs = Math.min(600000, Math.round(qoe.playedMs));
  if (qoe.switches) report.switches = Math.min(1000, qoe.switches);
  if (qoe.errors) report.errors = Math.min(100, qoe.errors);
  if (onair.hls && onair.mode === 'live' && onair.hls.latency > 0) report.latencyMs = Math.min(120000, Math.round(onair.hls.latency * 1000));
  if (Object.keys(report).length === 2) return;
  qoe.startupMs = undefined;
  qoe.stalls = 0;
  qoe.stallMs = 0;
  qoe.playedMs = 0;
  qoe.switches = 0;
  qoe.errors = 0;
  fetch('/api/qoe', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(report), keepalive: true })
    .catch(function () {});
}

// ---- What to play --------------------------------------------------------------------------------------------
/**
 * The object the server put into the page as data (`<script type="application/json" id>`), or null (absent, not JSON,
 * not an object).
 * @param {string} id
 * @returns {any}
 */
function pageData(id) {
  var element = document.getElementById(id);
  try {
    var value = element ? JSON.parse(element.textContent || 'null') : null;
    return value && typeof value === 'object' ? value : null;
  } catch (_) { return null; }
}
/**
 * The server puts its API's answer for this id into the page (`#onair-item`, data only): the first look needs no
 * round trip, so the player starts as soon as the scripts run. Later looks (is it live yet? over?) ask the API.
 */
var embedded = pageData('onair-item');
/**
 * On demand, the playlists the page came with (`#onair-playlists`, server/web.ts): the player takes each once instead
 * of asking (pagePlaylistLoader). The server counts a view when a player asks for a media playlist; a page that plays
 * from the ones it carries asks for one once it plays (`countView`), with this playback's session.
 * @type {Record<string, string> | null}
 */
var pagePlaylists = pageData('onair-playlists');
/** The first media playlist the player took from the page: asked for once playback starts, as the view. */
var viewPlaylist = '';
video.addEventListener('playing', function countView() {
  video.removeEventListener('playing', countView);
  if (!viewPlaylist) return;
  fetch(viewPlaylist, { headers: { 'X-Playback-Session-Id': playbackSession, 'Cache-Control': 'no-cache' } }).catch(function () {});
});

function load() {
  if (embedded) {
    var item = embedded;
    embedded = null;
    return Promise.resolve(item);
  }
  var url = (isVideo ? '/api/videos/' : '/api/streams/') + id + query;
  return fetch(url).then(function (r) { return r.ok ? r.json() : null; }).catch(function () { return null; });
}

function show(item) {
  if (!item) return;
  // A video's poster shows at once, before its first frame (same origin: the CSP allows no other).
  if (isVideo && typeof item.thumbnail === 'string' && !video.poster) video.poster = item.thumbnail.replace(/^https?:\/\/[^/]+/, '');
  byId('title').textContent = item.title;
  byId('description').textContent = item.description || '';
  document.title = item.title + ' — OnAir';
}

function setBadge(text, live) {
  badge.textContent = text;
  badge.className = 'badge' + (live ? ' live' : '');
}

function begin() {
  load().then(function (item) {
    show(item);
    if (isVideo) {
      qoe.target = id;
      setBadge(item && item.source !== 'upload' ? 'Replay' : 'Video', false);
      src = '/vod/' + id + '/index.m3u8' + query;
      playHls();
      resumable(id);
      replayChat(id);
    } else if (item && item.status === 'live') {
      qoe.target = id;
      showAudience(item);
      setMode('live');
      setBadge('Live', true);
      src = '/live/' + id + '/index.m3u8' + query;
      if (item.stats && item.stats.adBreak) showAd(item.stats.adBreak.plannedDurationSec);
      if (realtime.checked) playWhep(); else playHls();
      liveChat();
      watchForEnd();
    } else if (item && item.replay) {
      startReplay(item.replay);
    } else {
      // Not live yet (or no such stream): wait for it, and start by itself.
      setMode('offline');
      state.textContent = item ? 'offline — this page starts playing when the stream goes live' : 'no such stream';
      setBadge('Offline', false);
      if (item) timers.push(setTimeout(begin, 3000));
      if (item) liveChat();
    }
  });
}

function startReplay(replay) {
  sendQoe();
  qoe.target = replay.videoId;
  setMode('replay');
  setBadge('Replay', false);
  src = replay.hls.replace(/^https?:\/\/[^/]+/, '');
  playHls();
  resumable(replay.videoId);
  replayChat(replay.videoId);
  // The stream's page: when the stream goes live again, the page goes back to live.
  if (!isVideo) {
    timers.push(setInterval(function () {
      load().then(function (item) { if (item && item.status === 'live') location.reload(); });
    }, 10000));
  }
}

/**
 * While live, the stream's state is checked every few seconds: once the event is over, the player plays out what it
 * has buffered (the end of the show) and then the page goes on to the replay.
 */
function watchForEnd() {
  var lastTime = -1;
  var stuckSince = 0;
  var ending = false;
  var timer = setInterval(function () {
    if (onair.mode !== 'live') { clearInterval(timer); return; }
    if (!ending) {
      load().then(function (item) {
        if (item && item.status !== 'live') ending = true;
        showAudience(item);
      });
      return;
    }
    var t = video.currentTime;
    if (t !== lastTime) { lastTime = t; stuckSince = Date.now(); return; }
    if (Date.now() - stuckSince >= 1500 || video.ended) { clearInterval(timer); awaitReplay(); }
  }, 1000);
  timers.push(timer);
}

/** The live event ended under the player: the same page goes on to the replay as soon as it is published. */
function awaitReplay() {
  if (onair.mode !== 'live') return;
  setMode('ended');
  showAudience(null);
  state.textContent = 'the event is over — the replay starts in a moment';
  setBadge('Ended', false);
  var tries = 0;
  (function poll() {
    load().then(function (item) {
      if (item && item.status === 'live') { location.reload(); return; }
      if (item && item.replay) {
        stopPlayers();
        if (socket) { socket.close(); socket = null; }
        startReplay(item.replay);
        return;
      }
      if (++tries < 40) timers.push(setTimeout(poll, 1500));
    });
  })();
}

function refused() {
  stopPlayers();
  state.textContent = 'this page needs a valid playback token: the link may have expired — ask for a new one';
}

function stopPlayers() {
  if (onair.hls) { onair.hls.destroy(); onair.hls = null; }
  if (onair.pc) { onair.pc.close(); onair.pc = null; }
  quality.length = 1;
}

// ---- WebRTC (WHEP) -------------------------------------------------------------------------------------------
function playWhep() {
  var pc = new RTCPeerConnection();
  var media = new MediaStream();
  onair.pc = pc;
  quality.disabled = true;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.ontrack = function (event) {
    media.addTrack(event.track);
    video.srcObject = media;
    video.play().catch(showControls);
  };
  pc.onconnectionstatechange = function () {
    if (pc.connectionState === 'failed') qoe.errors += 1;
    state.textContent = pc.connectionState === 'connected' ? 'live (real-time)' : pc.connectionState;
  };
  level.textContent = 'WebRTC';
  pc.createOffer().then(function (offer) { return pc.setLocalDescription(offer); }).then(function () {
    return fetch('/live/' + id + '/whep' + query, {
      method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription?.sdp,
    });
  }).then(function (response) {
    if (response.status !== 201) {
      return response.json().then(function (body) { throw new Error(body.error ? body.error.message : response.statusText); });
    }
    onair.whepLocation = response.headers.get('location');
    return response.text().then(function (sdp) { return pc.setRemoteDescription({ type: 'answer', sdp: sdp }); });
  }).catch(function (error) {
    state.textContent = 'WebRTC unavailable: ' + error.message;
  });
  window.addEventListener('pagehide', function () {
    if (onair.whepLocation) fetch(onair.whepLocation, { method: 'DELETE', keepalive: true });
    pc.close();
  });
  timers.push(setInterval(function () {
    pc.getStats().then(function (stats) {
      stats.forEach(function (report) {
        if (report.type === 'inbound-rtp' && report.kind === 'video' && report.jitterBufferEmittedCount > 0) {
          var delay = report.jitterBufferDelay / report.jitterBufferEmittedCount;
          latency.textContent = '~' + delay.toFixed(2) + ' s buffer';
        }
      });
    });
  }, 1000));
}

// ---- LL-HLS --------------------------------------------------------------------------------------------------
function playHls() {
  quality.disabled = false;
  const Hls = window.Hls;
  if (Hls && Hls.isSupported()) {
    // Live: liveHlsConfig and liveCatchUp (common.js): hls.js joins behind its target (PART-HOLD-BACK), where a part can be
    // decoded from, and the page owns the rate that catches up.
    // startFragPrefetch (on demand): the first segment loads while the browser opens the MediaSource (~80 ms sooner).
    // Not live: there hls.js would prefetch a whole segment and start ~0.5 s further behind.
    // enableWorker (live only): on demand the segments are fMP4 (no transmuxing), and the worker would parse hls.js's
    // 624 kB again before the first append (~60 ms of the time to first frame, BENCHMARKS.md).
    // On demand:
    // - the playlists the page came with are taken from it, not asked for (pagePlaylistLoader);
    // - audio in its own rendition (an upload's) starts as soon as the video does (promptAudioStreamController);
    // - a replay is the live event's muxed segments, and its captions need the mended timeline.
    var timeline = captionsTimeline(Hls);
    /** @type {Record<string, unknown>} */
    var onDemand = {};
    if (timeline) onDemand.timelineController = timeline;
    var audio = promptAudioStreamController(Hls);
    if (audio) onDemand.audioStreamController = audio;
    var carried = pagePlaylists && onair.mode !== 'live' ? pagePlaylistLoader(Hls, pagePlaylists, function (url) {
      if (!viewPlaylist && new URL(url, location.href).pathname !== new URL(src, location.href).pathname) viewPlaylist = url;
    }) : undefined;
    if (carried) onDemand.pLoader = carried;
    var hls = new Hls(Object.assign(onair.mode === 'live' ? liveHlsConfig(Hls) : onDemand, {
      backBufferLength: 30, startFragPrefetch: onair.mode !== 'live', enableWorker: onair.mode === 'live',
      xhrSetup: function (xhr, url) {
        xhr.open('GET', url, true);
        // Media playlists only: the multivariant one is the page's preload (no header, or it would not be reused).
        if (/\.m3u8(\?|$)/.test(url) && new URL(url, location.href).pathname !== new URL(src, location.href).pathname) {
          xhr.setRequestHeader('X-Playback-Session-Id', playbackSession);
          // On demand a version's playlists are immutable: from the browser's cache, a viewer coming back would be
          // no view. Asked again (1 kB) each time the page plays it.
          if (onair.mode !== 'live') xhr.setRequestHeader('Cache-Control', 'no-cache');
        }
      },
    }));
    onair.hls = hls;
    if (onair.mode === 'live') timers.push(liveCatchUp(hls, video));
    hls.on(Hls.Events.MANIFEST_PARSED, function () {
      quality.length = 1;
      // Highest first; the value is hls.js's level index (its levels go by bitrate, lowest first).
      hls.levels.map(function (l, index) { return { l: l, index: index }; }).reverse().forEach(function (item) {
        quality.appendChild(el('option', { value: item.index }, item.l.height + 'p · ' + Math.round(item.l.bitrate / 1000) + ' kbit/s'));
      });
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, function (_e, data) {
      if (qoe.level !== undefined && qoe.level !== data.level) qoe.switches += 1;
      qoe.level = data.level;
      var l = hls.levels[data.level];
      if (l) level.textContent = l.height + 'p';
    });
    hls.on(Hls.Events.ERROR, function (_e, data) {
      if (!data.fatal) return;
      qoe.errors += 1;
      // For whoever opens the console: what stopped playback (the page shows "reconnecting…" and retries).
      console.warn('OnAir player: fatal playback error', data.type, data.details);
      var status = data.response && data.response.code;
      if (onair.mode === 'live' && (status === 404 || status === 410)) { awaitReplay(); return; }
      // Signed playback: no token, another stream's, or an expired one. Retrying cannot help; a new link can.
      if (status === 403) { refused(); return; }
      state.textContent = 'reconnecting…';
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else timers.push(setTimeout(function () { hls.loadSource(src); hls.startLoad(); }, 1000));
    });
    if (carried) {
      // The carried playlists are read at once: before the media is attached, hls.js (1.7.4) then left a video's
      // default subtitle track off, now and then (e2e/subtitles, 2 loads in 5). Attached first, as hls.js documents.
      hls.once(Hls.Events.MEDIA_ATTACHED, function () { hls.loadSource(src); });
      hls.attachMedia(video);
    } else {
      hls.loadSource(src);
      hls.attachMedia(video);
    }
    timers.push(setInterval(function () {
      if (onair.mode === 'live' && hls.latency > 0) showLatency(hls.latency);
      else if (onair.mode !== 'live') showLatency(undefined);
    }, 250));
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    quality.disabled = true;
    video.src = src;
    timers.push(setInterval(function () {
      var date = video.getStartDate && video.getStartDate();
      if (onair.mode === 'live' && date && !isNaN(date.getTime())) showLatency((Date.now() - date.getTime()) / 1000 - video.currentTime);
    }, 250));
  } else {
    state.textContent = 'this browser cannot play HLS';
  }
  video.play().catch(showControls);
}

// ---- Resume (issue #19) ---------------------------------------------------------------------------------------
// Where this device stopped each replay or video, in localStorage only (nothing goes to the server): `onair.resume`
// maps a video id to { t: seconds, d: duration, at: ms since the epoch }. Kept while t is at least RESUME_MIN_SEC and
// more than RESUME_MIN_SEC before the end (a video watched to its end starts over next time); at most RESUME_MAX
// videos, the least recently watched forgotten first.
var RESUME_KEY = 'onair.resume';
var RESUME_MAX = 50;
var RESUME_MIN_SEC = 10;

/** @returns {Record<string, { t: number, d: number, at: number }>} */
function resumeEntries() {
  try {
    var entries = JSON.parse(localStorage.getItem(RESUME_KEY) || '{}');
    return entries && typeof entries === 'object' && !Array.isArray(entries) ? entries : {};
  } catch (_error) {
    return {};
  }
}

/** @param {Record<string, { t: number, d: number, at: number }>} entries */
function saveResumeEntries(entries) {
  var ids = Object.keys(entries).sort(function (a, b) { return (entries[b].at || 0) - (entries[a].at || 0); });
  /** @type {Record<string, { t: number, d: number, at: number }>} */
  var kept = {};
  ids.slice(0, RESUME_MAX).forEach(function (k) { kept[k] = entries[k]; });
  try { localStorage.setItem(RESUME_KEY, JSON.stringify(kept)); } catch (_error) { /* storage full or off: no resume */ }
}

/**
 * A replay or video: offer to go on from where this device stopped it, and remember where it stops now.
 * @param {string} videoId
 */
function resumable(videoId) {
  var box = byId('resume');
  var saved = resumeEntries()[videoId];
  if (saved && typeof saved.t === 'number' && saved.t >= RESUME_MIN_SEC && (!(saved.d > 0) || saved.t < saved.d - RESUME_MIN_SEC)) {
    byId('resume-at').textContent = duration(saved.t);
    box.classList.remove('hidden');
    var hide = function () { box.classList.add('hidden'); };
    byId('resume-play').addEventListener('click', function () {
      hide();
      var seek = function () { video.currentTime = saved.t; video.play().catch(function () {}); };
      if (video.readyState >= 1) seek(); else video.addEventListener('loadedmetadata', seek, { once: true });
    }, { once: true });
    byId('resume-restart').addEventListener('click', function () {
      hide();
      var entries = resumeEntries();
      delete entries[videoId];
      saveResumeEntries(entries);
    }, { once: true });
  }
  var last = 0;
  var remember = function () {
    if (onair.mode !== 'replay' && onair.mode !== 'vod') return;
    var t = video.currentTime;
    // While the offer stands, the saved place stays (playing the first seconds must not forget it), until this
    // playback passes it.
    if (!box.classList.contains('hidden')) {
      if (!saved || t <= saved.t) return;
      box.classList.add('hidden');
    }
    var d = isFinite(video.duration) ? video.duration : 0;
    var entries = resumeEntries();
    if (video.ended || t < RESUME_MIN_SEC || (d > 0 && t >= d - RESUME_MIN_SEC)) delete entries[videoId];
    else entries[videoId] = { t: Math.floor(t), d: Math.floor(d), at: Date.now() };
    saveResumeEntries(entries);
  };
  video.addEventListener('timeupdate', function () {
    if (Date.now() - last < 5000) return;
    last = Date.now();
    remember();
  });
  video.addEventListener('pause', remember);
  video.addEventListener('ended', remember);
  window.addEventListener('pagehide', remember);
}

/**
 * The latency readout: two decimals for the viewer, the unrounded seconds in `data-seconds`; `–` when not live.
 * @param {number | undefined} seconds
 */
/** The live count: every protocol, every node (`stats.audience.current`); hidden when not live. */
function showAudience(item) {
  var audience = item && item.status === 'live' && item.stats && item.stats.audience;
  var box = byId('watching');
  if (!audience) { box.classList.add('hidden'); return; }
  byId('watching-count').textContent = String(audience.current);
  box.classList.remove('hidden');
}

function showLatency(seconds) {
  if (seconds === undefined) {
    latency.textContent = '–';
    delete latency.dataset.seconds;
    return;
  }
  latency.textContent = seconds.toFixed(2) + ' s';
  latency.dataset.seconds = String(seconds);
}

quality.addEventListener('change', function () {
  if (onair.hls) onair.hls.currentLevel = Number(quality.value);
});
// ENDLIST reached on a live stream: the event is over.
video.addEventListener('ended', function () { if (onair.mode === 'live') awaitReplay(); });

// ---- Chat ----------------------------------------------------------------------------------------------------
var comments = byId('comments');
var chatError = byId('chat-error');
/** The chat panel: `data-joined-as` once the server has let this viewer in. */
var chat = byId('chat');
var form = byId('comment-form');
var input = /** @type {HTMLInputElement} */ (byId('comment'));
var nameInput = /** @type {HTMLInputElement} */ (byId('name'));
var reactionBar = byId('reactions');
var socket = null;
var NAME_KEY = 'onair.name';
nameInput.value = localStorage.getItem(NAME_KEY) || 'viewer-' + Math.floor(1000 + Math.random() * 9000);

function addComment(comment, prepend) {
  var item = el('li', { 'data-id': comment.id },
    el('span', { class: 'name' }, comment.name),
    el('span', { class: 'text' }, comment.text),
    el('span', { class: 'when' }, comment.offsetSec !== undefined ? duration(comment.offsetSec) : clock(comment.at)));
  if (prepend) comments.insertBefore(item, comments.firstChild); else comments.appendChild(item);
  while (comments.children.length > 300) comments.firstElementChild?.remove();
  comments.scrollTop = comments.scrollHeight;
}

function burst(emoji, count) {
  var box = byId('bursts');
  for (var i = 0; i < Math.min(count, 8); i++) {
    var span = el('span', { style: { left: Math.round(Math.random() * 60) + '%', animationDelay: (i * 0.12) + 's' } }, emoji);
    span.addEventListener('animationend', function (event) { /** @type {Element} */ (event.target).remove(); });
    box.appendChild(span);
  }
}

function liveChat() {
  if (socket || !window.io) return;
  byId('chat-title').textContent = 'Live chat';
  socket = window.io('/chat');
  var join = function () {
    socket.emit('join', { streamId: id, name: nameInput.value.trim() || 'viewer' }, function (ack) {
      if (!ack || !ack.ok) { chatError.textContent = ack && ack.error ? ack.error.message : 'cannot join the chat'; return; }
      chatError.textContent = '';
      chat.dataset.joinedAs = ack.name;
      reactionBar.textContent = '';
      (ack.reactions || []).forEach(function (emoji) {
        reactionBar.appendChild(el('button', { type: 'button', 'aria-label': 'React ' + emoji, onclick: function () { socket.emit('reaction', { emoji: emoji }); } }, emoji));
      });
      if (ack.slowModeSec > 0) chatError.textContent = 'Slow mode: one comment every ' + ack.slowModeSec + ' s';
    });
  };
  socket.on('connect', join);
  socket.on('comment', function (comment) { addComment(comment); });
  socket.on('removed', function (message) {
    var item = comments.querySelector('li[data-id="' + CSS.escape(message.id) + '"]');
    if (item) item.remove();
  });
  socket.on('reactions', function (update) {
    Object.keys(update.counts || {}).forEach(function (emoji) {
      burst(emoji, update.counts[emoji]);
    });
  });
  socket.on('cue', onCue);
  socket.on('error', function (error) { chatError.textContent = error.message; });
  nameInput.addEventListener('change', function () {
    localStorage.setItem(NAME_KEY, nameInput.value.trim());
    if (socket.connected) join();
  });
}

/**
 * How far behind the live edge the picture is, so that the replay shows a comment beside what its writer saw:
 * hls.js knows (its latency; a viewer who paused or went back in the DVR window is far behind); WebRTC is at the
 * edge; otherwise the server assumes a typical LL-HLS viewer.
 */
function behindLiveMs() {
  if (onair.mode !== 'live') return undefined;
  if (onair.pc) return 0;
  if (onair.hls && onair.hls.latency > 0) return Math.min(3600000, Math.round(onair.hls.latency * 1000));
  return undefined;
}

form.addEventListener('submit', function (event) {
  event.preventDefault();
  var text = input.value.trim();
  if (!text || !socket) return;
  var comment = { text: text };
  var behind = behindLiveMs();
  if (behind !== undefined) comment.behindMs = behind;
  socket.emit('comment', comment, function (ack) {
    if (ack && ack.ok) { input.value = ''; chatError.textContent = ''; }
    else if (ack && ack.error) chatError.textContent = ack.error.message;
  });
});

/**
 * The replay's chat: every kept comment, shown as the playhead passes its offset (seeking back hides later ones).
 * The server put each comment where its writer was in the picture, for the replay and the archive alike.
 */
function replayChat(videoId) {
  byId('chat-title').textContent = 'Chat replay';
  form.classList.add('hidden');
  reactionBar.classList.add('hidden');
  nameInput.parentElement?.classList.add('hidden');
  var all = [];
  var shown = 0;
  var sync = function () {
    var t = video.currentTime;
    var upTo = 0;
    while (upTo < all.length && all[upTo].offsetSec <= t) upTo++;
    if (upTo < shown) { comments.textContent = ''; shown = 0; }
    for (; shown < upTo; shown++) addComment(all[shown]);
  };
  (function page(cursor) {
    fetch('/api/videos/' + videoId + '/chat?limit=1000' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''))
      .then(function (r) { return r.ok ? r.json() : { comments: [] }; })
      .then(function (body) {
        all = all.concat(body.comments || []);
        comments.dataset.total = String(all.length);
        if (body.nextCursor) page(body.nextCursor);
        sync();
      });
  })();
  video.addEventListener('timeupdate', sync);
  video.addEventListener('seeking', sync);
  video.addEventListener('seeked', sync);
  // Media events stop at the end or while paused after a seek: a slow tick keeps the chat in step anyway.
  timers.push(setInterval(sync, 500));
}

// ---- Cues: news ticker and ad-break badge ------------------------------------------------------------------------
var ticker = byId('ticker');
var adBadge = byId('ad');
var tickerTimer = null;
var adTimer = null;

function showAd(durationSec) {
  adBadge.textContent = 'Ad break · ' + Math.round(durationSec) + ' s';
  adBadge.classList.remove('hidden');
  clearTimeout(adTimer);
  adTimer = setTimeout(function () { adBadge.classList.add('hidden'); }, durationSec * 1000);
}

function onCue(cue) {
  if (cue.kind === 'news') {
    ticker.textContent = cue.text;
    ticker.classList.remove('hidden');
    clearTimeout(tickerTimer);
    tickerTimer = setTimeout(function () { ticker.classList.add('hidden'); }, (cue.durationSec || 10) * 1000);
  } else if (cue.kind === 'ad') {
    showAd(cue.durationSec);
  }
}

begin();
