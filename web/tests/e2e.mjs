#!/usr/bin/env node
// Browser end-to-end test: a real `sluice serve`, the demo page in Debian's Chromium (driven by
// playwright-core, fake camera and microphone), and three peers.
//
//   node web/tests/e2e.mjs --sluice target/debug/sluice [--arena target/debug/examples/arena]
//                          [--artifacts DIR] [--chromium PATH]
//
// With --arena, it then runs the server-authoritative arena game (crates/sluice-server/examples/
// arena) and checks the demo page in it: the server moves the players, and the tiles of players
// far away are dimmed and silent.
//
// Prints one line per check that passes, screenshots into a fresh folder (or --artifacts), and
// exits non-zero with the reason, the pages' state and the server's output on the first failure.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import {
  Fatal, PollTimeout, Tail, USAGE, devModeEnv, parseCliArgs, parseListeningLine, peerIdsOfRoomState, poll,
  randomSuffix, sleep,
} from './lib.mjs';

const SERVER_START_TIMEOUT = 30_000;
const WAIT = 20_000;
/** The whole run; a hung browser or server must not hang CI. */
const RUN_TIMEOUT = 5 * 60_000;

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  // So the <audio> elements play without a click; does not change what is received.
  '--autoplay-policy=no-user-gesture-required',
];

/** A failure with a message that is the whole story (no stack trace needed). */
class TestFailure extends Error {}

const run = {
  server: null, // {child, url, output}
  turn: null, // {child, output}: coturn, for the TURN case
  ffmpeg: null, // {child, output}: the broadcaster case's sender
  redis: null, // {child, output}: the cluster case's directory
  otherServers: [], // servers started before run.server that still run (the cluster case)
  browser: null,
  pages: [], // {name, peerId, roomId, page, context, console, errors}
  artifacts: null,
  passed: 0,
  started: Date.now(),
};

function log(message) {
  console.log(message);
}

async function check(name, body) {
  const start = Date.now();
  const detail = await body();
  run.passed += 1;
  const seconds = ((Date.now() - start) / 1000).toFixed(1);
  log(`ok ${run.passed} - ${name}${detail ? `: ${detail}` : ''} (${seconds} s)`);
}

// ---------------------------------------------------------------------------------------------
// Server

/**
 * Interest management on, with radii for the 640×360 arena: peers that report no position (all
 * but the proximity check's) hear and see everyone, as without it.
 */
const SERVER_CONFIG = `[interest]
mode = "proximity"
audio_radius = 100.0
video_radius = 100.0
hysteresis = 10.0
rate_hz = 20
`;

/** The arena game's server: the same, in its world of 200 units (spawned ≈ 130 apart). */
const ARENA_CONFIG = `listen = "127.0.0.1:0"
workers = 1

[rtc]
ip = "127.0.0.1"
port = 0

[interest]
mode = "proximity"
audio_radius = 40.0
video_radius = 40.0
hysteresis = 4.0
rate_hz = 20
`;

/** The TURN case's server: clients get coturn (on loopback) as their only way in. */
function turnConfig(port, secret) {
  return `[turn]
urls = ["turn:127.0.0.1:${port}?transport=udp"]
secret = "${secret}"
`;
}

/** The spread case's server: two workers, each new peer on the least-loaded one. */
const SPREAD_CONFIG = `[placement]
rooms = "spread"
spread_above_datagrams_per_second = 0
`;

/**
 * `sluice serve` with `configText` and `workers` worker threads, or (`arena`) the arena example
 * with its own configuration.
 */
async function startServer(binary, arena = false, configText = SERVER_CONFIG, workers = 1) {
  const config = join(run.artifacts, arena ? 'arena.toml' : 'sluice.toml');
  writeFileSync(config, arena ? ARENA_CONFIG : configText);
  const args = arena ? [config] : ['serve', '--config', config, '--listen', '127.0.0.1:0', '--rtc-ip', '127.0.0.1',
    '--rtc-port', '0', '--workers', String(workers)];
  const output = new Tail(400);
  const child = spawn(binary, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: devModeEnv(process.env),
  });
  run.server = { child, url: null, output, exited: null };

  const url = await new Promise((resolvePromise, rejectPromise) => {
    let partial = '';
    const timer = setTimeout(() => {
      rejectPromise(new TestFailure(
        `the server did not print "sluice listening on http://…" within ${SERVER_START_TIMEOUT / 1000} s`));
    }, SERVER_START_TIMEOUT);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop();
      for (const line of lines) {
        output.push(`[stdout] ${line}`);
        const found = parseListeningLine(line);
        if (found) {
          clearTimeout(timer);
          resolvePromise(found);
        }
      }
    });
    child.stderr.on('data', (chunk) => output.write(chunk));
    child.on('error', (error) => {
      // Spawning failed (no such file, not executable): there will be no 'exit'.
      run.server.exited ??= { error: error.message };
      clearTimeout(timer);
      rejectPromise(new TestFailure(`cannot start ${binary}: ${error.message}`));
    });
    child.on('exit', (code, signal) => {
      run.server.exited = { code, signal };
      clearTimeout(timer);
      rejectPromise(new TestFailure(`the server exited (${signal ?? `code ${code}`}) before it was listening`));
    });
  });
  run.server.url = url;

  await poll('GET /ready to answer 200', async () => {
    if (run.server.exited) throw new Fatal('the server exited');
    const response = await fetch(`${url}/ready`);
    return response.status === 200;
  }, { timeout: SERVER_START_TIMEOUT, interval: 200 });
  return url;
}

/** A free TCP port on loopback (coturn takes the same number for UDP and TCP). */
function freePort() {
  return new Promise((resolvePromise, rejectPromise) => {
    const server = createServer();
    server.once('error', rejectPromise);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePromise(port));
    });
  });
}

/**
 * coturn on loopback with the TURN REST API secret, relaying to loopback peers (sluice); resolves
 * once it says its servers are up.
 */
