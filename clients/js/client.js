/*
 * exchange-stream browser client: connection, ops, reconnect and a checksummed order book.
 *
 * A plain script with no dependencies and no build step. Loaded with
 *   <script src="client.js"></script>
 * it defines `window.ExchangeStream` = { Client, OrderBook, crc32, bookChecksum,
 * compareDecimal, isZero, ProtocolError, ConnectionClosed }.  Under CommonJS (Node) the same
 * object is `module.exports`.  See docs/client.md.
 */
(function (root, factory) {
  "use strict";
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.ExchangeStream = api;
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";

  const PRIVATE_TYPES = ["balance", "order", "position", "account"];

  /**
   * What a close code asks of the client: "never" (a client bug, or 4000-4099: reconnecting
   * would only repeat it), "now" (4200-4299: the node is going away, come back at once, after
   * the delay its notice gives) or "backoff" (everything else, 4100-4199 included).
   */
  function closePolicy(code) {
    if (code === 1003 || code === 1007 || code === 1009) return "never";
    if (code >= 4000 && code <= 4099) return "never";
    if (code >= 4200 && code <= 4299) return "now";
    return "backoff";
  }

  /* ---------------------------------------------------------------- CRC32 (IEEE) */

  const CRC_TABLE = (function () {
    const table = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c;
    }
    return table;
  })();

  const encoder = typeof TextEncoder !== "undefined" ? new TextEncoder() : null;

  /** CRC32 of a string's UTF-8 bytes, as a signed 32-bit integer (OKX's convention). */
  function crc32(text) {
    const bytes = encoder ? encoder.encode(text) : Buffer.from(text, "utf8");
    let crc = -1;
    for (let i = 0; i < bytes.length; i++) {
      crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
    }
    return (crc ^ -1) | 0;
  }

  /* ------------------------------------------------------------ decimal strings */

  /** True when a decimal string is zero ("0", "0.000", "-0"). */
  function isZero(text) {
    return /^[-+]?0*\.?0*$/.test(text) && text !== "";
  }

  /** Exact order of two non-negative decimal strings (-1, 0, 1), without float rounding. */
  function compareDecimal(a, b) {
    if (a === b) return 0;
    const [ai, af = ""] = a.split(".");
    const [bi, bf = ""] = b.split(".");
    const aInt = ai.replace(/^0+/, "");
    const bInt = bi.replace(/^0+/, "");
    if (aInt.length !== bInt.length) return aInt.length < bInt.length ? -1 : 1;
    if (aInt !== bInt) return aInt < bInt ? -1 : 1;
    const width = Math.max(af.length, bf.length);
    const aFrac = af.padEnd(width, "0");
    const bFrac = bf.padEnd(width, "0");
    if (aFrac === bFrac) return 0;
    return aFrac < bFrac ? -1 : 1;
  }

  /**
   * OKX's book checksum: CRC32 (signed) of the top `levels` levels, bid and ask interleaved,
   * "bid1p:bid1q:ask1p:ask1q:bid2p:..."; a shorter side just ends. Sides are [[price, qty]]
   * best first, as the strings arrived.
   */
  function bookChecksum(bids, asks, levels) {
    const depth = levels || 25;
    const parts = [];
    for (let i = 0; i < depth; i++) {
      if (i < bids.length) parts.push(bids[i][0], bids[i][1]);
      if (i < asks.length) parts.push(asks[i][0], asks[i][1]);
    }
    return crc32(parts.join(":"));
  }

  /* ------------------------------------------------------------------- errors */

  /** An error answer from the gateway: {code, msg[, channel]}. */
  class ProtocolError extends Error {
    constructor(answer) {
      super(`${answer.msg || "error"} (code ${answer.code})`);
      this.name = "ProtocolError";
      this.code = answer.code;
      this.channel = answer.channel;
      this.answer = answer;
    }
  }

  /** The connection closed before the request was answered. */
  class ConnectionClosed extends Error {
    constructor(message) {
      super(message || "connection closed");
      this.name = "ConnectionClosed";
    }
  }

  /** A subscribe given up before it was confirmed (the channel was unsubscribed meanwhile). */
  class Cancelled extends Error {
    constructor(message) {
      super(message || "cancelled");
      this.name = "Cancelled";
    }
  }

  function isPrivate(channel) {
    return channel.charAt(0) === "@";
  }

  /** A stream position as the gateway gives it: {epoch: string, offset: integer >= 0}. */
  function isPosition(pos) {
    return (
      pos !== null && typeof pos === "object" && typeof pos.epoch === "string" &&
      Number.isSafeInteger(pos.offset) && pos.offset >= 0
    );
  }

  function asList(channels) {
    const list = Array.isArray(channels) ? channels : [channels];
    return Array.from(new Set(list));
  }

  /* ------------------------------------------------------------------- Client */

  /**
   * One WebSocket connection to the gateway, kept alive.
   *
   * The client holds the *desired* state (token, channels) and reconciles the connection with
   * it: after every (re)connect it authenticates and subscribes everything again. auth(),
   * subscribe() and unsubscribe() return Promises settled by the gateway's answers.
   *
   * On stream channels (orders, balances, trades, ...) it keeps the position of the last push
   * handled and resumes from it on every new subscribe, so that a reconnect, a drain or an
   * offset gap loses nothing; when the gateway cannot replay, it emits "lost".
   */
  class Client {
    constructor(url, options) {
      const opts = options || {};
      this.url = url;
      this.pingInterval = opts.pingInterval ?? 20000;
      this.pongTimeout = opts.pongTimeout ?? 15000;
      // A handshake that neither opens nor fails (a black-holed network; Node's WebSocket when
      // the peer closes before answering) is given up after this, and retried with back-off.
      this.connectTimeout = opts.connectTimeout ?? 10000;
      this.minBackoff = opts.minBackoff ?? 500;
      this.maxBackoff = opts.maxBackoff ?? 30000;
      this.stableAfter = opts.stableAfter ?? 10000;
      this.maxInFlight = opts.maxInFlight ?? 16;
      // Below the gateway's default op rate (10/s, burst 20), so that no op is refused.
      this.opRate = opts.opRate ?? 8;
      this.opBurst = opts.opBurst ?? 10;
      this.WebSocket = opts.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
      this.recover = opts.recover ?? true; // ask for positions and resume from them

      this.status = "idle"; // idle | connecting | open | ready | reconnecting | closed | failed
      this.stats = {
        connects: 0, reconnects: 0, messages: 0, pongs: 0, malformed: 0, rtt: null,
        recovered: 0, lost: 0, gaps: 0, duplicates: 0,
      };
      this.lastError = null;

      this._ws = null;
      this._wanted = false; // connect() called and close() not
      this._attempt = 0;
      this._reconnectTimer = null;
      this._pingTimer = null;
      this._pongTimer = null;
      this._connectTimer = null;
      this._openedAt = 0;

      this._nextId = 1;
      this._pending = new Map(); // id -> {resolve, reject, ws}
      this._queue = []; // requests waiting for an in-flight slot or the op rate
      this._tokens = 0; // op-rate token bucket
      this._tokensAt = 0;
      this._pumpTimer = null;
      this._refused = 0; // code 8 answers without an id not yet matched to a request
      this._reconnectNowIn = null; // from a "reconnect" notice

      this._token = null; // desired login
      this._authed = null; // token the current connection is logged in with
      this._authWaiters = [];
      this._authBusy = null; // the connection an auth loop runs on
      this._desired = new Set(); // channels we want
      this._confirmed = new Set(); // channels the current connection has
      this._inflight = new Map(); // channel -> request id of its pending subscribe
      this._chanWaiters = new Map(); // channel -> [{resolve, reject}]
      this._ready = false; // resume (auth + resubscribe) finished on this connection

      // Stream positions: channel -> {epoch, offset} of the last push handled (or, before the
      // first, the position the subscribe's answer gave).
      this._positions = new Map();
      for (const [ch, pos] of Object.entries(opts.positions || {})) {
        if (isPosition(pos)) this._positions.set(ch, { epoch: pos.epoch, offset: pos.offset });
      }
      // Private positions of the previous login, until a subscribe's answer tells whether
      // the gateway kept the subscription (the same uid) or started another user's stream.
      this._previousLogin = new Map();
      this._resuming = new Set(); // channels resubscribed after an offset gap
      this._streamAttempt = 0; // code 9 retries since the last subscribe that worked
      this._streamTimer = null;

      this._events = new Map(); // lifecycle event -> Set(fn)
      this._handlers = new Map(); // channel (or "*") -> Set(fn)
    }

    /* ---- lifecycle events: status, open, ready, close, message, error, pong, authfailed */

    on(name, fn) {
      if (!this._events.has(name)) this._events.set(name, new Set());
      this._events.get(name).add(fn);
      return () => this.off(name, fn);
    }

    off(name, fn) {
      const set = this._events.get(name);
      if (set) set.delete(fn);
    }

    _emit(name, ...args) {
      const set = this._events.get(name);
      if (!set) return;
      for (const fn of Array.from(set)) {
        try {
          fn(...args);
        } catch (err) {
          if (name !== "error") this._emit("error", err);
          else console.error(err);
        }
      }
    }

    /* ---- channel pushes */

    /** Call fn(data, channel, message) for every push on `channel` ("*": every push). */
    onEvent(channel, fn) {
      if (!this._handlers.has(channel)) this._handlers.set(channel, new Set());
      this._handlers.get(channel).add(fn);
      return () => this.offEvent(channel, fn);
    }

    offEvent(channel, fn) {
      const set = this._handlers.get(channel);
      if (set) {
        set.delete(fn);
        if (!set.size) this._handlers.delete(channel);
      }
    }

    _dispatch(message) {
      if (typeof message.offset === "number" && !this._inOrder(message)) return;
      for (const key of [message.event, "*"]) {
        const set = this._handlers.get(key);
        if (!set) continue;
        for (const fn of Array.from(set)) {
          try {
            fn(message.data, message.event, message);
          } catch (err) {
            this._emit("error", err);
          }
        }
      }
    }

    /**
     * Whether a positioned push is the next one of its stream: an offset already handled is
     * a duplicate (dropped); one past the next is a gap, and the channel is resubscribed from
     * the position held, so that the gateway replays what is missing (or says "lost").
     */
    _inOrder(message) {
      const ch = message.event;
      const position = this._positions.get(ch) || this._previousLogin.get(ch);
      if (!position) return true; // no epoch known to count in
      if (message.offset <= position.offset) {
        this.stats.duplicates++;
        return false;
      }
      if (message.offset === position.offset + 1) {
        position.offset = message.offset;
        return true;
      }
      if (this._resuming.has(ch)) return false; // the resume replays it
      this.stats.gaps++;
      this._emit("gap", ch, { ...position }, message.offset);
      if (this._confirmed.has(ch)) {
        this._resuming.add(ch);
        this.resubscribe(ch).catch(() => {}); // a reconnect resumes from the position anyway
        return false;
      }
      // Between a login change and its subscribe's answer: nothing to resume from.
      position.offset = message.offset;
      this.stats.lost++;
      this._emit("lost", ch, { ...position }, null);
      return true;
    }

    /** The positions held, {channel: {epoch, offset}}: to keep across a page reload. */
    get positions() {
      const out = {};
      for (const [ch, pos] of this._positions) out[ch] = { epoch: pos.epoch, offset: pos.offset };
      return out;
    }

    _forgetPrivatePositions() {
      for (const ch of Array.from(this._positions.keys())) {
        if (isPrivate(ch)) this._positions.delete(ch);
      }
      this._previousLogin.clear();
    }

    /* ---- connection */

    _setStatus(status) {
      if (this.status === status) return;
      this.status = status;
      this._emit("status", status);
    }

    get connected() {
      return this.status === "open" || this.status === "ready";
    }

    /** Open the connection (and keep it open until close()). Returns this. */
    connect(url) {
      if (url) this.url = url;
      this._wanted = true;
      if (!this._ws && !this._reconnectTimer) this._open();
      return this;
    }

    /** Close for good: no reconnect. Pending requests reject with ConnectionClosed. */
    close() {
      this._wanted = false;
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
      const ws = this._ws;
      this._teardown(new ConnectionClosed("closed by the client"));
      if (ws) ws.close(1000, "bye");
      this._setStatus("closed");
    }

    _open() {
      this._reconnectTimer = null;
      this._setStatus(this.stats.connects ? "reconnecting" : "connecting");
      let ws;
      try {
        ws = new this.WebSocket(this.url);
      } catch (err) {
        this.lastError = err;
        this._emit("error", err);
        this._scheduleReconnect();
        return;
      }
      this._ws = ws;
      this._connectTimer = setTimeout(() => {
        if (ws !== this._ws) return;
        this.lastError = new Error("connect timeout: reconnecting");
        this._emit("error", this.lastError);
        this._lost(1006, "connect timeout", "backoff");
        ws.close();
      }, this.connectTimeout);
      ws.onopen = () => {
        if (ws !== this._ws) return;
        clearTimeout(this._connectTimer);
        this._connectTimer = null;
        this._openedAt = Date.now();
        this._tokens = this.opBurst;
        this._tokensAt = this._openedAt;
        if (this.stats.connects++) this.stats.reconnects++;
        this._setStatus("open");
        this._emit("open");
        this._startPing();
        this._resume(ws);
      };
      ws.onmessage = (ev) => {
        if (ws === this._ws) this._receive(ev.data);
      };
      ws.onerror = () => {
        // Browsers give no detail here; onclose follows with the code.
      };
      ws.onclose = (ev) => {
        if (ws !== this._ws) return;
        this._lost(ev.code, ev.reason);
      };
    }

    /** The connection ended (`policy`: as closePolicy(code) unless the client decided). */
    _lost(code, reason, policy) {
      const stable = this._openedAt && Date.now() - this._openedAt >= this.stableAfter;
      const noticeDelay = this._reconnectNowIn;
      this._reconnectNowIn = null;
      this._teardown(new ConnectionClosed(`connection closed (${code})`));
      this._emit("close", { code, reason });
      if (!this._wanted) {
        this._setStatus("closed");
        return;
      }
      const what = policy || closePolicy(code);
      if (what === "never") {
        this.lastError = new Error(`gateway closed with ${code} ${reason || ""}: not reconnecting`);
        this._emit("error", this.lastError);
        this._setStatus("failed");
        return;
      }
      if (what === "now") {
        // "reconnect in N ms" from the notice, or the close reason; else within a second.
        const said = /reconnect in (\d+) ms/.exec(reason || "");
        let delay = noticeDelay ?? (said ? Number(said[1]) : Math.random() * 1000);
        delay = Math.min(Math.max(0, delay), this.maxBackoff);
        this._attempt = 0;
        this._scheduleReconnect(delay);
        return;
      }
      if (stable) this._attempt = 0;
      this._scheduleReconnect();
    }

    /** Full jitter: a random delay in [0, min(max, min * 2^attempt)). */
    nextBackoff() {
      const cap = Math.min(this.maxBackoff, this.minBackoff * Math.pow(2, this._attempt));
      this._attempt++;
      return Math.random() * cap;
    }

    _scheduleReconnect(fixedDelay) {
      if (!this._wanted) return;
      const delay = fixedDelay ?? this.nextBackoff();
      this._setStatus("reconnecting");
      this._emit("reconnecting", delay);
      this._reconnectTimer = setTimeout(() => this._open(), delay);
    }

    _teardown(error) {
      clearInterval(this._pingTimer);
      clearTimeout(this._pongTimer);
      clearTimeout(this._connectTimer);
      this._pingTimer = this._pongTimer = this._connectTimer = null;
      this._openedAt = 0;
      const ws = this._ws;
      this._ws = null;
      if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      this._ready = false;
      this._authed = null;
      this._confirmed.clear();
      this._inflight.clear();
      clearTimeout(this._pumpTimer);
      this._pumpTimer = null;
      clearTimeout(this._streamTimer);
      this._streamTimer = null;
      this._resuming.clear();
      this._refused = 0;
      const pending = Array.from(this._pending.values()).concat(this._queue);
      this._pending.clear();
      this._queue = [];
      for (const p of pending) p.reject(error);
      // Auth and subscribe waiters stay: the next connection's resume settles them.
    }

    /* ---- keepalive */

    _startPing() {
      clearInterval(this._pingTimer);
      this._pingTimer = setInterval(() => this.ping().catch(() => {}), this.pingInterval);
    }

    /** Send {"op":"ping"}; resolves with the round trip in ms. No pong in time → reconnect. */
    ping() {
      const ws = this._ws;
      const sent = Date.now();
      if (!this._pongTimer && ws) {
        this._pongTimer = setTimeout(() => {
          this._pongTimer = null;
          if (ws === this._ws) {
            this._emit("error", new Error("no pong: reconnecting"));
            this._lost(4100, "pong timeout", "backoff");
            ws.close(1000, "pong timeout");
          }
        }, this.pongTimeout);
      }
      const answered = () => {
        clearTimeout(this._pongTimer);
        this._pongTimer = null;
      };
      return this.request({ op: "ping" }).then(
        (answer) => {
          answered();
          this.stats.pongs++;
          this.stats.rtt = Date.now() - sent;
          this._emit("pong", answer, this.stats.rtt);
          return this.stats.rtt;
        },
        (err) => {
          if (err instanceof ProtocolError) answered(); // refused, but the gateway is there
          throw err;
        },
      );
    }

    /* ---- requests */

    /**
     * Send one op (an object; an `id` is added) and resolve with its answer, or reject with a
     * ProtocolError (code answer) or ConnectionClosed. Rejects at once when not connected.
     */
    request(op) {
      return this._request(op, null);
    }

    /**
     * request(), and `onAnswer(answer)` run as the success answer arrives: before the frames
     * after it (a Promise's callbacks would run only after the rest of a batch of frames).
     */
    _request(op, onAnswer) {
      const ws = this._ws;
      if (!ws || !this.connected) {
        return Promise.reject(new ConnectionClosed("not connected"));
      }
      return new Promise((resolve, reject) => {
        const id = this._nextId++;
        this._queue.push({ id, op: Object.assign({}, op, { id }), resolve, reject, ws, onAnswer });
        this._pump();
      });
    }

    /** Send queued ops while in-flight slots and op-rate tokens allow; else wait for one. */
    _pump() {
      while (this._queue.length && this._pending.size < this.maxInFlight) {
        const now = Date.now();
        this._tokens = Math.min(
          this.opBurst,
          this._tokens + ((now - this._tokensAt) * this.opRate) / 1000,
        );
        this._tokensAt = now;
        if (this._tokens < 1) {
          if (!this._pumpTimer) {
            const wait = Math.ceil(((1 - this._tokens) * 1000) / this.opRate);
            this._pumpTimer = setTimeout(() => {
              this._pumpTimer = null;
              this._pump();
            }, wait);
          }
          return;
        }
        this._tokens -= 1;
        const entry = this._queue.shift();
        this._pending.set(entry.id, entry);
        entry.ws.send(JSON.stringify(entry.op));
      }
    }

    /**
     * Answers come in request order, and a refused op (code 8) is answered at once without
     * its id: so when the answer to `id` arrives, every op sent before it and still waiting
     * was refused; and once only refused ops are waiting, all of them were.
     */
    _settleRefused(answeredId) {
      const refused = new ProtocolError({ code: 8, msg: "Rate limited" });
      for (const [id, entry] of Array.from(this._pending)) {
        if (answeredId !== undefined && id >= answeredId) break;
        if (answeredId === undefined && this._pending.size > this._refused) break;
        this._pending.delete(id);
        this._refused = Math.max(0, this._refused - 1);
        entry.reject(refused);
      }
    }

    _receive(text) {
      this.stats.messages++;
      let message;
      try {
        message = JSON.parse(text);
      } catch (err) {
        this._malformed("not JSON", text);
        return;
      }
      if (message === null || typeof message !== "object" || Array.isArray(message)) {
        this._malformed("not an object", text);
        return;
      }
      this._emit("message", message);
      if (message.event === "notice") {
        this._notice(message.data || {});
        return;
      }
      if (typeof message.event === "string") {
        this._dispatch(message);
        return;
      }
      if ("id" in message && this._pending.has(message.id)) {
        const entry = this._pending.get(message.id);
        this._pending.delete(message.id);
        if (this._refused) {
          this._settleRefused(message.id);
          this._settleRefused();
        }
        if ("code" in message) {
          entry.reject(new ProtocolError(message));
        } else {
          if (entry.onAnswer) entry.onAnswer(message);
          entry.resolve(message);
        }
        this._pump();
        return;
      }
      if ("code" in message) {
        // No id: code 8 (an op refused over the rate limit) or 2 (an id of a wrong type).
        const err = new ProtocolError(message);
        this.lastError = err;
        if (message.code === 8) {
          this._refused++;
          this._settleRefused();
          this._pump();
        }
        this._emit("error", err);
        return;
      }
      this._malformed("answer to no pending request", text);
    }

    /**
     * {"event":"notice","data":{"type":...}} from the gateway itself:
     * "reconnect" (the node is going away; a 4200 close follows) → reconnect after
     * `reconnectInMs`; any other type with `channels` (the login ended, e.g. "auth_expired")
     * → those private channels are gone: forget the token and them, emit "loggedout".
     */
    _notice(data) {
      this._emit("notice", data);
      if (data.type === "reconnect") {
        if (typeof data.reconnectInMs === "number") this._reconnectNowIn = data.reconnectInMs;
        return;
      }
      if (Array.isArray(data.channels)) {
        const token = this._token;
        this._token = null;
        this._authed = null;
        for (const ch of data.channels) this._confirmed.delete(ch);
        const gone = Array.from(this._desired).filter(isPrivate);
        const err = new Error(`logged out by the gateway (${data.type})`);
        this._settleAuth(null, err);
        this._rejectChannels(gone, err);
        for (const ch of gone) this._confirmed.delete(ch);
        this._forgetPrivatePositions();
        this._emit("loggedout", data, token);
      }
    }

    _malformed(why, text) {
      this.stats.malformed++;
      const err = new Error(`malformed message (${why}): ${String(text).slice(0, 200)}`);
      this.lastError = err;
      this._emit("error", err);
    }

    /* ---- auth */

    /**
     * Log in with `token`; kept for every reconnect. Resolves when the gateway accepts it
     * (on the current connection, or on the next one when disconnected); rejects with a
     * ProtocolError (5 Auth failed, 6 Auth unavailable).
     */
    auth(token) {
      if (this._token !== null && token !== this._token) {
        // Maybe another user: resume nothing private from the previous login's positions.
        for (const [ch, pos] of this._positions) {
          if (isPrivate(ch)) this._previousLogin.set(ch, pos);
        }
        for (const ch of this._previousLogin.keys()) this._positions.delete(ch);
      }
      this._token = token;
      const waiter = new Promise((resolve, reject) => {
        this._authWaiters.push({ token, resolve, reject });
      });
      if (this._ready) this._doAuth(this._ws);
      return waiter;
    }

    /** Forget the token and drop private channels (the gateway has no logout op). */
    logout() {
      this._token = null;
      this._forgetPrivatePositions();
      const privates = Array.from(this._desired).filter(isPrivate);
      this._settleAuth(null, new Error("logged out"));
      return privates.length ? this.unsubscribe(privates) : Promise.resolve();
    }

    get token() {
      return this._token;
    }

    get authenticated() {
      return this._authed !== null && this._authed === this._token;
    }

    _settleAuth(token, error) {
      const waiters = this._authWaiters;
      this._authWaiters = [];
      for (const w of waiters) {
        if (error) w.reject(error);
        else if (w.token === token) w.resolve(true);
        else this._authWaiters.push(w); // superseded by a later auth(): keep waiting
      }
    }

    /** Send the kept token until the connection is logged in with the latest one. */
    async _doAuth(ws) {
      // The auth in flight checks the token again after. (One begun on a connection that has
      // since dropped does not count: it ends when its promise rejects, maybe after this.)
      if (this._authBusy === ws) return true;
      this._authBusy = ws;
      try {
        for (;;) {
          const token = this._token;
          if (token === null || ws !== this._ws) return ws === this._ws;
          if (token === this._authed) {
            this._settleAuth(token, null);
            if (this._ready) this._syncChannels(ws);
            return true;
          }
          try {
            await this.request({ op: "auth", token });
          } catch (err) {
            if (ws !== this._ws) return false; // connection lost: the next resume retries
            if (token !== this._token) continue; // superseded meanwhile
            if (err instanceof ProtocolError && err.code === 6) {
              // Back end unavailable: keep the token, retry on a fresh connection later.
              this._settleAuth(token, err);
              this._emit("authfailed", err);
              this._lost(4100, "auth unavailable", "backoff");
              ws.close(1000, "auth unavailable");
              return false;
            }
            this._token = null;
            this._forgetPrivatePositions();
            this._settleAuth(token, err);
            this._emit("authfailed", err);
            this._rejectChannels(Array.from(this._desired).filter(isPrivate), err);
            return true;
          }
          if (ws !== this._ws) return false;
          if (this._authed !== null) {
            // Another login drops the previous uid's private subscriptions on the gateway
            // (the same uid keeps them; subscribing again is then a no-op).
            for (const ch of Array.from(this._confirmed)) {
              if (isPrivate(ch)) this._confirmed.delete(ch);
            }
          }
          this._authed = token;
          this._settleAuth(token, null);
          if (this._ready) this._syncChannels(ws);
        }
      } finally {
        if (this._authBusy === ws) this._authBusy = null;
      }
    }

    /* ---- channels */

    /**
     * Subscribe to one channel or a list; kept across reconnects. `handler`, if given, is
     * added with onEvent for each channel. Resolves once the gateway confirmed every channel
     * (the snapshot, if any, follows); rejects with a ProtocolError naming the refusal.
     */
    subscribe(channels, handler) {
      const list = asList(channels);
      if (handler) for (const ch of list) this.onEvent(ch, handler);
      const waits = list.map((ch) => {
        this._desired.add(ch);
        if (this._confirmed.has(ch)) return Promise.resolve(true);
        return new Promise((resolve, reject) => {
          if (!this._chanWaiters.has(ch)) this._chanWaiters.set(ch, []);
          this._chanWaiters.get(ch).push({ resolve, reject });
        });
      });
      if (this._ready) this._syncChannels(this._ws);
      return Promise.all(waits).then(() => true);
    }

    /** Unsubscribe one channel or a list (handlers stay; remove them with offEvent). */
    unsubscribe(channels) {
      return this._unsubscribe(asList(channels), true);
    }

    _unsubscribe(list, forgetPositions) {
      const live = [];
      for (const ch of list) {
        if (forgetPositions) this._positions.delete(ch);
        this._desired.delete(ch);
        this._rejectChannels([ch], new Cancelled(`unsubscribed from ${ch}`));
        if (this._confirmed.has(ch) || this._inflight.has(ch)) live.push(ch);
        this._confirmed.delete(ch);
        this._inflight.delete(ch);
      }
      if (!live.length || !this.connected) return Promise.resolve(true);
      return this.request({ op: "unsubscribe", channels: live }).then(() => true);
    }

    /**
     * Unsubscribe and subscribe again: the gateway then sends the channel's current
     * snapshot first (the way to heal a state channel, an order book after a gap), or, on a
     * stream channel, what followed the position held.
     */
    resubscribe(channel) {
      const off = this._unsubscribe([channel], false).catch(() => true);
      const on = this.subscribe(channel);
      return Promise.all([off, on]).then(() => true);
    }

    /** Channels wanted (subscribed or to be subscribed on the next connection). */
    get channels() {
      return Array.from(this._desired);
    }

    _resolveChannel(ch) {
      const waiters = this._chanWaiters.get(ch);
      this._chanWaiters.delete(ch);
      if (waiters) for (const w of waiters) w.resolve(true);
    }

    _rejectChannels(list, error) {
      for (const ch of list) {
        this._desired.delete(ch);
        const waiters = this._chanWaiters.get(ch);
        this._chanWaiters.delete(ch);
        if (waiters) for (const w of waiters) w.reject(error);
      }
    }

    /** Subscribe every desired channel the connection does not have yet, in one batch. */
    _syncChannels(ws) {
      if (ws !== this._ws || !this.connected) return;
      const canPrivate = this.authenticated;
      const batch = Array.from(this._desired).filter(
        (ch) =>
          !this._confirmed.has(ch) && !this._inflight.has(ch) && (canPrivate || !isPrivate(ch)),
      );
      if (!canPrivate && this._token === null) {
        const orphans = Array.from(this._desired).filter(isPrivate);
        if (orphans.length) {
          this._rejectChannels(orphans, new ProtocolError({ code: 1, msg: "Not Auth" }));
        }
      }
      if (!batch.length) return;
      const id = this._nextId; // the id request() is about to use
      for (const ch of batch) this._inflight.set(ch, id);
      const op = { op: "subscribe", channels: batch };
      const since = {};
      if (this.recover) {
        op.recover = true;
        for (const ch of batch) {
          const pos = this._positions.get(ch);
          if (pos) since[ch] = { epoch: pos.epoch, offset: pos.offset };
        }
        if (Object.keys(since).length) op.since = since;
      }
      const confirmed = (answer) => {
        this._streamAttempt = 0;
        const streams = answer.streams || {};
        for (const ch of batch) {
          if (this._inflight.get(ch) !== id) continue; // unsubscribed meanwhile
          this._inflight.delete(ch);
          if (!this._desired.has(ch)) continue;
          this._confirmed.add(ch);
          this._resuming.delete(ch);
          this._position(ch, streams[ch], since[ch]);
          this._resolveChannel(ch);
          this._emit("subscribed", ch);
        }
      };
      this._request(op, confirmed).then(
        () => {},
        (err) => {
          if (!(err instanceof ProtocolError) || ws !== this._ws) return; // lost: resume
          const mine = batch.filter((ch) => this._inflight.get(ch) === id);
          for (const ch of mine) this._inflight.delete(ch);
          if (err.code === 9) {
            // Positions could not be read (the mesh's Redis is down); nothing was
            // subscribed. Try the same again later rather than subscribe without them.
            this._emit("error", err);
            this._retryStreams(ws);
            return;
          }
          // All or nothing: drop only the channel(s) at fault, then try the rest again.
          let bad;
          if (err.code === 4 && err.channel && mine.includes(err.channel)) bad = [err.channel];
          else if (err.code === 1) bad = mine.filter(isPrivate);
          if (!bad || !bad.length) bad = mine;
          this._rejectChannels(bad, err);
          this._emit("error", err);
          this._syncChannels(ws);
        },
      );
    }

    /**
     * What a subscribe's answer says of a channel's position: `given` is its entry in
     * "streams" (none for a state channel, or one the gateway already had), `sent` the
     * position the subscribe resumed from. Emits "recovered" or "lost".
     */
    _position(ch, given, sent) {
      const previous = this._previousLogin.get(ch);
      this._previousLogin.delete(ch);
      if (!isPosition(given)) {
        // Still subscribed under the new token (the same user): the old count goes on.
        if (previous) this._positions.set(ch, previous);
        return;
      }
      const now = { epoch: given.epoch, offset: given.offset };
      if (sent && given.recovered === true) {
        // The pushes after `sent` follow: count on from where the client is.
        const held = this._positions.get(ch);
        if (held) held.epoch = given.epoch;
        this.stats.recovered++;
        this._emit("recovered", ch, now);
        return;
      }
      this._positions.set(ch, now);
      if (sent || previous) {
        // Not served (another epoch, older than the history), or a login changed: what
        // happened meanwhile is unknown, so fetch the state.
        this.stats.lost++;
        this._emit("lost", ch, now, sent || null);
      }
    }

    /** Subscribe the channels refused with code 9 again after a back-off. */
    _retryStreams(ws) {
      if (this._streamTimer) return;
      const cap = Math.min(this.maxBackoff, this.minBackoff * Math.pow(2, this._streamAttempt));
      this._streamAttempt++;
      this._streamTimer = setTimeout(() => {
        this._streamTimer = null;
        this._syncChannels(ws);
      }, Math.random() * cap);
    }

    /** After a (re)connect: auth with the kept token, then subscribe everything again. */
    async _resume(ws) {
      if (this._token !== null) {
        const ok = await this._doAuth(ws);
        if (!ok || ws !== this._ws) return;
      }
      this._ready = true;
      this._setStatus("ready");
      this._syncChannels(ws);
      this._emit("ready");
    }
  }

  /* ---------------------------------------------------------------- OrderBook */

  /**
   * Keeps one `<symbol>@depth` book in step with the gateway and verifies it.
   *
   * snapshot → replace the book; update → apply only when update.prevSeq == seq (skip when
   * update.seq <= seq); a gap or a checksum mismatch → resync (unsubscribe + subscribe, which
   * brings a fresh snapshot). Levels are kept by their price string exactly as sent.
   */
  class OrderBook {
    constructor(client, symbol, options) {
      const opts = options || {};
      this.client = client;
      this.symbol = symbol;
      this.channel = `${symbol}@depth`;
      this.checksumLevels = opts.checksumLevels ?? 25;
      this.onChange = opts.onChange || null;
      this.onProblem = opts.onProblem || null;
      this.bids = new Map(); // price string -> qty string
      this.asks = new Map();
      this._bidPrices = []; // price strings, best (highest) first
      this._askPrices = []; // price strings, best (lowest) first
      this.seq = null; // null: waiting for a snapshot
      this.ts = null;
      this.stats = {
        snapshots: 0,
        updates: 0,
        stale: 0,
        checksumsOk: 0,
        mismatches: 0,
        gaps: 0,
        resyncs: 0,
        malformed: 0,
      };
      this.problems = []; // last few {kind, detail, ts}
      this._resyncing = false;
      this._failures = 0; // consecutive resyncs without a verified message between
      this._resyncTimer = null;
      this._handler = (data) => this.handle(data);
      this._offClose = null;
      this._offSubscribed = null;
      this._answered = false; // the subscribe was answered: a snapshot, if any, comes next
      this._started = false;
    }

    /** Subscribe and start keeping the book. Resolves with the subscribe's answer. */
    start() {
      if (this._started) return Promise.resolve(true);
      this._started = true;
      this.client.onEvent(this.channel, this._handler);
      // A new connection sends a fresh snapshot first; updates until then are not ours.
      this._offClose = this.client.on("close", () => {
        this.seq = null;
        this._answered = false;
        this._resyncing = false;
        clearTimeout(this._resyncTimer); // the reconnect subscribes again anyway
      });
      this._offSubscribed = this.client.on("subscribed", (channel) => {
        if (channel !== this.channel) return;
        this._answered = true;
        this._resyncing = false; // answered: the snapshot, if the gateway has one, is next
      });
      return this.client.subscribe(this.channel).then((answer) => {
        this._answered = true; // also when the channel was already subscribed
        return answer;
      });
    }

    stop() {
      if (!this._started) return Promise.resolve(true);
      this._started = false;
      clearTimeout(this._resyncTimer);
      this.client.offEvent(this.channel, this._handler);
      if (this._offClose) this._offClose();
      if (this._offSubscribed) this._offSubscribed();
      return this.client.unsubscribe(this.channel);
    }

    /** Feed one `data` object of the depth channel. */
    handle(data) {
      if (!data || typeof data !== "object" || !Array.isArray(data.bids) ||
          !Array.isArray(data.asks) || typeof data.seq !== "number") {
        this._problem("malformed", JSON.stringify(data).slice(0, 200));
        this.stats.malformed++;
        return;
      }
      if (data.type === "snapshot") {
        this._applySnapshot(data);
      } else if (data.type === "update") {
        if (this.seq === null) {
          // Waiting for a snapshot. Before our subscribe's answer, updates belong to an
          // earlier subscription; after it, an update first means there was no snapshot.
          if (!this._answered) {
            this.stats.stale++;
            return;
          }
          if (data.prevSeq !== 0) {
            this.stats.gaps++;
            this._problem("gap", `no snapshot before update seq ${data.seq}`);
            this.resync();
            return;
          }
          // The book's very first message (the gateway had nothing to send as a snapshot
          // when we subscribed): a diff from the empty book.
          this._clear();
          this.seq = 0;
        }
        if (data.seq <= this.seq) {
          this.stats.stale++; // already included
          return;
        }
        if (data.prevSeq !== this.seq) {
          this.stats.gaps++;
          this._problem("gap", `held seq ${this.seq}, got prevSeq ${data.prevSeq} seq ${data.seq}`);
          this.resync();
          return;
        }
        this._applyLevels(data.bids, this.bids, this._bidPrices, true);
        this._applyLevels(data.asks, this.asks, this._askPrices, false);
        this.seq = data.seq;
        this.stats.updates++;
      } else {
        this.stats.malformed++;
        this._problem("malformed", `unknown type ${JSON.stringify(data.type)}`);
        return;
      }
      this.ts = data.ts ?? null;
      if (this._verify(data)) {
        if (this.onChange) this.onChange(this, data);
      }
    }

    _clear() {
      this.bids.clear();
      this.asks.clear();
      this._bidPrices = [];
      this._askPrices = [];
    }

    _applySnapshot(data) {
      this._clear();
      this._applyLevels(data.bids, this.bids, this._bidPrices, true);
      this._applyLevels(data.asks, this.asks, this._askPrices, false);
      this.seq = data.seq;
      this.stats.snapshots++;
      this._resyncing = false;
    }

    _applyLevels(levels, map, prices, descending) {
      for (const level of levels) {
        if (!Array.isArray(level) || level.length < 2) {
          this.stats.malformed++;
          this._problem("malformed", `level ${JSON.stringify(level)}`);
          continue;
        }
        let [price, qty] = level;
        if (typeof price !== "string" || typeof qty !== "string") {
          // Numbers would lose the wire's spelling, and with it the checksum.
          this.stats.malformed++;
          this._problem("malformed", `non-string level ${JSON.stringify(level)}`);
          price = String(price);
          qty = String(qty);
        }
        const index = this._search(prices, price, descending);
        const present = index < prices.length && prices[index] === price;
        if (isZero(qty)) {
          if (present) {
            prices.splice(index, 1);
            map.delete(price);
          }
        } else {
          if (!present) prices.splice(index, 0, price);
          map.set(price, qty);
        }
      }
    }

    /** First index whose price is not better than `price` (binary search). */
    _search(prices, price, descending) {
      let lo = 0;
      let hi = prices.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const order = compareDecimal(prices[mid], price);
        const before = descending ? order > 0 : order < 0;
        if (before) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    }

    _verify(data) {
      if (typeof data.checksum !== "number") return true; // nothing to verify
      const mine = this.checksum();
      if (mine === data.checksum) {
        this.stats.checksumsOk++;
        this._failures = 0;
        return true;
      }
      this.stats.mismatches++;
      this._problem(
        "checksum",
        `${data.type} seq ${data.seq}: got ${data.checksum}, computed ${mine}`,
      );
      this.resync();
      return false;
    }

    /** The book's checksum now (top `checksumLevels` levels, as the gateway computes it). */
    checksum() {
      return bookChecksum(this.top("bids", this.checksumLevels),
        this.top("asks", this.checksumLevels), this.checksumLevels);
    }

    /** Top `n` levels of a side, best first, as [[price, qty]] strings. */
    top(side, n) {
      const prices = side === "bids" ? this._bidPrices : this._askPrices;
      const map = side === "bids" ? this.bids : this.asks;
      const count = Math.min(n ?? prices.length, prices.length);
      const out = new Array(count);
      for (let i = 0; i < count; i++) out[i] = [prices[i], map.get(prices[i])];
      return out;
    }

    get bestBid() {
      return this._bidPrices.length ? this._bidPrices[0] : null;
    }

    get bestAsk() {
      return this._askPrices.length ? this._askPrices[0] : null;
    }

    /** Ask the gateway for a fresh snapshot (unsubscribe + subscribe), with back-off. */
    resync() {
      if (this._resyncing) return;
      this._resyncing = true;
      this.seq = null; // wait for the fresh snapshot; ignore updates until it is asked for
      this._answered = false;
      this.stats.resyncs++;
      const delay = this._failures ? Math.min(30000, 500 * Math.pow(2, this._failures - 1)) : 0;
      this._failures++;
      clearTimeout(this._resyncTimer);
      this._resyncTimer = setTimeout(() => {
        if (!this._started) return;
        this.client.resubscribe(this.channel).catch(() => {
          // Not connected: the reconnect's resume subscribes and brings a snapshot.
        });
      }, delay);
    }

    _problem(kind, detail) {
      const entry = { kind, detail, ts: Date.now() };
      this.problems.push(entry);
      if (this.problems.length > 20) this.problems.shift();
      if (this.onProblem) this.onProblem(entry, this);
    }
  }

  return {
    Client,
    OrderBook,
    ProtocolError,
    ConnectionClosed,
    Cancelled,
    crc32,
    bookChecksum,
    compareDecimal,
    isZero,
    PRIVATE_TYPES,
    closePolicy,
  };
});
