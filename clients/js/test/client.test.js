/*
 * Client: ops and their answers, calls made before the connection is up, and the login and
 * subscriptions a reconnect restores. The test plays the gateway through a fake WebSocket.
 */
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Client, ProtocolError, ConnectionClosed } = require("../client.js");
const {
  fakeNetwork, useFakeTime, fixRandom, flush, connectedClient, track,
} = require("../testing/fakes.js");

test("connecting opens one WebSocket to the url and is ready once it opens", (t) => {
  useFakeTime(t);
  const net = fakeNetwork();
  const client = new Client("ws://gateway.test/x", { WebSocket: net.WebSocket });
  const statuses = [];
  client.on("status", (s) => statuses.push(s));
  assert.equal(client.connect(), client);
  assert.equal(net.sockets.length, 1);
  assert.equal(net.latest.url, "ws://gateway.test/x");
  assert.equal(client.connected, false);
  net.latest.open();
  assert.deepEqual(statuses, ["connecting", "open", "ready"]);
  assert.equal(client.connected, true);
  client.connect(); // already connected: no second socket
  assert.equal(net.sockets.length, 1);
});

test("each answer settles the request with its id, whatever the order", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const first = client.request({ op: "ping" });
  const second = client.request({ op: "list" });
  const [ping, list] = ws.sent;
  assert.equal(ping.op, "ping");
  assert.equal(list.op, "list");
  assert.notEqual(ping.id, list.id);
  ws.answer(list, { result: ["BTCUSDT@depth"] });
  ws.answer(ping, { op: "pong", ts: 5 });
  assert.deepEqual(await first, { op: "pong", ts: 5, id: ping.id });
  assert.deepEqual(await second, { result: ["BTCUSDT@depth"], id: list.id });
});

test("an error answer rejects with a ProtocolError carrying its code", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const done = client.request({ op: "subscribe", channels: ["@order"] });
  ws.answer(ws.sent[0], { code: 1, msg: "Not Auth" });
  await assert.rejects(done, (err) => err instanceof ProtocolError && err.code === 1);
});

test("pushes go to the channel's handlers and to '*'; stray frames are errors", (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const seen = [];
  const errors = [];
  client.onEvent("BTCUSDT@trades", (data, channel) => seen.push([channel, data]));
  client.onEvent("*", (data, channel) => seen.push(["*", channel]));
  client.on("error", (err) => errors.push(err.message));
  ws.push({ event: "BTCUSDT@trades", data: [{ price: "1.5" }] });
  ws.push({ event: "ETHUSDT@trades", data: [] });
  ws.push("not json");
  ws.push({ result: true, id: 999 });
  assert.deepEqual(seen, [
    ["BTCUSDT@trades", [{ price: "1.5" }]],
    ["*", "BTCUSDT@trades"],
    ["*", "ETHUSDT@trades"],
  ]);
  assert.equal(client.stats.malformed, 2);
  assert.match(errors[0], /not JSON/);
  assert.match(errors[1], /answer to no pending request/);
});

test("an op refused without an id (code 8) is matched by the answers around it", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const [a, b, c, d] = [1, 2, 3, 4].map(() => track(client.request({ op: "ping" })));
  client.on("error", () => {});
  ws.answer(ws.sent[0], { op: "pong", ts: 1 });
  ws.push({ code: 8, msg: "Rate limited" }); // b's answer: refused ops carry no id
  await flush();
  assert.equal(b.settled, false, "c or d may be the refused one yet");
  ws.answer(ws.sent[2], { op: "pong", ts: 3 });
  await flush();
  assert.equal(a.value.ts, 1);
  assert.ok(b.error instanceof ProtocolError && b.error.code === 8, "answered before c");
  assert.equal(c.value.ts, 3);
  assert.equal(d.settled, false);
});

test("a request while not connected rejects at once; pending ones reject on a drop", async (t) => {
  useFakeTime(t);
  const net = fakeNetwork();
  const client = new Client("ws://gateway.test/x", { WebSocket: net.WebSocket });
  await assert.rejects(client.request({ op: "ping" }), ConnectionClosed);
  client.connect();
  net.latest.open();
  const pending = client.request({ op: "ping" });
  net.latest.drop(1006);
  await assert.rejects(pending, ConnectionClosed);
});

test("auth and subscribe called before the connection is up settle once it did them", async (t) => {
  useFakeTime(t);
  const net = fakeNetwork();
  const client = new Client("ws://gateway.test/x", { WebSocket: net.WebSocket });
  const auth = track(client.auth("token-1001"));
  const subscribed = track(client.subscribe(["@balance", "BTCUSDT@ticker"]));
  client.connect();
  const ws = net.latest;
  await flush();
  assert.deepEqual(ws.sent, [], "nothing is sent before the socket opens");

  ws.open();
  assert.deepEqual(ws.sent, [{ op: "auth", token: "token-1001", id: ws.sent[0].id }]);
  assert.equal(client.status, "open", "logging in: not ready yet");
  ws.answerAll();
  await flush();
  assert.deepEqual(auth, { settled: true, value: true, error: undefined });
  assert.equal(client.status, "ready");
  const subscribe = ws.sent[1];
  assert.deepEqual(subscribe.channels, ["@balance", "BTCUSDT@ticker"], "one batch, after auth");
  assert.equal(subscribed.settled, false);
  ws.answer(subscribe);
  await flush();
  assert.equal(subscribed.value, true);
});

