/*
 * Recovery on stream channels: positions asked for on every subscribe and kept per channel,
 * `since` on every new connection (a drop, a drain) and after an offset gap, "recovered" and
 * "lost", duplicates dropped, code 9 retried, and no private position carried to another login.
 */
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Client } = require("../client.js");
const {
  fakeNetwork, useFakeTime, fixRandom, flush, connectedClient, track,
} = require("../testing/fakes.js");

const EPOCH = "5f0c2a9e11d4";

function lastSubscribe(ws) {
  const ops = ws.sent.filter((op) => op.op === "subscribe");
  return ops[ops.length - 1];
}

/** A logged-in client subscribed to @order, whose answer put it at `offset`. */
async function orderClient(t, offset) {
  const clock = useFakeTime(t);
  fixRandom(t, 0); // reconnect at once
  const { client, net, ws } = connectedClient();
  const seen = [];
  const events = [];
  client.on("recovered", (ch, pos) => events.push(["recovered", ch, pos]));
  client.on("lost", (ch, pos, sent) => events.push(["lost", ch, pos, sent]));
  client.on("error", () => {});
  client.auth("token-1001");
  ws.answerAll();
  await flush();
  client.subscribe("@order", (data, ch, message) => seen.push(message.offset));
  await flush();
  ws.answer(lastSubscribe(ws), {
    result: true, streams: { "@order": { epoch: EPOCH, offset: offset ?? 0 } },
  });
  await flush();
  return { clock, client, net, ws, seen, events };
}

/** Drop the connection and open the next one, logged in again; returns the new socket. */
async function reconnect(clock, net, code, reason) {
  net.latest.drop(code ?? 1006, reason);
  clock.tick(1000);
  const ws = net.latest;
  ws.open();
  ws.answerAll(); // the auth
  await flush();
  return ws;
}

test("every subscribe asks for positions; pushes advance the one kept", async (t) => {
  const { client, ws, seen } = await orderClient(t, 16);
  const subscribe = ws.sent.find((op) => op.op === "subscribe");
  assert.equal(subscribe.recover, true);
  assert.equal(subscribe.since, undefined, "nothing to resume from yet");
  assert.deepEqual(client.positions, { "@order": { epoch: EPOCH, offset: 16 } });
  ws.push({ event: "@order", data: { id: 1 }, offset: 17 });
  ws.push({ event: "@order", data: { id: 2 }, offset: 18 });
  assert.deepEqual(seen, [17, 18]);
  assert.deepEqual(client.positions, { "@order": { epoch: EPOCH, offset: 18 } });
});

test("a reconnect resumes from the last push handled: replay, then live, no duplicate", async (t) => {
  const { clock, client, net, ws, seen, events } = await orderClient(t, 16);
  ws.push({ event: "@order", data: {}, offset: 17 });
  const again = await reconnect(clock, net);
  const subscribe = lastSubscribe(again);
  assert.deepEqual(subscribe.since, { "@order": { epoch: EPOCH, offset: 17 } });
  again.answer(subscribe, {
    result: true, streams: { "@order": { epoch: EPOCH, offset: 19, recovered: true } },
  });
  await flush();
  again.push({ event: "@order", data: {}, offset: 18 });
  again.push({ event: "@order", data: {}, offset: 19 });
  again.push({ event: "@order", data: {}, offset: 19 }); // sent twice: dropped
  again.push({ event: "@order", data: {}, offset: 20 });
  assert.deepEqual(seen, [17, 18, 19, 20]);
  assert.equal(client.stats.duplicates, 1);
  assert.equal(client.stats.recovered, 1);
  assert.deepEqual(events, [["recovered", "@order", { epoch: EPOCH, offset: 19 }]]);
});

test("recovered:false emits lost and carries on from the position given", async (t) => {
  const { clock, client, net, ws, seen, events } = await orderClient(t, 5);
  ws.push({ event: "@order", data: {}, offset: 6 });
  const again = await reconnect(clock, net);
  again.answer(lastSubscribe(again), {
    result: true, streams: { "@order": { epoch: "a81d6e03c2b7", offset: 3, recovered: false } },
  });
  await flush();
  assert.deepEqual(events, [[
    "lost", "@order", { epoch: "a81d6e03c2b7", offset: 3 }, { epoch: EPOCH, offset: 6 },
  ]]);
  again.push({ event: "@order", data: {}, offset: 4 });
  assert.deepEqual(seen, [6, 4]);
  assert.deepEqual(client.positions, { "@order": { epoch: "a81d6e03c2b7", offset: 4 } });
  assert.equal(client.stats.lost, 1);
});

