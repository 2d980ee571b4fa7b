/*
 * exchange-stream live demo page: order book, trades, ticker, mark price, klines and the
 * private channels of a demo user, all from one WebSocket through client.js.
 *
 * Query parameters: ?ws=<url> (default: /exchange-stream on this host), ?symbol=ETHUSDT,
 * ?interval=5m. The page's state is mirrored in window.demoState (read by the tests).
 */
(function () {
  "use strict";

  const ES = window.ExchangeStream;
  const SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"];
  const INTERVALS = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"];
  const PRIVATE = ES.PRIVATE_TYPES.map((t) => `@${t}`);
  const BOOK_ROWS = 16;
  const TRADE_ROWS = 40;
  const TRADES_KEPT = 100;
  const BARS_KEPT = 500;
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
    bars: [], // oldest first, one per t
    barsDrawn: 0,
    loggedIn: false,
    token: null,
    privateEvents: [], // newest first
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

  /* ------------------------------------------------------------------ formatting */

  function fmtNum(text, maxFrac) {
    const n = Number(text);
    if (!Number.isFinite(n)) return String(text ?? "–");
    return n.toLocaleString("en-US", {
      minimumFractionDigits: 0,
      maximumFractionDigits: maxFrac ?? 2,
    });
  }

  function decimals(text) {
    const s = String(text);
    const dot = s.indexOf(".");
    return dot < 0 ? 0 : s.length - dot - 1;
  }

  function fmtFixed(n, places) {
    return Number(n).toLocaleString("en-US", {
      minimumFractionDigits: places,
      maximumFractionDigits: places,
    });
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

  function signed(text) {
    const s = String(text);
    if (Number(s) === 0) return s.replace(/^[-+]/, "");
    return s.startsWith("-") || s.startsWith("+") ? s : `+${s}`;
  }

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
        b.querySelector(".last").textContent = t.last;
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
    state.bars = [];
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
    for (const part of ["tabs", "book", "trades", "ticker", "mark", "chart"]) invalidate(part);
  }

  function setInterval_(interval) {
    if (interval === state.interval) return;
    client.unsubscribe(klineChannel(state.symbol, state.interval));
    state.interval = interval;
    state.bars = [];
    client.subscribe(klineChannel(state.symbol, interval))
      .catch((err) => noteError("subscribe", err));
    invalidate("tabs");
    invalidate("chart");
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

  function bookRows(container, levels, maxTotal, reverse) {
    const rows = container.children;
    while (rows.length < BOOK_ROWS) {
      const row = document.createElement("div");
      row.className = "book-row";
      row.innerHTML = '<div class="bar"></div><span class="price"></span>' +
        '<span class="qty"></span><span class="total"></span>';
      container.appendChild(row);
    }
    let total = 0;
    let places = 0;
    const filled = [];
    for (let i = 0; i < levels.length; i++) {
      total += Number(levels[i][1]);
      filled.push(total);
      places = Math.max(places, decimals(levels[i][1]));
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
      price.textContent = level[0];
      qty.textContent = level[1];
      tot.textContent = fmtFixed(filled[index], Math.min(places, 8));
      bar.style.width = `${maxTotal > 0 ? (100 * filled[index]) / maxTotal : 0}%`;
    }
  }

  function renderBook() {
    const badge = $("book-check");
    if (!book || book.seq === null) {
      badge.textContent = "waiting for snapshot";
      badge.className = "badge";
      bookRows($("asks"), [], 0, true);
      bookRows($("bids"), [], 0, false);
      state.bookLevels = { bids: 0, asks: 0 };
      $("mid").textContent = "–";
      $("spread-text").textContent = "";
      return;
    }
    const bids = book.top("bids", BOOK_ROWS);
    const asks = book.top("asks", BOOK_ROWS);
    const sum = (side) => side.reduce((acc, l) => acc + Number(l[1]), 0);
    const maxTotal = Math.max(sum(bids), sum(asks));
    bookRows($("asks"), asks, maxTotal, true);
    bookRows($("bids"), bids, maxTotal, false);
    state.bookLevels = {
      bids: document.querySelectorAll("#bids .book-row:not(.empty)").length,
      asks: document.querySelectorAll("#asks .book-row:not(.empty)").length,
    };
    if (book.bestBid && book.bestAsk) {
      const bid = Number(book.bestBid);
      const ask = Number(book.bestAsk);
      const places = Math.max(decimals(book.bestBid), decimals(book.bestAsk));
      // The last trade (the ticker lags up to a second), else the mid price.
      const [latest, before] = state.trades;
      const mid = $("mid");
      mid.textContent = latest ? latest.price : fmtFixed((bid + ask) / 2, places);
      const falling = latest && before && Number(latest.price) < Number(before.price);
      mid.className = `num ${falling || (latest && latest.side === "sell" && !before) ? "down" : "up"}`;
      const spread = ask - bid;
      $("spread-text").textContent =
        `spread ${fmtFixed(spread, places)} (${((100 * spread) / ask).toFixed(3)}%)`;
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
      price.textContent = t.price;
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
    last.textContent = t.last;
    last.className = `num ${prevLast && Number(t.last) < Number(prevLast) ? "down" : "up"}`;
    const change = $("t-change");
    change.textContent = `${signed(t.change)}  ${signed(t.changePercent)}%`;
    change.className = `num ${up ? "up" : "down"}`;
    $("t-high").textContent = t.high;
    $("t-low").textContent = t.low;
    $("t-volume").textContent = fmtNum(t.volume, 4);
    $("t-quote").textContent = fmtNum(t.quoteVolume, 2);
    $("t-count").textContent = fmtNum(t.count, 0);
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
    $("m-mark").textContent = m.markPrice;
    $("m-index").textContent = m.indexPrice;
    const rate = Number(m.fundingRate);
    const funding = $("m-funding");
    funding.textContent = Number.isFinite(rate) ? `${(rate * 100).toFixed(4)}%` : m.fundingRate;
    funding.className = `num ${rate < 0 ? "down" : "up"}`;
    $("m-next").textContent = m.nextFundingTime
      ? `${fmtDuration(m.nextFundingTime - Date.now())}`
      : "–";
    const premium = Number(m.premiumIndex);
    $("m-premium").textContent = Number.isFinite(premium)
      ? `${(premium * 100).toFixed(4)}%`
      : m.premiumIndex;
    $("m-settle").textContent = m.estimatedSettlePrice ?? "–";
  }

  /* ---- klines */

  function onKline(channel, data) {
    if (!data || typeof data.t !== "number" || typeof data.c !== "string") {
      noteMalformed(channel, "no numeric t / string c", data);
      return;
    }
    if (data.interval && data.interval !== state.interval) return;
    const bars = state.bars;
    const last = bars[bars.length - 1];
    if (!last || data.t > last.t) {
      bars.push(data);
      if (bars.length > BARS_KEPT) bars.shift();
    } else if (data.t === last.t) {
      bars[bars.length - 1] = data;
    } else {
      const i = bars.findIndex((b) => b.t === data.t);
      if (i >= 0) bars[i] = data;
      else {
        bars.push(data);
        bars.sort((a, b) => a.t - b.t);
      }
    }
    invalidate("chart");
  }

  function niceStep(range, count) {
    const raw = range / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return nice * mag;
  }

  function renderChart() {
    const canvas = $("chart");
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.floor(rect.width));
    const h = Math.max(1, Math.floor(rect.height));
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
      canvas.width = w * dpr;
      canvas.height = h * dpr;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const UP = color("--up");
    const DOWN = color("--down");
    const LINE = color("--line");
    const MUTED = color("--muted");

    const axisW = 78;
    const timeH = 18;
    const plotW = w - axisW;
    const priceH = Math.floor((h - timeH) * 0.8);
    const volTop = priceH + 4;
    const volH = h - timeH - volTop;
    const spacing = 9;
    const bodyW = 6;
    const count = Math.max(1, Math.floor((plotW - 20) / spacing));
    const bars = state.bars.slice(-count);
    const info = $("chart-info");

    ctx.font = "11px ui-monospace, 'DejaVu Sans Mono', monospace";
    ctx.textBaseline = "middle";
    if (!bars.length) {
      state.barsDrawn = 0;
      ctx.fillStyle = MUTED;
      ctx.textAlign = "center";
      ctx.fillText(`waiting for ${state.symbol}@kline_${state.interval}…`, plotW / 2, priceH / 2);
      info.textContent = "";
      return;
    }

    let lo = Infinity;
    let hi = -Infinity;
    let vmax = 0;
    for (const b of bars) {
      lo = Math.min(lo, Number(b.l));
      hi = Math.max(hi, Number(b.h));
      vmax = Math.max(vmax, Number(b.v));
    }
    if (hi - lo < hi * 1e-5) {
      const pad = Math.max(hi * 0.0005, 1e-8);
      hi += pad;
      lo -= pad;
    }
    const pad = (hi - lo) * 0.08;
    hi += pad;
    lo -= pad;
    const y = (p) => 6 + ((hi - p) / (hi - lo)) * (priceH - 12);
    const places = Math.max(...bars.map((b) => decimals(b.c)));

    // grid and price axis (no label where the last price's label goes)
    const lastY = y(Number(bars[bars.length - 1].c));
    const step = niceStep(hi - lo, 6);
    ctx.strokeStyle = LINE;
    ctx.lineWidth = 1;
    ctx.fillStyle = MUTED;
    ctx.textAlign = "left";
    for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
      const yy = Math.round(y(p)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(plotW, yy);
      ctx.stroke();
      if (Math.abs(yy - lastY) > 14) ctx.fillText(fmtFixed(p, places), plotW + 6, yy);
    }
    ctx.beginPath();
    ctx.moveTo(plotW + 0.5, 0);
    ctx.lineTo(plotW + 0.5, h - timeH);
    ctx.moveTo(0, priceH + 0.5);
    ctx.lineTo(plotW, priceH + 0.5);
    ctx.stroke();

    // candles and volume, right-aligned
    const x0 = plotW - 14 - (bars.length - 1) * spacing;
    let lastLabelX = -Infinity;
    ctx.textAlign = "center";
    bars.forEach((b, i) => {
      const x = Math.round(x0 + i * spacing);
      const o = Number(b.o);
      const c = Number(b.c);
      const up = c >= o;
      ctx.strokeStyle = ctx.fillStyle = up ? UP : DOWN;
      ctx.beginPath();
      ctx.moveTo(x + 0.5, y(Number(b.h)));
      ctx.lineTo(x + 0.5, y(Number(b.l)));
      ctx.stroke();
      const top = y(Math.max(o, c));
      const bodyH = Math.max(1, y(Math.min(o, c)) - top);
      ctx.fillRect(x - bodyW / 2 + 0.5, top, bodyW, bodyH);
      if (vmax > 0) {
        const vh = (Number(b.v) / vmax) * (volH - 2);
        ctx.globalAlpha = 0.45;
        ctx.fillRect(x - bodyW / 2 + 0.5, volTop + volH - vh, bodyW, vh);
        ctx.globalAlpha = 1;
      }
      if (x - lastLabelX >= 90) {
        ctx.fillStyle = MUTED;
        const daily = state.interval === "1d";
        const d = new Date(b.t);
        ctx.fillText(daily ? `${d.getMonth() + 1}/${d.getDate()}` : fmtTime(b.t, false),
          x, h - timeH / 2);
        lastLabelX = x;
      }
    });

    // last price line and label
    const lastBar = bars[bars.length - 1];
    const lastC = Number(lastBar.c);
    const ly = Math.round(y(lastC)) + 0.5;
    const lastColor = lastC >= Number(lastBar.o) ? UP : DOWN;
    ctx.strokeStyle = lastColor;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(0, ly);
    ctx.lineTo(plotW, ly);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = lastColor;
    ctx.fillRect(plotW + 1, ly - 9, axisW - 1, 18);
    ctx.fillStyle = "#0b0e11";
    ctx.textAlign = "left";
    ctx.fillText(lastBar.c, plotW + 6, ly);

    state.barsDrawn = bars.length;
    info.textContent = `${state.symbol} ${state.interval}  O ${lastBar.o}  H ${lastBar.h}  ` +
      `L ${lastBar.l}  C ${lastBar.c}  V ${fmtNum(lastBar.v, 4)}  n ${lastBar.n ?? "–"}` +
      (lastBar.closed ? "  (closed)" : "");
  }

  /* ---- account: login and private channels */

  function onPrivate(channel, data) {
    state.privateEvents.unshift({ channel, data, ts: Date.now() });
    if (state.privateEvents.length > PRIVATE_KEPT) state.privateEvents.length = PRIVATE_KEPT;
    if (channel === "@balance") state.lastBalance = data;
    invalidate("private");
  }

  function renderPrivate() {
    const bal = $("balances");
    const b = state.lastBalance;
    const list = b && (Array.isArray(b.balances) ? b.balances : Array.isArray(b.balance) ? b.balance : null);
    bal.textContent = "";
    if (list) {
      for (const item of list) {
        const div = document.createElement("div");
        div.className = "balance";
        const asset = item.asset ?? item.currency ?? "?";
        const locked = item.locked ?? item.unavailable ?? "0";
        div.innerHTML = "<b></b><div></div><span></span>";
        div.children[0].textContent = asset;
        div.children[1].textContent = item.available ?? "–";
        div.children[2].textContent = `locked ${locked}`;
        bal.appendChild(div);
      }
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
      row.innerHTML = '<span class="time"></span><span class="chan"></span><span class="json"></span>';
      row.children[0].textContent = fmtTime(ev.ts);
      row.children[1].textContent = ev.channel;
      row.children[2].textContent = JSON.stringify(ev.data).slice(0, 400);
      log.appendChild(row);
    }
  }

  async function login(token) {
    const stateEl = $("account-state");
    stateEl.textContent = "logging in…";
    stateEl.className = "muted";
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
  window.addEventListener("resize", () => invalidate("chart"));
  setInterval(() => {
    if (state.lastMark) invalidate("mark"); // funding countdown
    invalidate("trades");
  }, 1000);

  client.subscribe(SYMBOLS.map((s) => `${s}@ticker`)).catch((err) => noteError("subscribe", err));
  setSymbol(firstSymbol);
  client.connect();
  for (const part of Object.keys(RENDERERS)) invalidate(part);

  window.demo = { client, setSymbol, setInterval: setInterval_, login, logout, get book() { return book; } };
})();
