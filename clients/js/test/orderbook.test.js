/*
 * OrderBook over a real Client and a fake gateway: snapshot then updates, removals, seq gaps
 * and checksum mismatches (both resync: unsubscribe + subscribe for a fresh snapshot, with
 * back-off while resyncs keep failing), a book with no snapshot yet, and a reconnect.
 * The gateway's side is a ReferenceBook with its own checksum.
 */
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { OrderBook } = require("../client.js");
const { useFakeTime, flush, connectedClient, ReferenceBook } = require("../testing/fakes.js");

const CHANNEL = "BTCUSDT@depth";
const RESUBSCRIBE = [["unsubscribe", [CHANNEL]], ["subscribe", [CHANNEL]]]; // what a resync sends

const BIDS = [["64000.5", "1.2"], ["64000.1", "0.010"], ["63999.9", "3"], ["9.5", "1"]];
const ASKS = [["64000.6", "0.5"], ["64001", "2"], ["64010.25", "7.5"]];

/** A started book on a connected client whose subscribe the gateway answered. */
async function startedBook(t) {
  const clock = useFakeTime(t);
  const { client, net, ws } = connectedClient();
  client.on("error", () => {});
  const changes = [];
  const problems = [];
  const book = new OrderBook(client, "BTCUSDT", {
    onChange: (b, data) => changes.push(data.seq),
    onProblem: (p) => problems.push(p.kind),
  });
  const started = book.start();
  await flush();
  ws.answer(lastOp(ws, "subscribe"));
  assert.equal(await started, true);
  const gateway = new ReferenceBook();
  const send = (data) => net.latest.push({ event: CHANNEL, data });
  return { clock, client, net, ws, book, gateway, send, changes, problems };
}

function lastOp(ws, name) {
  const ops = ws.sent.filter((op) => op.op === name);
  return ops[ops.length - 1];
}

/** The ops sent since the `from`-th, as [op, channels]. */
function opsSince(ws, from) {
  return ws.sent.slice(from).map((op) => [op.op, op.channels]);
}

function assertSameBook(book, gateway) {
  assert.deepEqual(book.top("bids"), gateway.side("bids"));
  assert.deepEqual(book.top("asks"), gateway.side("asks"));
  assert.equal(book.checksum(), gateway.checksum());
}

test("a snapshot replaces the book, then updates apply in seq order", async (t) => {
  const { book, gateway, send, changes } = await startedBook(t);
  assert.equal(book.seq, null, "waiting for the snapshot");
  send(gateway.snapshot(BIDS, ASKS));
  assertSameBook(book, gateway);
  assert.equal(book.seq, 1);
  assert.equal(book.bestBid, "64000.5");
  assert.equal(book.bestAsk, "64000.6");

  send(gateway.update([["64000.2", "4"], ["64000.5", "1.3"]], [["64000.55", "0.1"]]));
  send(gateway.update([], [["64000.6", "0.4"]]));
  assertSameBook(book, gateway);
  assert.equal(book.seq, 3);
  assert.equal(book.bestAsk, "64000.55");
  assert.deepEqual(book.top("bids", 2), [["64000.5", "1.3"], ["64000.2", "4"]]);
  assert.deepEqual(changes, [1, 2, 3]);
  assert.equal(book.stats.checksumsOk, 3);
  assert.equal(book.stats.mismatches + book.stats.gaps + book.stats.resyncs, 0);
});

test("a quantity of zero removes the level, however it is spelled", async (t) => {
  const { book, gateway, send } = await startedBook(t);
  send(gateway.snapshot(BIDS, ASKS));
  send(gateway.update([["64000.5", "0"], ["1", "0"]], [["64001", "0.000"]]));
  assertSameBook(book, gateway);
  assert.equal(book.bestBid, "64000.1");
  assert.equal(book.bids.has("64000.5"), false);
  assert.equal(book.asks.has("64001"), false);
  assert.equal(book.bids.get("64000.1"), "0.010", "quantities kept as sent");
  assert.deepEqual(book.top("bids").map((l) => l[0]).slice(-1), ["9.5"], "9.5 < 64000 by value");
});

test("an update already included (seq <= held) is skipped", async (t) => {
  const { book, gateway, send } = await startedBook(t);
  send(gateway.snapshot(BIDS, ASKS));
  const update = gateway.update([["64000.5", "9"]], []);
  send(update);
  send(update);
  assertSameBook(book, gateway);
  assert.equal(book.stats.stale, 1);
  assert.equal(book.stats.resyncs, 0);
});

