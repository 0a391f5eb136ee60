// Sluice demo page: mediasoup-demo's flow with the unmodified mediasoup-client and protoo-client.
//
// The page joins the room named by the URL (?roomId=&peerId=&displayName=[&token=][&simulcast=1]),
// or shows a form when the URL does not name one. Everything tests need is on window.sluiceDemo.

import { Device } from 'mediasoup-client';
import { Peer, WebSocketTransport } from 'protoo-client';

import { parseRoomParams, randomDefaults, resolveToken, signalingUrl } from './params.js';
import {
  ARENA, ARENA_INPUT_LABEL, ARENA_STATE_LABEL, CHAT_LABEL, CURSOR_LABEL, POSITION_LABEL, decodeChat,
  decodeCursor, decodeWorld, encodeArenaInput, encodeChat, encodeCursor, encodeNoPosition,
  encodePosition, flagRequest, idleCursor, seedOf,
} from './messages.js';
import {
  addChat, addConsumer, addDataConsumer, addPeer, applyAction, createState, recordCursor,
  recordError, removeConsumer, removeDataConsumer, removePeer, setConsumerPaused, setConsumerScore,
} from './state.js';
import * as ui from './ui.js';

/** mediasoup-client 3.24 no longer exposes `device.sctpCapabilities`; this is what it used to say. */
const DEFAULT_SCTP_CAPABILITIES = { numStreams: { OS: 1024, MIS: 1024 } };
/** Cursor messages per second sent even when the mouse does not move. */
const CURSOR_HZ = 30;
/** Mouse positions newer than this steer the cursor; older ones hand it back to the idle path. */
const MOUSE_HOLD_MS = 2000;
/** protoo-client's reconnection attempts before the page gives up on the first connection. */
const SIGNALING_RETRY = { retries: 2, factor: 2, minTimeout: 1000, maxTimeout: 4000 };

const params = parseRoomParams(location.search);
const state = createState(params);
const arena = document.querySelector('#arena');
arena.width = ARENA.width;
arena.height = ARENA.height;

// mediasoup and protoo objects; the state above holds only plain data.
let peer = null;
let device = null;
let sendTransport = null;
let recvTransport = null;
let micProducer = null;
let camProducer = null;
let chatProducer = null;
let cursorProducer = null;
let positionProducer = null;
let arenaInputProducer = null; // steers our player when the room runs the arena game
let arenaInputStarting = false;
let localStream = null;
const consumers = new Map();
const dataConsumers = new Map();

let joinStarted = false;
let cursorTimer = null;
let lastCursorSend = 0;
let mouse = null; // {x, y, at} in arena coordinates
let ownCursor = null;
let pinned = null; // {x, y}: where moveTo() put us, until unpinned

function render() {
  ui.renderStatus(state);
  ui.renderControls(state, {
    micPaused: micProducer?.paused ?? false,
    camPaused: camProducer?.paused ?? false,
    chatOpen: chatProducer?.readyState === 'open',
  });
  ui.renderReceiving(state);
}

function setStatus(status) {
  state.status = status;
  render();
}

/** Records an error, shows it and logs it; never throws. */
function report(context, error) {
  const message = recordError(state, context, error);
  console.error(`[sluice-demo] ${message}`, error);
  render();
}

