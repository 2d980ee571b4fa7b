/*
 * exchange-stream live demo page: order book, trades, ticker, mark price, klines and the
 * private channels of a demo user, all from one WebSocket through client.js.
 *
 * The chart is TradingView's lightweight-charts (vendor/lightweight-charts), fed by the bars
 * history GET /v1/market/klines and the kline channel.
 *
 * Query parameters: ?ws=<url> (default: /exchange-stream on this host), ?history=<url> (default:
 * /v1/market/klines on the WebSocket's host), ?symbol=ETHUSDT, ?interval=5m. The page's state
 * is mirrored in window.demoState (read by the tests).
 *
 * The formatting functions come first, with no DOM in them: in a browser they are
 * window.DemoFormat, and Node can require() this file for them alone (tests/test_demo_page.py).
 */
(function (root) {
  "use strict";

  /* ------------------------------------------------------------------ formatting */

  /*
   * Prices and quantities are decimal strings on the wire, and they are shown from the
   * string: rounded, padded or grouped digit by digit, never through a float (which would
   * turn 0.1 + 0.2 into 0.30000000000000004 and lose digits past the 16th).
   */
  const Format = (function () {
    const DECIMAL = /^([+-]?)([0-9]+)(?:\.([0-9]*))?$/;
    const EMPTY = "\u2013"; // what the page shows for no value (an en dash)

    /** {sign, int, frac} of a plain decimal string, or null for anything else. */
    function parse(text) {
      const m = typeof text === "string" ? DECIMAL.exec(text) : null;
      if (!m) return null;
      const int = m[2].replace(/^0+(?=[0-9])/, ""); // "007" → "7"
      return { sign: m[1] === "-" ? "-" : "", int, frac: m[3] || "" };
    }

    function join(sign, int, frac) {
      const zero = !/[1-9]/.test(int + frac);
      return (sign && !zero ? "-" : "") + int + (frac ? `.${frac}` : "");
    }

    /** Digits after the point as written ("64000.60" → 2). */
    function places(text) {
      const d = parse(text);
      return d ? d.frac.length : 0;
    }

    /** Without trailing fractional zeros: "64000.60000000" → "64000.6", "63975.000" → "63975". */
    function trim(text) {
      const d = parse(text);
      if (!d) return text == null ? EMPTY : String(text);
      return join(d.sign, d.int, d.frac.replace(/0+$/, ""));
    }

    /** Exactly ``n`` places, rounded half away from zero on the digits, padded with zeros:
     * ("63986.44534765", 1) → "63986.4", ("0.59846", 4) → "0.5985", ("64000", 1) → "64000.0". */
    function fixed(text, n) {
      const d = parse(text);
      if (!d) return text == null ? EMPTY : String(text);
      if (d.frac.length <= n) return join(d.sign, d.int, d.frac.padEnd(n, "0"));
      let digits = d.int + d.frac.slice(0, n);
      if (d.frac.charAt(n) >= "5") {
        const out = digits.split("");
        let i = out.length - 1;
        for (; i >= 0 && out[i] === "9"; i--) out[i] = "0";
        if (i < 0) out.unshift("1");
        else out[i] = String(Number(out[i]) + 1);
        digits = out.join("");
      }
      const cut = digits.length - n;
      return join(d.sign, digits.slice(0, cut).replace(/^0+(?=[0-9])/, ""), digits.slice(cut));
    }

    /** Thousands separators in the integer part: "3315820805.874" → "3,315,820,805.874". */
    function group(text) {
      const d = parse(text);
      if (!d) return text == null ? EMPTY : String(text);
      return join(d.sign, d.int.replace(/\B(?=([0-9]{3})+$)/g, ","), d.frac);
    }

    /** A rate as a percentage with ``n`` places, by moving the point:
     * ("0.00049640", 4) → "0.0496". */
    function percent(text, n) {
      const d = parse(text);
      if (!d) return text == null ? EMPTY : String(text);
      const frac = d.frac.padEnd(2, "0");
      return fixed(join(d.sign, d.int + frac.slice(0, 2), frac.slice(2)), n);
    }

    /** A decimal string as a whole number of 10^-scale units (BigInt), for exact sums. */
    function units(text, scale) {
      const d = parse(text);
      if (!d || d.frac.length > scale) return null;
      const n = BigInt(d.int + d.frac.padEnd(scale, "0"));
      return d.sign ? -n : n;
    }

    /** The decimal string of ``units(…, scale)``. */
    function fromUnits(n, scale) {
      const neg = n < 0n;
      const digits = (neg ? -n : n).toString().padStart(scale + 1, "0");
      const cut = digits.length - scale;
      return join(neg ? "-" : "", digits.slice(0, cut), digits.slice(cut));
    }

    /** Running sums of quantities, exact, each with ``scale`` places (default: as many as
     * the most precise one has): (["0.1", "0.2", "0.05"]) → ["0.10", "0.30", "0.35"]. */
    function totals(qtys, scale = Math.max(0, ...qtys.map(places))) {
      let sum = 0n;
      return qtys.map((q) => {
        sum += units(q, scale) ?? 0n; // not a decimal, or finer than scale: not counted
        return fromUnits(sum, scale);
      });
    }

    /** "+1.5", "-0.2", "0.00" (no sign on a zero). */
    function signed(text) {
      const s = String(text);
      const d = parse(s);
      if (d && !/[1-9]/.test(d.int + d.frac)) return join("", d.int, d.frac);
      return s.startsWith("-") || s.startsWith("+") ? s : `+${s}`;
    }

    /* ---- private events as rows: a list of [text, class] parts */

    const str = (v) => (v == null || v === "" ? null : String(v));
    const num = (v) => (typeof v === "string" ? group(v) : str(v));

    /** The balance list of a ``@balance`` push, whichever field names it uses: the demo's
     * ``balances: [{asset, available, locked}]`` or the tour's ``balance: [{currency,
     * available, unavailable}]``; items {asset, free, locked}. */
    function balanceItems(data) {
      const list = data && (Array.isArray(data.balances) ? data.balances
        : Array.isArray(data.balance) ? data.balance : null);
      if (!list) return null;
      return list.filter((item) => item && typeof item === "object").map((item) => ({
        asset: String(item.asset ?? item.currency ?? "?"),
        free: str(item.available ?? item.free) ?? EMPTY,
        locked: str(item.locked ?? item.unavailable ?? item.frozen) ?? "0",
      }));
    }

    function balanceParts(items) {
      const parts = [];
      for (const b of items) {
        parts.push([b.asset, "asset"], ["free", "label"], [num(b.free), "num"],
          ["locked", "label"], [num(b.locked), "num"]);
      }
      return parts;
    }

    // ``price(symbol, text)`` shows a price (the page pads it to the symbol's tick precision);
    // prices and sizes are not grouped, as in the book and the trades.
    function orderParts(o, price) {
      const side = str(o.side);
      const parts = [];
      if (side) parts.push([side.toUpperCase(), /^s/i.test(side) ? "sell" : "buy"]);
      if (str(o.symbol)) parts.push([o.symbol, "symbol"]);
      const qty = str(o.qty ?? o.quantity ?? o.origQty);
      if (qty) parts.push([qty, "num"]);
      if (str(o.price)) parts.push(["@", "label"], [price(o.symbol, String(o.price)), "num"]);
      const filled = str(o.filledQty ?? o.executedQty);
      if (filled) parts.push(["filled", "label"], [filled, "num"]);
      if (str(o.status)) parts.push([String(o.status).replace(/_/g, " "), `state ${o.status}`]);
      const id = str(o.orderId ?? o.id);
      if (id) parts.push([`#${id}`, "label"]);
      return parts;
    }

    function positionParts(p, price) {
      const side = str(p.side);
      const parts = [];
      if (str(p.symbol)) parts.push([p.symbol, "symbol"]);
      if (side) parts.push([side.toUpperCase(), /^(s|short)/i.test(side) ? "sell" : "buy"]);
      if (str(p.qty ?? p.size)) parts.push([str(p.qty ?? p.size), "num"]);
      if (str(p.entryPrice)) {
        parts.push(["entry", "label"], [price(p.symbol, String(p.entryPrice)), "num"]);
      }
      if (str(p.unrealizedPnl)) parts.push(["uPnL", "label"], [num(p.unrealizedPnl), "num"]);
      return parts;
    }

    /** Any other object: its scalar fields as "name value" pairs (nested ones summarised). */
    function fieldParts(data) {
      if (data == null || typeof data !== "object") return [[String(data), "num"]];
      const parts = [];
      for (const [key, value] of Object.entries(data)) {
        if (value == null) continue;
        const shown = typeof value === "object"
          ? (Array.isArray(value) ? `[${value.length}]` : "{…}")
          : /(^ts$|time$|^updated$)/i.test(key) && typeof value === "number" ? null : String(value);
        if (shown != null) parts.push([key, "label"], [shown, "num"]);
      }
      return parts;
    }

    /** What a row of the private log shows for one push on ``channel``. */
    function privateParts(channel, data, price = (_symbol, text) => text) {
      if (data == null || typeof data !== "object") return fieldParts(data);
      // The client's own events about the private streams, and the gateway's notices.
      if (channel === "recovered") {
        return [[str(data.channel) ?? "?", "symbol"], ["replaying to offset", "label"],
          [str(data.offset) ?? "?", "num"]];
      }
      if (channel === "lost") {
        return [[str(data.channel) ?? "?", "symbol"], ["not replayable; now at offset", "label"],
          [str(data.offset) ?? "?", "num"], ["refetch over REST", "state lost"]];
      }
      if (channel === "notice") {
        const parts = [[str(data.type) ?? "?", "state"]];
        if (Array.isArray(data.channels)) parts.push([data.channels.join(" "), "symbol"]);
        if (data.reconnectInMs != null) {
          parts.push(["in", "label"], [`${data.reconnectInMs} ms`, "num"]);
        }
        return parts;
      }
      if (channel === "@order") return orderParts(data, price);
      if (channel === "@position") return positionParts(data, price);
      if (channel === "@balance") {
        const items = balanceItems(data);
        if (items) return balanceParts(items);
      }
      if (channel === "@account") {
        const rest = { ...data };
        delete rest.uid;
        return fieldParts(rest);
      }
      return fieldParts(data);
    }

    return {
      EMPTY, parse, places, trim, fixed, group, percent, units, fromUnits, totals, signed,
      balanceItems, balanceParts, privateParts,
    };
  })();

  if (typeof module === "object" && module.exports) module.exports = Format;
  if (typeof document === "undefined") return; // Node: the formatting functions only
  root.DemoFormat = Format;

  const ES = window.ExchangeStream;
  const SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"];
  const INTERVALS = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"];
  const PRIVATE = ES.PRIVATE_TYPES.map((t) => `@${t}`);
  const BOOK_ROWS = 16;
  const TRADE_ROWS = 40;
  const TRADES_KEPT = 100;
  const BARS_KEPT = 2000; // bars on the chart: the history's 1000 and what comes live
  const HISTORY_LIMIT = 1000; // bars asked of /v1/market/klines (its maximum)
  const PRIVATE_KEPT = 100;

  const params = new URLSearchParams(location.search);
  const defaultUrl = location.host
    ? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/exchange-stream`
    : "ws://127.0.0.1:6790/exchange-stream";
  const url = params.get("ws") || defaultUrl;
  const firstSymbol = SYMBOLS.includes(params.get("symbol")) ? params.get("symbol") : SYMBOLS[0];
  const firstInterval = INTERVALS.includes(params.get("interval")) ? params.get("interval") : "1m";

  /* ------------------------------------------------------------ state (for tests too) */

  const state = {
    url,
    connected: false,
    status: "connecting",
    reconnects: 0,
    rtt: null,
    symbol: firstSymbol,
    interval: firstInterval,
    bookChecksumsOk: 0,
    checksumMismatches: 0,
    gaps: 0,
    resyncs: 0,
    bookSnapshots: 0,
    bookUpdates: 0,
    bookSeq: null,
    bookLevels: { bids: 0, asks: 0 },
    bookProblems: [],
    trades: [], // newest first
    tradesReceived: 0,
    tradeIdErrors: 0,
    lastTicker: null,
    tickers: {},
    lastMark: null,
    pricePlaces: {}, // symbol -> places of its prices (notePrices)
    bars: [], // oldest first, one per t: the history, then the kline channel's pushes
    barsDrawn: 0, // bars in the chart's candle series
    history: null, // the last /v1/market/klines request: {symbol, interval, status, bars, ms}
    loggedIn: false,
    token: null,
    privateEvents: [], // newest first: {channel, data, parts (what the row shows), ts}
    balances: new Map(), // asset -> {asset, free, locked}, merged from the @balance pushes
    balanceUpdates: 0,
    loginAt: null, // performance.now() of the last login's start
    balanceShownMs: null, // from then to the first balance on the page
    errors: [],
    malformed: [],
    closes: [], // {code, reason, ts} of each lost connection
    notices: [], // the gateway's own notices
  };
  window.demoState = state;

  const $ = (id) => document.getElementById(id);
  const client = new ES.Client(url);
  window.demoClient = client;

  let book = null;
  const retired = { checksumsOk: 0, mismatches: 0, gaps: 0, resyncs: 0, snapshots: 0, updates: 0 };
  let lastTradeId = null;
  const tradeTimes = [];
  let prevLast = null;
  const dirty = new Set();

  /* ------------------------------------------------------------- page formatting */

  const F = Format;
  const decimals = F.places;

  // A symbol's price precision: the most places any of its traded prices had on the wire
  // (book levels, trades, the ticker). The wire drops trailing zeros ("64000" for 64000.0),
  // so this is what the tick size gives; computed prices (mark, index: 8 places) are shown
  // to it, and every price of the symbol is padded to it so that columns line up.
  function notePrices(symbol, ...texts) {
    let known = state.pricePlaces[symbol] ?? -1;
    for (const t of texts) if (typeof t === "string") known = Math.max(known, decimals(t));
    if (known >= 0) state.pricePlaces[symbol] = known;
  }

  function fmtPrice(symbol, text) {
    const places = state.pricePlaces[symbol];
    return places == null ? F.trim(text) : F.fixed(text, places);
  }

  function fmtTime(ms, seconds) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}${seconds === false ? "" : ":" + p(d.getSeconds())}`;
  }

  function fmtDuration(ms) {
    if (!(ms > 0)) return "00:00:00";
    const s = Math.floor(ms / 1000);
    const p = (x) => String(x).padStart(2, "0");
    return `${p(Math.floor(s / 3600))}:${p(Math.floor((s % 3600) / 60))}:${p(s % 60)}`;
  }

  const signed = F.signed;

  function noteError(kind, detail) {
    if (detail instanceof ES.Cancelled) return; // unsubscribed before confirmed: on purpose
    if (detail && detail.message) detail = detail.message;
    state.errors.push({ kind, detail: String(detail).slice(0, 300), ts: Date.now() });
    if (state.errors.length > 50) state.errors.shift();
  }

  function noteMalformed(channel, why, data) {
    const detail = `${channel}: ${why}: ${JSON.stringify(data).slice(0, 200)}`;
    state.malformed.push(detail);
    if (state.malformed.length > 50) state.malformed.shift();
  }

  /* ---------------------------------------------------------------------- render */

  let scheduled = false;
  function invalidate(what) {
    dirty.add(what);
    if (scheduled) return;
    scheduled = true;
    // requestAnimationFrame when visible; the timeout covers hidden tabs and headless runs.
    const run = () => {
      if (!scheduled) return;
      scheduled = false;
      render();
    };
    requestAnimationFrame(run);
    setTimeout(run, 200);
  }

  function render() {
    const parts = Array.from(dirty);
    dirty.clear();
    for (const part of parts) {
      try {
        RENDERERS[part]();
      } catch (err) {
        noteError("render", `${part}: ${err && err.stack ? err.stack : err}`);
      }
    }
  }

  const RENDERERS = {
    status: renderStatus,
    book: renderBook,
    trades: renderTrades,
    ticker: renderTicker,
    tabs: renderTabs,
    mark: renderMark,
    chart: renderChart,
    private: renderPrivate,
    footer: renderFooter,
  };

  /* ---- connection status */

  client.on("status", (status) => {
    // Back after a reconnect: the history again, for the bars closed while we were away.
    if (status === "ready" && state.status !== "ready" && client.stats.reconnects > 0) {
      loadHistory(false);
    }
    state.status = status;
    state.connected = client.connected;
    state.reconnects = client.stats.reconnects;
    invalidate("status");
  });
  client.on("close", (close) => {
    lastTradeId = null; // a restarted matching engine may number trades anew
    state.closes.push({ code: close.code, reason: close.reason, ts: Date.now() });
    if (state.closes.length > 20) state.closes.shift();
  });
  client.on("reconnecting", (delay) => {
    state.reconnectIn = Math.round(delay);
  });
  client.on("pong", (_answer, rtt) => {
    state.rtt = rtt;
    invalidate("footer");
  });
  client.on("error", (err) => {
    noteError("client", err && err.message ? err.message : err);
    if (err && /malformed/.test(err.message)) state.malformed.push(err.message);
  });

  function renderStatus() {
    const el = $("status");
    el.dataset.state = state.status;
    const text = {
      idle: "idle",
      connecting: "connecting…",
      open: "authenticating…",
      ready: "live",
      reconnecting: state.reconnectIn != null
        ? `reconnecting (${(state.reconnectIn / 1000).toFixed(1)} s)`
        : "reconnecting…",
      closed: "closed",
      failed: "failed",
    }[state.status] || state.status;
    $("status-text").textContent = text;
    invalidate("footer");
  }

  function renderFooter() {
    $("footer-url").textContent = url;
    const parts = [
      `msgs ${client.stats.messages}`,
      state.rtt != null ? `rtt ${state.rtt} ms` : null,
      `checksums ok ${state.bookChecksumsOk}`,
      `mismatches ${state.checksumMismatches}`,
      `resyncs ${state.resyncs}`,
      `reconnects ${state.reconnects}`,
    ];
    $("stats").textContent = parts.filter(Boolean).join(" · ");
  }

  /* ---- symbols and intervals */

  function buildTabs() {
    const nav = $("symbols");
    for (const sym of SYMBOLS) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.symbol = sym;
      b.innerHTML = `<span class="sym">${sym.replace(/USDT$/, "/USDT")}</span>` +
        `<span class="px"><span class="last">–</span><span class="chg"></span></span>`;
      b.addEventListener("click", () => setSymbol(sym));
      nav.appendChild(b);
    }
    const iv = $("intervals");
    for (const interval of INTERVALS) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = interval;
      b.dataset.interval = interval;
      b.addEventListener("click", () => setInterval_(interval));
      iv.appendChild(b);
    }
  }

  function renderTabs() {
    for (const b of $("symbols").children) {
      const sym = b.dataset.symbol;
      b.classList.toggle("active", sym === state.symbol);
      const t = state.tickers[sym];
      if (t) {
        b.querySelector(".last").textContent = fmtPrice(sym, t.last);
        const chg = b.querySelector(".chg");
        chg.textContent = `${signed(t.changePercent)}%`;
        chg.className = `chg ${String(t.changePercent).startsWith("-") ? "down" : "up"}`;
      }
    }
    for (const b of $("intervals").children) {
      b.classList.toggle("active", b.dataset.interval === state.interval);
    }
  }

  function klineChannel(symbol, interval) {
    return `${symbol}@kline_${interval}`;
  }

  function foldBookStats() {
    if (!book) return;
    for (const [k, v] of [["checksumsOk", "checksumsOk"], ["mismatches", "mismatches"],
      ["gaps", "gaps"], ["resyncs", "resyncs"], ["snapshots", "snapshots"],
      ["updates", "updates"]]) {
      retired[k] += book.stats[v];
    }
  }

  function setSymbol(symbol) {
    if (book && symbol === state.symbol) return;
    const old = book ? state.symbol : null;
    if (book) {
      foldBookStats();
      book.stop();
      book = null;
    }
    if (old) {
      client.unsubscribe([`${old}@trades`, `${old}@markprice`, klineChannel(old, state.interval)]);
    }
    state.symbol = symbol;
    state.trades = [];
    state.lastMark = null;
    state.bookLevels = { bids: 0, asks: 0 };
    lastTradeId = null;
    tradeTimes.length = 0;
    prevLast = null;
    $("t-symbol").textContent = symbol.replace(/USDT$/, "/USDT");
    document.title = `${symbol} · exchange-stream demo`;

    book = new ES.OrderBook(client, symbol, {
      onChange: () => {
        syncBookStats();
        invalidate("book");
      },
      onProblem: (problem) => {
        state.bookProblems.push(problem);
        if (state.bookProblems.length > 50) state.bookProblems.shift();
        syncBookStats();
        invalidate("book");
      },
    });
    book.start().catch((err) => noteError("subscribe", err));
    client
      .subscribe([`${symbol}@trades`, `${symbol}@markprice`, klineChannel(symbol, state.interval)])
      .catch((err) => noteError("subscribe", err));
    loadHistory(true);
    for (const part of ["tabs", "book", "trades", "ticker", "mark", "chart"]) invalidate(part);
  }

  function setInterval_(interval) {
    if (interval === state.interval) return;
    client.unsubscribe(klineChannel(state.symbol, state.interval));
    state.interval = interval;
    client.subscribe(klineChannel(state.symbol, interval))
      .catch((err) => noteError("subscribe", err));
    loadHistory(true);
    invalidate("tabs");
  }

  /* ---- routing of public pushes (depth goes to the OrderBook's own handler) */

  client.onEvent("*", (data, channel) => {
    if (channel.charAt(0) === "@") {
      onPrivate(channel, data);
      return;
    }
    const at = channel.indexOf("@");
    const symbol = channel.slice(0, at);
    const type = channel.slice(at + 1);
    if (type === "ticker") onTicker(symbol, data);
    if (symbol !== state.symbol) return;
    if (type === "trades") onTrades(channel, data);
    else if (type === "markprice") onMark(channel, data);
    else if (type === klineChannel("", state.interval).slice(1)) onKline(channel, data);
  });

  /* ---- order book */

  function syncBookStats() {
    const s = book ? book.stats : {};
    state.bookChecksumsOk = retired.checksumsOk + (s.checksumsOk || 0);
    state.checksumMismatches = retired.mismatches + (s.mismatches || 0);
    state.gaps = retired.gaps + (s.gaps || 0);
    state.resyncs = retired.resyncs + (s.resyncs || 0);
    state.bookSnapshots = retired.snapshots + (s.snapshots || 0);
    state.bookUpdates = retired.updates + (s.updates || 0);
    state.bookSeq = book ? book.seq : null;
  }

  // ``totals``: the running sums of the sizes, exact decimal strings (Format.totals); the
  // bars' widths are the only thing computed in floats.
  function bookRows(container, levels, totals, maxTotal, reverse) {
    const rows = container.children;
    while (rows.length < BOOK_ROWS) {
      const row = document.createElement("div");
      row.className = "book-row";
      row.innerHTML = '<div class="bar"></div><span class="price"></span>' +
        '<span class="qty"></span><span class="total"></span>';
      container.appendChild(row);
    }
    for (let i = 0; i < BOOK_ROWS; i++) {
      const index = reverse ? BOOK_ROWS - 1 - i : i;
      const row = rows[i];
      const level = levels[index];
      const [bar, price, qty, tot] = row.children;
      if (!level) {
        row.classList.add("empty");
        price.textContent = qty.textContent = tot.textContent = "";
        bar.style.width = "0";
        continue;
      }
      row.classList.remove("empty");
      price.textContent = fmtPrice(state.symbol, level[0]);
      qty.textContent = level[1];
      tot.textContent = F.group(totals[index]);
      bar.style.width = `${maxTotal > 0 ? (100 * Number(totals[index])) / maxTotal : 0}%`;
    }
  }

  function renderBook() {
    const badge = $("book-check");
    if (!book || book.seq === null) {
      badge.textContent = "waiting for snapshot";
      badge.className = "badge";
      bookRows($("asks"), [], [], 0, true);
      bookRows($("bids"), [], [], 0, false);
      state.bookLevels = { bids: 0, asks: 0 };
      $("mid").textContent = "–";
      $("spread-text").textContent = "";
      return;
    }
    const bids = book.top("bids", BOOK_ROWS);
    const asks = book.top("asks", BOOK_ROWS);
    notePrices(state.symbol, ...bids.map((l) => l[0]), ...asks.map((l) => l[0]));
    // Both sides' totals with the same places, so that the column lines up.
    const places = [...bids, ...asks].reduce((n, l) => Math.max(n, decimals(l[1])), 0);
    const bidTotals = F.totals(bids.map((l) => l[1]), places);
    const askTotals = F.totals(asks.map((l) => l[1]), places);
    const maxTotal = Math.max(Number(bidTotals.at(-1) ?? 0), Number(askTotals.at(-1) ?? 0));
    bookRows($("asks"), asks, askTotals, maxTotal, true);
    bookRows($("bids"), bids, bidTotals, maxTotal, false);
    state.bookLevels = {
      bids: document.querySelectorAll("#bids .book-row:not(.empty)").length,
      asks: document.querySelectorAll("#asks .book-row:not(.empty)").length,
    };
    if (book.bestBid && book.bestAsk) {
      // Exact, in units of the finer of the two prices' last places.
      const places = Math.max(decimals(book.bestBid), decimals(book.bestAsk));
      const bid = F.units(book.bestBid, places);
      const ask = F.units(book.bestAsk, places);
      // The last trade (the ticker lags up to a second), else the mid price.
      const [latest, before] = state.trades;
      const mid = $("mid");
      mid.textContent = latest
        ? fmtPrice(state.symbol, latest.price)
        : F.trim(F.fromUnits((bid + ask) * 5n, places + 1)); // (bid + ask) / 2, exact
      const falling = latest && before && Number(latest.price) < Number(before.price);
      mid.className = `num ${falling || (latest && latest.side === "sell" && !before) ? "down" : "up"}`;
      const spread = F.fromUnits(ask - bid, places);
      const ratio = (100 * Number(spread)) / Number(book.bestAsk); // a ratio: floats are fine
      $("spread-text").textContent =
        `spread ${fmtPrice(state.symbol, spread)} (${ratio.toFixed(3)}%)`;
    }
    const bad = state.checksumMismatches > 0 || state.gaps > 0;
    badge.textContent = `seq ${book.seq} · ✓ ${state.bookChecksumsOk}` +
      (bad ? ` · ✗ ${state.checksumMismatches} · gaps ${state.gaps}` : "");
    badge.className = `badge ${bad ? "bad" : "ok"}`;
    invalidate("footer");
  }

  /* ---- trades */

  function onTrades(channel, data) {
    if (!Array.isArray(data)) {
      noteMalformed(channel, "not a list", data);
      return;
    }
    for (const t of data) {
      if (!t || typeof t.price !== "string" || typeof t.qty !== "string") {
        noteMalformed(channel, "trade without string price/qty", t);
        continue;
      }
      if (lastTradeId !== null && typeof t.id === "number" && t.id <= lastTradeId) {
        state.tradeIdErrors++;
        noteMalformed(channel, `trade id ${t.id} after ${lastTradeId}`, t);
      }
      if (typeof t.id === "number") lastTradeId = t.id;
      notePrices(state.symbol, t.price);
      state.trades.unshift(t);
      state.tradesReceived++;
      tradeTimes.push(Date.now());
    }
    if (state.trades.length > TRADES_KEPT) state.trades.length = TRADES_KEPT;
    invalidate("trades");
  }

  let renderedTopTradeId = null;
  function renderTrades() {
    const box = $("trades");
    const rows = box.children;
    while (rows.length < TRADE_ROWS) {
      const row = document.createElement("div");
      row.className = "trade-row";
      row.innerHTML = '<span class="price"></span><span class="qty"></span><span class="time"></span>';
      box.appendChild(row);
    }
    const topId = state.trades.length ? state.trades[0].id : null;
    const fresh = topId !== renderedTopTradeId;
    let newCount = 0;
    if (fresh) {
      const i = state.trades.findIndex((t) => t.id === renderedTopTradeId);
      newCount = i < 0 ? state.trades.length : i;
    }
    renderedTopTradeId = topId;
    for (let i = 0; i < TRADE_ROWS; i++) {
      const t = state.trades[i];
      const row = rows[i];
      const [price, qty, time] = row.children;
      if (!t) {
        row.classList.add("empty");
        price.textContent = qty.textContent = time.textContent = "";
        continue;
      }
      row.classList.remove("empty");
      price.textContent = fmtPrice(state.symbol, t.price);
      price.className = `price ${t.side === "sell" ? "down" : "up"}`;
      qty.textContent = t.qty;
      time.textContent = fmtTime(t.ts);
      row.classList.remove("fresh");
      if (i < newCount) {
        void row.offsetWidth; // restart the flash animation
        row.classList.add("fresh");
      }
    }
    const now = Date.now();
    while (tradeTimes.length && tradeTimes[0] < now - 10000) tradeTimes.shift();
    $("trade-rate").textContent = `${(tradeTimes.length / 10).toFixed(1)} trades/s`;
    state.tradesShown = box.querySelectorAll(".trade-row:not(.empty)").length;
  }

  /* ---- ticker */

  function onTicker(symbol, data) {
    if (!data || typeof data.last !== "string") {
      noteMalformed(`${symbol}@ticker`, "no string last", data);
      return;
    }
    if (symbol === state.symbol) {
      prevLast = state.lastTicker && state.lastTicker.symbol === symbol ? state.lastTicker.last : null;
      state.lastTicker = data;
      invalidate("ticker");
    }
    notePrices(symbol, data.last, data.open, data.high, data.low);
    state.tickers[symbol] = data;
    invalidate("tabs");
  }

  function renderTicker() {
    const t = state.tickers[state.symbol];
    const ids = ["t-last", "t-change", "t-high", "t-low", "t-volume", "t-quote", "t-count"];
    if (!t) {
      for (const id of ids) $(id).textContent = "–";
      return;
    }
    const up = !String(t.change).startsWith("-");
    const last = $("t-last");
    last.textContent = fmtPrice(state.symbol, t.last);
    last.className = `num ${prevLast && Number(t.last) < Number(prevLast) ? "down" : "up"}`;
    const change = $("t-change");
    change.textContent = `${signed(fmtPrice(state.symbol, t.change))}  ${signed(t.changePercent)}%`;
    change.className = `num ${up ? "up" : "down"}`;
    $("t-high").textContent = fmtPrice(state.symbol, t.high);
    $("t-low").textContent = fmtPrice(state.symbol, t.low);
    $("t-volume").textContent = F.group(t.volume); // in lots: as many places as it has
    $("t-quote").textContent = F.group(F.fixed(t.quoteVolume, 2)); // a quote amount: cents
    $("t-count").textContent = F.group(String(t.count ?? "–"));
  }

  /* ---- mark price */

  function onMark(channel, data) {
    if (!data || typeof data.markPrice !== "string") {
      noteMalformed(channel, "no string markPrice", data);
      return;
    }
    state.lastMark = data;
    invalidate("mark");
  }

  function renderMark() {
    const m = state.lastMark;
    const ids = ["m-mark", "m-index", "m-funding", "m-next", "m-premium", "m-settle"];
    if (!m) {
      for (const id of ids) $(id).textContent = "–";
      return;
    }
    // The engine computes these to 8 places; shown to the symbol's tick precision.
    $("m-mark").textContent = fmtPrice(state.symbol, m.markPrice);
    $("m-index").textContent = fmtPrice(state.symbol, m.indexPrice);
    const funding = $("m-funding");
    funding.textContent = `${F.percent(m.fundingRate, 4)}%`;
    funding.className = `num ${String(m.fundingRate).startsWith("-") ? "down" : "up"}`;
    $("m-next").textContent = m.nextFundingTime
      ? `${fmtDuration(m.nextFundingTime - Date.now())}`
      : "–";
    $("m-premium").textContent = `${F.percent(m.premiumIndex, 4)}%`;
    $("m-settle").textContent = fmtPrice(state.symbol, m.estimatedSettlePrice);
  }

  /* ---- chart: TradingView's lightweight-charts (vendor/), fed by the bars history
   * (GET /v1/market/klines) on load and on every symbol or interval switch, then by the kline
   * channel: each push is the open bar (or the bar just closed), drawn with series.update. */

  const LWC = window.LightweightCharts;
  const palette = getComputedStyle(document.documentElement);
  const color = (name) => palette.getPropertyValue(name).trim();
  const UP = color("--up");
  const DOWN = color("--down");

  const chart = LWC.createChart($("chart"), {
    autoSize: true,
    layout: {
      background: { type: LWC.ColorType.Solid, color: color("--panel") },
      textColor: color("--muted"),
      fontFamily: color("--mono"),
      fontSize: 11,
      attributionLogo: true, // the licence's link to TradingView, on the chart itself
    },
    grid: { vertLines: { color: color("--line") }, horzLines: { color: color("--line") } },
    rightPriceScale: { borderColor: color("--line") },
    timeScale: { borderColor: color("--line"), timeVisible: true, secondsVisible: false },
    crosshair: { mode: LWC.CrosshairMode.Normal },
  });
  const candles = chart.addSeries(LWC.CandlestickSeries, {
    upColor: UP,
    downColor: DOWN,
    wickUpColor: UP,
    wickDownColor: DOWN,
    borderVisible: false,
  });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.24 } });
  const volume = chart.addSeries(LWC.HistogramSeries, {
    priceFormat: { type: "volume" },
    priceScaleId: "volume",
    lastValueVisible: false,
    priceLineVisible: false,
  });
  volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

  // Numbers for drawing only: the wire keeps prices and volumes as strings, and the legend
  // shows those strings as they came.
  const toCandle = (b) => ({
    time: b.t / 1000, // lightweight-charts' UTCTimestamp is in seconds
    open: Number(b.o),
    high: Number(b.h),
    low: Number(b.l),
    close: Number(b.c),
  });
  const toVolume = (b) => ({
    time: b.t / 1000,
    value: Number(b.v),
    color: Number(b.c) >= Number(b.o) ? `${UP}66` : `${DOWN}66`,
  });
  const isBar = (b) => b && typeof b.t === "number" && ["o", "h", "l", "c", "v"]
    .every((k) => typeof b[k] === "string");

  const historyUrl = params.get("history") || historyUrlFor(url);
  function historyUrlFor(wsUrl) {
    try {
      const u = new URL(wsUrl, location.href);
      u.protocol = u.protocol === "wss:" ? "https:" : "http:";
      u.pathname = "/v1/market/klines";
      u.search = u.hash = "";
      return u.toString();
    } catch (err) {
      return "/v1/market/klines";
    }
  }

  let chartGen = 0;
  let loading = null; // while the history is on its way: the live bars that came meanwhile
  let hovered = null; // the time (seconds) under the crosshair

  function resetChart() {
    state.bars = [];
    candles.setData([]);
    volume.setData([]);
    state.barsDrawn = 0;
    hovered = null;
    invalidate("chart");
  }

  function drawAll() {
    const bars = state.bars;
    const places = bars.length ? Math.max(...bars.slice(-50).map((b) => decimals(b.c))) : 2;
    candles.applyOptions({
      priceFormat: { type: "price", precision: places, minMove: Math.pow(10, -places) },
    });
    candles.setData(bars.map(toCandle));
    volume.setData(bars.map(toVolume));
    state.barsDrawn = candles.data().length;
    invalidate("chart");
  }

  function loadHistory(fresh) {
    const gen = ++chartGen;
    const { symbol, interval } = state;
    const live = new Map();
    loading = { gen, live };
    if (fresh) resetChart();
    state.history = { symbol, interval, status: "loading", bars: 0, ms: null, error: null };
    invalidate("chart");
    const started = performance.now();
    const query = new URLSearchParams({ symbol, interval, limit: String(HISTORY_LIMIT) });
    fetch(`${historyUrl}?${query}`, { cache: "no-store" })
      .then(async (response) => {
        const body = await response.json();
        if (!response.ok) throw new Error(`${response.status} ${body.code}: ${body.msg}`);
        if (!Array.isArray(body)) throw new Error("the history is not an array");
        return body;
      })
      .then((bars) => {
        if (gen !== chartGen) return; // switched meanwhile
        const merged = new Map();
        for (const b of bars) {
          if (isBar(b) && b.interval === interval) merged.set(b.t, b);
          else noteMalformed(`history ${symbol} ${interval}`, "not a bar", b);
        }
        finishLoading(merged, live, fresh);
        Object.assign(state.history, {
          status: "ok", bars: bars.length, ms: Math.round(performance.now() - started),
        });
      })
      .catch((err) => {
        if (gen !== chartGen) return;
        finishLoading(new Map(state.bars.map((b) => [b.t, b])), live, fresh);
        Object.assign(state.history, { status: "failed", error: String(err.message || err) });
        noteError("history", err);
      });
  }

  function finishLoading(merged, live, fresh) {
    for (const [t, b] of live) merged.set(t, b); // newer than what the history had
    state.bars = [...merged.values()].sort((a, b) => a.t - b.t).slice(-BARS_KEPT);
    loading = null;
    drawAll();
    if (fresh) chart.timeScale().scrollToRealTime();
  }

  function onKline(channel, data) {
    if (!isBar(data)) {
      noteMalformed(channel, "no numeric t / string o h l c v", data);
      return;
    }
    if (data.interval && data.interval !== state.interval) return;
    if (loading) {
      loading.live.set(data.t, data);
      return;
    }
    const bars = state.bars;
    const last = bars[bars.length - 1];
    let historical = false;
    if (!last || data.t > last.t) {
      bars.push(data);
      if (bars.length > BARS_KEPT) bars.shift();
    } else if (data.t === last.t) {
      bars[bars.length - 1] = data;
    } else {
      const i = bars.findIndex((b) => b.t === data.t);
      if (i < 0) return; // older than the chart: nothing to redraw
      bars[i] = data;
      historical = true;
    }
    if (!last) {
      drawAll();
      return;
    }
    candles.update(toCandle(data), historical);
    volume.update(toVolume(data), historical);
    state.barsDrawn = candles.data().length;
    invalidate("chart");
  }

  chart.subscribeCrosshairMove((param) => {
    hovered = param && param.time != null ? param.time : null;
    invalidate("chart");
  });

  function renderChart() {
    const info = $("chart-info");
    const h = state.history;
    const bars = state.bars;
    const shown = (hovered != null && bars.find((b) => b.t === hovered * 1000)) ||
      bars[bars.length - 1];
    const head = `${state.symbol} ${state.interval} · UTC`;
    if (!shown) {
      info.textContent = h && h.status === "loading"
        ? `${head}  loading history…`
        : `${head}  waiting for ${state.symbol}@kline_${state.interval}…`;
      return;
    }
    const px = (text) => fmtPrice(state.symbol, text);
    info.textContent = `${head}  O ${px(shown.o)}  H ${px(shown.h)}  L ${px(shown.l)}  ` +
      `C ${px(shown.c)}  V ${F.group(shown.v)}  n ${shown.n ?? "–"}` +
      (shown.closed ? "  (closed)" : "") +
      (h && h.status === "failed" ? "  · history unavailable" : "");
  }

  /* ---- account: login and private channels */

  function onPrivate(channel, data) {
    let parts = null;
    if (channel === "@balance") {
      state.lastBalance = data;
      const items = F.balanceItems(data);
      if (items) {
        // A push may hold every asset (the demo's do) or only those that moved: merged by
        // asset. The demo's exchange sends each user's whole balance every second
        // (services/simulator.py), so the log gets a row only for what changed.
        const changed = items.filter((b) => {
          const had = state.balances.get(b.asset);
          return !had || had.free !== b.free || had.locked !== b.locked;
        });
        for (const b of items) state.balances.set(b.asset, b);
        state.balanceUpdates++;
        invalidate("private");
        if (!changed.length) return;
        parts = F.balanceParts(changed);
      }
    }
    parts = parts || F.privateParts(channel, data, fmtPrice);
    state.privateEvents.unshift({ channel, data, parts, ts: Date.now() });
    if (state.privateEvents.length > PRIVATE_KEPT) state.privateEvents.length = PRIVATE_KEPT;
    invalidate("private");
  }

  function renderPrivate() {
    const bal = $("balances");
    bal.textContent = "";
    for (const item of state.balances.values()) {
      const div = document.createElement("div");
      div.className = "balance";
      div.innerHTML = '<b></b><div><span>free</span> <span class="num"></span></div>' +
        '<div><span>locked</span> <span class="num"></span></div>';
      div.children[0].textContent = item.asset;
      div.children[1].children[1].textContent = F.group(item.free);
      div.children[2].children[1].textContent = F.group(item.locked);
      bal.appendChild(div);
    }
    if (state.balances.size && state.loginAt != null && state.balanceShownMs == null) {
      state.balanceShownMs = Math.round(performance.now() - state.loginAt);
    }
    const log = $("private");
    log.textContent = "";
    if (!state.privateEvents.length) {
      const p = document.createElement("div");
      p.className = "empty";
      p.textContent = state.loggedIn ? "waiting for private events…" : "log in to see private events";
      log.appendChild(p);
      return;
    }
    for (const ev of state.privateEvents.slice(0, 40)) {
      const row = document.createElement("div");
      row.className = "entry";
      row.innerHTML = '<span class="time"></span><span class="chan"></span><span class="what"></span>';
      row.children[0].textContent = fmtTime(ev.ts);
      row.children[1].textContent = ev.channel;
      row.title = JSON.stringify(ev.data).slice(0, 1000); // the push as it came, on hover
      for (const [text, kind] of ev.parts) {
        const span = document.createElement("span");
        span.className = kind;
        span.textContent = text;
        row.children[2].appendChild(span);
      }
      log.appendChild(row);
    }
  }

  async function login(token) {
    const stateEl = $("account-state");
    stateEl.textContent = "logging in…";
    stateEl.className = "muted";
    state.loginAt = performance.now();
    state.balanceShownMs = null;
    state.balances.clear(); // maybe another user's: not shown, nor counted as this login's
    try {
      await client.auth(token);
      state.loggedIn = true;
      state.token = token;
      state.privateEvents = [];
      state.lastBalance = null;
      stateEl.textContent = `logged in · ${token}`;
      stateEl.className = "up";
      $("logout-btn").disabled = false;
      invalidate("private");
      await client.subscribe(PRIVATE);
    } catch (err) {
      state.loggedIn = false;
      stateEl.textContent = `login failed: ${err.message}`;
      stateEl.className = "down";
      noteError("auth", err.message);
    }
  }

  function logout() {
    client.logout().catch(() => {});
    state.loggedIn = false;
    state.token = null;
    state.lastBalance = null;
    state.balances.clear();
    state.loginAt = null;
    state.privateEvents = [];
    $("account-state").textContent = "not logged in";
    $("account-state").className = "muted";
    $("logout-btn").disabled = true;
    invalidate("private");
  }

  client.on("notice", (data) => {
    state.notices.push(data);
    onPrivate("notice", data);
  });
  // Private streams resume after a reconnect; when the gateway cannot replay what was missed,
  // a real front end re-fetches the account from the exchange's REST API here.
  client.on("recovered", (channel, position) => {
    if (channel.charAt(0) === "@") onPrivate("recovered", { channel, ...position });
  });
  client.on("lost", (channel, position) => {
    if (channel.charAt(0) === "@") onPrivate("lost", { channel, ...position, refetch: true });
  });
  client.on("loggedout", (data) => {
    state.loggedIn = false;
    state.token = null;
    $("account-state").textContent = `logged out by the gateway: ${data.type}`;
    $("account-state").className = "down";
    $("logout-btn").disabled = true;
  });

  client.on("authfailed", (err) => {
    if (err.code === 5) {
      state.loggedIn = false;
      $("account-state").textContent = `logged out: ${err.message}`;
      $("account-state").className = "down";
    }
  });

  /* ---------------------------------------------------------------------- start */

  buildTabs();
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (token) login(token);
  });
  $("logout-btn").addEventListener("click", logout);
  setInterval(() => {
    if (state.lastMark) invalidate("mark"); // funding countdown
    invalidate("trades");
  }, 1000);

  client.subscribe(SYMBOLS.map((s) => `${s}@ticker`)).catch((err) => noteError("subscribe", err));
  setSymbol(firstSymbol);
  client.connect();
  for (const part of Object.keys(RENDERERS)) invalidate(part);

  window.demo = { client, setSymbol, setInterval: setInterval_, login, logout, get book() { return book; } };
})(typeof window !== "undefined" ? window : globalThis);
