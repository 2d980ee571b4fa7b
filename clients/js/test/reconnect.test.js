/*
 * Reconnecting: full-jitter back-off (grows, capped, reset by a stable connection), what each
 * close code asks for, the "reconnect" notice, and the pong timeout. Time is faked; the
 * jitter's Math.random is fixed per test.
 */
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Client, ConnectionClosed, closePolicy } = require("../client.js");
const {
  fakeNetwork, useFakeTime, fixRandom, flush, connectedClient,
} = require("../testing/fakes.js");

/** A client whose every (re)connect the test sees, with the delays it announced. */
function watchedClient(options) {
  const net = fakeNetwork();
  const client = new Client("ws://gateway.test/x", { ...options, WebSocket: net.WebSocket });
  const delays = [];
  client.on("reconnecting", (ms) => delays.push(ms));
  client.on("error", () => {});
  client.connect();
  return { client, net, delays };
}

test("closePolicy: 4000-4099, 1003, 1007, 1009 never; 4200-4299 now; the rest back off", () => {
  const table = {
    never: [1003, 1007, 1009, 4000, 4001, 4050, 4099],
    now: [4200, 4250, 4299],
    backoff: [1000, 1001, 1006, 1008, 1011, 3999, 4100, 4150, 4199, 4300],
  };
  for (const [policy, codes] of Object.entries(table)) {
    for (const code of codes) assert.equal(closePolicy(code), policy, `code ${code}`);
  }
});

test("back-off delays double from minBackoff and stop at maxBackoff", (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.5);
  const { net, delays } = watchedClient();
  for (let attempt = 0; attempt < 9; attempt++) {
    net.latest.drop(1006); // the connection attempt failed
    const delay = delays[delays.length - 1];
    clock.tick(delay - 1);
    assert.equal(net.sockets.length, attempt + 1, "not before the delay");
    clock.tick(1);
    assert.equal(net.sockets.length, attempt + 2, "a new socket once it passed");
  }
  // Full jitter with Math.random() = 0.5: half of 500, 1000, 2000, ... capped at 30000.
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
});

test("each delay is random in [0, cap): full jitter", (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.1, 0.9, 0, 0.999);
  const { net, delays } = watchedClient({ minBackoff: 100, maxBackoff: 1000 });
  for (let i = 0; i < 4; i++) {
    net.latest.drop(1006);
    clock.tick(delays[i]);
  }
  assert.deepEqual(delays, [10, 180, 0, 799.2]);
});

test("a connection that stayed up stableAfter ms resets the back-off; a shorter one not", (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.5);
  const { net, delays } = watchedClient({ stableAfter: 10000 });
  for (let i = 0; i < 3; i++) {
    net.latest.drop(1006);
    clock.tick(delays[i]);
  }
  net.latest.open();
  clock.tick(9999);
  net.latest.drop(1006);
  assert.equal(delays[3], 2000, "the fourth step after a short-lived connection");
  clock.tick(2000);
  net.latest.open();
  clock.tick(10000);
  net.latest.drop(1006);
  assert.equal(delays[4], 250, "back to the first step");
});

for (const code of [1003, 1007, 1009, 4000, 4050, 4099]) {
  test(`close code ${code} never reconnects`, (t) => {
    const clock = useFakeTime(t);
    const { client, net } = watchedClient();
    net.latest.open();
    net.latest.drop(code, "refused");
    assert.equal(client.status, "failed");
    assert.match(client.lastError.message, new RegExp(`${code}.*not reconnecting`));
    clock.tick(10 * 60 * 1000);
    assert.equal(net.sockets.length, 1);
  });
}

for (const code of [1001, 1006, 1011, 4100, 4199, 4300]) {
  test(`close code ${code} reconnects after a back-off`, (t) => {
    const clock = useFakeTime(t);
    fixRandom(t, 0.5);
    const { client, net, delays } = watchedClient();
    net.latest.open();
    net.latest.drop(code);
    assert.equal(client.status, "reconnecting");
    assert.deepEqual(delays, [250]);
    clock.tick(250);
    assert.equal(net.sockets.length, 2);
  });
}