/** Runs an async handler, reporting instead of leaking a rejected promise. */
function guard(context, fn) {
  return (...args) => {
    try {
      Promise.resolve(fn(...args)).catch((error) => report(context, error));
    } catch (error) {
      report(context, error);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Joining

async function start() {
  if (joinStarted) return;
  joinStarted = true;
  ui.showRoom(state);
  setStatus('connecting');

  let token;
  try {
    token = await resolveToken(params);
  } catch (error) {
    report('token', error);
    setStatus('failed');
    return;
  }

  const url = signalingUrl(location, { ...params, token });
  peer = new Peer(new WebSocketTransport(url, { retry: SIGNALING_RETRY }));

  let opened = false;
  peer.on('open', () => {
    if (opened) return; // protoo reconnects on its own; we close on disconnect instead
    opened = true;
    joinRoom().catch((error) => {
      if (isClosed()) return; // left (or lost the server) while joining: already shown
      report('join', error);
      teardown('failed');
    });
  });
  peer.on('failed', (attempt) => {
    report('signaling', new Error(`WebSocket connection to /ws failed (attempt ${attempt}; `
      + 'is the server up, and the token valid for this room and peer?)'));
  });
  peer.on('disconnected', () => {
    report('signaling', new Error('WebSocket disconnected'));
    teardown('disconnected');
  });
  peer.on('close', () => {
    // protoo gave up (retries exhausted, or the server closed the session with code 4000).
    if (!isClosed()) teardown(opened ? 'disconnected' : 'failed');
  });
  peer.on('request', (request, accept, reject) => {
    handleRequest(request, accept, reject).catch((error) => {
      report(`${request.method}`, error);
      reject(500, String(error?.message ?? error));
    });
  });
  peer.on('notification', (notification) => {
    try {
      handleNotification(notification);
    } catch (error) {
      report(`notification ${notification.method}`, error);
    }
  });
}

async function createDevice() {
  try {
    return await Device.factory();
  } catch (error) {
    // HeadlessChrome's user agent is not always recognised; it is Chromium all the same.
    if (error?.name === 'UnsupportedError' && typeof RTCPeerConnection !== 'undefined'
        && /Chrom(e|ium)\//.test(navigator.userAgent)) {
      return new Device({ handlerName: 'Chrome111' });
    }
    throw error;
  }
}

async function joinRoom() {
  setStatus('joining');
  device = await createDevice();
  const routerRtpCapabilities = await peer.request('getRouterRtpCapabilities');
  await device.load({ routerRtpCapabilities });
  const sctpCapabilities = device.sctpCapabilities ?? DEFAULT_SCTP_CAPABILITIES;

  sendTransport = await createTransport('send', sctpCapabilities);
  recvTransport = await createTransport('recv', sctpCapabilities);

  const { peers, interest } = await peer.request('join', {
    displayName: state.displayName,
    device: { flag: 'sluice-demo', name: 'Chromium', version: '' },
    rtpCapabilities: device.recvRtpCapabilities ?? device.rtpCapabilities,
    sctpCapabilities,
  });
  if (isClosed()) return;
  for (const other of Array.isArray(peers) ? peers : []) {
    if (typeof other?.id !== 'string') continue;
    addPeer(state, other);
    ui.renderTile(state, other.id);
  }
  state.interest = Number.isFinite(interest?.audioRadius) ? interest : null;
  state.joined = true;
  setStatus('joined');

  // Media and data are independent: one failing (no camera, say) leaves the other working.
  await Promise.all([
    produceMedia().catch((error) => {
      if (!isClosed()) report('media', error);
    }),
    produceData().catch((error) => {
      if (!isClosed()) report('data', error);
    }),
  ]);
  render();
}

function isClosed() {
  return state.status === 'left' || state.status === 'disconnected' || state.status === 'failed';
}

async function createTransport(direction, sctpCapabilities) {
  const info = await peer.request('createWebRtcTransport', {
    forceTcp: params.forceTcp,
    producing: direction === 'send',
    consuming: direction === 'recv',
    sctpCapabilities,
  });
  const options = {
    id: info.id,
    iceParameters: info.iceParameters,
    iceCandidates: info.iceCandidates,
    dtlsParameters: info.dtlsParameters,
    sctpParameters: info.sctpParameters,
    // TURN servers with credentials, when the server has `[turn]` configured.
    iceServers: Array.isArray(info.iceServers) ? info.iceServers : [],
    iceTransportPolicy: params.iceTransportPolicy,
  };
  if (isClosed()) throw new Error('left while joining');
  const transport = direction === 'send'
    ? device.createSendTransport(options)
    : device.createRecvTransport(options);

  transport.on('connect', ({ dtlsParameters }, callback, errback) => {
    peer.request('connectWebRtcTransport', { transportId: transport.id, dtlsParameters })
      .then(() => callback())
      .catch((error) => {
        report(`connect ${direction} transport`, error);
        errback(error);
      });
  });
  transport.on('connectionstatechange', (connectionState) => {
    state.transports[direction] = connectionState;
    if (connectionState === 'failed') {
      report(`${direction} transport`, new Error('ICE/DTLS connection failed'));
    }
    render();
  });

  if (direction === 'send') {
    transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
      peer.request('produce', { transportId: transport.id, kind, rtpParameters, appData })
        .then(({ id }) => callback({ id }))
        .catch(errback);
    });
    transport.on('producedata', ({ sctpStreamParameters, label, protocol, appData }, callback, errback) => {
      peer.request('produceData', {
        transportId: transport.id, sctpStreamParameters, label, protocol, appData,
      })
        .then(({ id }) => callback({ id }))
        .catch(errback);
    });
  }
  return transport;
}

// ---------------------------------------------------------------------------------------------
// Producing

async function getLocalStream() {
  const video = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video });
  } catch (bothError) {
    // Maybe only one of the two is available.
    const tracks = [];
    for (const constraints of [{ audio: true }, { video }]) {
      try {
        tracks.push(...(await navigator.mediaDevices.getUserMedia(constraints)).getTracks());
      } catch {
        // Reported below if nothing works.
      }
    }
    if (tracks.length === 0) throw bothError;
    return new MediaStream(tracks);
  }
}

