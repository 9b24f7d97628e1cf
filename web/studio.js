// @ts-check
// The studio: sign in with the admin token; create streams; what OBS needs (server, key, settings); live health; cue
// buttons; chat moderation; end of stream; VOD jobs and uploads with progress. Everything goes through the public API.
import * as O from './common.js';

var el = O.el;
var $ = O.byId;
/** The chosen stream, and the preview's latency the health panel shows. */
var studio = {
  /** @type {string | null} */ streamId: null,
  /** @type {number | null} */ latency: null,
};
/** @type {any} */
var current = null;
/** @type {ReturnType<typeof setInterval> | null} */
var healthTimer = null;
/** The preview player (hls.js), and the timer that reads its latency. @type {import('hls.js').default | null} */
var preview = null;
/** @type {ReturnType<typeof setInterval> | undefined} */
var previewTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
var catchUpTimer;
/** @type {import('socket.io-client').Socket | null} */
var socket = null;

// ---- Sign-in -------------------------------------------------------------------------------------------------
function signedIn() {
  $('login').classList.add('hidden');
  $('studio').classList.remove('hidden');
  $('sign-out').classList.remove('hidden');
  loadStreams();
  loadVideos();
  setInterval(loadVideos, 2000);
  loadHooks();
  setInterval(loadHooks, 5000);
  var wanted = new URLSearchParams(location.search).get('stream');
  if (wanted) select(wanted);
}

function checkToken() {
  if (!O.token()) { $('login').classList.remove('hidden'); return; }
  O.api('GET', '/api/session').then(function (result) {
    if (result.status === 200) signedIn();
    else {
      O.forgetToken();
      $('login').classList.remove('hidden');
      $('login-error').textContent = result.status === 403 ? 'That token is not the admin token.' : O.errorText(result);
    }
  });
}

$('login-form').addEventListener('submit', function (event) {
  event.preventDefault();
  O.setToken(O.field('token').value.trim(), O.field('remember').checked);
  O.field('token').value = '';
  checkToken();
});
$('sign-out').addEventListener('click', function () { O.forgetToken(); location.reload(); });

// ---- Streams -------------------------------------------------------------------------------------------------
function loadStreams() {
  return O.api('GET', '/api/streams').then(function (result) {
    var list = $('streams');
    list.textContent = '';
    (result.body.streams || []).forEach(function (stream) {
      list.appendChild(el('li', {}, el('button', {
        type: 'button', 'aria-current': stream.id === studio.streamId ? 'true' : 'false',
        onclick: function () { select(stream.id); },
      }, el('span', {}, stream.title), el('span', { class: 'badge' + (stream.status === 'live' ? ' live' : '') }, stream.status))));
    });
  });
}

$('create-form').addEventListener('submit', function (event) {
  event.preventDefault();
  O.api('POST', '/api/streams', { title: O.field('new-title').value.trim() }).then(function (result) {
    if (result.status !== 201) { $('create-error').textContent = O.errorText(result); return; }
    $('create-error').textContent = '';
    O.field('new-title').value = '';
    sessionStorage.setItem('onair.key.' + result.body.id, result.body.streamKey);
    keepSrtUrl(result.body.id, result.body.ingest);
    loadStreams();
    select(result.body.id);
  });
});

function select(id) {
  studio.streamId = id;
  var url = new URL(location.href);
  url.searchParams.set('stream', id);
  history.replaceState(null, '', url);
  $('pick').classList.add('hidden');
  $('stream').classList.remove('hidden');
  if (healthTimer) clearInterval(healthTimer);
  stopPreview();
  moderation(id);
  refresh();
  healthTimer = setInterval(refresh, 1000);
  loadStreams();
}

/**
 * The SRT URL with its passphrase, from an answer that gave the key: kept beside the key, in this tab only.
 * @param {string} id
 * @param {{ srtUrl?: string }} ingest
 */
function keepSrtUrl(id, ingest) {
  if (ingest && ingest.srtUrl && ingest.srtUrl.indexOf('passphrase=') >= 0) sessionStorage.setItem('onair.srt.' + id, ingest.srtUrl);
}