test("4200 after a reconnect notice: back after the notice's delay, back-off reset", (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.5);
  const { net, delays } = watchedClient();
  for (let i = 0; i < 3; i++) {
    net.latest.drop(1006);
    clock.tick(delays[i]);
  }
  net.latest.open();
  net.latest.push({ event: "notice", data: { type: "reconnect", reconnectInMs: 1234 } });
  net.latest.drop(4200, "going away");
  assert.equal(delays[3], 1234);
  clock.tick(1233);
  assert.equal(net.sockets.length, 4);
  clock.tick(1);
  assert.equal(net.sockets.length, 5);
  net.latest.drop(1006);
  assert.equal(delays[4], 250, "the notice reset the back-off");
});

test("4200-4299, no notice: the reason's delay, else under 1 s; at most maxBackoff", (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.5);
  const { net, delays } = watchedClient({ maxBackoff: 5000 });
  net.latest.open();
  net.latest.drop(4299, "draining: reconnect in 700 ms");
  clock.tick(700);
  net.latest.open();
  net.latest.drop(4200);
  clock.tick(500);
  net.latest.open();
  net.latest.push({ event: "notice", data: { type: "reconnect", reconnectInMs: 99999 } });
  net.latest.drop(4200);
  assert.deepEqual(delays, [700, 500, 5000]);
});

test("no pong within pongTimeout: the client closes and reconnects", async (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.5);
  const { client, net, ws } = connectedClient({ pingInterval: 20000, pongTimeout: 15000 });
  const closes = [];
  client.on("close", (c) => closes.push(c.code));
  client.on("error", () => {});
  clock.tick(20000);
  assert.deepEqual(ws.unanswered().map((op) => op.op), ["ping"]);
  ws.answerAll(); // answered: this connection lives on
  await flush();
  clock.tick(20000);
  assert.equal(ws.closedWith, null);
  clock.tick(15000); // the second ping is not answered
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "pong timeout" });
  assert.deepEqual(closes, [4100]);
  assert.equal(client.status, "reconnecting");
  clock.tick(250);
  assert.equal(net.sockets.length, 2);
});

test("close() ends it for good: no reconnect, pending requests rejected", async (t) => {
  const clock = useFakeTime(t);
  const { client, net, ws } = connectedClient();
  const pending = client.request({ op: "ping" });
  client.close();
  await assert.rejects(pending, ConnectionClosed);
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "bye" });
  assert.equal(client.status, "closed");
  clock.tick(10 * 60 * 1000);
  assert.equal(net.sockets.length, 1);
});

test("close() while waiting to reconnect cancels the reconnect", (t) => {
  const clock = useFakeTime(t);
  const { client, net, ws } = connectedClient();
  ws.drop(1006);
  assert.equal(client.status, "reconnecting");
  client.close();
  clock.tick(10 * 60 * 1000);
  assert.equal(net.sockets.length, 1);
  assert.equal(client.status, "closed");
});

test("a handshake that neither opens nor fails is given up after connectTimeout", (t) => {
  const clock = useFakeTime(t);
  fixRandom(t, 0.5);
  const errors = [];
  const { net, delays, client } = watchedClient({ connectTimeout: 3000 });
  client.on("error", (err) => errors.push(err.message));
  const first = net.latest;
  clock.tick(2999);
  assert.equal(net.sockets.length, 1, "still waiting");
  clock.tick(1);
  assert.deepEqual(first.closedWith, { code: undefined, reason: undefined }, "given up");
  assert.deepEqual(delays, [250]);
  assert.deepEqual(errors, ["connect timeout: reconnecting"]);
  clock.tick(250);
  net.latest.open();
  clock.tick(10000);
  assert.equal(net.sockets.length, 2, "no timeout once open");
  assert.equal(client.status, "ready");
});
