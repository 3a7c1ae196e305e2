// The websocket-shootout broadcast benchmark's method, as a Node client (Debian's
// node-ws): clients connected in steps; at each step SAMPLES broadcasts, CONCURRENT of
// them in flight at a time, each from a random client; every receipt counted. A
// broadcast is done when every client has it and its sender has the broadcastResult.
// A missing or repeated receipt fails the step; so does a p95 above LIMIT_MS of the
// time from a broadcast's send to its last receipt. Prints one JSON line per step.
//
// Usage: node client.js URL "250 500 1000" [SAMPLES=100] [CONCURRENT=4] [LIMIT_MS=500]
//   (NODE_PATH=/usr/share/nodejs for Debian's ws; WS_HOST: a Host header to send)
"use strict";
const { WebSocket } = require("ws");

const [url, steps, samplesArg, concurrentArg, limitArg] = process.argv.slice(2);
const counts = (steps || "").split(/[ ,]+/).filter(Boolean).map(Number);
const SAMPLES = Number(samplesArg || 100);
const CONCURRENT = Number(concurrentArg || 4);
const LIMIT_MS = Number(limitArg || 500);
const CONNECT_BATCH = 100; // handshakes in flight at once
const BROADCAST_TIMEOUT_MS = 15000;
const PADDING = "1234567890".repeat(10); // a 100-byte payload padding, as the field uses
const OPTIONS = { origin: "http://localhost", perMessageDeflate: false };
if (process.env.WS_HOST) OPTIONS.headers = { host: process.env.WS_HOST };
if (!url || !counts.length || counts.some((n) => !(n >= 1)) || !(SAMPLES >= 1) || !(CONCURRENT >= 1)) {
  console.error("usage: node client.js URL 'N1 N2 ...' [SAMPLES] [CONCURRENT] [LIMIT_MS]");
  process.exit(2);
}

const clients = [];
const broadcasts = new Map(); // id -> {sent, sender, receipts, last, result}
let nextId = 0;
let closedUnexpectedly = 0;

class Client {
  constructor() {
    this.seen = new Set();
    this.repeated = 0;
    this.echo = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(url, OPTIONS);
      this.ws.on("open", resolve);
      this.ws.on("error", reject);
      this.ws.on("close", () => {
        if (!stopping) closedUnexpectedly += 1;
      });
      this.ws.on("message", (data) => this.onMessage(data));
    });
  }

  onMessage(data) {
    const message = JSON.parse(data);
    const now = performance.now();
    if (message.type === "broadcast") {
      const id = message.payload.id;
      if (this.seen.has(id)) {
        this.repeated += 1;
        return;
      }
      this.seen.add(id);
      const b = broadcasts.get(id);
      if (b) {
        b.receipts += 1;
        b.last = now;
        settle(id);
      }
    } else if (message.type === "broadcastResult") {
      const b = broadcasts.get(message.payload.id);
      if (b) {
        b.result = now;
        settle(message.payload.id);
      }
    } else if (message.type === "echo" && this.echo) {
      this.echo();
    }
  }

  // An echo round trip: the socket's connect (its group join) has run on the server.
  joined() {
    return new Promise((resolve) => {
      this.echo = resolve;
      this.ws.send(JSON.stringify({ type: "echo", payload: { joined: true } }));
    });
  }
}

let stopping = false;
let stepDone = null;

function settle(id) {
  const b = broadcasts.get(id);
  if (!b.done && b.result !== undefined && b.receipts === b.expected) {
    b.done = true;
    clearTimeout(b.timer);
    stepDone(b);
  }
}

function send() {
  const id = nextId++;
  const sender = clients[Math.floor(Math.random() * clients.length)];
  const b = { id, sent: performance.now(), receipts: 0, expected: clients.length };
  b.timer = setTimeout(() => {
    b.done = true;
    b.timedOut = true;
    stepDone(b);
  }, BROADCAST_TIMEOUT_MS);
  broadcasts.set(id, b);
  sender.ws.send(JSON.stringify({ type: "broadcast", payload: { id, sendTime: Date.now(), padding: PADDING } }));
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : null;
}

async function grow(target) {
  const started = performance.now();
  while (clients.length < target) {
    const batch = [];
    for (let i = 0; i < Math.min(CONNECT_BATCH, target - clients.length); i++) {
      const client = new Client();
      clients.push(client);
      batch.push(client.open().then(() => client.joined()));
    }
    await Promise.all(batch);
  }
  return (performance.now() - started) / 1000;
}

function runStep() {
  return new Promise((resolve) => {
    const finished = [];
    let inFlight = 0;
    let sent = 0;
    stepDone = (b) => {
      finished.push(b);
      inFlight -= 1;
      if (sent < SAMPLES) {
        sent += 1;
        inFlight += 1;
        send();
      } else if (inFlight === 0) {
        resolve(finished);
      }
    };
    for (; sent < Math.min(CONCURRENT, SAMPLES); sent++) {
      inFlight += 1;
      send();
    }
  });
}

async function main() {
  for (const target of counts) {
    const connectSeconds = await grow(target);
    for (const client of clients) client.seen.clear();
    const repeatedBefore = clients.reduce((sum, c) => sum + c.repeated, 0);
    const finished = await runStep();
    await new Promise((r) => setTimeout(r, 300)); // a repeat would arrive now
    const ok = finished.filter((b) => !b.timedOut);
    const all = ok.map((b) => b.last - b.sent).sort((a, b) => a - b);
    const result = ok.map((b) => b.result - b.sent).sort((a, b) => a - b);
    const missing = finished.reduce((sum, b) => sum + (b.expected - b.receipts), 0);
    const repeated = clients.reduce((sum, c) => sum + c.repeated, 0) - repeatedBefore;
    const p95 = percentile(all, 95);
    const line = {
      clients: clients.length,
      samples: finished.length,
      concurrent: CONCURRENT,
      p50_ms: percentile(all, 50),
      p95_ms: p95,
      p99_ms: percentile(all, 99),
      max_ms: all.length ? all[all.length - 1] : null,
      result_p95_ms: percentile(result, 95),
      missing,
      repeated,
      timed_out: finished.length - ok.length,
      closed: closedUnexpectedly,
      connect_s: Number(connectSeconds.toFixed(1)),
    };
    line.passed = missing === 0 && repeated === 0 && closedUnexpectedly === 0 && p95 !== null && p95 <= LIMIT_MS;
    console.log(JSON.stringify(line));
    broadcasts.clear();
    if (!line.passed) break;
  }
  stopping = true;
  // Reset, not closed: no port left in TIME_WAIT for the next server measured.
  for (const client of clients) client.ws._socket.resetAndDestroy();
  process.exit(0);
}

main().catch((error) => {
  console.error(`broadcast client: ${error && error.message ? error.message : error}`);
  process.exit(1);
});