async function produceMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('getUserMedia is unavailable (the page needs https or localhost)');
  }
  localStream = await getLocalStream();
  if (isClosed()) {
    stopLocalStream();
    return;
  }
  const [audioTrack] = localStream.getAudioTracks();
  const [videoTrack] = localStream.getVideoTracks();
  ui.setLocalPreview(videoTrack ?? null);

  const tasks = [];
  if (audioTrack && device.canProduce('audio')) {
    tasks.push(sendTransport.produce({
      track: audioTrack,
      codecOptions: { opusStereo: true },
      stopTracks: false,
      appData: { source: 'mic' },
    }).then((producer) => {
      micProducer = producer;
      state.producers.audio = producer.id;
      watchProducer(producer, 'audio');
    }).catch((error) => {
      if (!isClosed()) report('produce microphone', error);
    }));
  }
  if (videoTrack && device.canProduce('video')) {
    const encodings = params.simulcast
      ? [
        { scaleResolutionDownBy: 4, maxBitrate: 500_000 },
        { scaleResolutionDownBy: 2, maxBitrate: 1_000_000 },
        { scaleResolutionDownBy: 1, maxBitrate: 5_000_000 },
      ]
      : undefined;
    tasks.push(sendTransport.produce({
      track: videoTrack,
      encodings,
      codecOptions: { videoGoogleStartBitrate: 1000 },
      stopTracks: false,
      appData: { source: 'webcam' },
    }).then((producer) => {
      camProducer = producer;
      state.producers.video = producer.id;
      watchProducer(producer, 'video');
    }).catch((error) => {
      if (!isClosed()) report('produce webcam', error);
    }));
  }
  await Promise.all(tasks);
  render();
}

function watchProducer(producer, kind) {
  producer.on('transportclose', () => forgetProducer(kind));
  producer.on('trackended', () => {
    report(`${kind} producer`, new Error('the capture track ended'));
    closeProducer(kind).catch((error) => report(`close ${kind} producer`, error));
  });
}

function forgetProducer(kind) {
  if (kind === 'audio') micProducer = null;
  else camProducer = null;
  state.producers[kind] = null;
  render();
}

async function closeProducer(kind) {
  const producer = kind === 'audio' ? micProducer : camProducer;
  if (!producer) return;
  producer.close();
  forgetProducer(kind);
  await peer.request('closeProducer', { producerId: producer.id });
}

/** Pauses or resumes our audio or video producer, locally and on the server. */
async function setProducerPaused(kind, paused) {
  const producer = kind === 'audio' ? micProducer : camProducer;
  if (!producer) throw new Error(`there is no ${kind} producer`);
  if (paused) producer.pause();
  else producer.resume();
  render();
  try {
    await peer.request(paused ? 'pauseProducer' : 'resumeProducer', { producerId: producer.id });
  } catch (error) {
    // Keep the local side in step with the server's.
    if (paused) producer.resume();
    else producer.pause();
    render();
    throw error;
  }
}

