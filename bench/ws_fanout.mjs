// Saturated broadcast measured with another client stack than wsload (Node's `ws` package,
// as outside harnesses use): N subscribers on BTCUSDT@depth, then M publishes of SIZE bytes
// over HTTP keep-alive with W in flight; prints delivered/s from the first publish to the
// last frame. MODE "es" (exchange-stream: subscribe op, POST /v1/mesh/publish) or "nchan"
// (ws://.../sub?id=BTCUSDT, POST /pub?id=BTCUSDT). "corrupt" counts frames whose seq is not
// the client's last + 1: with W > 1 publishes on W connections may be taken in another
// order, so it is an ordering figure, not a loss (every run checks all N x M arrive).
//
//   npm install ws@8            (in a scratch directory; NODE_PATH=<it>/node_modules)
//   taskset -c 1 node bench/ws_fanout.mjs ws://127.0.0.1:6790/exchange-stream 6789 1000 2000 16 270 es
import WebSocket from "ws";
import http from "node:http";
const [wsUrl, apiPort, N = "1000", M = "2000", W = "16", SIZE = "270", MODE = "es"] = process.argv.slice(2);
const nchan = MODE === "nchan";
const clients = +N, messages = +M, window = +W, size = +SIZE;
let received = 0, ready = 0, corrupt = 0;
const expected = clients * messages;
const lastSeq = new Array(clients).fill(-1);
let started = 0, done;
const finished = new Promise((r) => (done = r));
for (let i = 0; i < clients; i++) {
  const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
  ws.on("open", () => { if (nchan) { if (++ready === clients) setTimeout(publish, 500); } else ws.send('{"op":"subscribe","channel":"BTCUSDT@depth"}'); });
  ws.on("message", (data) => {
    const text = data.toString();
    if (text.startsWith('{"result"')) { if (++ready === clients) publish(); return; }
    const seq = +text.slice(text.indexOf('"seq":') + 6, text.indexOf(",", text.indexOf('"seq":')));
    if (seq !== lastSeq[i] + 1) corrupt++;
    lastSeq[i] = seq;
    if (++received === expected) done();
  });
  ws.on("error", (e) => { console.error("client error", e.message); process.exit(1); });
}
const agent = new http.Agent({ keepAlive: true, maxSockets: window });
function post(seq) {
  const pad = "x".repeat(Math.max(0, size - 40));
  const d = JSON.stringify({ seq, pad });
  const body = nchan ? d : JSON.stringify({ c: "ex:BTCUSDT@depth", d });
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: +apiPort, path: nchan ? "/pub?id=BTCUSDT" : "/v1/mesh/publish", method: "POST", agent,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      res.resume(); res.on("end", () => (res.statusCode < 300 ? resolve() : reject(new Error("status " + res.statusCode))));
    });
    req.on("error", reject); req.end(body);
  });
}
async function publish() {
  started = performance.now();
  let next = 0;
  const lanes = Array.from({ length: window }, async () => { while (next < messages) await post(next++); });
  await Promise.all(lanes);
}
const timer = setTimeout(() => { console.log(JSON.stringify({ timeout: true, received, expected })); process.exit(2); }, 120000);
await finished;
clearTimeout(timer);
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ delivered: received, seconds: +seconds.toFixed(3), delivered_per_s: Math.round(received / seconds), corrupt }));
process.exit(0);