test("a seq gap (prevSeq != held seq) resyncs: resubscribe, fresh snapshot", async (t) => {
  const { clock, ws, book, gateway, send, problems } = await startedBook(t);
  send(gateway.snapshot(BIDS, ASKS));
  gateway.update([["64000.5", "2"]], []); // lost on the way
  const sentBefore = ws.sent.length;
  send(gateway.update([["64000.1", "5"]], []));
  assert.deepEqual(problems, ["gap"]);
  assert.equal(book.stats.gaps, 1);
  assert.equal(book.seq, null);
  clock.tick(0); // the first resync goes out at once
  await flush();
  assert.deepEqual(opsSince(ws, sentBefore), RESUBSCRIBE);

  send(gateway.update([["64000.1", "6"]], [])); // still the old subscription's
  assert.equal(book.stats.stale, 1);
  ws.answerAll();
  await flush();
  send(gateway.snapshot());
  assertSameBook(book, gateway);
  assert.equal(book.seq, gateway.seq);
  assert.equal(book.stats.resyncs, 1);
});

test("a checksum mismatch resyncs and is not reported as a change", async (t) => {
  const { clock, ws, book, gateway, send, changes, problems } = await startedBook(t);
  send(gateway.snapshot(BIDS, ASKS));
  const wrong = gateway.update([["64000.5", "2"]], []);
  wrong.checksum += 1;
  const sentBefore = ws.sent.length;
  send(wrong);
  assert.deepEqual(problems, ["checksum"]);
  assert.equal(book.stats.mismatches, 1);
  assert.deepEqual(changes, [1]);
  clock.tick(0);
  await flush();
  assert.deepEqual(opsSince(ws, sentBefore), RESUBSCRIBE);
  ws.answerAll();
  await flush();
  send(gateway.snapshot());
  assertSameBook(book, gateway);
  assert.deepEqual(changes, [1, gateway.seq]);
});

test("resyncs that keep failing back off; a verified message resets that", async (t) => {
  const { clock, ws, book, gateway, send } = await startedBook(t);
  const mismatch = (data) => send({ ...data, checksum: data.checksum + 1 });
  const resubscribes = () => ws.sent.filter((op) => op.op === "subscribe").length - 1;

  mismatch(gateway.snapshot(BIDS, ASKS));
  clock.tick(0);
  await flush();
  assert.equal(resubscribes(), 1, "the first resync at once");
  ws.answerAll();
  await flush();
  mismatch(gateway.snapshot());
  clock.tick(499);
  await flush();
  assert.equal(resubscribes(), 1, "the second waits 500 ms");
  clock.tick(1);
  await flush();
  assert.equal(resubscribes(), 2);
  ws.answerAll();
  await flush();
  mismatch(gateway.snapshot());
  clock.tick(999);
  await flush();
  assert.equal(resubscribes(), 2, "the third waits 1000 ms");
  clock.tick(1);
  await flush();
  ws.answerAll();
  await flush();

  send(gateway.snapshot()); // verified
  mismatch(gateway.update([["1", "1"]], []));
  clock.tick(0);
  await flush();
  assert.equal(resubscribes(), 4, "after a verified message, at once again");
  assert.equal(book.stats.resyncs, 4);
});

test("no snapshot yet: an update with prevSeq 0 is a diff from the empty book", async (t) => {
  const { book, gateway, send } = await startedBook(t);
  send(gateway.update(BIDS, ASKS));
  assertSameBook(book, gateway);
  assert.equal(book.seq, 1);
  assert.equal(book.stats.resyncs, 0);
});

test("before the subscribe's answer updates are ignored; after it, a gap", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const book = new OrderBook(client, "BTCUSDT");
  const started = book.start();
  await flush();
  const gateway = new ReferenceBook();
  gateway.snapshot(BIDS, ASKS);
  ws.push({ event: CHANNEL, data: gateway.update([["1", "1"]], []) });
  assert.equal(book.stats.stale, 1, "an earlier subscription's");
  ws.answerAll();
  await started;
  ws.push({ event: CHANNEL, data: gateway.update([["2", "1"]], []) });
  assert.equal(book.stats.gaps, 1, "no snapshot is coming: resync");
  assert.equal(book.stats.resyncs, 1);
});

test("after a reconnect the book waits for the new connection's snapshot", async (t) => {
  const { clock, net, ws, book, gateway, send } = await startedBook(t);
  send(gateway.snapshot(BIDS, ASKS));
  ws.drop(1006);
  assert.equal(book.seq, null);
  clock.runAll();
  const again = net.latest;
  again.open();
  await flush();
  assert.deepEqual(lastOp(again, "subscribe").channels, [CHANNEL]);
  send(gateway.update([["1", "1"]], [])); // before the answer: not for this subscription
  again.answerAll();
  await flush();
  send(gateway.snapshot([["50", "1"]], [["51", "2"]]));
  assertSameBook(book, gateway);
  assert.equal(book.bestBid, "50");
  assert.equal(book.stats.resyncs, 0, "a reconnect needs no resync");
});

test("malformed depth data is counted and leaves the book alone", async (t) => {
  const { book, gateway, send, problems } = await startedBook(t);
  send(gateway.snapshot(BIDS, ASKS));
  send({ type: "update", bids: "nope" });
  send({ type: "delta", seq: 9, bids: [], asks: [] });
  assertSameBook(book, gateway);
  assert.deepEqual(problems, ["malformed", "malformed"]);
  assert.equal(book.stats.malformed, 2);
});