async function produceData() {
  if (!sendTransport) return;
  const chat = await sendTransport.produceData({
    ordered: true,
    label: CHAT_LABEL,
    appData: { info: 'sluice-demo-chat' },
  });
  chatProducer = chat;
  chat.on('open', render);
  chat.on('close', () => { chatProducer = null; state.dataProducers.chat = null; render(); });
  chat.on('transportclose', () => { chatProducer = null; state.dataProducers.chat = null; render(); });
  chat.on('error', (error) => dataChannelError('chat channel', error));
  state.dataProducers.chat = chat.id;

  const cursor = await sendTransport.produceData({
    ordered: false,
    maxRetransmits: 0,
    label: CURSOR_LABEL,
    appData: { info: 'sluice-demo-cursor' },
  });
  cursorProducer = cursor;
  cursor.on('close', () => { cursorProducer = null; state.dataProducers.cursor = null; });
  cursor.on('transportclose', () => { cursorProducer = null; state.dataProducers.cursor = null; });
  cursor.on('error', (error) => dataChannelError('cursor channel', error));
  state.dataProducers.cursor = cursor.id;
  startCursorTimer();
  render();
}

/**
 * Chromium fires an 'error' ("User-Initiated Abort, reason=Close called") on a data channel the
 * other side closed, just before 'close': that is a normal close (a peer left), not a failure.
 */
function dataChannelError(context, error) {
  if (/User-Initiated Abort/i.test(String(error?.message ?? error))) {
    console.debug(`[sluice-demo] ${context} closed by the other side`);
    return;
  }
  report(context, error);
}

// ---------------------------------------------------------------------------------------------
// Chat and cursors

function sendChat(text) {
  const trimmed = String(text ?? '').trim();
  if (trimmed === '') return false;
  if (!chatProducer || chatProducer.readyState !== 'open') {
    throw new Error('the chat channel is not open');
  }
  chatProducer.send(encodeChat(state.peerId, trimmed));
  addChat(state, { from: state.peerId, text: trimmed });
  ui.renderChat(state);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Game actions: the shared flag

/** Moves the shared flag (a cached game action); resolves to its sequence number in the room. */
async function moveFlag(x, y) {
  if (!state.joined || !peer) throw new Error('not in a room');
  const request = flagRequest(x, y);
  const { seq } = await peer.request('dispatchAction', request);
  // The server does not echo our own action: record it with the number it gave.
  applyAction(state, { ...request, from: state.peerId, seq });
  ui.renderActions(state);
  ui.drawArena(arena, state, ownCursor);
  return seq;
}

function currentCursor(now) {
  if (pinned) return { ...pinned };
  if (mouse && now - mouse.at < MOUSE_HOLD_MS) return { x: mouse.x, y: mouse.y };
  return idleCursor(now, seedOf(state.peerId));
}

function sendCursor(now) {
  ownCursor = currentCursor(now);
  if (cursorProducer?.readyState !== 'open') return;
  try {
    cursorProducer.send(encodeCursor(state.peerId, ownCursor.x, ownCursor.y, now));
    lastCursorSend = now;
    if (state.proximity && positionProducer?.readyState === 'open') {
      positionProducer.send(encodePosition(ownCursor.x, ownCursor.y));
    }
    const me = state.world?.players[state.peerId];
    if (me && arenaInputProducer?.readyState === 'open') {
      // Toward the mouse (or where moveTo() pinned us); a player nobody steers stands still
      // rather than follow the idle cursor.
      const steer = pinned ?? (mouse && now - mouse.at < MOUSE_HOLD_MS ? mouse : null);
      arenaInputProducer.send(encodeArenaInput(state.world, me, steer ?? me));
    }
  } catch (error) {
    report('cursor send', error);
  }
}

/**
 * Proximity on: the page reports its arena position (the cursor) to the server on the
 * `sluice.position` channel, so in a room with interest management it hears and sees only the
 * players near it. Off: it leaves the world (hears and is heard by everyone).
 */
async function setProximity(on) {
  if (!state.joined || !sendTransport) throw new Error('not in a room');
  if (on && !positionProducer) {
    const producer = await sendTransport.produceData({
      ordered: false,
      maxRetransmits: 0,
      label: POSITION_LABEL,
      appData: { info: 'sluice-demo-position' },
    });
    positionProducer = producer;
    producer.on('close', () => { positionProducer = null; });
    producer.on('transportclose', () => { positionProducer = null; });
    producer.on('error', (error) => dataChannelError('position channel', error));
  }
  state.proximity = Boolean(on);
  if (!on && positionProducer?.readyState === 'open') positionProducer.send(encodeNoPosition());
  render();
  return state.proximity;
}

/** Holds the page's arena position at (x, y) (tests; the mouse moves it otherwise). */
function moveTo(x, y) {
  pinned = { x: Math.min(Math.max(x, 0), ARENA.width), y: Math.min(Math.max(y, 0), ARENA.height) };
  sendCursor(Date.now());
}

function unpin() {
  pinned = null;
}

function startCursorTimer() {
  if (cursorTimer !== null) return;
  cursorTimer = setInterval(() => {
    const now = Date.now();
    if (now - lastCursorSend >= 1000 / CURSOR_HZ - 5) sendCursor(now);
    ui.drawArena(arena, state, ownCursor);
    ui.renderPresence(state, ownCursor);
  }, 1000 / CURSOR_HZ);
}

function stopCursorTimer() {
  if (cursorTimer !== null) clearInterval(cursorTimer);
  cursorTimer = null;
}

function onDataMessage(label, peerId, raw) {
  const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw);
  if (label === CHAT_LABEL) {
    const entry = decodeChat(text, peerId);
    if (!entry) return;
    addChat(state, entry);
    ui.renderChat(state);
  } else if (label === CURSOR_LABEL) {
    const position = decodeCursor(text, peerId);
    if (position) recordCursor(state, position);
  } else if (label === ARENA_STATE_LABEL && peerId === null) {
    // The server's world: it places every player; the page steers its own toward the cursor.
    const world = decodeWorld(text);
    if (!world) return;
    state.world = world;
    startArenaInput();
  }
}

