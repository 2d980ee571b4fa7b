// A second writer for the market feed (Node's own sockets, not Python's): connects to
// 127.0.0.1:PORT, waits for a line on stdin, writes FILE's lines RATE a second in 10 ms
// batches (catching up when late; a full socket is waited for, as a matching engine's
// writer would), closes, and prints how far behind its schedule it fell, in seconds. The
// same contract as market_books.py's Python writer, which chooses it with --writer node:
//   node bench/feed_writer.mjs PORT FILE RATE
import { readFileSync } from "node:fs";
import net from "node:net";

const [port, file, rateText] = process.argv.slice(2);
const lines = readFileSync(file).toString("latin1").split("\n").slice(0, -1);
const rate = +rateText;
const batch = Math.max(1, Math.floor(rate / 100));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const socket = net.connect(+port, "127.0.0.1");
await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
socket.removeAllListeners("error");
socket.on("error", (error) => {
  console.error(`feed writer: ${error.message}`); // a reset mid-run: said, not a silent hang
  process.exit(1);
});
await new Promise((resolve) => process.stdin.once("data", resolve).once("end", resolve));
const start = performance.now();
let behind = 0;
for (let first = 0; first < lines.length; first += batch) {
  const due = start + (first / rate) * 1000;
  const now = performance.now();
  if (now < due) await sleep(due - now);
  else behind = Math.max(behind, now - due);
  const chunk = lines.slice(first, first + batch).join("\n") + "\n";
  if (!socket.write(chunk, "latin1")) await new Promise((resolve) => socket.once("drain", resolve));
}
await new Promise((resolve) => socket.end(resolve));
console.log((behind / 1000).toFixed(3));
process.exit(0);
