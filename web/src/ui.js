// DOM rendering. Everything the page shows is derived from the state (state.js) plus the media
// tracks app.js hands over; this module never talks to the server.

import { consumerCounts, displayNameOf, presenceOf, statusLine } from './state.js';
import { ARENA } from './messages.js';

const $ = (selector) => document.querySelector(selector);

export function showJoinForm(defaults) {
  const form = $('#join-form');
  form.roomId.value = defaults.roomId;
  form.peerId.value = defaults.peerId;
  form.displayName.value = defaults.displayName;
  form.hidden = false;
  $('#room').hidden = true;
}

export function showRoom(state) {
  $('#join-form').hidden = true;
  $('#room').hidden = false;
  $('#room-id').textContent = state.roomId;
  $('#self-name').textContent = `${state.displayName} (${state.peerId})`;
  document.title = `sluice · ${state.roomId}`;
}

export function renderStatus(state) {
  const status = $('#status');
  status.textContent = statusLine(state);
  status.dataset.status = state.status;
  const error = $('#error');
  error.textContent = state.error ?? '';
  error.hidden = !state.error;
}

/** Enables the controls that make sense in the current state and labels the toggles. */
export function renderControls(state, { micPaused, camPaused, chatOpen }) {
  const mic = $('#mic');
  const cam = $('#cam');
  mic.disabled = !state.joined || !state.producers.audio;
  cam.disabled = !state.joined || !state.producers.video;
  mic.textContent = micPaused ? 'Unmute mic' : 'Mute mic';
  cam.textContent = camPaused ? 'Camera on' : 'Camera off';
  mic.setAttribute('aria-pressed', String(Boolean(micPaused)));
  cam.setAttribute('aria-pressed', String(Boolean(camPaused)));
  const out = ['left', 'disconnected', 'failed'].includes(state.status);
  $('#leave').disabled = state.status === 'idle';
  $('#leave').textContent = out ? 'Rejoin' : 'Leave';
  $('#chat-input').disabled = !(state.joined && chatOpen);
  $('#chat-send').disabled = !(state.joined && chatOpen);
  $('#local-tile').dataset.videoPaused = String(Boolean(camPaused));
  $('#local-tile').dataset.audioPaused = String(Boolean(micPaused));
  const proximity = $('#proximity');
  proximity.disabled = !state.joined;
  proximity.checked = Boolean(state.proximity);
}

/** How many of its consumers the page receives now (interest management pauses the far ones). */
export function renderReceiving(state) {
  const { active, total } = consumerCounts(state);
  $('#receiving').textContent = `receiving ${active} of ${total} streams`;
}

export function setLocalPreview(track) {
  const video = $('#local-video');
  video.srcObject = track ? new MediaStream([track]) : null;
  if (track) video.play().catch(() => {});
}

function tileOf(peerId) {
  for (const tile of document.querySelectorAll('#peers .tile')) {
    if (tile.dataset.peerId === peerId) return tile;
  }
  return null;
}

function createTile(peerId) {
  const tile = document.createElement('div');
  tile.className = 'tile';
  tile.dataset.peerId = peerId;
  tile.dataset.videoPaused = 'false';
  tile.dataset.audioPaused = 'false';

  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // the audio plays through the <audio> element
  const audio = document.createElement('audio');
  audio.autoplay = true;
  const label = document.createElement('div');
  label.className = 'label';
  const name = document.createElement('span');
  name.className = 'name';
  const badges = document.createElement('span');
  badges.className = 'badges';
  label.append(name, badges);
  tile.append(video, audio, label);
  $('#peers').append(tile);
  return tile;
}

/** Creates or refreshes a peer's tile from the state. */
export function renderTile(state, peerId) {
  const peer = state.peers[peerId];
  if (!peer) return;
  const tile = tileOf(peerId) ?? createTile(peerId);
  tile.querySelector('.name').textContent = peer.displayName;
  tile.title = `${peer.displayName} (${peerId})${peer.device?.name ? ` on ${peer.device.name}` : ''}`;

  let videoPaused = false;
  let audioPaused = false;
  const scores = [];
  for (const consumerId of peer.consumerIds) {
    const consumer = state.consumers[consumerId];
    if (!consumer) continue;
    if (consumer.paused && consumer.kind === 'video') videoPaused = true;
    if (consumer.paused && consumer.kind === 'audio') audioPaused = true;
    if (consumer.score && Number.isFinite(consumer.score.score)) {
      scores.push(`${consumer.kind} ${consumer.score.score}`);
    }
  }
  tile.dataset.videoPaused = String(videoPaused);
  tile.dataset.audioPaused = String(audioPaused);
  tile.classList.toggle('speaking', state.activeSpeaker === peerId);
  const badges = [];
  if (videoPaused) badges.push('camera off');
  if (audioPaused) badges.push('muted');
  if (scores.length) badges.push(`score ${scores.join(', ')}`);
  tile.querySelector('.badges').textContent = badges.join(' · ');
}

/**
 * Fades each peer's tile and voice with its distance (see `presenceOf`): a dimmed tile and a
 * quieter voice as the player moves away, gone where the server stops forwarding it.
 */
