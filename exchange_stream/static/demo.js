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
    bars: [], // oldest first, one per t: the history, then the kline channel's pushes
    barsDrawn: 0, // bars in the chart's candle series
    history: null, // the last /v1/market/klines request: {symbol, interval, status, bars, ms}
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
    info.textContent = `${head}  O ${shown.o}  H ${shown.h}  L ${shown.l}  C ${shown.c}  ` +
      `V ${fmtNum(shown.v, 4)}  n ${shown.n ?? "–"}` + (shown.closed ? "  (closed)" : "") +
      (h && h.status === "failed" ? "  · history unavailable" : "");
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
})();