function refresh() {
  var id = studio.streamId;
  O.api('GET', '/api/streams/' + id).then(function (result) {
    if (id !== studio.streamId || result.status !== 200) return;
    var stream = result.body;
    var wasLive = current && current.status === 'live';
    current = stream;
    $('stream-title').textContent = stream.title;
    $('stream-status').textContent = stream.status;
    $('stream-status').className = 'badge' + (stream.status === 'live' ? ' live' : '');
    // The API's admin view: with signed playback on, the link carries a playback token (it is the link to share).
    /** @type {HTMLAnchorElement} */ ($('watch-link')).href = stream.playback.watchPage;
    $('rtmp-url').textContent = stream.ingest.rtmpUrl;
    // RTMPS, when the node has it on (ONAIR_RTMPS_PORT): the same key, over TLS.
    $('rtmps-url').textContent = stream.ingest.rtmpsUrl || '';
    $('rtmps-row').hidden = !stream.ingest.rtmpsUrl;
    // WHIP, when the node has WebRTC: OBS 30+'s "WHIP" service, the stream key as its Bearer Token.
    $('whip-url').textContent = stream.ingest.whipUrl || '';
    $('whip-row').hidden = !stream.ingest.whipUrl;
    // SRT, when the node has it on: the whole URL with its passphrase is known only where the key is (this tab).
    var srt = sessionStorage.getItem('onair.srt.' + stream.id);
    $('srt-url').textContent = srt || (stream.ingest.srtUrl ? stream.ingest.srtUrl + ' (its passphrase comes with a new key)' : '');
    $('srt-row').hidden = !stream.ingest.srtUrl;
    /** @type {HTMLButtonElement} */ ($('copy-srt-url')).disabled = !srt;
    var key = sessionStorage.getItem('onair.key.' + stream.id);
    $('stream-key').textContent = key || 'hidden — "New key" makes a new one (OBS then needs it)';
    /** @type {HTMLButtonElement} */ ($('copy-key')).disabled = !key;
    /** @type {HTMLButtonElement} */ ($('end')).disabled = stream.status !== 'live';
    obsSettings(stream);
    health(stream.stats);
    O.api('GET', '/api/qoe/' + id).then(function (qoeResult) { if (id === studio.streamId && qoeResult.status === 200) quality(qoeResult.body); });
    if (stream.status === 'live' && !preview) startPreview(stream);
    if (stream.status !== 'live' && preview) stopPreview();
    if (wasLive !== (stream.status === 'live')) loadStreams();
  });
}

$('copy-url').addEventListener('click', function (event) { O.copy($('rtmp-url').textContent || '', /** @type {HTMLElement} */ (event.target)); });
$('copy-rtmps-url').addEventListener('click', function (event) { O.copy($('rtmps-url').textContent || '', /** @type {HTMLElement} */ (event.target)); });
$('copy-srt-url').addEventListener('click', function (event) { O.copy(sessionStorage.getItem('onair.srt.' + studio.streamId) || '', /** @type {HTMLElement} */ (event.target)); });
$('copy-whip-url').addEventListener('click', function (event) { O.copy($('whip-url').textContent || '', /** @type {HTMLElement} */ (event.target)); });
$('copy-key').addEventListener('click', function (event) { O.copy(sessionStorage.getItem('onair.key.' + studio.streamId) || '', /** @type {HTMLElement} */ (event.target)); });
$('rotate').addEventListener('click', function () {
  if (!confirm('Make a new stream key? OBS must then use the new one.')) return;
  O.api('POST', '/api/streams/' + studio.streamId + '/key').then(function (result) {
    if (result.status === 200) {
      sessionStorage.setItem('onair.key.' + studio.streamId, result.body.streamKey);
      keepSrtUrl(studio.streamId || '', result.body.ingest);
    }
    refresh();
  });
});
$('end').addEventListener('click', function () {
  O.api('POST', '/api/streams/' + studio.streamId + '/end').then(function (result) {
    $('end-note').textContent = result.status === 202
      ? 'Ended. Stop streaming in OBS too: a reconnect starts a new event. The replay appears in the catalog in a few seconds.'
      : O.errorText(result);
    refresh();
  });
});

function obsSettings(stream) {
  var top = stream.stats && stream.stats.renditions && stream.stats.renditions[0];
  var hint = top ? top.height >= 1080 ? '6000' : top.height >= 720 ? '4500' : '2500' : '4500 (720p) to 6000 (1080p)';
  var items = [
    'Settings → Stream: Service "Custom…", Server and Stream Key as above.'
      + (stream.ingest.whipUrl ? ' Or, OBS 30+: Service "WHIP", Server = the WHIP URL, Bearer Token = the stream key (encoder H.264, audio Opus: sub-second from OBS to WebRTC viewers).' : '')
      + (stream.ingest.srtUrl ? ' Or, on a lossy link: Service "Custom…", Server = the whole SRT URL, Stream Key empty.' : ''),
    'Settings → Output → Advanced → Streaming: Encoder x264 (or NVENC/QuickSync), Rate control CBR, Bitrate ' + hint + ' kbit/s.',
    'Keyframe interval 2 s (OnAir cuts 2-second segments on keyframes; 0/auto makes latency and segments irregular).',
    'CPU preset veryfast, Profile high, Tune zerolatency; x264 options: bframes=0 for the lowest WebRTC latency.',
    'Settings → Audio: 48 kHz; Output → Audio bitrate 160.',
    'Settings → Advanced → Network: enable "Automatically reconnect" — a reconnect within the grace keeps the same event.',
  ];
  var list = $('obs-settings');
  if (list.children.length === items.length && list.dataset.hint === hint) return;
  list.dataset.hint = hint;
  list.textContent = '';
  items.forEach(function (text) { list.appendChild(el('li', {}, text)); });
}

