/*
 * client.js on a real socket, for tests/test_js_recovery.py: logs in, subscribes to @order and
 * prints one JSON line per thing that happens (pushes, recovered, lost, status), so that the
 * test, which plays the network and the publishers, can check what an application would see.
 *
 *   node recovering_client.js <ws url> <token>
 */
"use strict";

const path = require("node:path");
const { Client } = require(path.join(__dirname, "..", "..", "clients", "js", "client.js"));

const [url, token] = process.argv.slice(2);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const client = new Client(url, {
  minBackoff: 100, maxBackoff: 400, pingInterval: 60000, connectTimeout: 1000,
});
client.on("status", (status) => say({ status }));
client.on("reconnecting", (delay) => say({ delay }));
client.on("close", (close) => say({ close: close.code }));
client.on("recovered", (channel, position) => say({ recovered: channel, position }));
client.on("lost", (channel, position, from) => say({ lost: channel, position, from }));
client.on("error", (err) => say({ error: String(err && err.message) }));
client.connect();
client.auth(token).catch((err) => say({ error: `auth: ${err.message}` }));
client
  .subscribe("@order", (data, channel, message) => say({ push: data.orderId, offset: message.offset }))
  .then(() => say({ subscribed: "@order" }));
process.stdin.on("end", () => process.exit(0)); // the test closed our stdin: stop
process.stdin.resume();