async function startTurn(binary, port, secret) {
  const args = ['-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=sluice.test', '--allow-loopback-peers',
    '--no-tls', '--no-dtls', '--no-cli', '--fingerprint', '--min-port=49152', '--max-port=49400',
    `--userdb=${join(run.artifacts, 'turndb')}`, `--pidfile=${join(run.artifacts, 'turn.pid')}`,
    '--log-file=stdout', '--simple-log'];
  const output = new Tail(200);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  run.turn = { child, output };
  await new Promise((resolvePromise, rejectPromise) => {
    const timer = setTimeout(() => rejectPromise(new TestFailure(
      `coturn did not start within ${SERVER_START_TIMEOUT / 1000} s:\n${output}`)), SERVER_START_TIMEOUT);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      output.write(chunk);
      if (/Total General servers/.test(chunk)) {
        clearTimeout(timer);
        resolvePromise();
      }
    });
    child.stderr.on('data', (chunk) => output.write(chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      rejectPromise(new TestFailure(`cannot start ${binary}: ${error.message}`));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      rejectPromise(new TestFailure(`coturn exited (${signal ?? `code ${code}`}):\n${output}`));
    });
  });
}

/**
 * mediasoup-demo's `broadcasters/ffmpeg.sh` against sluice: a broadcaster joins `roomId` through
 * the REST API, gets two plain transports (comedia, RTCP on its own port), produces opus and VP8
 * with the script's SSRCs and payload types, and ffmpeg sends a test pattern and a tone to them.
 */
async function startBroadcaster(baseUrl, roomId, binary) {
  const id = 'ffmpeg';
  const { token } = await getJson(`${baseUrl}/dev/token?${new URLSearchParams({ roomId, peerId: id })}`);
  const post = async (path, body) => {
    const response = await fetch(`${baseUrl}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new TestFailure(`POST ${path} answered HTTP ${response.status}: ${text}`);
    return JSON.parse(text);
  };
  const base = `/rooms/${encodeURIComponent(roomId)}/broadcasters`;
  await post(base, { id, displayName: 'FFmpeg', device: { name: 'FFmpeg' } });
  const audio = await post(`${base}/${id}/transports`, { type: 'plain', comedia: true, rtcpMux: false });
  const video = await post(`${base}/${id}/transports`, { type: 'plain', comedia: true, rtcpMux: false });
  await post(`${base}/${id}/transports/${audio.id}/producers`, {
    kind: 'audio',
    rtpParameters: {
      codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2, parameters: { 'sprop-stereo': 1 } }],
      encodings: [{ ssrc: 1111 }],
    },
  });
  await post(`${base}/${id}/transports/${video.id}/producers`, {
    kind: 'video',
    rtpParameters: { codecs: [{ mimeType: 'video/vp8', payloadType: 101, clockRate: 90000 }], encodings: [{ ssrc: 2222 }] },
  });
  // `-t`: an ffmpeg the test could not stop (its runner killed) ends on its own.
  const args = ['-hide_banner', '-loglevel', 'warning', '-t', '300', '-re',
    '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=15', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-map', '1:a:0', '-c:a', 'libopus', '-b:a', '64k', '-ac', '2', '-ar', '48000',
    '-map', '0:v:0', '-pix_fmt', 'yuv420p', '-c:v', 'libvpx', '-b:v', '300k', '-deadline', 'realtime',
    '-cpu-used', '8', '-g', '15',
    '-f', 'tee',
    `[select=a:f=rtp:ssrc=1111:payload_type=100]rtp://${audio.ip}:${audio.port}?rtcpport=${audio.rtcpPort}`
      + `|[select=v:f=rtp:ssrc=2222:payload_type=101]rtp://${video.ip}:${video.port}?rtcpport=${video.rtcpPort}`];
  const output = new Tail(200);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (chunk) => output.write(chunk.toString()));
  child.stderr.on('data', (chunk) => output.write(chunk.toString()));
  child.on('error', (error) => output.write(`[e2e] cannot start ${binary}: ${error.message}\n`));
  child.on('exit', (code, signal) => output.write(`[e2e] ffmpeg exited (${signal ?? `code ${code}`})\n`));
  run.ffmpeg = { child, output };
  return { name: 'ffmpeg', peerId: id, token, deletePath: `${base}/${id}` };
}

function stopFfmpeg() {
  if (run.ffmpeg && run.ffmpeg.child.exitCode === null) run.ffmpeg.child.kill('SIGKILL');
}

function stopTurn() {
  if (run.turn && run.turn.child.exitCode === null) run.turn.child.kill('SIGTERM');
}

async function stopServer(server = run.server) {
  if (!server || server.exited || server.child.pid === undefined) return;
  const exited = new Promise((resolvePromise) => server.child.once('exit', () => resolvePromise('exited')));
  server.child.kill('SIGTERM');
  if (await Promise.race([exited, sleep(5000)]) !== 'exited') {
    server.output.push('[e2e] the server ignored SIGTERM for 5 s; killing it');
    server.child.kill('SIGKILL');
    await Promise.race([exited, sleep(5000)]);
  }
}