test("a reconnect logs in again with the kept token, then resubscribes all", async (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0); // reconnect at once
  const { client, net, ws } = connectedClient();
  const events = [];
  client.auth("token-1001");
  ws.answerAll();
  await flush();
  client.subscribe(["@order", "BTCUSDT@depth"], (data, channel) => events.push(channel));
  client.subscribe("ETHUSDT@trades");
  await flush();
  ws.answerAll();
  await flush();
  assert.equal(client.authenticated, true);

  ws.drop(1006);
  assert.equal(client.status, "reconnecting");
  assert.equal(client.authenticated, false);
  clock.tick(0);
  const again = net.latest;
  assert.notEqual(again, ws);
  const readies = [];
  client.on("ready", () => readies.push(client.status));
  again.open();
  assert.deepEqual(again.sent.map((op) => op.op), ["auth"], "auth first, alone");
  assert.equal(again.sent[0].token, "token-1001");
  again.answerAll();
  await flush();
  assert.deepEqual(readies, ["ready"]);
  assert.equal(again.sent[1].op, "subscribe");
  assert.deepEqual(again.sent[1].channels.sort(), ["@order", "BTCUSDT@depth", "ETHUSDT@trades"]);
  again.answerAll();
  await flush();
  assert.equal(client.authenticated, true);
  again.push({ event: "@order", data: { id: 1 } });
  assert.deepEqual(events, ["@order"]);
  assert.equal(client.stats.reconnects, 1);
});

test("a rejected token (code 5) is forgotten with its private channels", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const failures = [];
  client.on("authfailed", (err) => failures.push(err.code));
  client.on("error", () => {});
  const auth = client.auth("bad");
  const order = client.subscribe("@order");
  const ticker = client.subscribe("BTCUSDT@ticker");
  ws.answer(ws.sent[0], { code: 5, msg: "Auth failed" });
  await assert.rejects(auth, (err) => err.code === 5);
  await assert.rejects(order, (err) => err.code === 5);
  assert.deepEqual(failures, [5]);
  assert.equal(client.token, null);
  await flush();
  const subscribe = ws.sent.find((op) => op.op === "subscribe");
  assert.deepEqual(subscribe.channels, ["BTCUSDT@ticker"]);
  ws.answer(subscribe);
  assert.equal(await ticker, true);
  assert.deepEqual(client.channels, ["BTCUSDT@ticker"]);
});

test("auth unavailable (code 6): the token is kept and sent on a new connection", async (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.5);
  const { client, net, ws } = connectedClient();
  const delays = [];
  client.on("reconnecting", (ms) => delays.push(ms));
  client.on("error", () => {});
  const auth = client.auth("token-1001");
  ws.answer(ws.sent[0], { code: 6, msg: "Auth unavailable" });
  await assert.rejects(auth, (err) => err.code === 6);
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "auth unavailable" });
  assert.deepEqual(delays, [250], "backs off like any drop");
  assert.equal(client.token, "token-1001");
  clock.tick(250);
  net.latest.open();
  assert.deepEqual(net.latest.sent.map((op) => [op.op, op.token]), [["auth", "token-1001"]]);
});

test("a refused channel in a batch is dropped and the rest sent again", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  client.on("error", () => {});
  const good = client.subscribe(["BTCUSDT@trades", "BTCUSDT@bogus"]);
  ws.answer(ws.sent[0], { code: 4, msg: "Invalid channel", channel: "BTCUSDT@bogus" });
  await assert.rejects(good, (err) => err.code === 4 && err.channel === "BTCUSDT@bogus");
  await flush();
  assert.deepEqual(ws.sent[1].channels, ["BTCUSDT@trades"]);
  ws.answer(ws.sent[1]);
  await flush();
  assert.deepEqual(client.channels, ["BTCUSDT@trades"]);
});

test("an auth_expired notice forgets the token and the private channels", async (t) => {
  useFakeTime(t);
  const { client, ws } = connectedClient();
  const loggedOut = [];
  client.on("loggedout", (data, token) => loggedOut.push([data.type, token]));
  client.auth("token-1001");
  ws.answerAll();
  await flush();
  client.subscribe(["@balance", "BTCUSDT@ticker"]);
  await flush();
  ws.answerAll();
  await flush();
  ws.push({ event: "notice", data: { type: "auth_expired", channels: ["@balance"] } });
  assert.deepEqual(loggedOut, [["auth_expired", "token-1001"]]);
  assert.equal(client.token, null);
  assert.deepEqual(client.channels, ["BTCUSDT@ticker"]);
});

test("an auth still in flight when the connection drops does not skip the next login", async (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0);
  const { client, net, ws } = connectedClient();
  client.auth("token-1001");
  assert.equal(ws.sent[0].op, "auth");
  ws.drop(1006); // unanswered; its rejection has not run yet when the next socket opens
  clock.tick(0);
  net.latest.open();
  assert.deepEqual(net.latest.sent.map((op) => [op.op, op.token]), [["auth", "token-1001"]]);
  assert.equal(client.status, "open", "not ready before the login");
});