function health(stats) {
  var box = $('health');
  box.textContent = '';
  var table = $('renditions');
  table.textContent = '';
  if (!stats) {
    box.appendChild(el('div', {}, el('dt', {}, 'Status'), el('dd', {}, current && current.status === 'ended' ? 'ended' : 'waiting for OBS')));
    // After the event: who watched it (kept in the database at its end).
    var last = current && current.lastEvent;
    if (last && last.audience) {
      box.appendChild(el('div', { 'data-metric': 'Last event' }, el('dt', {}, 'Last event'),
        el('dd', {}, 'peak ' + last.audience.peak + ' · ' + last.audience.total + ' viewers')));
    }
    $('ads-ready').textContent = '';
    return;
  }
  var input = stats.input || {};
  var encoder = stats.encoder || {};
  var cells = [
    ['Input', (input.kbps || 0) + ' kbit/s'],
    ['Input fps', input.fps ? input.fps.toFixed(1) : '–'],
    ['Source', input.width ? input.width + '×' + input.height : '–'],
    ['Encoder', (encoder.kind || '–') + (encoder.restarts ? ' · ' + encoder.restarts + ' restarts' : '')],
    ['Encoder speed', encoder.speed ? encoder.speed.toFixed(2) + '×' : '–'],
    // The governor's steps when the node is short of CPU: what was given up, and why.
    ['Ladder', stats.degraded ? 'degraded: ' + stats.degraded.steps.join(', ') + ' (' + stats.degraded.reason + ')' : 'full'],
    // Who watches, every protocol on every node (a viewer with the chat open counts once), and the chat apart.
    ['Viewers', audienceText(stats.audience)],
    ['Peak · total', stats.audience ? stats.audience.peak + ' · ' + stats.audience.total : '–'],
    ['In chat', String(stats.chatViewers || 0)],
    // OBS's captions (CEA-608 in the video), as the viewers get them.
    ['Captions', stats.captions ? 'CC1, in every rendition' : 'none'],
    ['Latency', studio.latency ? studio.latency.toFixed(1) + ' s' : '–'],
    ['Publishing', stats.publishing ? 'yes' : 'reconnecting…'],
  ];
  cells.forEach(function (cell) { box.appendChild(el('div', { 'data-metric': cell[0] }, el('dt', {}, cell[0]), el('dd', {}, cell[1]))); });
  table.appendChild(el('tr', {}, el('th', {}, 'Rendition'), el('th', {}, 'Size'), el('th', {}, 'kbit/s'), el('th', {}, 'fps')));
  (stats.renditions || []).forEach(function (r) {
    table.appendChild(el('tr', {}, el('td', {}, r.name), el('td', {}, r.width + '×' + r.height), el('td', {}, String(r.kbps)), el('td', {}, r.fps.toFixed(1))));
  });
  var ads = stats.ads || [];
  $('ads-ready').textContent = stats.adBreak ? 'an ad break is on' : ads.length ? ads.length + ' ad(s) ready' : 'no ads: markers only';
  Array.prototype.forEach.call(document.querySelectorAll('.ad-button'), function (b) { b.disabled = Boolean(stats.adBreak); });
}

/** The players' quality reports for this stream (POST /api/qoe from the watch pages, every process's). */
function quality(summary) {
  var box = $('qoe');
  box.textContent = '';
  var ms = function (v) { return v === null ? '–' : v >= 1000 ? (v / 1000).toFixed(2) + ' s' : Math.round(v) + ' ms'; };
  var pct = function (v) { return v === null ? '–' : (v * 100).toFixed(1) + ' %'; };
  [
    ['Reports', String(summary.reports)],
    ['Startup p50 · p95', ms(summary.startupP50Ms) + ' · ' + ms(summary.startupP95Ms)],
    ['Rebuffering', pct(summary.rebufferRatio) + (summary.stalls ? ' (' + summary.stalls + ' stalls)' : '')],
    ['Error rate', pct(summary.errorRate)],
    ['Latency p50', ms(summary.latencyP50Ms)],
  ].forEach(function (cell) { box.appendChild(el('div', { 'data-metric': cell[0] }, el('dt', {}, cell[0]), el('dd', {}, cell[1]))); });
}

