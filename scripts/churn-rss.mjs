// Peer churn against a sluice binary, reporting the server's RSS: N WebSocket peers join
// (one room each), are held, close; after each round the server's RSS is read once every object
// is gone and a settling delay has passed. Used for the allocator comparison in
// docs/decisions.md.
//
//   node scripts/churn-rss.mjs target/release/sluice [peers=500] [rounds=3] [hold_ms=5000] [settle_ms=10000]
//
// Starts the binary in dev mode on 127.0.0.1 (HTTP and UDP ports 0) and stops it at the end. Needs the
// `websocket` package that `npm ci --prefix web` installs.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(new URL('../web/package.json', import.meta.url));
const { w3cwebsocket: WebSocket } = require('websocket');

const [bin, peersArg, roundsArg, holdArg, settleArg] = process.argv.slice(2);
if (!bin) {
  console.error('usage: node scripts/churn-rss.mjs <sluice binary> [peers] [rounds] [hold_ms] [settle_ms]');
  process.exit(2);
}
const peers = Number(peersArg ?? 500);
const rounds = Number(roundsArg ?? 3);
const holdMs = Number(holdArg ?? 5000);
const settleMs = Number(settleArg ?? 10000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const server = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--rtc-port', '0', '--log', 'warn'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const base = await new Promise((resolve, reject) => {
  const lines = createInterface({ input: server.stdout });
  lines.on('line', (line) => {
    const m = line.match(/listening on (http:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  server.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
});

function status(field) {
  const text = readFileSync(`/proc/${server.pid}/status`, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith(`${field}:`));
  return Math.round(Number(line.split(/\s+/)[1]) / 1024); // KiB → MiB
}

async function gauge(name) {
  const body = await (await fetch(`${base}/metrics`)).text();
  const line = body.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

function peer(i, token) {
  return new Promise((resolve, reject) => {
    const url = `${base.replace('http', 'ws')}/ws?roomId=churn-${i}&peerId=p${i}&token=${token}`;
    const ws = new WebSocket(url, 'protoo');
    ws.onerror = (e) => reject(new Error(`peer ${i}: ${e.message ?? e}`));
    ws.onopen = () =>
      ws.send(JSON.stringify({ request: true, id: 1, method: 'join', data: { displayName: `p${i}` } }));
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.response && msg.id === 1) {
        if (msg.ok) resolve(ws);
        else reject(new Error(`join refused: ${m.data}`));
      }
    };
  });
}

async function tokenFor(i) {
  const r = await fetch(`${base}/dev/token?roomId=churn-${i}&peerId=p${i}`);
  return (await r.json()).token;
}

console.log(`baseline RSS ${status('VmRSS')} MiB`);
for (let round = 1; round <= rounds; round++) {
  const tokens = await Promise.all(Array.from({ length: peers }, (_, i) => tokenFor(i)));
  const sockets = await Promise.all(tokens.map((t, i) => peer(i, t)));
  const joined = status('VmRSS');
  await sleep(holdMs);
  await Promise.all(
    sockets.map((ws) => new Promise((resolve) => { ws.onclose = resolve; ws.close(1000); })),
  );
  while ((await gauge('sluice_peers')) !== 0 || (await gauge('sluice_rooms')) !== 0) await sleep(100);
  await sleep(settleMs);
  console.log(
    `round ${round}: ${peers} peers joined: RSS ${joined} MiB; ${settleMs / 1000} s after all closed: RSS ${status('VmRSS')} MiB (peak ${status('VmHWM')} MiB)`,
  );
}
server.kill('SIGTERM');