/** Opens the `arena.input` channel once the server's arena game shows up. */
function startArenaInput() {
  if (arenaInputProducer || arenaInputStarting || !sendTransport || sendTransport.closed) return;
  arenaInputStarting = true;
  sendTransport.produceData({
    ordered: false,
    maxRetransmits: 0,
    label: ARENA_INPUT_LABEL,
    appData: { info: 'sluice-demo-arena-input' },
  }).then((producer) => {
    arenaInputProducer = producer;
    producer.on('close', () => { arenaInputProducer = null; });
    producer.on('transportclose', () => { arenaInputProducer = null; });
    producer.on('error', (error) => dataChannelError('arena input channel', error));
  }).catch((error) => report('arena input channel', error))
    .finally(() => { arenaInputStarting = false; });
}

// ---------------------------------------------------------------------------------------------
// Server requests and notifications

async function handleRequest(request, accept, reject) {
  const data = request.data ?? {};
  switch (request.method) {
    case 'newConsumer': {
      if (!recvTransport || recvTransport.closed) {
        reject(409, 'not consuming');
        return;
      }
      const { peerId, producerId, id, kind, rtpParameters, appData, producerPaused } = data;
      // A consumer of a peer this page does not know (it left, and its peerClosed came first)
      // would bring back a tile nobody removes.
      if (!(peerId in state.peers)) {
        reject(404, `unknown peer ${peerId}`);
        return;
      }
      let consumer;
      try {
        consumer = await recvTransport.consume({
          id,
          producerId,
          kind,
          rtpParameters,
          streamId: `${peerId}-${appData?.source === 'share' ? 'share' : 'mic-webcam'}`,
          appData: { ...appData, peerId },
        });
      } catch (error) {
        // Leaving closes the transport under a consume in flight: not an error of the page.
        if (!isClosed()) report(`consume ${kind} of ${peerId}`, error);
        reject(500, String(error?.message ?? error));
        return;
      }
      if (!(peerId in state.peers)) {
        // The peer left while the consumer was being set up.
        consumer.close();
        reject(404, `peer ${peerId} left`);
        return;
      }
      consumers.set(id, consumer);
      addConsumer(state, { id, peerId, kind, paused: producerPaused });
      consumer.on('transportclose', () => forgetConsumer(id));
      consumer.on('trackended', () => forgetConsumer(id));
      ui.attachTrack(state, peerId, id, kind, consumer.track);
      accept();
      render();
      return;
    }
    case 'newDataConsumer': {
      if (!recvTransport || recvTransport.closed) {
        reject(409, 'not consuming');
        return;
      }
      const { peerId, dataProducerId, id, sctpStreamParameters, label, protocol, appData } = data;
      // `peerId: null` is the server's own data producer.
      const gone = () => typeof peerId === 'string' && !(peerId in state.peers);
      if (gone()) {
        reject(404, `unknown peer ${peerId}`);
        return;
      }
      let dataConsumer;
      try {
        dataConsumer = await recvTransport.consumeData({
          id,
          dataProducerId,
          sctpStreamParameters,
          label,
          protocol,
          appData: { ...appData, peerId },
        });
      } catch (error) {
        if (!isClosed()) report(`consume data "${label}" of ${peerId}`, error);
        reject(500, String(error?.message ?? error));
        return;
      }
      if (gone()) {
        dataConsumer.close();
        reject(404, `peer ${peerId} left`);
        return;
      }
      dataConsumers.set(id, dataConsumer);
      addDataConsumer(state, { id, peerId, label });
      const setReadyState = () => {
        if (state.dataConsumers[id]) state.dataConsumers[id].readyState = dataConsumer.readyState;
      };
      dataConsumer.on('open', setReadyState);
      dataConsumer.on('close', () => forgetDataConsumer(id));
      dataConsumer.on('transportclose', () => forgetDataConsumer(id));
      dataConsumer.on('error', (error) => dataChannelError(`data consumer "${label}"`, error));
      dataConsumer.on('message', (message) => {
        try {
          onDataMessage(label, peerId ?? null, message);
        } catch (error) {
          report(`data message "${label}"`, error);
        }
      });
      setReadyState();
      accept();
      return;
    }
    default:
      reject(501, `unknown method ${request.method}`);
  }
}