/** `12 (LL-HLS 9 · WebRTC 3)` */
function audienceText(audience) {
  if (!audience) return '–';
  return audience.current + ' (LL-HLS ' + audience.byProtocol.llhls + ' · WebRTC ' + audience.byProtocol.webrtc + ')';
}

// The preview is a real LL-HLS player: its latency is what viewers get.
function startPreview(stream) {
  var video = /** @type {HTMLVideoElement} */ ($('preview'));
  if (!window.Hls || !window.Hls.isSupported()) return;
  var hls = new window.Hls(Object.assign(O.liveHlsConfig(window.Hls), {
    backBufferLength: 10,
    // The broadcaster's own preview is no viewer: its playlist requests carry the admin token, which the count skips.
    xhrSetup: function (xhr, url) {
      xhr.open('GET', url, true);
      if (/\.m3u8(\?|$)/.test(url)) xhr.setRequestHeader('Authorization', 'Bearer ' + O.token());
    },
  }));
  preview = hls;
  catchUpTimer = O.liveCatchUp(hls, video);
  hls.loadSource(stream.playback.hls.replace(/^https?:\/\/[^/]+/, ''));
  hls.attachMedia(video);
  hls.on(window.Hls.Events.MANIFEST_PARSED, function () { video.play().catch(function () {}); });
  previewTimer = setInterval(function () { if (preview && preview.latency > 0) studio.latency = preview.latency; }, 500);
}

function stopPreview() {
  if (!preview) return;
  clearInterval(previewTimer);
  clearInterval(catchUpTimer);
  preview.destroy();
  preview = null;
  studio.latency = null;
}

// ---- Cues ----------------------------------------------------------------------------------------------------
function cue(body) {
  $('cue-result').textContent = 'sending…';
  O.api('POST', '/api/streams/' + studio.streamId + '/cues', body).then(function (result) {
    if (result.status !== 201) { $('cue-result').textContent = O.errorText(result); return; }
    var what = body.kind === 'ad' ? 'Ad break of ' + body.durationSec + ' s' + (result.body.ads && result.body.ads.length ? ' with ' + result.body.ads.length + ' ad(s)' : ' (markers only)') : 'News flash';
    $('cue-result').textContent = what + ' on air from ' + new Date(result.body.startDate).toLocaleTimeString();
  });
}
Array.prototype.forEach.call(document.querySelectorAll('.ad-button'), function (button) {
  button.addEventListener('click', function () { cue({ kind: 'ad', durationSec: Number(button.dataset.seconds) }); });
});
$('news-form').addEventListener('submit', function (event) {
  event.preventDefault();
  cue({ kind: 'news', text: O.field('news-text').value.trim(), durationSec: Number(O.field('news-seconds').value) || 10 });
});

// ---- Moderation ----------------------------------------------------------------------------------------------
function moderation(id) {
  if (socket) socket.close();
  $('mod-comments').textContent = '';
  if (!window.io) return;
  var chat = window.io('/chat', { auth: { token: O.token() } });
  socket = chat;
  chat.on('connect', function () { chat.emit('join', { streamId: id, name: 'studio' }); });
  chat.on('comment', function (comment) {
    var item = el('li', { 'data-id': comment.id },
      el('strong', {}, comment.name), el('span', { class: 'text' }, comment.text),
      el('button', { type: 'button', onclick: function () {
        O.api('DELETE', '/api/streams/' + id + '/comments/' + comment.id).then(function () { item.remove(); });
      } }, 'Remove'),
      el('button', { type: 'button', onclick: function () {
        O.api('POST', '/api/streams/' + id + '/bans', { commentId: comment.id, scope: 'address' }).then(loadBans);
      } }, 'Ban'));
    var list = $('mod-comments');
    list.appendChild(item);
    while (list.children.length > 100) list.firstElementChild?.remove();
  });
  chat.on('removed', function (message) {
    var item = $('mod-comments').querySelector('li[data-id="' + CSS.escape(message.id) + '"]');
    if (item) item.remove();
  });
  O.api('GET', '/api/streams/' + id + '/chat').then(function (result) {
    if (result.status === 200) {
      O.field('slow').value = result.body.slowModeSec;
      $('slow-state').textContent = result.body.slowModeSec ? 'on' : 'off';
    }
  });
  loadBans();
}

