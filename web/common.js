// What every OnAir page shares: building DOM from text (never from markup: comments, names and titles are user
// input), calling the API, and the admin token the studio and uploads use. No framework, no build, no external request.
(function () {
  'use strict';
  var TOKEN_KEY = 'onair.adminToken';

  /** el('li', { class: 'x', onclick: f }, 'text', childNode…): strings become text nodes, never markup. */
  function el(tag, attributes) {
    var node = document.createElement(tag);
    var attrs = attributes || {};
    Object.keys(attrs).forEach(function (name) {
      var value = attrs[name];
      if (value === undefined || value === null || value === false) return;
      if (name.slice(0, 2) === 'on' && typeof value === 'function') node.addEventListener(name.slice(2), value);
      else if (name === 'class') node.className = value;
      else if (name === 'style' && typeof value === 'object') Object.assign(node.style, value);
      else node.setAttribute(name, value === true ? '' : String(value));
    });
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || '';
  }

  function setToken(value, remember) {
    sessionStorage.setItem(TOKEN_KEY, value);
    if (remember) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
  }

  /** JSON API call; resolves with { status, body }; the admin token goes along when there is one. */
  function api(method, url, body) {
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

  function errorText(result) {
    var error = result && result.body && result.body.error;
    return error ? error.message + ' (' + error.code + ')' : 'HTTP ' + (result ? result.status : '?');
  }

  function duration(sec) {
    if (sec === null || sec === undefined || isNaN(sec)) return '–';
    sec = Math.round(sec);
    var h = Math.floor(sec / 3600);
    var m = Math.floor((sec % 3600) / 60);
    var s = sec % 60;
    var mm = (h > 0 && m < 10 ? '0' : '') + m;
    return (h > 0 ? h + ':' : '') + mm + ':' + (s < 10 ? '0' : '') + s;
  }

  function clock(at) {
    var date = new Date(at);
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  /** Copies text to the clipboard (falls back to selecting it where the Clipboard API is not allowed). */
  function copy(text, button) {
    var done = function () {
      if (!button) return;
      var label = button.textContent;
      button.textContent = 'Copied';
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, done);
    else {
      var area = el('textarea', { style: { position: 'fixed', opacity: '0' } }, text);
      document.body.appendChild(area);
      area.select();
      try { document.execCommand('copy'); } catch (e) { /* the text stays selectable on the page */ }
      area.remove();
      done();
    }
  }

  window.OnAir = { el: el, api: api, token: token, setToken: setToken, forgetToken: forgetToken, errorText: errorText, duration: duration, clock: clock, copy: copy };
})();

// A resumable upload over tus 1.0 (`/api/uploads`, admin token): the upload URL is remembered per file (name, size,
// date) so that a reload or a dropped connection resumes where the server got to (HEAD gives the offset).
(function () {
  'use strict';
  var CHUNK = 4 * 1024 * 1024;
  var TUS = { 'tus-resumable': '1.0.0' };

  function b64(text) { return btoa(unescape(encodeURIComponent(text))); }

  function headers(extra) {
    var h = Object.assign({ authorization: 'Bearer ' + window.OnAir.token() }, TUS, extra || {});
    return h;
  }

  /** upload(file, { title, description, tags }, onProgress(fraction)) → Promise<videoId> */
  function upload(file, metadata, onProgress) {
    var key = 'onair.upload.' + [file.name, file.size, file.lastModified].join('/');
    var fields = Object.assign({ filename: file.name }, metadata);
    var meta = Object.keys(fields).filter(function (k) { return fields[k]; }).map(function (k) { return k + ' ' + b64(String(fields[k])); }).join(',');

    function create() {
      return fetch('/api/uploads', { method: 'POST', headers: headers({ 'upload-length': String(file.size), 'upload-metadata': meta }) })
        .then(function (response) {
          if (response.status !== 201) return response.text().then(function (text) { throw new Error(text || 'upload refused: HTTP ' + response.status); });
          var url = new URL(response.headers.get('location'), location.href).pathname;
          localStorage.setItem(key, url);
          return { url: url, offset: 0 };
        });
    }

    function resume() {
      var url = localStorage.getItem(key);
      if (!url) return create();
      return fetch(url, { method: 'HEAD', headers: headers() }).then(function (response) {
        if (response.status !== 200) { localStorage.removeItem(key); return create(); }
        return { url: url, offset: Number(response.headers.get('upload-offset')) };
      });
    }

    function send(state, attempt) {
      onProgress(file.size ? state.offset / file.size : 1);
      if (state.offset >= file.size) {
        localStorage.removeItem(key);
        return Promise.resolve(state.url.split('/').pop());
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
   */
  function bindUploadForm(metadata, done) {
    var $ = function (id) { return document.getElementById(id); };
    $('upload-form').addEventListener('submit', function (event) {
      event.preventDefault();
      var file = $('upload-file').files[0];
      if (!file) return;
      var bar = $('upload-progress');
      var state = $('upload-state');
      bar.classList.remove('hidden');
      state.textContent = 'uploading ' + file.name + '…';
      upload(file, metadata(), function (fraction) {
        bar.value = fraction;
        state.textContent = 'uploading ' + file.name + ': ' + Math.floor(fraction * 100) + '%';
      }).then(function (id) {
        state.textContent = done.message;
        if (done.then) done.then(id);
      }).catch(function (error) {
        state.textContent = 'Upload stopped: ' + error.message + ' — choose the same file again to resume.';
      });
    });
  }

  window.OnAir.upload = upload;
  window.OnAir.bindUploadForm = bindUploadForm;
})();