test("a drain (reconnect notice, 4200) resumes on the next node", async (t) => {
  const { clock, net, ws } = await orderClient(t, 40);
  ws.push({ event: "notice", data: { type: "reconnect", reconnectInMs: 300 } });
  ws.drop(4200, "going away");
  clock.tick(300);
  const next = net.latest;
  assert.notEqual(next, ws);
  next.open();
  next.answerAll();
  await flush();
  assert.deepEqual(lastSubscribe(next).since, { "@order": { epoch: EPOCH, offset: 40 } });
});

test("an offset gap resubscribes from the position held; the replay fills it", async (t) => {
  const { client, ws, seen } = await orderClient(t, 10);
  const gaps = [];
  client.on("gap", (ch, pos, got) => gaps.push([ch, pos.offset, got]));
  ws.push({ event: "@order", data: {}, offset: 11 });
  ws.push({ event: "@order", data: {}, offset: 13 }); // 12 is missing
  ws.push({ event: "@order", data: {}, offset: 14 });
  assert.deepEqual(seen, [11], "nothing past the gap is handed on out of order");
  assert.deepEqual(gaps, [["@order", 11, 13]], "one resume for the gap");
  await flush();
  assert.deepEqual(ws.unanswered().map((op) => op.op), ["unsubscribe", "subscribe"]);
  const subscribe = lastSubscribe(ws);
  assert.deepEqual(subscribe.since, { "@order": { epoch: EPOCH, offset: 11 } });
  ws.answerAll();
  ws.answer(subscribe, {
    result: true, streams: { "@order": { epoch: EPOCH, offset: 14, recovered: true } },
  });
  await flush();
  for (const offset of [12, 13, 14, 15]) ws.push({ event: "@order", data: {}, offset });
  assert.deepEqual(seen, [11, 12, 13, 14, 15]);
  assert.equal(client.stats.gaps, 1);
});

test("code 9 (positions unreadable) retries the same subscribe after a back-off", async (t) => {
  const { clock, client, net, ws } = await orderClient(t, 7);
  const again = await reconnect(clock, net);
  const first = lastSubscribe(again);
  const order = track(client.subscribe("@order"));
  again.answer(first, { code: 9, msg: "Stream unavailable" });
  await flush();
  assert.equal(order.settled, false, "still wanted: not rejected");
  assert.deepEqual(client.channels, ["@order"]);
  clock.tick(500); // Math.random() = 0: the first retry at once; the timer still runs
  await flush();
  const retry = lastSubscribe(again);
  assert.notEqual(retry, first);
  assert.deepEqual(retry.since, { "@order": { epoch: EPOCH, offset: 7 } });
  again.answer(retry, {
    result: true, streams: { "@order": { epoch: EPOCH, offset: 7, recovered: true } },
  });
  await flush();
  assert.equal(order.value, true);
  assert.equal(ws.closedWith, null);
});

test("another token resumes no private position; public ones stay", async (t) => {
  const { clock, client, net, ws, events } = await orderClient(t, 30);
  client.subscribe("BTCUSDT@trades");
  await flush();
  ws.answer(lastSubscribe(ws), {
    result: true, streams: { "BTCUSDT@trades": { epoch: "t1", offset: 900 } },
  });
  await flush();
  client.auth("token-2002");
  const again = await reconnect(clock, net);
  assert.equal(again.sent[0].token, "token-2002");
  const subscribe = lastSubscribe(again);
  assert.deepEqual(subscribe.since, { "BTCUSDT@trades": { epoch: "t1", offset: 900 } });
  again.answer(subscribe, {
    result: true,
    streams: {
      "@order": { epoch: "u2", offset: 4 },
      "BTCUSDT@trades": { epoch: "t1", offset: 900, recovered: true },
    },
  });
  await flush();
  assert.deepEqual(events.filter((e) => e[0] === "lost"), [
    ["lost", "@order", { epoch: "u2", offset: 4 }, null],
  ], "the new login's stream starts here: fetch its state");
  assert.deepEqual(client.positions["@order"], { epoch: "u2", offset: 4 });
});