function handleNotification({ method, data = {} }) {
  data ??= {};
  switch (method) {
    case 'newPeer':
      if (typeof data.id !== 'string') throw new Error('newPeer without an id');
      addPeer(state, data);
      ui.renderTile(state, data.id);
      break;
    case 'peerClosed': {
      if (typeof data.peerId !== 'string') throw new Error('peerClosed without a peerId');
      const { consumerIds, dataConsumerIds } = removePeer(state, data.peerId);
      for (const id of consumerIds) closeConsumer(id);
      for (const id of dataConsumerIds) closeDataConsumer(id);
      ui.removeTile(data.peerId);
      break;
    }
    case 'peerDisplayNameChanged': {
      const known = state.peers[data.peerId];
      if (known && typeof data.displayName === 'string') {
        known.displayName = data.displayName;
        ui.renderTile(state, data.peerId);
        ui.renderChat(state);
      }
      break;
    }
    case 'consumerClosed':
      forgetConsumer(data.consumerId);
      break;
    case 'consumerPaused':
    case 'consumerResumed': {
      const consumer = setConsumerPaused(state, data.consumerId, method === 'consumerPaused');
      if (consumer) ui.renderTile(state, consumer.peerId);
      break;
    }
    case 'consumerScore': {
      const consumer = setConsumerScore(state, data.consumerId, data.score);
      if (consumer) ui.renderTile(state, consumer.peerId);
      break;
    }
    case 'consumerLayersChanged': {
      const consumer = state.consumers[data.consumerId];
      if (consumer) {
        consumer.layers = { spatialLayer: data.spatialLayer ?? null, temporalLayer: data.temporalLayer ?? null };
      }
      break;
    }
    case 'producerScore':
      state.producerScores = { ...state.producerScores, [data.producerId]: data.score };
      break;
    case 'dataConsumerClosed':
      forgetDataConsumer(data.dataConsumerId);
      break;
    case 'activeSpeaker':
      state.activeSpeaker = data.peerId ?? null;
      ui.renderAllTiles(state);
      break;
    case 'downlinkBwe':
      state.downlinkBwe = data;
      break;
    case 'action':
      if (applyAction(state, data)) {
        ui.renderActions(state);
        ui.drawArena(arena, state, ownCursor);
      }
      break;
    default:
      console.debug(`[sluice-demo] ignoring notification "${method}"`);
      return;
  }
  render();
}

