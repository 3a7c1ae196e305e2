// Idle WebSockets held open, driven over stdin by loadtest/bench_sockets.py: one JSON
// answer line per command.
//   open N   open sockets until this process holds N (200 handshakes in flight at a time)
//   ping K   an echo on K random sockets: how many came back within 10 s
//   quit     close everything and exit
// Usage: node sockets-client.js URL   (NODE_PATH=/usr/share/nodejs; WS_HOST: a Host header)
"use strict";
const readline = require("readline");
const { WebSocket } = require("ws");

const url = process.argv[2];
const OPTIONS = { origin: "http://localhost", perMessageDeflate: false, handshakeTimeout: 30000 };
if (process.env.WS_HOST) OPTIONS.headers = { host: process.env.WS_HOST };
const BATCH = 200;
const sockets = [];
let closed = 0;

function openOne() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, OPTIONS);
    ws.on("open", () => resolve(ws));
    ws.on("error", (error) => resolve(error));
    ws.on("close", () => {
      closed += 1;
    });
  });
}

async function open(target) {
  const started = performance.now();
  let failed = 0;
  let firstError = null;
  while (sockets.length < target && failed === 0) {
    const batch = [];
    for (let i = 0; i < Math.min(BATCH, target - sockets.length - batch.length); i++) batch.push(openOne());
    for (const result of await Promise.all(batch)) {
      if (result instanceof WebSocket) sockets.push(result);
      else {
        failed += 1;
        firstError = firstError || String(result.code || result.message || result);
      }
    }
  }
  return { held: sockets.length, seconds: (performance.now() - started) / 1000, failed, error: firstError, closed };
}

function ping(count) {
  const chosen = [];
  for (let i = 0; i < Math.min(count, sockets.length); i++) chosen.push(sockets[Math.floor(Math.random() * sockets.length)]);
  return Promise.all(
    chosen.map(
      (ws) =>
        new Promise((resolve) => {
          const timer = setTimeout(() => resolve(false), 10000);
          ws.once("message", () => {
            clearTimeout(timer);
            resolve(true);
          });
          try {
            ws.send("ping");
          } catch {
            resolve(false);
          }
        }),
    ),
  ).then((answers) => ({ pinged: chosen.length, answered: answers.filter(Boolean).length, closed }));
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const [command, arg] = line.trim().split(/\s+/);
  let answer;
  if (command === "open") answer = await open(Number(arg));
  else if (command === "ping") answer = await ping(Number(arg));
  else if (command === "quit") {
    // A reset, not a close: a closing client keeps each port in TIME_WAIT for a minute,
    // and the next target (often at the same address) would find none free.
    for (const ws of sockets) ws._socket.resetAndDestroy();
    process.exit(0);
  } else answer = { error: `unknown command ${command}` };
  process.stdout.write(JSON.stringify(answer) + "\n");
});
