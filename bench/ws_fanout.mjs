// Saturated broadcast measured with another client stack than wsload (Node's `ws` package,
// as outside harnesses use): N subscribers on BTCUSDT@depth, then M publishes of SIZE bytes
// over HTTP keep-alive with W in flight; prints delivered/s from the first publish to the
// last frame. MODE "es" (exchange-stream: subscribe op, POST /v1/mesh/publish) or "nchan"
// (ws://.../sub?id=BTCUSDT, POST /pub?id=BTCUSDT). "corrupt" counts frames whose seq is not
// the client's last + 1: with W > 1 publishes on W connections may be taken in another
// order, so it is an ordering figure, not a loss (every run checks all N x M arrive).
// KIND is the payload: "pad" (SIZE bytes of "x", the broadcast figures), "depth" (a depth diff
// of 5 changed levels a side) or "trades" (a batch of 1-4 trades), with prices and sizes from a
// seeded generator so that they compress as real ones do. COMPRESS "deflate" offers
// permessage-deflate (as browsers do); "bytes_per_delivery" is what the sockets read (frames
// and headers after the handshake) per delivered message. RATE > 0 paces the publishes to RATE
// per second (to compare server CPU at one delivered rate); 0 sends as fast as W allows. With
// "pad", p50/p99/max are the milliseconds from a publish's post to each frame's receipt.
//   taskset -c 1 node bench/ws_fanout.mjs ws://... 6789 1000 2000 16 280 es pad plain 100
//
//   npm install ws@8            (in a scratch directory; NODE_PATH=<it>/node_modules)
//   taskset -c 1 node bench/ws_fanout.mjs ws://127.0.0.1:6790/exchange-stream 6789 1000 2000 16 270 es
//   taskset -c 1 node bench/ws_fanout.mjs ws://... 6789 1000 2000 16 0 es depth deflate
import http from "node:http";
import { createRequire } from "node:module";
const WebSocket = createRequire(import.meta.url)("ws"); // require() honours NODE_PATH, import does not
const [wsUrl, apiPort, N = "1000", M = "2000", W = "16", SIZE = "270", MODE = "es", KIND = "pad",
  COMPRESS = "plain", RATE = "0"] = process.argv.slice(2);
const nchan = MODE === "nchan";
const clients = +N, messages = +M, window = +W, size = +SIZE;
const deflate = COMPRESS === "deflate";
let state = 20261203;
const random = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
const price = () => (64000 + random() * 200).toFixed(1);
const qty = () => (random() * 3).toFixed(4);
const levels = (n) => Array.from({ length: n }, () => [price(), qty()]);
const payloads = {
  pad: (seq) => JSON.stringify({ seq, t: performance.now(), pad: "x".repeat(Math.max(0, size - 60)) }),
  depth: (seq) => JSON.stringify({ event: "BTCUSDT@depth", data: { type: "update", seq,
    prevSeq: seq - 1, ts: 1764720000000 + seq * 100, bids: levels(5), asks: levels(5),
    checksum: Math.floor(random() * 4294967296) - 2147483648 } }),
  trades: (seq) => JSON.stringify({ event: "BTCUSDT@trades", data: Array.from(
    { length: 1 + Math.floor(random() * 4) }, (_, i) => ({ id: 7000000 + seq * 4 + i,
      price: price(), qty: qty(), side: random() < 0.5 ? "buy" : "sell",
      ts: 1764720000000 + seq * 100 + i })).map((t, i) => (i ? t : { seq, ...t })) }),
};
const payload = payloads[KIND];
// "pad" bodies carry the time they are posted ("t", this process's performance.now()), so that
// each frame's latency from publish to receipt is known; the others are made beforehand.
const bodies = KIND === "pad" ? null : Array.from({ length: messages }, (_, seq) => payload(seq));
let postedBytes = 0;
const latencies = [];
const sockets = [];
let received = 0, ready = 0, corrupt = 0;
const expected = clients * messages;
const lastSeq = new Array(clients).fill(-1);
let started = 0, done;
const finished = new Promise((r) => (done = r));
for (let i = 0; i < clients; i++) {
  const ws = new WebSocket(wsUrl, { perMessageDeflate: deflate });
  sockets.push(ws);
  ws.on("open", () => {
    if (deflate && !ws.extensions.includes("permessage-deflate")) { console.error("no deflate:", ws.extensions); process.exit(1); }
    ws.readAtOpen = ws._socket.bytesRead; if (nchan) { if (++ready === clients) setTimeout(publish, 500); } else ws.send('{"op":"subscribe","channel":"BTCUSDT@depth"}'); });
  ws.on("message", (data) => {
    const text = data.toString();
    if (text.startsWith('{"result"')) { if (++ready === clients) publish(); return; }
    const seq = +text.slice(text.indexOf('"seq":') + 6, text.indexOf(",", text.indexOf('"seq":')));
    if (seq !== lastSeq[i] + 1) corrupt++;
    if (!bodies) { const at = text.indexOf('"t":') + 4; latencies.push(performance.now() - parseFloat(text.slice(at, text.indexOf(",", at)))); }
    lastSeq[i] = seq;
    if (++received === expected) done();
  });
  ws.on("error", (e) => { console.error("client error", e.message); process.exit(1); });
}
const agent = new http.Agent({ keepAlive: true, maxSockets: window });
function post(seq) {
  const d = bodies ? bodies[seq] : payload(seq);
  postedBytes += Buffer.byteLength(d);
  const body = nchan ? d : JSON.stringify({ c: "ex:BTCUSDT@depth", d });
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: +apiPort, path: nchan ? "/pub?id=BTCUSDT" : "/v1/mesh/publish", method: "POST", agent,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      res.resume(); res.on("end", () => (res.statusCode < 300 ? resolve() : reject(new Error("status " + res.statusCode))));
    });
    req.on("error", reject); req.end(body);
  });
}
const rate = +RATE;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function publish() {
  started = performance.now();
  let next = 0;
  const due = (seq) => started + (seq * 1000) / rate;
  const lanes = Array.from({ length: window }, async () => {
    while (next < messages) {
      const seq = next++;
      if (rate > 0 && due(seq) > performance.now()) await sleep(due(seq) - performance.now());
      await post(seq);
    }
  });
  await Promise.all(lanes);
}
const timer = setTimeout(() => { console.log(JSON.stringify({ timeout: true, received, expected })); process.exit(2); }, 120000);
await finished;
clearTimeout(timer);
const seconds = (performance.now() - started) / 1000;
const read = sockets.reduce((sum, ws) => sum + ws._socket.bytesRead - ws.readAtOpen, 0);
const plain = postedBytes / messages;
latencies.sort((a, b) => a - b);
const quantile = (q) => (latencies.length ? +latencies[Math.floor(q * (latencies.length - 1))].toFixed(3) : null);
console.log(JSON.stringify({ delivered: received, seconds: +seconds.toFixed(3), delivered_per_s: Math.round(received / seconds), corrupt,
  kind: KIND, compress: COMPRESS, extensions: sockets[0].extensions, message_bytes: +plain.toFixed(1),
  bytes_per_delivery: +(read / received).toFixed(1), p50_ms: quantile(0.5), p99_ms: quantile(0.99),
  max_ms: quantile(1) }));
process.exit(0);