function loadBans() {
  O.api('GET', '/api/streams/' + studio.streamId + '/bans').then(function (result) {
    var list = $('bans');
    list.textContent = '';
    ((result.body && result.body.bans) || []).forEach(function (ban) {
      list.appendChild(el('li', { class: 'row' }, el('span', { class: 'grow' }, ban.kind + ' ' + ban.target + (ban.expiresAt ? ' until ' + new Date(ban.expiresAt).toLocaleString() : '')),
        el('button', { type: 'button', onclick: function () { O.api('DELETE', '/api/streams/' + studio.streamId + '/bans/' + ban.id).then(loadBans); } }, 'Lift')));
    });
    if (!list.children.length) list.appendChild(el('li', { class: 'muted' }, 'none'));
  });
}

$('slow-form').addEventListener('submit', function (event) {
  event.preventDefault();
  O.api('PUT', '/api/streams/' + studio.streamId + '/chat', { slowModeSec: Number(O.field('slow').value) || 0 }).then(function (result) {
    $('slow-state').textContent = result.status === 200 ? (result.body.slowModeSec ? 'on: one comment per ' + result.body.slowModeSec + ' s' : 'off') : O.errorText(result);
  });
});

// ---- Videos, jobs and uploads ----------------------------------------------------------------------------------
function loadVideos() {
  O.api('GET', '/api/videos?limit=50').then(function (result) {
    if (result.status !== 200) return;
    var table = $('videos');
    table.textContent = '';
    table.appendChild(el('tr', {}, el('th', {}, 'Video'), el('th', {}, 'Status'), el('th', {}, 'Progress'), el('th', {}, 'Ad')));
    result.body.videos.forEach(function (video) {
      var ad = /** @type {HTMLInputElement} */ (el('input', { type: 'checkbox', 'aria-label': 'Use ' + video.title + ' as an ad', checked: video.ad, disabled: video.status !== 'ready' && !video.ad }));
      ad.addEventListener('change', function () { O.api('PATCH', '/api/videos/' + video.id, { ad: ad.checked }); });
      table.appendChild(el('tr', { 'data-id': video.id },
        el('td', {}, el('a', { href: video.playback.watchPage }, video.title)),
        el('td', { title: video.error || '' }, video.status + (video.error ? ': ' + video.error : '')),
        el('td', {}, el('progress', { max: 100, value: video.progress, 'aria-label': 'Progress of ' + video.title })),
        el('td', {}, ad)));
    });
  });
}

// ---- Webhooks: each with its last deliveries (event, try, the receiver's answer) -------------------------------
function loadHooks() {
  O.api('GET', '/api/webhooks').then(function (result) {
    if (result.status !== 200) return;
    var list = $('hooks');
    Promise.all(result.body.webhooks.map(function (hook) {
      return O.api('GET', '/api/webhooks/' + hook.id + '/deliveries').then(function (log) { return { hook: hook, deliveries: log.status === 200 ? log.body.deliveries : [] }; });
    })).then(function (hooks) {
      list.textContent = '';
      hooks.forEach(function (item) {
        var remove = el('button', { type: 'button' }, 'Delete');
        remove.addEventListener('click', function () { O.api('DELETE', '/api/webhooks/' + item.hook.id).then(loadHooks); });
        var lines = el('ol', { class: 'muted' });
        item.deliveries.slice(0, 10).forEach(function (d) {
          lines.appendChild(el('li', { 'data-ok': String(d.ok) }, new Date(d.at).toLocaleTimeString() + ' ' + d.event + ' · try ' + d.attempt + ' · ' +
            (d.ok ? String(d.status) : (d.status ? String(d.status) : 'unreachable') + (d.error ? ' (' + d.error + ')' : ''))));
        });
        list.appendChild(el('li', { 'data-id': item.hook.id }, el('div', { class: 'row spaced' }, el('span', { class: 'grow' }, item.hook.url + ' — ' + item.hook.events.join(', ')), remove), lines));
      });
    });
  });
}

$('hook-form').addEventListener('submit', function (event) {
  event.preventDefault();
  O.api('POST', '/api/webhooks', { url: O.field('hook-url').value.trim() }).then(function (result) {
    $('hook-secret').textContent = result.status === 201
      ? 'Added. Its signing secret, shown only now: ' + result.body.secret + ' (check X-OnAir-Signature with it; see the README).'
      : O.errorText(result);
    loadHooks();
  });
});

O.bindUploadForm(function () { return { title: O.field('upload-title').value.trim() }; }, { message: 'Uploaded: processing below.', then: loadVideos });

checkToken();