export function renderPresence(state, own) {
  for (const tile of document.querySelectorAll('#peers .tile')) {
    const level = presenceOf(state, tile.dataset.peerId, own);
    tile.style.opacity = String(0.25 + 0.75 * level);
    tile.dataset.presence = level.toFixed(2);
    const audio = tile.querySelector('audio');
    if (audio) audio.volume = level;
  }
}

export function renderAllTiles(state) {
  for (const peerId of Object.keys(state.peers)) renderTile(state, peerId);
}

export function removeTile(peerId) {
  tileOf(peerId)?.remove();
}

export function removeAllTiles() {
  for (const tile of document.querySelectorAll('#peers .tile')) tile.remove();
}

/** Plays a consumer's track in its peer's tile (replacing the previous track of that kind). */
export function attachTrack(state, peerId, consumerId, kind, track) {
  renderTile(state, peerId);
  const tile = tileOf(peerId);
  if (!tile) return;
  const element = tile.querySelector(kind === 'video' ? 'video' : 'audio');
  element.srcObject = new MediaStream([track]);
  element.dataset.consumerId = consumerId;
  element.play().catch(() => {
    // Autoplay of audio may wait for a user gesture; the track is still received.
  });
}

/** Stops showing a consumer's track, if it is the one its tile shows. */
export function detachTrack(peerId, consumerId) {
  const tile = tileOf(peerId);
  if (!tile) return;
  for (const element of tile.querySelectorAll('video, audio')) {
    if (element.dataset.consumerId === consumerId) {
      element.srcObject = null;
      delete element.dataset.consumerId;
    }
  }
}

export function renderChat(state) {
  const log = $('#chat-log');
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.replaceChildren(...state.chat.map((entry) => {
    const line = document.createElement('li');
    line.dataset.from = entry.from;
    const who = document.createElement('strong');
    who.textContent = `${displayNameOf(state, entry.from)}: `;
    line.append(who, document.createTextNode(entry.text));
    if (entry.from === state.peerId) line.className = 'self';
    return line;
  }));
  if (atBottom) log.scrollTop = log.scrollHeight;
}

const COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#46f0f0', '#f032e6', '#808000'];

function colorOf(peerId) {
  let hash = 0;
  for (const char of peerId) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return COLORS[hash % COLORS.length];
}

/** How long a cursor stays drawn after its last message. */
const CURSOR_STALE_MS = 3000;

/** Draws the arena: every other peer's cursor that is still fresh, then our own. */
export function drawArena(canvas, state, own) {
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, ARENA.width, ARENA.height);
  ctx.fillStyle = '#10151c';
  ctx.fillRect(0, 0, ARENA.width, ARENA.height);
  ctx.font = '12px system-ui, sans-serif';
  const now = Date.now();
  const dots = Object.entries(state.cursors)
    .filter(([, cursor]) => now - cursor.at < CURSOR_STALE_MS)
    .map(([peerId, cursor]) => ({ peerId, x: cursor.x, y: cursor.y }));
  if (own) dots.push({ peerId: state.peerId, x: own.x, y: own.y, self: true });
  if (state.flag) drawFlag(ctx, state, state.flag);
  // The server's arena game: each player's square where the server put it.
  for (const [peerId, p] of Object.entries(state.world?.players ?? {})) {
    ctx.strokeStyle = colorOf(peerId);
    ctx.lineWidth = 2;
    ctx.strokeRect(p.x - 9, p.y - 9, 18, 18);
  }
  for (const dot of dots) {
    ctx.beginPath();
    ctx.fillStyle = colorOf(dot.peerId);
    ctx.arc(dot.x, dot.y, dot.self ? 7 : 6, 0, 2 * Math.PI);
    ctx.fill();
    if (dot.self) {
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = 2;
      ctx.stroke();
    }
    ctx.fillStyle = '#e8eef5';
    ctx.fillText(dot.self ? `${displayNameOf(state, dot.peerId)} (you)` : displayNameOf(state, dot.peerId),
      dot.x + 10, dot.y + 4);
  }
}

/** The shared flag: a pole and a pennant in its mover's colour. */
function drawFlag(ctx, state, flag) {
  ctx.strokeStyle = '#e8eef5';
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(flag.x, flag.y);
  ctx.lineTo(flag.x, flag.y - 24);
  ctx.stroke();
  ctx.beginPath();
  ctx.fillStyle = flag.by ? colorOf(flag.by) : '#e8eef5';
  ctx.moveTo(flag.x, flag.y - 24);
  ctx.lineTo(flag.x + 16, flag.y - 18);
  ctx.lineTo(flag.x, flag.y - 12);
  ctx.fill();
  ctx.fillStyle = '#8b98a9';
  ctx.fillText(`flag (${displayNameOf(state, flag.by)})`, flag.x + 4, flag.y + 14);
}

/** The log of the room's game actions, newest first. */
export function renderActions(state) {
  const log = $('#action-log');
  if (!log) return;
  log.replaceChildren(...[...state.actions].reverse().map((entry) => {
    const line = document.createElement('li');
    line.dataset.seq = String(entry.seq);
    const who = entry.from === null ? 'server' : displayNameOf(state, entry.from);
    line.textContent = `#${entry.seq} ${who}: ${entry.type} ${JSON.stringify(entry.payload)}`;
    return line;
  }));
}