function closeConsumer(consumerId) {
  const consumer = consumers.get(consumerId);
  consumers.delete(consumerId);
  if (consumer && !consumer.closed) consumer.close();
}

function forgetConsumer(consumerId) {
  closeConsumer(consumerId);
  const record = removeConsumer(state, consumerId);
  if (record) {
    ui.detachTrack(record.peerId, consumerId);
    ui.renderTile(state, record.peerId);
  }
}

function closeDataConsumer(dataConsumerId) {
  const dataConsumer = dataConsumers.get(dataConsumerId);
  dataConsumers.delete(dataConsumerId);
  if (dataConsumer && !dataConsumer.closed) dataConsumer.close();
}

function forgetDataConsumer(dataConsumerId) {
  closeDataConsumer(dataConsumerId);
  removeDataConsumer(state, dataConsumerId);
}

// ---------------------------------------------------------------------------------------------
// Leaving

function stopLocalStream() {
  for (const track of localStream?.getTracks() ?? []) track.stop();
  localStream = null;
  ui.setLocalPreview(null);
}

/** Drops everything media-related and marks the page `status` (left / disconnected / failed). */
function teardown(status) {
  if (state.status === 'left' && status !== 'left') return;
  state.joined = false;
  state.status = status;
  stopCursorTimer();
  for (const id of [...consumers.keys()]) closeConsumer(id);
  for (const id of [...dataConsumers.keys()]) closeDataConsumer(id);
  // Closing a transport closes its producers, consumers and data channels.
  for (const transport of [sendTransport, recvTransport]) {
    try {
      if (transport && !transport.closed) transport.close();
    } catch (error) {
      console.warn('[sluice-demo] closing a transport failed', error);
    }
  }
  sendTransport = null;
  recvTransport = null;
  micProducer = null;
  camProducer = null;
  chatProducer = null;
  cursorProducer = null;
  positionProducer = null;
  arenaInputProducer = null;
  state.proximity = false;
  state.world = null;
  state.interest = null;
  pinned = null;
  state.producers = { audio: null, video: null };
  state.dataProducers = { chat: null, cursor: null };
  state.transports = { send: 'closed', recv: 'closed' };
  stopLocalStream();
  for (const peerId of Object.keys(state.peers)) removePeer(state, peerId);
  state.consumers = {};
  state.dataConsumers = {};
  state.cursors = {};
  state.actions = [];
  state.flag = null;
  ui.renderActions(state);
  ui.removeAllTiles();
  ownCursor = null;
  ui.drawArena(arena, state, null);
  if (peer && !peer.closed) peer.close();
  render();
}

function leave() {
  if (state.status === 'left') return;
  teardown('left');
}

// ---------------------------------------------------------------------------------------------
// Stats for tests

/** The local candidate of a transport's selected ICE pair (an RTCStats entry), or null. */
async function selectedLocalCandidate(transport) {
  if (!transport || transport.closed) return null;
  const report = await transport.getStats();
  let pairId = null;
  report.forEach((stat) => {
    if (stat.type === 'transport' && stat.selectedCandidatePairId) pairId = stat.selectedCandidatePairId;
  });
  const pair = pairId ? report.get(pairId) : null;
  return (pair ? report.get(pair.localCandidateId) : null) ?? null;
}

/**
 * The candidate types of each transport's selected ICE pair, `{send, recv}` (`"host"`,
 * `"relay"`, …, or null before one is selected): tests check that `?iceTransportPolicy=relay`
 * really goes through TURN.
 */
