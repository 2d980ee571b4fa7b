/*
 * Test doubles for client.js: a fake WebSocket the test plays the gateway through, fake time,
 * and a reference order book with its own checksum (Node's zlib CRC32, numeric ordering).
 *
 * Outside test/ on purpose: `node --test` runs every .js file under a test/ folder.
 */
"use strict";

const zlib = require("node:zlib");
const { Client } = require("../client.js");

/**
 * A fresh fake network: `WebSocket` is the class to hand to the client, `sockets` every socket
 * the client opened, oldest first. Nothing happens by itself: the test opens, answers, pushes
 * and drops, as the gateway would.
 */
function fakeNetwork() {
  const sockets = [];

  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = []; // ops the client sent, parsed
      this.answered = new Set(); // ids already answered
      this.closedWith = null; // {code, reason} when the client closed it
      sockets.push(this);
    }

    send(text) {
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
    }

    /* ---- the gateway's side */

    open() {
      this.onopen({});
    }

    /** Deliver one frame: an object (sent as JSON) or a raw string. */
    push(message) {
      this.onmessage({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }

    /** Answer `op` with `fields` (default {"result":true}), echoing its id last. */
    answer(op, fields) {
      this.answered.add(op.id);
      this.push({ ...(fields || { result: true }), id: op.id });
    }

    /** Ops sent and not answered yet, oldest first. */
    unanswered() {
      return this.sent.filter((op) => !this.answered.has(op.id));
    }

    /** Answer every waiting op with success (a pong for a ping). */
    answerAll() {
      for (const op of this.unanswered()) {
        this.answer(op, op.op === "ping" ? { op: "pong", ts: Date.now() } : undefined);
      }
    }

    /** The connection ends with `code` (1006: dropped without a close frame). */
    drop(code, reason) {
      this.onclose({ code: code ?? 1006, reason: reason ?? "" });
    }
  }

  return {
    WebSocket: FakeWebSocket,
    sockets,
    get latest() {
      return sockets[sockets.length - 1];
    },
  };
}

/**
 * Fake setTimeout, setInterval and Date until the test `t` ends; returns the fake clock
 * (`tick(ms)`). It starts far from 0: the client treats a zero "opened at" as "never opened".
 */
function useFakeTime(t) {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_000_000 });
  return t.mock.timers;
}

/** Math.random returns `values` in turn (the last one again once they run out). */
function fixRandom(t, ...values) {
  let next = 0;
  return t.mock.method(Math, "random", () => values[Math.min(next++, values.length - 1)]);
}

/** Let every Promise callback that is due run (setImmediate is not faked). */
function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A client on a fake network, connected and ready (no token, no channels yet). */
function connectedClient(options) {
  const net = fakeNetwork();
  const client = new Client("ws://gateway.test/exchange-stream", {
    ...options,
    WebSocket: net.WebSocket,
  });
  client.connect();
  net.latest.open();
  return { client, net, ws: net.latest };
}

/** Note when a Promise settles, to tell "still waiting" from "settled" without awaiting. */
function track(promise) {
  const state = { settled: false, value: undefined, error: undefined };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

/** OKX's checksum computed independently of client.js: zlib's CRC32, made signed. */
function referenceChecksum(bids, asks) {
  const parts = [];
  for (let i = 0; i < 25; i++) {
    if (i < bids.length) parts.push(bids[i][0], bids[i][1]);
    if (i < asks.length) parts.push(asks[i][0], asks[i][1]);
  }
  return zlib.crc32(parts.join(":")) | 0;
}

/** The gateway's book, to write depth messages with the right seq and checksum. */
class ReferenceBook {
  constructor() {
    this.bids = new Map();
    this.asks = new Map();
    this.seq = 0;
  }

  side(name) {
    const sign = name === "bids" ? -1 : 1;
    return Array.from(this[name]).sort((a, b) => sign * (Number(a[0]) - Number(b[0])));
  }

  checksum() {
    return referenceChecksum(this.side("bids"), this.side("asks"));
  }

  apply(bids, asks) {
    for (const [levels, map] of [[bids, this.bids], [asks, this.asks]]) {
      for (const [price, qty] of levels) {
        if (Number(qty) === 0) map.delete(price);
        else map.set(price, qty);
      }
    }
  }

  /** A snapshot of the book now, at the next seq. */
  snapshot(bids, asks) {
    if (bids || asks) {
      this.bids.clear();
      this.asks.clear();
      this.apply(bids || [], asks || []);
    }
    this.seq++;
    const [b, a] = [this.side("bids"), this.side("asks")];
    return { type: "snapshot", seq: this.seq, prevSeq: this.seq - 1, bids: b, asks: a,
      checksum: this.checksum(), ts: Date.now() };
  }

  /** An update applying `bids` and `asks`, at the next seq. */
  update(bids, asks) {
    this.apply(bids, asks);
    this.seq++;
    return { type: "update", seq: this.seq, prevSeq: this.seq - 1, bids, asks,
      checksum: this.checksum(), ts: Date.now() };
  }
}

module.exports = {
  fakeNetwork,
  useFakeTime,
  fixRandom,
  flush,
  connectedClient,
  track,
  referenceChecksum,
  ReferenceBook,
};