test("a new token for the same user keeps the count when the gateway kept the channel", async (t) => {
  const { client, ws, seen, events } = await orderClient(t, 30);
  ws.push({ event: "@order", data: {}, offset: 31 });
  client.auth("token-1001-refreshed");
  await flush();
  ws.answerAll(); // the auth
  await flush();
  const subscribe = lastSubscribe(ws);
  assert.equal(subscribe.since, undefined, "no private position offered to another login");
  ws.push({ event: "@order", data: {}, offset: 32 }); // the same uid: still subscribed
  ws.answer(subscribe); // already had it: no "streams" entry
  await flush();
  ws.push({ event: "@order", data: {}, offset: 33 });
  assert.deepEqual(seen, [31, 32, 33]);
  assert.deepEqual(client.positions, { "@order": { epoch: EPOCH, offset: 33 } });
  assert.deepEqual(events, []);
});

test("logout and unsubscribe forget positions", async (t) => {
  const { client, ws } = await orderClient(t, 3);
  client.subscribe("BTCUSDT@trades");
  await flush();
  ws.answer(lastSubscribe(ws), {
    result: true, streams: { "BTCUSDT@trades": { epoch: "t1", offset: 1 } },
  });
  await flush();
  client.logout();
  assert.deepEqual(Object.keys(client.positions), ["BTCUSDT@trades"]);
  client.unsubscribe("BTCUSDT@trades");
  assert.deepEqual(client.positions, {});
});

test("positions given at construction are resumed by the first subscribe", async (t) => {
  useFakeTime(t);
  const net = fakeNetwork();
  const client = new Client("ws://gateway.test/x", {
    WebSocket: net.WebSocket,
    positions: { "ETHUSDT@trades": { epoch: "e", offset: 12 }, bad: { epoch: 1, offset: -1 } },
  });
  client.connect();
  net.latest.open();
  client.subscribe("ETHUSDT@trades");
  await flush();
  assert.deepEqual(lastSubscribe(net.latest).since, { "ETHUSDT@trades": { epoch: "e", offset: 12 } });
  assert.deepEqual(Object.keys(client.positions), ["ETHUSDT@trades"], "a malformed one is ignored");
});

test("recover:false sends the plain subscribe and ignores offsets", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient({ recover: false });
  const seen = [];
  client.subscribe("ETHUSDT@trades", (data, ch, message) => seen.push(message.offset));
  await flush();
  const subscribe = lastSubscribe(ws);
  assert.deepEqual(subscribe, { op: "subscribe", channels: ["ETHUSDT@trades"], id: subscribe.id });
  ws.answer(subscribe);
  await flush();
  ws.push({ event: "ETHUSDT@trades", data: [], offset: 5 });
  ws.push({ event: "ETHUSDT@trades", data: [], offset: 5 });
  assert.deepEqual(seen, [5, 5]);
  assert.deepEqual(client.positions, {});
});

test("pushes right behind the answer, in the same batch of frames, count from its position", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const seen = [];
  const order = [];
  client.on("recovered", () => order.push("recovered"));
  client.subscribe("ETHUSDT@trades", (data, ch, message) => {
    seen.push(message.offset);
    order.push(message.offset);
  });
  await flush();
  // No flush between: the answer's Promise callbacks have not run when the pushes arrive.
  ws.answer(lastSubscribe(ws), {
    result: true, streams: { "ETHUSDT@trades": { epoch: "e", offset: 5 } },
  });
  ws.push({ event: "ETHUSDT@trades", data: [], offset: 6 });
  ws.push({ event: "ETHUSDT@trades", data: [], offset: 7 });
  await flush();
  ws.push({ event: "ETHUSDT@trades", data: [], offset: 8 });
  assert.deepEqual(seen, [6, 7, 8]);
  assert.equal(client.stats.gaps, 0);
  assert.equal(ws.unanswered().length, 0, "no resubscribe");

  client.resubscribe("ETHUSDT@trades");
  await flush();
  ws.answer(ws.unanswered().find((op) => op.op === "unsubscribe"));
  assert.deepEqual(lastSubscribe(ws).since, { "ETHUSDT@trades": { epoch: "e", offset: 8 } });
  ws.answer(lastSubscribe(ws), {
    result: true, streams: { "ETHUSDT@trades": { epoch: "e", offset: 9, recovered: true } },
  });
  ws.push({ event: "ETHUSDT@trades", data: [], offset: 9 });
  assert.deepEqual(order.slice(-2), ["recovered", 9], "recovered before the replay it announces");
});