async function selectedCandidateTypes() {
  const typeOf = async (transport) => (await selectedLocalCandidate(transport))?.candidateType ?? null;
  return { send: await typeOf(sendTransport), recv: await typeOf(recvTransport) };
}

/**
 * The protocols of each transport's selected ICE pair, `{send, recv}` (`"udp"`, `"tcp"`, or null
 * before one is selected): tests check that `?forceTcp=true` really goes over TCP.
 */
async function selectedProtocols() {
  const protocolOf = async (transport) => (await selectedLocalCandidate(transport))?.protocol ?? null;
  return { send: await protocolOf(sendTransport), recv: await protocolOf(recvTransport) };
}

async function stats() {
  const results = [];
  for (const [consumerId, consumer] of consumers) {
    const record = state.consumers[consumerId];
    const entry = {
      consumerId,
      peerId: record?.peerId ?? consumer.appData.peerId ?? null,
      kind: consumer.kind,
      framesDecoded: 0,
      packetsReceived: 0,
      bytesReceived: 0,
      paused: Boolean(record?.paused) || consumer.paused,
    };
    try {
      const statsReport = await consumer.getStats();
      statsReport.forEach((stat) => {
        if (stat.type !== 'inbound-rtp') return;
        entry.framesDecoded += stat.framesDecoded ?? 0;
        entry.packetsReceived += stat.packetsReceived ?? 0;
        entry.bytesReceived += stat.bytesReceived ?? 0;
      });
    } catch (error) {
      entry.error = String(error?.message ?? error);
    }
    results.push(entry);
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Wiring

arena.addEventListener('pointermove', (event) => {
  const rect = arena.getBoundingClientRect();
  if (rect.width === 0 || rect.height === 0) return;
  const now = Date.now();
  mouse = {
    x: ((event.clientX - rect.left) / rect.width) * ARENA.width,
    y: ((event.clientY - rect.top) / rect.height) * ARENA.height,
    at: now,
  };
  // Moving the mouse sends at once (up to ~60 Hz); the timer keeps a floor of 30 Hz.
  if (now - lastCursorSend >= 16) sendCursor(now);
});

arena.addEventListener('click', guard('flag', async (event) => {
  const rect = arena.getBoundingClientRect();
  if (rect.width === 0 || rect.height === 0 || !state.joined) return;
  await moveFlag(((event.clientX - rect.left) / rect.width) * ARENA.width,
    ((event.clientY - rect.top) / rect.height) * ARENA.height);
}));

document.querySelector('#proximity').addEventListener('change', guard('proximity', async (event) => {
  await setProximity(event.target.checked);
}));

document.querySelector('#mic').addEventListener('click', guard('microphone', () =>
  setProducerPaused('audio', !micProducer?.paused)));
document.querySelector('#cam').addEventListener('click', guard('camera', () =>
  setProducerPaused('video', !camProducer?.paused)));
document.querySelector('#leave').addEventListener('click', guard('leave', () => {
  // Once out of the room the button offers to come back in.
  if (isClosed()) location.reload();
  else leave();
}));
document.querySelector('#chat-form').addEventListener('submit', guard('chat', (event) => {
  event.preventDefault();
  const input = document.querySelector('#chat-input');
  if (sendChat(input.value)) input.value = '';
}));

window.addEventListener('unhandledrejection', (event) => report('unhandled rejection', event.reason));
window.addEventListener('error', (event) => report('uncaught error', event.error ?? event.message));
window.addEventListener('pagehide', () => {
  if (peer && !peer.closed) peer.close();
});

window.sluiceDemo = Object.assign(state, {
  stats,
  selectedCandidateTypes,
  selectedProtocols,
  pauseVideo: () => setProducerPaused('video', true),
  resumeVideo: () => setProducerPaused('video', false),
  pauseAudio: () => setProducerPaused('audio', true),
  resumeAudio: () => setProducerPaused('audio', false),
  sendChat,
  moveFlag,
  setProximity,
  moveTo,
  unpin,
  leave,
});

if (params.complete) {
  start().catch((error) => {
    report('start', error);
    setStatus('failed');
  });
} else {
  ui.showJoinForm(randomDefaults());
  render();
}
