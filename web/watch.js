// The watch page: plays /live/:id/index.m3u8 with hls.js in low-latency mode (or natively where the browser plays
// HLS itself, as Safari does) and shows the live latency. Everything is served by OnAir: no external requests.
(function () {
  'use strict';
  var parts = location.pathname.split('/');
  var streamId = parts[parts.length - 1];
  var token = new URLSearchParams(location.search).get('token');
  var query = token ? '?token=' + encodeURIComponent(token) : '';
  // A 12-character id is a stream (live, or its replay once the event is over); a 16-character id a catalog video.
  var isVideo = streamId.length === 16;
  var src = isVideo ? '/vod/' + streamId + '/index.m3u8' + query : '/live/' + streamId + '/index.m3u8' + query;
  var video = document.getElementById('video');
  var state = document.getElementById('state');
  var latency = document.getElementById('latency');
  var level = document.getElementById('level');
  var onair = (window.onair = { streamId: streamId, stalls: 0, hls: null, mode: isVideo ? 'vod' : 'live' });

  fetch((isVideo ? '/api/videos/' : '/api/streams/') + streamId + query).then(function (r) { return r.ok ? r.json() : null; }).then(function (item) {
    if (!item) { start(); return; }
    document.getElementById('title').textContent = item.title;
    if (!isVideo && item.status !== 'live' && item.replay) {
      // The event is over: the same page plays its replay.
      onair.mode = 'replay';
      onair.videoId = item.replay.videoId;
      src = item.replay.hls.replace(/^https?:\/\/[^/]+/, '');
    }
    start();
  }).catch(function () { start(); });

  video.addEventListener('waiting', function () { if (video.currentTime > 0) onair.stalls += 1; });
  video.addEventListener('playing', function () {
    state.textContent = onair.pc ? 'live (real-time)' : onair.mode === 'live' ? 'live' : onair.mode;
  });

  // Real-time mode: WHEP (POST the offer, apply the answer, DELETE the session when leaving).
  var realtime = document.getElementById('realtime');
  realtime.checked = new URLSearchParams(location.search).get('mode') === 'webrtc';
  realtime.addEventListener('change', function () {
    var params = new URLSearchParams(location.search);
    if (realtime.checked) params.set('mode', 'webrtc'); else params.delete('mode');
    location.search = params.toString();
  });
  function start() {
    if (realtime.checked && onair.mode === 'live') playWhep();
    else playHls();
  }

  function playWhep() {
    var pc = new RTCPeerConnection();
    var media = new MediaStream();
    onair.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = function (event) {
      media.addTrack(event.track);
      video.srcObject = media;
      video.play().catch(function () {});
    };
    pc.onconnectionstatechange = function () {
      state.textContent = pc.connectionState === 'connected' ? 'live (real-time)' : pc.connectionState;
    };
    level.textContent = 'WebRTC';
    pc.createOffer().then(function (offer) { return pc.setLocalDescription(offer); }).then(function () {
      return fetch('/live/' + streamId + '/whep' + query, {
        method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription.sdp,
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
    setInterval(function () {
      pc.getStats().then(function (stats) {
        stats.forEach(function (report) {
          if (report.type === 'inbound-rtp' && report.kind === 'video' && report.jitterBufferEmittedCount > 0) {
            var delay = report.jitterBufferDelay / report.jitterBufferEmittedCount;
            latency.textContent = '~' + delay.toFixed(2) + ' s buffer';
          }
        });
      });
    }, 1000);
  }

  function playHls() {
  if (window.Hls && window.Hls.isSupported()) {
    var hls = new window.Hls({ lowLatencyMode: onair.mode === 'live', backBufferLength: 30 });
    onair.hls = hls;
    hls.on(window.Hls.Events.LEVEL_SWITCHED, function (_e, data) {
      var l = hls.levels[data.level];
      if (l) level.textContent = l.height + 'p';
    });
    hls.on(window.Hls.Events.ERROR, function (_e, data) {
      if (!data.fatal) return;
      state.textContent = 'reconnecting…';
      if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else setTimeout(function () { hls.loadSource(src); hls.startLoad(); }, 1000);
    });
    hls.loadSource(src);
    hls.attachMedia(video);
    setInterval(function () {
      if (hls.latency > 0) latency.textContent = hls.latency.toFixed(2) + ' s';
    }, 250);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = src;
    setInterval(function () {
      var date = video.getStartDate && video.getStartDate();
      if (date && !isNaN(date.getTime())) latency.textContent = ((Date.now() - date.getTime()) / 1000 - video.currentTime).toFixed(2) + ' s';
    }, 250);
  } else {
    state.textContent = 'this browser cannot play HLS';
  }
  video.play().catch(function () {});
  }
})();