async function getJson(url, headers = {}) {
  const response = await fetch(url, { headers: { Accept: 'application/json', ...headers } });
  const text = await response.text();
  if (!response.ok) throw new Error(`GET ${url} answered HTTP ${response.status}: ${text.slice(0, 300)}`);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`GET ${url} did not answer JSON: ${text.slice(0, 300)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Browser and pages

async function launchBrowser(executablePath, headed) {
  if (!existsSync(executablePath)) {
    throw new TestFailure(`Chromium is not installed at ${executablePath} `
      + '(install Debian\'s package: apt-get install -y chromium, or pass --chromium <path>)');
  }
  try {
    accessSync(executablePath, constants.X_OK);
  } catch {
    throw new TestFailure(`${executablePath} is not executable`);
  }
  try {
    // launch() gives the browser a fresh temporary profile (a new mkdtemp user-data dir) that
    // it deletes on close; every page below also gets its own incognito-like context.
    run.browser = await chromium.launch({
      executablePath,
      headless: !headed,
      args: headed ? CHROMIUM_ARGS.filter((arg) => arg !== '--headless') : CHROMIUM_ARGS,
      timeout: 30_000,
    });
  } catch (error) {
    throw new TestFailure(`cannot launch Chromium at ${executablePath}: ${error.message}`);
  }
  return run.browser.version();
}

async function openPeer(baseUrl, { name, roomId, peerId, displayName, query: extra = {} }) {
  const context = await run.browser.newContext({
    permissions: ['camera', 'microphone'],
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  const entry = { name, roomId, peerId, page, context, console: new Tail(300), errors: [] };
  page.on('console', (message) => entry.console.push(`[${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => {
    entry.errors.push(error.message);
    entry.console.push(`[pageerror] ${error.stack ?? error.message}`);
  });
  page.on('crash', () => entry.errors.push('the page crashed'));
  run.pages.push(entry);
  const query = new URLSearchParams({ roomId, peerId, displayName, ...extra });
  const response = await page.goto(`${baseUrl}/?${query}`);
  if (!response?.ok()) {
    throw new TestFailure(`GET / for ${name} answered HTTP ${response?.status()}`);
  }
  return entry;
}

/** Evaluates `fn(arg)` in the page; the state object is `window.sluiceDemo`. */
function inPage(peer, fn, arg) {
  return peer.page.evaluate(fn, arg);
}

async function waitJoined(peer) {
  await poll(`${peer.name} to join room ${peer.roomId}`, async () => {
    const { joined, status, error } = await inPage(peer, () => {
      const demo = window.sluiceDemo;
      return demo ? { joined: demo.joined, status: demo.status, error: demo.error } : {};
    });
    if (status === 'failed' || status === 'disconnected') {
      throw new Fatal(`${peer.name}'s page is ${status}: ${error ?? 'no error recorded'}`);
    }
    return joined === true;
  }, { timeout: WAIT });
}

function tileCount(peer, peerId) {
  return inPage(peer, (id) => [...document.querySelectorAll('#peers .tile[data-peer-id]')]
    .filter((tile) => id === undefined || tile.dataset.peerId === id).length, peerId);
}

async function consumerStats(peer, fromPeerId, kind) {
  const stats = await inPage(peer, () => window.sluiceDemo.stats());
  return stats.find((entry) => entry.peerId === fromPeerId && entry.kind === kind) ?? null;
}

async function screenshot(peer, label) {
  const file = join(run.artifacts, `${label}-${peer.name}.png`);
  try {
    await peer.page.screenshot({ path: file, fullPage: true, timeout: 10_000 });
  } catch (error) {
    log(`# screenshot of ${peer.name} failed: ${error.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The checks

async function mediaFlows(viewer, sender) {
  const first = await poll(`${viewer.name} to decode ${sender.name}'s video`, async () => {
    const stats = await consumerStats(viewer, sender.peerId, 'video');
    return stats && stats.framesDecoded > 0 ? stats : null;
  }, { timeout: WAIT });
  await sleep(1000);
  const second = await consumerStats(viewer, sender.peerId, 'video');
  if (!second || second.consumerId !== first.consumerId || second.framesDecoded <= first.framesDecoded) {
    throw new TestFailure(`${viewer.name} stopped decoding ${sender.name}'s video: framesDecoded `
      + `${first.framesDecoded} then ${second?.framesDecoded} one second later`);
  }
  return `${viewer.name} decoded ${second.framesDecoded - first.framesDecoded} frames/s of ${sender.name}`;
}

async function audioFlows(viewer, sender) {
  const stats = await poll(`${viewer.name} to receive ${sender.name}'s audio`, async () => {
    const entry = await consumerStats(viewer, sender.peerId, 'audio');
    return entry && entry.packetsReceived > 0 ? entry : null;
  }, { timeout: WAIT });
  return `${viewer.name} got ${stats.packetsReceived} audio packets from ${sender.name}`;
}

async function cursorsFlow(viewer, sender) {
  const count = () => inPage(viewer, (id) => window.sluiceDemo.cursors[id]?.count ?? 0, sender.peerId);
  const first = await poll(`${viewer.name} to receive ${sender.name}'s cursor`, count, { timeout: WAIT });
  await sleep(1000);
  const second = await count();
  if (second <= first) {
    throw new TestFailure(`${viewer.name} stopped receiving ${sender.name}'s cursor: count ${first} `
      + `then ${second} one second later`);
  }
  return `${viewer.name} got ${second - first} cursor messages/s from ${sender.name}`;
}

/** Waits until `receiver`'s page has an open data consumer of `sender`'s chat. */
async function chatConsumerOpen(receiver, sender) {
  await poll(`${receiver.name} to consume ${sender.name}'s chat`, () => inPage(receiver, (from) =>
    Object.values(window.sluiceDemo.dataConsumers).some((c) => c.peerId === from && c.label === 'chat'
      && c.readyState === 'open'), sender.peerId), { timeout: WAIT });
}

async function chatFlows(sender, receiver) {
  const text = `hello from ${sender.name} ${randomSuffix(6)}`;
  // The chat channel opens a moment after joining; sendChat throws until it is open.
  await poll(`${sender.name}'s chat channel to open and send`, () => inPage(sender, (message) => {
    try {
      return window.sluiceDemo.sendChat(message);
    } catch (error) {
      if (/not open/.test(error.message)) return false;
      throw error;
    }
  }, text), { timeout: WAIT });
  await poll(`${receiver.name} to receive ${sender.name}'s chat message "${text}"`, () => inPage(receiver,
    ({ from, message }) => window.sluiceDemo.chat.some((entry) => entry.from === from && entry.text === message),
    { from: sender.peerId, message: text }), { timeout: WAIT });
  const shown = await inPage(receiver, (message) => document.querySelector('#chat-log').textContent.includes(message), text);
  if (!shown) throw new TestFailure(`${receiver.name} received "${text}" but does not show it`);
  return `${sender.name} → ${receiver.name}`;
}

async function pausePropagates(sender, viewer) {
  const video = await consumerStats(viewer, sender.peerId, 'video');
  if (!video) throw new TestFailure(`${viewer.name} has no video consumer of ${sender.name}`);
  const pausedState = () => inPage(viewer, ({ peerId, consumerId }) => ({
    state: window.sluiceDemo.peers[peerId]?.paused?.[consumerId],
    tile: document.querySelector(`#peers .tile[data-peer-id="${CSS.escape(peerId)}"]`)?.dataset.videoPaused,
  }), { peerId: sender.peerId, consumerId: video.consumerId });

  await inPage(sender, () => window.sluiceDemo.pauseVideo());
  await poll(`${viewer.name} to show ${sender.name}'s video consumer paused`, async () => {
    const { state, tile } = await pausedState();
    return state === true && tile === 'true';
  }, { timeout: WAIT });

  await inPage(sender, () => window.sluiceDemo.resumeVideo());
  await poll(`${viewer.name} to show ${sender.name}'s video consumer resumed`, async () => {
    const { state, tile } = await pausedState();
    return state === false && tile === 'false';
  }, { timeout: WAIT });

  const resumedAt = (await consumerStats(viewer, sender.peerId, 'video'))?.framesDecoded ?? 0;
  await poll(`${viewer.name} to decode ${sender.name}'s video again after the resume`, async () => {
    const stats = await consumerStats(viewer, sender.peerId, 'video');
    return stats && stats.framesDecoded > resumedAt + 5;
  }, { timeout: WAIT });
  return `consumer ${video.consumerId} paused and resumed on ${viewer.name}'s page; frames flow again`;
}

/** The flag as a page has it, without its sequence number. */
function flagOf(peer) {
  return inPage(peer, () => {
    const flag = window.sluiceDemo.flag;
    return flag ? { x: flag.x, y: flag.y, by: flag.by, seq: flag.seq } : null;
  });
}

async function flagIsShared(baseUrl, mover, viewer) {
  // Somewhere the idle flag is not: away from the corner, different on every run.
  const x = 100 + Math.floor(Math.random() * 400);
  const y = 60 + Math.floor(Math.random() * 240);
  const seq = await inPage(mover, ({ x: fx, y: fy }) => window.sluiceDemo.moveFlag(fx, fy), { x, y });
  const expected = { x, y, by: mover.peerId, seq };
  const same = (flag) => flag && flag.x === x && flag.y === y && flag.by === mover.peerId && flag.seq === seq;
  await poll(`${viewer.name} to see the flag ${mover.name} moved to (${x}, ${y})`,
    async () => same(await flagOf(viewer)), { timeout: WAIT });
  // A late joiner gets the cached flag right after joining, with the same sequence number.
  const late = await openPeer(baseUrl, { name: 'dave', roomId: mover.roomId, peerId: 'dave', displayName: 'Dave' });
  await waitJoined(late);
  await poll(`late-joining ${late.name} to see the flag where ${mover.name} left it`,
    async () => same(await flagOf(late)), { timeout: WAIT });
  const logged = await inPage(late, (n) => document.querySelector(`#action-log li[data-seq="${n}"]`) !== null, seq);
  if (!logged) throw new TestFailure(`${late.name} has the flag but its action log does not show #${seq}`);
  await screenshot(late, '1-late-joiner-flag');
  await inPage(late, () => window.sluiceDemo.leave());
  await poll(`${mover.name}'s tile for ${late.name} to disappear`,
    async () => await tileCount(mover, late.peerId) === 0, { timeout: WAIT });
  return `${viewer.name} and late-joining ${late.name} see ${JSON.stringify(expected)}`;
}

/** The packets `viewer` has received of `sender`'s audio, and whether its page has it paused. */
async function audioOf(viewer, sender) {
  const stats = await consumerStats(viewer, sender.peerId, 'audio');
  if (!stats) throw new TestFailure(`${viewer.name} has no audio consumer of ${sender.name}`);
  return stats;
}

/** Waits until `viewer`'s tile of `sender` shows it at `presence` ("0.00" far … "1.00" near). */
async function waitPresence(viewer, sender, presence) {
  await poll(`${viewer.name}'s tile of ${sender.name} at presence ${presence}`, async () => {
    const shown = await inPage(viewer, (id) =>
      document.querySelector(`#peers .tile[data-peer-id="${CSS.escape(id)}"]`)?.dataset.presence, sender.peerId);
    return shown === presence;
  }, { timeout: WAIT });
}

/** `peer`'s player in the server's arena world as its page has it ({wx, wy, x, y}), or null. */
function worldPlayer(viewer, peerId) {
  return inPage(viewer, (id) => window.sluiceDemo.world?.players[id] ?? null, peerId);
}

async function arenaWorks(near, far) {
  // The server places both and tells both pages.
  for (const viewer of [near, far]) {
    for (const peer of [near, far]) {
      await poll(`${viewer.name}'s page to show ${peer.name} in the arena`,
        async () => (await worldPlayer(viewer, peer.peerId)) !== null, { timeout: WAIT });
    }
  }
  // Spawned far apart (≈ 130 units, radius 40): not heard, tiles dimmed.
  await waitAudio(far, near, false);
  await waitPresence(far, near, '0.00');
  await screenshot(far, '3-arena-far');
  // `near` steers toward `far`'s square: the server walks it there; both hear each other.
  const target = await worldPlayer(far, far.peerId);
  await inPage(near, ({ x, y }) => window.sluiceDemo.moveTo(x, y), target);
  await poll(`the server to walk ${near.name} up to ${far.name}`, async () => {
    const me = await worldPlayer(far, near.peerId);
    return Math.hypot(me.wx - target.wx, me.wy - target.wy) < 10;
  }, { timeout: WAIT });
  await waitAudio(far, near, true);
  await waitAudio(near, far, true);
  await waitPresence(far, near, '1.00');
  await screenshot(far, '4-arena-near');
  return `${near.name} walked from far (silent, dimmed) to ${far.name} (heard, full) on the server's say`;
}

/** Waits until `viewer` receives `sender`'s audio (`flowing`) or not, over one-second samples. */
async function waitAudio(viewer, sender, flowing) {
  let last = await audioOf(viewer, sender);
  await poll(`${viewer.name} to ${flowing ? 'receive' : 'stop receiving'} ${sender.name}'s audio`, async () => {
    await sleep(1000);
    const now = await audioOf(viewer, sender);
    const grew = now.packetsReceived > last.packetsReceived;
    last = now;
    return flowing ? grew && !now.paused : !grew && now.paused;
  }, { timeout: WAIT });
  return last;
}

async function proximityWorks(near, far) {
  // Opposite corners of the arena, far beyond the 100-unit radius.
  await inPage(near, () => window.sluiceDemo.moveTo(20, 20));
  await inPage(far, () => window.sluiceDemo.moveTo(620, 340));
  for (const peer of [near, far]) await inPage(peer, () => window.sluiceDemo.setProximity(true));
  await waitAudio(far, near, false);
  await waitAudio(near, far, false);
  const shown = await inPage(far, (id) =>
    document.querySelector(`#peers .tile[data-peer-id="${CSS.escape(id)}"]`)?.dataset.audioPaused, near.peerId);
  if (shown !== 'true') throw new TestFailure(`${far.name}'s tile of ${near.name} does not show the audio paused`);
  // Beyond the radius (the server's, from join): the tile dimmed to its floor and the voice silent.
  await waitPresence(far, near, '0.00');
  await screenshot(far, '1-proximity-far');
  // Walk up to the other: both hear each other again.
  await inPage(near, () => window.sluiceDemo.moveTo(600, 330));
  await waitAudio(far, near, true);
  await waitAudio(near, far, true);
  await waitPresence(far, near, '1.00');
  // Proximity off: out of the world, heard by everyone whatever the distance.
  await inPage(near, () => window.sluiceDemo.moveTo(20, 20));
  for (const peer of [near, far]) {
    await inPage(peer, () => window.sluiceDemo.setProximity(false));
    await inPage(peer, () => window.sluiceDemo.unpin());
  }
  await waitAudio(far, near, true);
  await waitPresence(far, near, '1.00');
  return `far apart ${near.name} and ${far.name} stopped receiving each other's audio (tiles dimmed); close, and with proximity off, they receive it`;
}

async function roomIsolated(outsider, insiders) {
  await waitJoined(outsider);
  // Give a leak time to show up.
  await sleep(2000);
  const peers = await inPage(outsider, () => Object.keys(window.sluiceDemo.peers));
  const tiles = await tileCount(outsider);
  if (peers.length !== 0 || tiles !== 0) {
    throw new TestFailure(`${outsider.name} (room ${outsider.roomId}) sees peers ${JSON.stringify(peers)} `
      + `and ${tiles} tiles`);
  }
  for (const insider of insiders) {
    const known = await inPage(insider, () => Object.keys(window.sluiceDemo.peers));
    if (known.includes(outsider.peerId) || await tileCount(insider, outsider.peerId) !== 0) {
      throw new TestFailure(`${insider.name} (room ${insider.roomId}) sees ${outsider.name} of room ${outsider.roomId}`);
    }
  }
  return `${outsider.name} in ${outsider.roomId} sees nobody; nobody sees ${outsider.name}`;
}

async function leaveIsSeen(baseUrl, leaver, stayer) {
  await inPage(leaver, () => window.sluiceDemo.leave());
  await poll(`${leaver.name}'s page to say it left`, () => inPage(leaver, () => window.sluiceDemo.status === 'left'),
    { timeout: WAIT });
  await poll(`${stayer.name}'s tile for ${leaver.name} to disappear`, async () =>
    await tileCount(stayer, leaver.peerId) === 0
      && !(await inPage(stayer, (id) => id in window.sluiceDemo.peers, leaver.peerId)),
  { timeout: WAIT });

  const roomId = leaver.roomId;
  const tokenUrl = `${baseUrl}/dev/token?${new URLSearchParams({ roomId, peerId: 'e2e-admin', grants: 'admin' })}`;
  const { token } = await getJson(tokenUrl);
  if (typeof token !== 'string' || token === '') throw new TestFailure(`GET ${tokenUrl} returned no token`);
  const stateUrl = `${baseUrl}/api/rooms/${encodeURIComponent(roomId)}`;
  let ids = [];
  await poll(`the server's state of room ${roomId} to drop ${leaver.peerId}`, async () => {
    ids = peerIdsOfRoomState(await getJson(stateUrl, { Authorization: `Bearer ${token}` }));
    return !ids.includes(leaver.peerId);
  }, { timeout: WAIT });
  if (!ids.includes(stayer.peerId)) {
    throw new TestFailure(`GET ${stateUrl} lists peers ${JSON.stringify(ids)}, without ${stayer.peerId} who is still there`);
  }
  return `${stayer.name} no longer shows ${leaver.name}; GET /api/rooms/${roomId} lists ${JSON.stringify(ids)}`;
}

async function noPageErrors() {
  const problems = [];
  for (const peer of run.pages) {
    for (const error of peer.errors) problems.push(`${peer.name}: uncaught ${error}`);
    const recorded = await inPage(peer, () => window.sluiceDemo?.errors ?? []).catch(() => []);
    for (const error of recorded) problems.push(`${peer.name}: ${error}`);
  }
  if (problems.length) throw new TestFailure(`the pages reported errors:\n  ${problems.join('\n  ')}`);
  return `${run.pages.length} pages`;
}

// ---------------------------------------------------------------------------------------------
// Running

async function main(options) {
  run.artifacts = options.artifacts
    ? resolve(options.artifacts)
    : mkdtempSync(join(tmpdir(), 'sluice-e2e-'));
  mkdirSync(run.artifacts, { recursive: true });
  log(`# artifacts: ${run.artifacts}`);

  let baseUrl;
  await check('sluice serve is up', async () => {
    baseUrl = await startServer(resolve(options.sluice));
    return `${baseUrl}, /ready answers 200`;
  });
  await check('Chromium launched', async () => {
    const version = await launchBrowser(options.chromium, options.headed);
    return `${options.chromium} ${version}`;
  });

  const roomId = `e2e-${randomSuffix()}`;
  const otherRoomId = `e2e-other-${randomSuffix()}`;
  const alice = await openPeer(baseUrl, { name: 'alice', roomId, peerId: 'alice', displayName: 'Alice' });
  const bob = await openPeer(baseUrl, { name: 'bob', roomId, peerId: 'bob', displayName: 'Bob' });

  await check(`Alice and Bob joined room ${roomId}`, async () => {
    await Promise.all([waitJoined(alice), waitJoined(bob)]);
  });
  await check('each sees the other\'s tile', async () => {
    for (const [viewer, other] of [[alice, bob], [bob, alice]]) {
      await poll(`${viewer.name} to show a tile for ${other.name}`,
        async () => await tileCount(viewer, other.peerId) === 1, { timeout: WAIT });
    }
  });
  await check('each decodes the other\'s video', async () =>
    (await Promise.all([mediaFlows(alice, bob), mediaFlows(bob, alice)])).join('; '));
  await check('each receives the other\'s audio', async () =>
    (await Promise.all([audioFlows(alice, bob), audioFlows(bob, alice)])).join('; '));
  await check('each receives the other\'s cursor positions', async () =>
    (await Promise.all([cursorsFlow(alice, bob), cursorsFlow(bob, alice)])).join('; '));
  await check('each receives the other\'s chat message', async () =>
    (await Promise.all([chatFlows(alice, bob), chatFlows(bob, alice)])).join('; '));
  await check('Alice pausing her video shows on Bob\'s page', () => pausePropagates(alice, bob));
  await check('the flag Alice moves is seen by Bob and, cached, by a late joiner',
    () => flagIsShared(baseUrl, alice, bob));
  await check('with proximity on, far apart Alice and Bob do not hear each other; close, they do',
    () => proximityWorks(alice, bob));

  const carol = await openPeer(baseUrl, { name: 'carol', roomId: otherRoomId, peerId: 'carol', displayName: 'Carol' });
  await check('a peer of another room sees nobody of the first', () => roomIsolated(carol, [alice, bob]));

  for (const peer of run.pages) await screenshot(peer, '1-joined');
  await check('Bob leaving removes him from Alice\'s page and the server', () => leaveIsSeen(baseUrl, bob, alice));
  for (const peer of run.pages) await screenshot(peer, '2-after-leave');

  await check('no errors on any page', noPageErrors);

  // Each case below starts without the pages before it: on a 2-core machine eight pages
  // encoding video starve the browser's network thread, and ICE over TCP has no slack for it.
  for (const peer of run.pages) await peer.context.close().catch(() => {});
  run.pages = [];
  const tcpRoom = `e2e-tcp-${randomSuffix()}`;
  const tcpOnly = { forceTcp: 'true' };
  const ivan = await openPeer(baseUrl, { name: 'ivan', roomId: tcpRoom, peerId: 'ivan', displayName: 'Ivan', query: tcpOnly });
  const judy = await openPeer(baseUrl, { name: 'judy', roomId: tcpRoom, peerId: 'judy', displayName: 'Judy', query: tcpOnly });
  await check(`Ivan and Judy joined ${tcpRoom} over ICE-TCP only (forceTcp)`, async () => {
    await Promise.all([waitJoined(ivan), waitJoined(judy)]);
  });
  await check('over TCP each decodes the other\'s video and receives the other\'s audio, cursors and chat', async () =>
    (await Promise.all([mediaFlows(ivan, judy), mediaFlows(judy, ivan), audioFlows(ivan, judy),
      audioFlows(judy, ivan), cursorsFlow(ivan, judy), chatFlows(judy, ivan)])).join('; '));
  await check('every transport\'s selected candidate pair is TCP', async () => {
    const protocols = [];
    for (const peer of [ivan, judy]) {
      const selected = await inPage(peer, () => window.sluiceDemo.selectedProtocols());
      if (selected.send !== 'tcp' || selected.recv !== 'tcp') {
        throw new TestFailure(`${peer.name}'s selected protocols: ${JSON.stringify(selected)}`);
      }
      protocols.push(`${peer.name} ${JSON.stringify(selected)}`);
    }
    return protocols.join(', ');
  });
  await check('no errors on the TCP pages', noPageErrors);

  if (options.ffmpeg) {
    for (const peer of run.pages) await peer.context.close().catch(() => {});
    run.pages = [];
    const castRoom = `e2e-cast-${randomSuffix()}`;
    let broadcaster;
    await check('a broadcaster joins through the REST API and ffmpeg sends VP8 and opus to its plain transports',
      async () => {
        broadcaster = await startBroadcaster(baseUrl, castRoom, resolve(options.ffmpeg));
        return `room ${castRoom}`;
      });
    const kim = await openPeer(baseUrl, { name: 'kim', roomId: castRoom, peerId: 'kim', displayName: 'Kim' });
    await check('Kim, in the room, decodes ffmpeg\'s video and receives its audio', async () => {
      await waitJoined(kim);
      return (await Promise.all([mediaFlows(kim, broadcaster), audioFlows(kim, broadcaster)])).join('; ');
    });
    await check('deleting the broadcaster removes it from Kim\'s page', async () => {
      const response = await fetch(`${baseUrl}${broadcaster.deletePath}`, {
        method: 'DELETE', headers: { Authorization: `Bearer ${broadcaster.token}` },
      });
      if (response.status !== 204) throw new TestFailure(`DELETE answered HTTP ${response.status}`);
      stopFfmpeg();
      await poll('kim to drop the ffmpeg tile', async () => await tileCount(kim, 'ffmpeg') === 0, { timeout: WAIT });
      return 'DELETE 204; the tile is gone';
    });
    await check('no errors on the broadcast page', noPageErrors);
  }

  if (options.arena) {
    for (const peer of run.pages) await peer.context.close().catch(() => {});
    run.pages = [];
    await stopServer();
    let arenaUrl;
    await check('the arena game server is up', async () => {
      arenaUrl = await startServer(resolve(options.arena), true);
      return arenaUrl;
    });
    const arenaRoom = `e2e-arena-${randomSuffix()}`;
    const erin = await openPeer(arenaUrl, { name: 'erin', roomId: arenaRoom, peerId: 'erin', displayName: 'Erin' });
    const frank = await openPeer(arenaUrl, { name: 'frank', roomId: arenaRoom, peerId: 'frank', displayName: 'Frank' });
    await check(`Erin and Frank joined the arena ${arenaRoom}`, async () => {
      await Promise.all([waitJoined(erin), waitJoined(frank)]);
    });
    await check('in the arena the server moves the players; far apart they are dimmed and silent, close they hear each other',
      () => arenaWorks(erin, frank));
    await check('no errors on the arena pages', noPageErrors);
  }

  {
    for (const peer of run.pages) await peer.context.close().catch(() => {});
    run.pages = [];
    await stopServer();
    let spreadUrl;
    await check('sluice serve with two workers and rooms spread by load is up', async () => {
      spreadUrl = await startServer(resolve(options.sluice), false, SPREAD_CONFIG, 2);
      return spreadUrl;
    });
    const spreadRoom = `e2e-spread-${randomSuffix()}`;
    const liam = await openPeer(spreadUrl, { name: 'liam', roomId: spreadRoom, peerId: 'liam', displayName: 'Liam' });
    await check(`Liam joined ${spreadRoom}`, async () => waitJoined(liam));
    const mia = await openPeer(spreadUrl, { name: 'mia', roomId: spreadRoom, peerId: 'mia', displayName: 'Mia' });
    await check(`Mia joined ${spreadRoom}`, async () => waitJoined(mia));
    await check('Liam and Mia are on different workers, their producers piped between them', async () => {
      const tokenUrl = `${spreadUrl}/dev/token?${new URLSearchParams({ roomId: spreadRoom, peerId: 'e2e-admin', grants: 'admin' })}`;
      const { token } = await getJson(tokenUrl);
      let room;
      await poll('the room on both workers with pipes each way', async () => {
        const rooms = await getJson(`${spreadUrl}/api/rooms`, { Authorization: `Bearer ${token}` });
        room = rooms.find((r) => r.id === spreadRoom);
        // Each sends video, audio, cursors and chat: four pipes each way.
        return room && room.workers.length === 2 && room.pipes >= 8;
      }, { timeout: WAIT });
      return `GET /api/rooms: workers ${JSON.stringify(room.workers)}, ${room.pipes} pipes`;
    });
    await check('across the workers each decodes the other\'s video and receives the other\'s audio and chat', async () =>
      (await Promise.all([mediaFlows(liam, mia), mediaFlows(mia, liam), audioFlows(liam, mia),
        audioFlows(mia, liam), chatFlows(liam, mia), chatFlows(mia, liam)])).join('; '));
    await check('Liam pausing his video shows on Mia\'s page across the pipe', () => pausePropagates(liam, mia));
    await check('no errors on the spread pages', noPageErrors);
  }

  if (options['redis-server']) {
    for (const peer of run.pages) await peer.context.close().catch(() => {});
    run.pages = [];
    await stopServer();
    let urls;
    await check('redis-server and two sluice nodes of one cluster are up', async () => {
      const port = await startRedis(resolve(options['redis-server']));
      // startServer tracks one server: the first node moves to otherServers.
      const first = await startServer(resolve(options.sluice), false, clusterConfig(port, 'e2e-n1'));
      run.otherServers.push(run.server);
      const second = await startServer(resolve(options.sluice), false, clusterConfig(port, 'e2e-n2'));
      urls = [first, second];
      return `redis on 127.0.0.1:${port}, nodes ${first} and ${second}`;
    });
    const clusterRoom = `e2e-cluster-${randomSuffix()}`;
    const nora = await openPeer(urls[0], { name: 'nora', roomId: clusterRoom, peerId: 'nora', displayName: 'Nora' });
    await check(`Nora joined ${clusterRoom} on the first node`, async () => waitJoined(nora));
    await check('GET /api/place on the second node sends the room\'s new peers to the first', async () => {
      let place;
      await poll('the second node to place the room on the first', async () => {
        place = await getJson(`${urls[1]}/api/place?roomId=${clusterRoom}`);
        return place.nodeId === 'e2e-n1';
      }, { timeout: WAIT });
      return JSON.stringify(place);
    });
    const oscar = await openPeer(urls[1], { name: 'oscar', roomId: clusterRoom, peerId: 'oscar', displayName: 'Oscar' });
    await check(`Oscar joined ${clusterRoom} on the second node`, async () => waitJoined(oscar));
    await check('across the nodes each decodes the other\'s video and receives the other\'s audio and chat', async () => {
      // A message sent before its receiver consumes the channel is not delivered (as on one
      // node); between nodes the consumer comes once the data pipe is up.
      await Promise.all([chatConsumerOpen(oscar, nora), chatConsumerOpen(nora, oscar)]);
      return (await Promise.all([mediaFlows(nora, oscar), mediaFlows(oscar, nora), audioFlows(nora, oscar),
        audioFlows(oscar, nora), chatFlows(nora, oscar), chatFlows(oscar, nora)])).join('; ');
    });
    await check('Nora pausing her video shows on Oscar\'s page across the nodes', () => pausePropagates(nora, oscar));
    await check('no errors on the cluster pages', noPageErrors);
    for (const peer of run.pages) await peer.context.close().catch(() => {});
    run.pages = [];
    for (const server of run.otherServers) await stopServer(server);
    run.otherServers = [];
  }

  if (options.turnserver) {
    for (const peer of run.pages) await peer.context.close().catch(() => {});
    run.pages = [];
    await stopServer();
    const secret = `e2e-${randomSuffix()}`;
    let turnUrl;
    await check('coturn and sluice serve with [turn] are up', async () => {
      const port = await freePort();
      await startTurn(resolve(options.turnserver), port, secret);
      turnUrl = await startServer(resolve(options.sluice), false, turnConfig(port, secret));
      return `coturn on 127.0.0.1:${port}, sluice ${turnUrl}`;
    });
    const turnRoom = `e2e-turn-${randomSuffix()}`;
    const relayOnly = { iceTransportPolicy: 'relay' };
    const grace = await openPeer(turnUrl, { name: 'grace', roomId: turnRoom, peerId: 'grace', displayName: 'Grace', query: relayOnly });
    const heidi = await openPeer(turnUrl, { name: 'heidi', roomId: turnRoom, peerId: 'heidi', displayName: 'Heidi', query: relayOnly });
    await check(`Grace and Heidi joined ${turnRoom} through TURN only (iceTransportPolicy relay)`, async () => {
      await Promise.all([waitJoined(grace), waitJoined(heidi)]);
    });
    await check('through coturn each decodes the other\'s video and receives the other\'s audio', async () =>
      (await Promise.all([mediaFlows(grace, heidi), mediaFlows(heidi, grace), audioFlows(grace, heidi),
        audioFlows(heidi, grace)])).join('; '));
    await check('every transport\'s selected candidate is a relay one', async () => {
      const types = [];
      for (const peer of [grace, heidi]) {
        const selected = await inPage(peer, () => window.sluiceDemo.selectedCandidateTypes());
        if (selected.send !== 'relay' || selected.recv !== 'relay') {
          throw new TestFailure(`${peer.name}'s selected candidates: ${JSON.stringify(selected)}`);
        }
        types.push(`${peer.name} ${JSON.stringify(selected)}`);
      }
      return types.join(', ');
    });
    await check('no errors on the TURN pages', noPageErrors);
  }
  log(`# screenshots in ${run.artifacts}`);
}

async function report(error) {
  const expected = error instanceof TestFailure || error instanceof Fatal || error instanceof PollTimeout;
  console.error(`\nFAILED: ${expected ? error.message : error?.stack ?? error}`);
  for (const peer of run.pages) {
    const state = await inPage(peer, () => {
      const demo = window.sluiceDemo;
      if (!demo) return null;
      return {
        status: demo.status,
        joined: demo.joined,
        transports: demo.transports,
        peers: demo.peers,
        consumers: demo.consumers,
        dataConsumers: demo.dataConsumers,
        producers: demo.producers,
        errors: demo.errors,
      };
    }).catch((e) => `unavailable: ${e.message}`);
    console.error(`\n--- ${peer.name}'s page (room ${peer.roomId}) ---`);
    console.error(`state: ${JSON.stringify(state, null, 1)}`);
    const consoleText = peer.console.toString();
    if (consoleText) console.error(`console (last lines):\n${consoleText.split('\n').slice(-40).join('\n')}`);
    await screenshot(peer, 'failure');
  }
  if (run.server?.exited) console.error(`\nthe server exited: ${JSON.stringify(run.server.exited)}`);
  if (run.turn) console.error(`\n--- coturn (last lines) ---\n${run.turn.output.toString().split('\n').slice(-40).join('\n')}`);
  if (run.ffmpeg) console.error(`\n--- ffmpeg (last lines) ---\n${run.ffmpeg.output.toString().split('\n').slice(-40).join('\n')}`);
  if (run.redis) console.error(`\n--- redis-server (last lines) ---\n${run.redis.output.toString().split('\n').slice(-20).join('\n')}`);
  for (const server of run.otherServers) {
    const output = server.output.toString().split('\n').slice(-60).join('\n');
    console.error(`\n--- the first cluster node's output (last lines) ---\n${output || '(none)'}`);
  }
  if (run.server) {
    const output = run.server.output.toString().split('\n').slice(-80).join('\n');
    console.error(`\n--- server output (last lines) ---\n${output || '(none)'}`);
  }
  if (run.artifacts) console.error(`\nscreenshots in ${run.artifacts}`);
}

async function cleanup() {
  if (run.browser) await Promise.race([run.browser.close().catch(() => {}), sleep(10_000)]);
  stopFfmpeg();
  await stopServer();
  for (const server of run.otherServers) await stopServer(server);
  stopTurn();
  if (run.redis && run.redis.child.exitCode === null) run.redis.child.kill('SIGKILL');
}

/** A redis-server of its own on a free loopback port, nothing saved; resolves once it is ready. */
async function startRedis(binary) {
  const port = await freePort();
  const output = new Tail(100);
  const child = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', run.artifacts], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (chunk) => output.write(chunk));
  child.stderr.on('data', (chunk) => output.write(chunk));
  run.redis = { child, output };
  await poll('redis-server to say it is ready', async () => {
    if (child.exitCode !== null) throw new Fatal(`redis-server exited: ${output.toString()}`);
    return output.toString().includes('Ready to accept connections');
  }, { timeout: SERVER_START_TIMEOUT, interval: 100 });
  return port;
}

/** A node of a cluster whose directory is the Redis on `port`. */
function clusterConfig(port, nodeId) {
  return `${SERVER_CONFIG}
[cluster]
redis = "redis://127.0.0.1:${port}"
secret = "e2e-cluster-secret-of-at-least-thirty-two-bytes"
node_id = "${nodeId}"
heartbeat_secs = 1
node_ttl_secs = 3
`;
}

async function cli() {
  let options;
  try {
    options = parseCliArgs(process.argv.slice(2));
  } catch (error) {
    console.error(error.message);
    process.exit(2);
  }
  if (options.help) {
    console.log(USAGE);
    process.exit(0);
  }

  let exitCode = 0;
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      console.error(`\n${signal}: stopping`);
      cleanup().finally(() => process.exit(130));
    });
  }
  const watchdog = setTimeout(() => {
    if (stopping) return;
    stopping = true;
    report(new TestFailure(`the run took longer than ${RUN_TIMEOUT / 1000} s`))
      .finally(() => cleanup().finally(() => process.exit(1)));
  }, RUN_TIMEOUT);

  try {
    await main(options);
    log(`e2e: ${run.passed} passed, 0 failed`);
  } catch (error) {
    if (!stopping) {
      stopping = true;
      await report(error);
      console.error(`e2e: ${run.passed} passed, 1 failed`);
    }
    exitCode = 1;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
  process.exit(exitCode);
}

// Run when executed, not when imported (the pieces above can be driven one by one).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await cli();

export {
  run, check, startServer, stopServer, launchBrowser, openPeer, waitJoined, tileCount, consumerStats,
  mediaFlows, audioFlows, cursorsFlow, chatFlows, pausePropagates, roomIsolated, leaveIsSeen,
  noPageErrors, report, cleanup, screenshot,
};
