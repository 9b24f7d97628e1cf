// @ts-check
// The front page: what is live now, the catalog with search and thumbnails, and a resumable upload.
import * as O from './common.js';

var el = O.el;
var $ = O.byId;
/** @type {string | null} */
var cursor = null;
var query = '';

/**
 * @param {string} href
 * @param {string} title
 * @param {string} subtitle
 * @param {string | null} thumbnail
 * @param {HTMLElement | null} badge
 */
function tile(href, title, subtitle, thumbnail, badge) {
  var thumb = el('span', { class: 'thumb' }, badge);
  // A URL the API gave, set through the CSSOM (never pasted into markup).
  if (thumbnail) thumb.style.backgroundImage = 'url("' + thumbnail.replace(/["\\\n]/g, '') + '")';
  return el('a', { class: 'tile', href: href }, thumb, el('span', { class: 'meta' }, el('strong', {}, title), el('span', { class: 'muted' }, subtitle)));
}

function loadLive() {
  O.api('GET', '/api/streams').then(function (result) {
    var live = ((result.body && result.body.streams) || []).filter(function (s) { return s.status === 'live'; });
    var box = $('live');
    box.textContent = '';
    live.forEach(function (stream) {
      box.appendChild(tile('/watch/' + stream.id, stream.title, stream.description || 'live now', null, el('span', { class: 'badge live' }, 'Live')));
    });
    $('no-live').classList.toggle('hidden', live.length > 0);
  });
}

function loadVideos(more) {
  var url = '/api/videos?limit=24' + (query ? '&q=' + encodeURIComponent(query) : '') + (more && cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
  // The public view: playable videos only (the admin's list has failures and jobs; the studio shows those).
  fetch(url).then(function (r) { return r.json(); }).then(function (body) {
    var box = $('videos');
    if (!more) box.textContent = '';
    (body.videos || []).forEach(/** @param {{ id: string, title: string, durationSec: number | null, kind: string, createdAt: string, thumbnail: string | null }} video */ function (video) {
      var sub = O.duration(video.durationSec) + (video.kind === 'replay' ? ' · replay' : '') + ' · ' + new Date(video.createdAt).toLocaleDateString();
      // A replay plays at once; its archive (with the poster) follows in the background.
      box.appendChild(tile('/watch/' + video.id, video.title, sub, video.thumbnail, video.kind === 'replay' ? el('span', { class: 'badge' }, 'Replay') : null));
    });
    cursor = body.nextCursor;
    $('more').classList.toggle('hidden', !cursor);
    $('no-videos').classList.toggle('hidden', box.children.length > 0);
    $('no-videos').textContent = query ? 'Nothing matches "' + query + '".' : 'No videos yet.';
  });
}

$('search-form').addEventListener('submit', function (event) {
  event.preventDefault();
  query = O.field('q').value.trim();
  loadVideos(false);
});
$('more').addEventListener('click', function () { loadVideos(true); });

if (O.token()) {
  $('upload-signin').classList.add('hidden');
  $('upload-form').classList.remove('hidden');
}
O.bindUploadForm(function () {
  return { title: O.field('upload-title-input').value.trim(), tags: O.field('upload-tags').value.trim() };
}, { message: 'Uploaded. It appears here once processed (the studio shows its progress).' });

loadLive();
loadVideos(false);
setInterval(loadLive, 5000);
setInterval(function () { if (!query && !cursor) loadVideos(false); }, 10000);
