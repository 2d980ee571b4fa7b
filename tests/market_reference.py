"""An independent reference of the market engine's documented semantics (docs/market.md).

Written from the documentation only, never from ``exchange_stream`` (nothing is imported from
it): the sections "What the engine accepts, and when", ``<symbol>@trades``,
``<symbol>@ticker`` and ``<symbol>@kline...``. It is meant to be obviously correct, not fast:
every accepted trade is kept in a list and every window or bar is recomputed from that list
by brute force, with ``decimal`` in a local context of 200 significant digits.

:class:`Reference` takes the raw input lines in arrival order, each with the engine clock
time (ms) at which it was handled, and answers which were accepted or refused (and why), the
ticker expected at a clock time and every bar of every interval. :func:`compare` checks what
an engine published against it; :func:`seeded_stream` makes a long reproducible stream.

Conventions the documentation does not spell out, and that this module assumes (each is a
keyword argument or a documented choice below, so a test can see it):

- The checks run in the order of the sentence "it is parsed, bounded, checked against the
  engine's clock and de-duplicated": ``malformed``, then ``number``, then ``future`` /
  ``late``, then ``duplicate`` / ``conflict`` / ``stale_book`` / ``stale_index``.
- "The same trade" compares price and quantity as numbers ("101.500" is "101.5"), side and
  ``ts`` exactly.
- A push at clock time ``T`` sees the events handled before ``T`` (the driver feeds events
  between clock advances, and the clock's calls run at the end of an advance).
- A bar ``[t, t + interval)`` is closed once the clock is at or past ``t + interval``.
"""

from __future__ import annotations

import json
import random
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

PRECISION = 200
MINUTE_MS = 60_000
DAY_MS = 86_400_000
INTERVALS = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
REASONS = ("number", "future", "late", "duplicate", "conflict", "stale_book", "stale_index")
SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9_.-]{0,63}")  # upper case, as channel names
UID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A decimal string: digits with an optional point and an optional exponent ("9E+999999" is a
# decimal string, refused for its size, not for its spelling).
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
PRIVATE_TYPES = ("balance", "order", "position", "account")
TRADE_FIELDS = ("id", "price", "qty", "side", "ts")
TICKER_FIELDS = (
    "symbol",
    "open",
    "high",
    "low",
    "last",
    "volume",
    "quoteVolume",
    "change",
    "changePercent",
    "count",
    "ts",
)
BAR_FIELDS = ("interval", "t", "o", "h", "l", "c", "v", "q", "n", "closed")
TICKER_DECIMALS = ("open", "high", "low", "last", "volume", "quoteVolume", "change")
BAR_DECIMALS = ("o", "h", "l", "c", "v", "q")


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Trade:
    symbol: str
    id: int
    price: Decimal
    qty: Decimal
    side: str
    ts: int
    handled_ms: int = 0  # the engine clock when it was handled
    line: int = 0  # its line's index in the arrival order

    def same(self, other: Trade) -> bool:
        return (self.price, self.qty, self.side, self.ts) == (
            other.price,
            other.qty,
            other.side,
            other.ts,
        )


@dataclass
class Verdict:
    """What the reference decided about one input line."""

    line: bytes
    handled_ms: int
    type: str | None
    symbol: str | None
    reason: str | None  # None: accepted
    trade: Trade | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None


def canonical_digits(value: Decimal) -> tuple[int, int]:
    """(digits before the point, digits after it) of ``value`` in its canonical spelling:
    trailing zeros dropped, so "101.500" has 1 place and "9E+999999" 1,000,000 integer
    digits. Counted from the digit tuple, never by expanding the number."""
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    kept = list(digits)
    while len(kept) > 1 and kept[-1] == 0:
        kept.pop()
        exponent += 1
    if kept == [0]:
        return 1, 0
    places = max(0, -exponent)
    integer = max(1, len(kept) + exponent)  # "0.5" has one digit, the 0, before the point
    return integer, places


class Reference:
    """The documented semantics, by brute force. Feed it every raw line with :meth:`handle`."""

    def __init__(
        self,
        *,
        max_late_ms: int = 60_000,
        max_ahead_ms: int = 10_000,
        max_integer_digits: int = 15,
        max_places: int = 18,
    ) -> None:
        self.max_late_ms = max_late_ms
        self.max_ahead_ms = max_ahead_ms
        self.max_integer_digits = max_integer_digits
        self.max_places = max_places
        self.verdicts: list[Verdict] = []
        self.refused: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()  # by event type
        self.trades: list[Trade] = []  # accepted, in arrival order
        self._of_symbol: dict[str, list[Trade]] = {}  # the same, per symbol
        self._handled_of: dict[str, list[int]] = {}  # and when each was handled
        self._line_of: dict[str, list[int]] = {}  # and its line's index
        self._last_handled = -1
        self._taken: dict[tuple[str, int], Trade] = {}
        self._last_book: dict[str, int] = {}
        self._last_index: dict[tuple[str, str], int] = {}
        # Lines whose verdict the documentation leaves open (a trade id reused after its
        # first trade could no longer be accepted, so after the id is forgotten).
        self.ambiguous: list[Verdict] = []

    # -- input ------------------------------------------------------------------------------

    def handle(self, line: bytes | str, now_ms: int) -> Verdict:
        raw = line.encode() if isinstance(line, str) else bytes(line)
        if now_ms < self._last_handled:
            raise ValueError("lines must come in arrival order, the clock never going back")
        self._last_handled = now_ms
        kind: str | None = None
        symbol: str | None = None
        try:
            event = self._parse(raw)
            kind = event["type"]
            symbol = event.get("symbol")
            self._bound(event)
            if "ts" in event:
                if event["ts"] - now_ms > self.max_ahead_ms:
                    raise Refused("future")
                if now_ms - event["ts"] > self.max_late_ms:
                    raise Refused("late")
            verdict = self._deduplicate(raw, event, now_ms)
        except Refused as refusal:
            verdict = Verdict(raw, now_ms, kind, symbol, refusal.reason)
        self.verdicts.append(verdict)
        if verdict.accepted:
            assert verdict.type is not None
            self.accepted[verdict.type] += 1
            if verdict.trade is not None:
                self.trades.append(verdict.trade)
                self._of_symbol.setdefault(verdict.trade.symbol, []).append(verdict.trade)
                self._handled_of.setdefault(verdict.trade.symbol, []).append(now_ms)
                self._line_of.setdefault(verdict.trade.symbol, []).append(verdict.trade.line)
        else:
            assert verdict.reason is not None
            self.refused[verdict.reason] += 1
        return verdict

    def _parse(self, raw: bytes) -> dict:
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Refused("malformed") from None
        if not isinstance(event, dict):
            raise Refused("malformed")
        kind = event.get("type")
        if kind == "trade":
            price = _positive(_decimal(event.get("price")))
            qty = _positive(_decimal(event.get("qty")))
            if event.get("side") not in ("buy", "sell"):
                raise Refused("malformed")
            return {
                "type": kind,
                "symbol": _symbol(event.get("symbol")),
                "id": _natural(event.get("id")),
                "price": price,
                "qty": qty,
                "side": event["side"],
                "ts": _natural(event.get("ts")),
                "numbers": [price, qty],
            }
        if kind == "book":
            bids = _levels(event.get("bids"))
            asks = _levels(event.get("asks"))
            live_bids = [price for price, qty in bids if qty != 0]
            live_asks = [price for price, qty in asks if qty != 0]
            if live_bids and live_asks and max(live_bids) >= min(live_asks):
                raise Refused("malformed")  # crossed
            return {
                "type": kind,
                "symbol": _symbol(event.get("symbol")),
                "ts": _natural(event.get("ts")),
                "numbers": [number for level in bids + asks for number in level],
            }
        if kind == "index":
            source = event.get("source")
            if not isinstance(source, str) or not source:
                raise Refused("malformed")
            price = _positive(_decimal(event.get("price")))
            return {
                "type": kind,
                "symbol": _symbol(event.get("symbol")),
                "source": source,
                "ts": _natural(event.get("ts")),
                "numbers": [price],
            }
        if kind in PRIVATE_TYPES:
            uid = event.get("uid")
            if isinstance(uid, bool) or not (
                (isinstance(uid, int) and uid > 0) or (isinstance(uid, str) and UID.fullmatch(uid))
            ):
                raise Refused("malformed")
            if "data" not in event:
                raise Refused("malformed")
            return {"type": kind, "numbers": []}
        raise Refused("malformed")

    def _bound(self, event: dict) -> None:
        for number in event["numbers"]:
            integer, places = canonical_digits(number)
            if integer > self.max_integer_digits or places > self.max_places:
                raise Refused("number")

    def _deduplicate(self, raw: bytes, event: dict, now_ms: int) -> Verdict:
        kind, symbol = event["type"], event.get("symbol")
        if kind == "trade":
            trade = Trade(
                symbol,
                event["id"],
                event["price"],
                event["qty"],
                event["side"],
                event["ts"],
                now_ms,
                len(self.verdicts),
            )
            taken = self._taken.get((symbol, trade.id))
            if taken is not None:
                reason = "duplicate" if taken.same(trade) else "conflict"
                if now_ms - taken.ts > self.max_late_ms:
                    # An id reused after its trade left the late bound: docs/market.md does
                    # not say whether it is still remembered. Recorded; judged as remembered.
                    self.ambiguous.append(Verdict(raw, now_ms, kind, symbol, reason, trade))
                raise Refused(reason)
            self._taken[(symbol, trade.id)] = trade
            return Verdict(raw, now_ms, kind, symbol, None, trade)
        if kind == "book":
            if event["ts"] < self._last_book.get(symbol, -1):
                raise Refused("stale_book")
            self._last_book[symbol] = event["ts"]
        if kind == "index":
            key = (symbol, event["source"])
            if event["ts"] < self._last_index.get(key, -1):
                raise Refused("stale_index")
            self._last_index[key] = event["ts"]
        return Verdict(raw, now_ms, kind, symbol, None)

    # -- output -----------------------------------------------------------------------------

    def symbols(self) -> list[str]:
        return sorted(self._of_symbol)

    def trades_of(
        self, symbol: str, handled_before: int | None = None, lines: int | None = None
    ) -> list[Trade]:
        """The accepted trades of ``symbol``, in arrival order: all of them, those handled
        before the clock time ``handled_before``, or those of the first ``lines`` lines (a
        prefix of the symbol's list either way, since the clock never goes back)."""
        trades = self._of_symbol.get(symbol, [])
        if not trades or (handled_before is None and lines is None):
            return list(trades)
        if lines is not None:
            return trades[: bisect_left(self._line_of[symbol], lines)]
        return trades[: bisect_left(self._handled_of[symbol], handled_before)]

    def ticker(self, symbol: str, now_ms: int, lines: int | None = None) -> dict | None:
        """The ticker at clock time ``now_ms`` from the trades of the first ``lines`` lines
        (default: those handled before ``now_ms``); None before the symbol's first trade (the
        documentation does not say what is sent then: nothing, presumably)."""
        trades = self.trades_of(symbol, now_ms, lines)
        if not trades:
            return None
        start = (now_ms - DAY_MS) // MINUTE_MS * MINUTE_MS
        window = [t for t in trades if t.ts >= start]
        with localcontext() as context:
            context.prec = PRECISION
            if window:
                first = min(window, key=lambda t: (t.ts, t.id)).price
                last = max(window, key=lambda t: (t.ts, t.id)).price
                high = max(t.price for t in window)
                low = min(t.price for t in window)
                volume = sum((t.qty for t in window), Decimal(0))
                quote = sum((t.price * t.qty for t in window), Decimal(0))
            else:
                last = max(trades, key=lambda t: (t.ts, t.id)).price
                first = high = low = last
                volume = quote = Decimal(0)
            change = last - first
            percent = (change / first * 100).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        return {
            "symbol": symbol,
            "open": first,
            "high": high,
            "low": low,
            "last": last,
            "volume": volume,
            "quoteVolume": quote,
            "change": change,
            "changePercent": percent,
            "count": len(window),
            "ts": now_ms,
        }

    def bars(self, symbol: str, interval: str, now_ms: int, lines: int | None = None) -> list[dict]:
        """Every bar of ``symbol`` from the one of its earliest trade (by ``ts``) to the later
        of the clock's and the latest trade's, oldest first; a bar without trades carries the
        previous bar's close. ``closed`` is true once ``now_ms`` is at or past its end. The
        trades are those of the first ``lines`` lines (default: handled before ``now_ms``)."""
        size = INTERVALS[interval]
        trades = self.trades_of(symbol, now_ms, lines)
        if not trades:
            return []
        groups: dict[int, list[Trade]] = {}
        for trade in trades:
            groups.setdefault(trade.ts - trade.ts % size, []).append(trade)
        last_t = max(max(groups), now_ms - now_ms % size)
        bars, close = [], None
        for t in range(min(groups), last_t + size, size):
            group = sorted(groups.get(t, []), key=lambda trade: (trade.ts, trade.id))
            with localcontext() as context:
                context.prec = PRECISION
                if group:
                    o, c = group[0].price, group[-1].price
                    h = max(trade.price for trade in group)
                    low = min(trade.price for trade in group)
                    v = sum((trade.qty for trade in group), Decimal(0))
                    q = sum((trade.price * trade.qty for trade in group), Decimal(0))
                else:
                    assert close is not None
                    o = h = low = c = close
                    v = q = Decimal(0)
            close = c
            bars.append(
                {
                    "interval": interval,
                    "t": t,
                    "o": o,
                    "h": h,
                    "l": low,
                    "c": c,
                    "v": v,
                    "q": q,
                    "n": len(group),
                    "closed": now_ms >= t + size,
                }
            )
        return bars


def _decimal(text: object) -> Decimal:
    if not isinstance(text, str) or not DECIMAL.fullmatch(text):
        raise Refused("malformed")  # a JSON number included: nothing is rounded on the way in
    return Decimal(text)


def _positive(value: Decimal) -> Decimal:
    if not value > 0:
        raise Refused("malformed")
    return value


def _symbol(text: object) -> str:
    if not isinstance(text, str) or not SYMBOL.fullmatch(text):
        raise Refused("malformed")
    return text


def _natural(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused("malformed")
    return value


def _levels(levels: object) -> list[tuple[Decimal, Decimal]]:
    if not isinstance(levels, list):
        raise Refused("malformed")
    pairs = []
    for level in levels:
        if not isinstance(level, list) or len(level) != 2:
            raise Refused("malformed")
        price, qty = _decimal(level[0]), _decimal(level[1])
        if not price > 0 or qty < 0:  # the docs do not say; a book price must be a price
            raise Refused("malformed")
        pairs.append((price, qty))
    return pairs


# -- comparing an engine's publications with the reference ------------------------------------


@dataclass
class Comparison:
    """What :func:`compare` found; ``problems`` holds the first few differences, spelled out."""

    trades_published: int = 0
    trades_expected: int = 0
    trades_differing: int = 0
    tickers_compared: int = 0
    tickers_differing: int = 0
    bars_compared: int = 0
    bars_differing: int = 0
    kline_messages_compared: int = 0
    kline_messages_differing: int = 0
    problems: list[str] = field(default_factory=list)
    limit: int = 40

    def problem(self, text: str) -> None:
        if len(self.problems) < self.limit:
            self.problems.append(text)

    @property
    def differing(self) -> int:
        return (
            self.trades_differing
            + self.tickers_differing
            + self.bars_differing
            + self.kline_messages_differing
        )


def _as_decimal(text: object) -> Decimal | None:
    if not isinstance(text, str) or not DECIMAL.fullmatch(text):
        return None
    return Decimal(text)


def differences(published: dict, expected: dict, fields: tuple, decimals: tuple) -> list[str]:
    """The fields in which a published object differs from the reference's: decimals as
    numbers (the reference does not decide how a number is spelled), the rest exactly."""
    found = []
    if set(published) != set(fields):
        found.append(f"fields {sorted(published)} != {sorted(fields)}")
    for name in fields:
        if name not in published:
            continue
        mine, theirs = published[name], expected[name]
        if name in decimals or name == "changePercent":
            value = _as_decimal(mine)
            if value is None or value != theirs:
                found.append(f"{name}={mine!r} expected {theirs}")
        elif type(mine) is not type(theirs) or mine != theirs:
            found.append(f"{name}={mine!r} expected {theirs!r}")
    return found


def _trade_expected(trade: Trade) -> dict:
    return {
        "id": trade.id,
        "price": trade.price,
        "qty": trade.qty,
        "side": trade.side,
        "ts": trade.ts,
    }


def _payload(raw: bytes | dict) -> object:
    return json.loads(raw) if isinstance(raw, bytes | str) else raw


def compare(
    published: list[tuple],
    reference: Reference,
    end_ms: int,
    *,
    prefix: str = "ex:",
    every_kline: bool = False,
) -> Comparison:
    """Check ``published`` against the reference after a run that ended at clock time
    ``end_ms``. Its entries are (clock ms, channel, payload) or (clock ms, channel, payload,
    lines), in publication order, ``lines`` being how many input lines the engine had been
    given when it published (so a publication made while a line is handled sees that line);
    without it, a publication sees the lines handled before its clock time.

    - ``@trades``: every accepted trade exactly once, fields as accepted, each batch in id
      order, each trade in the first batch published after it was handled;
    - ``@ticker``: every message equals the reference ticker at the message's ``ts``, and the
      last one the reference at ``end_ms`` (what changed was sent);
    - klines and bars history: the last version of every closed bar (per channel and ``t``)
      equals the reference's bar, and every reference bar closed by ``end_ms`` was
      published; with ``every_kline``, also each kline message against the reference at its
      publication time.
    """
    result = Comparison()
    symbols = set(reference.symbols())
    by_channel: dict[str, list[tuple]] = {}
    for entry in published:
        at, channel, raw, *seen = entry
        by_channel.setdefault(channel, []).append((at, channel, raw, seen[0] if seen else None))
    for channel in by_channel:
        if channel.startswith(prefix) and "@" in channel:
            name, kind = channel[len(prefix) :].split("@", 1)
            if kind in ("trades", "ticker") or kind.startswith(("kline", "bars_")):
                symbols.add(name)
    for symbol in sorted(symbols):
        _compare_trades(by_channel, reference, symbol, prefix, result)
        _compare_tickers(by_channel, reference, symbol, end_ms, prefix, result)
        for interval in INTERVALS:
            channels = [f"kline_{interval}", f"bars_{interval}"]
            if interval == "1m":
                channels.append("kline")
            for kind in channels:
                _compare_bars(by_channel, reference, symbol, interval, kind, end_ms, prefix, result)
                if every_kline:
                    _compare_kline_messages(
                        by_channel, reference, symbol, interval, kind, prefix, result
                    )
    return result


def _compare_trades(published, reference, symbol, prefix, result) -> None:
    channel = f"{prefix}{symbol}@trades"
    batches = []
    for at, name, raw, _lines in published.get(channel, ()):
        if name == channel:
            message = _payload(raw)
            if not (isinstance(message, dict) and message.get("event") == f"{symbol}@trades"):
                result.trades_differing += 1
                result.problem(f"{channel}: not an @trades envelope: {message!r:.200}")
                continue
            batches.append((at, message.get("data")))
    expected = {trade.id: trade for trade in reference.trades_of(symbol)}
    result.trades_expected += len(expected)
    where: dict[int, int] = {}  # trade id -> clock of the batch it came in
    for at, batch in batches:
        if not isinstance(batch, list) or not batch:
            result.trades_differing += 1
            result.problem(f"{channel} at {at}: batch {batch!r:.200}")
            continue
        ids = [item.get("id") if isinstance(item, dict) else None for item in batch]
        if ids != sorted(ids, key=lambda i: (i is None, i)) or len(set(ids)) != len(ids):
            result.trades_differing += 1
            result.problem(f"{channel} at {at}: ids not in order: {ids}")
        for item in batch:
            result.trades_published += 1
            trade_id = item.get("id") if isinstance(item, dict) else None
            trade = expected.get(trade_id) if isinstance(trade_id, int) else None
            if trade is None:
                result.trades_differing += 1
                result.problem(f"{channel} at {at}: not an accepted trade: {item!r:.200}")
                continue
            if trade_id in where:
                result.trades_differing += 1
                result.problem(f"{channel} at {at}: trade {trade_id} published again")
                continue
            where[trade_id] = at
            found = differences(item, _trade_expected(trade), TRADE_FIELDS, ("price", "qty"))
            if found:
                result.trades_differing += 1
                result.problem(f"{channel} trade {trade_id}: {'; '.join(found)}")
    batch_times = [at for at, _ in batches]
    for trade_id, trade in expected.items():
        if trade_id not in where:
            result.trades_differing += 1
            result.problem(f"{channel}: accepted trade {trade_id} never published")
            continue
        after = bisect_right(batch_times, trade.handled_ms)
        first = batch_times[after] if after < len(batch_times) else None
        if where[trade_id] != first:
            result.trades_differing += 1
            result.problem(
                f"{channel}: trade {trade_id} handled at {trade.handled_ms} came in the batch"
                f" of {where[trade_id]}, not in the first one after it ({first})"
            )


def _compare_tickers(published, reference, symbol, end_ms, prefix, result) -> None:
    channel = f"{prefix}{symbol}@ticker"
    last = None
    for at, name, raw, lines in published.get(channel, ()):
        if name != channel:
            continue
        message = _payload(raw)
        result.tickers_compared += 1
        data = message.get("data") if isinstance(message, dict) else None
        if message.get("event") != f"{symbol}@ticker" or not isinstance(data, dict):
            result.tickers_differing += 1
            result.problem(f"{channel} at {at}: not a ticker: {message!r:.200}")
            continue
        ts = data.get("ts")
        if not isinstance(ts, int):
            result.tickers_differing += 1
            result.problem(f"{channel} at {at}: ts {ts!r}")
            continue
        expected = reference.ticker(symbol, ts, lines)
        if expected is None:
            result.tickers_differing += 1
            result.problem(f"{channel} at {at}: a ticker before any accepted trade: {data}")
            continue
        found = differences(data, expected, TICKER_FIELDS, TICKER_DECIMALS)
        if found:
            result.tickers_differing += 1
            result.problem(f"{channel} ts {ts}: {'; '.join(found)}")
        last = data
    final = reference.ticker(symbol, end_ms)
    if final is not None:
        result.tickers_compared += 1
        if last is None:
            result.tickers_differing += 1
            result.problem(f"{channel}: no ticker published (expected {final})")
        else:
            found = differences({**last, "ts": end_ms}, final, TICKER_FIELDS, TICKER_DECIMALS)
            if found:
                result.tickers_differing += 1
                result.problem(f"{channel}: the last ticker is not the final one: {found}")


def _bar_messages(published, symbol, interval, kind, prefix, result):
    """(clock, lines, bar) of every message on a kline or bars channel."""
    channel = f"{prefix}{symbol}@{kind}"
    for at, name, raw, lines in published.get(channel, ()):
        if name != channel:
            continue
        message = _payload(raw)
        if kind.startswith("bars_"):
            bar = message  # the bars history holds the bar object itself
        elif isinstance(message, dict) and message.get("event") == f"{symbol}@{kind}":
            bar = message.get("data")
        else:
            bar = None
        if not isinstance(bar, dict) or not isinstance(bar.get("t"), int):
            result.bars_differing += 1
            result.problem(f"{channel} at {at}: not a bar: {message!r:.200}")
            continue
        yield at, lines, bar


def _compare_bars(published, reference, symbol, interval, kind, end_ms, prefix, result) -> None:
    channel = f"{prefix}{symbol}@{kind}"
    last_closed: dict[int, dict] = {}
    for at, _lines, bar in _bar_messages(published, symbol, interval, kind, prefix, result):
        if bar.get("closed") is True:
            last_closed[bar["t"]] = bar
        elif kind.startswith("bars_"):
            result.bars_differing += 1
            result.problem(f"{channel} at {at}: an open bar in the bars history: {bar}")
    expected = {bar["t"]: bar for bar in reference.bars(symbol, interval, end_ms) if bar["closed"]}
    for t, bar in sorted(expected.items()):
        result.bars_compared += 1
        mine = last_closed.get(t)
        if mine is None:
            result.bars_differing += 1
            result.problem(f"{channel}: closed bar t={t} never published (expected {bar})")
            continue
        found = differences(mine, bar, BAR_FIELDS, BAR_DECIMALS)
        if found:
            result.bars_differing += 1
            result.problem(f"{channel} t={t} (last closed version): {'; '.join(found)}")
    for t in sorted(set(last_closed) - set(expected)):
        result.bars_differing += 1
        result.problem(f"{channel}: closed bar t={t} published but not expected")


def _compare_kline_messages(published, reference, symbol, interval, kind, prefix, result):
    channel = f"{prefix}{symbol}@{kind}"
    cache: dict[tuple, dict[int, dict]] = {}
    quiet = Comparison()  # a message that is not a bar is counted once, by _compare_bars
    for at, lines, bar in _bar_messages(published, symbol, interval, kind, prefix, quiet):
        if (at, lines) not in cache:
            bars = reference.bars(symbol, interval, at, lines)
            cache[at, lines] = {b["t"]: b for b in bars}
        result.kline_messages_compared += 1
        expected = cache[at, lines].get(bar["t"])
        if expected is None:
            result.kline_messages_differing += 1
            result.problem(f"{channel} at {at}: bar t={bar['t']} has no trade behind it")
            continue
        found = differences(bar, expected, BAR_FIELDS, BAR_DECIMALS)
        if found:
            result.kline_messages_differing += 1
            result.problem(f"{channel} at {at} t={bar['t']}: {'; '.join(found)}")


# -- a long reproducible stream ----------------------------------------------------------------


def plain(value: Decimal) -> str:
    """``value`` spelled canonically: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text


def trade_line(symbol: str, trade_id: int, price: str, qty: str, side: str, ts: int) -> bytes:
    return json.dumps(
        {
            "type": "trade",
            "symbol": symbol,
            "id": trade_id,
            "price": price,
            "qty": qty,
            "side": side,
            "ts": ts,
        },
        separators=(",", ":"),
    ).encode()


def book_line(symbol: str, mid: int, ts: int, rng: random.Random) -> bytes:
    bids = [[plain(Decimal(mid - k) - Decimal("0.5")), str(rng.randint(1, 40))] for k in range(3)]
    asks = [[plain(Decimal(mid + k) + Decimal("0.5")), str(rng.randint(1, 40))] for k in range(3)]
    event = {"type": "book", "symbol": symbol, "bids": bids, "asks": asks, "ts": ts}
    return json.dumps(event, separators=(",", ":")).encode()


def seeded_stream(
    seed: int,
    minutes: float,
    start_ms: int,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    tick_ms: int = 250,
    trades_per_second: float = 3.0,
) -> list[tuple[int, bytes]]:
    """(arrival clock ms, line) for ``minutes`` of a market: per symbol a few trades a
    second (ids per symbol, so both symbols use the same ids), ts a little behind arrival;
    1% resent as they were (seconds later), 1% late by up to 20 s, 0.5% conflicting resends
    (another price, quantity or side, seconds later), 0.1% beyond the late bound, 0.1% far
    in the future, 0.1% with out-of-bounds numbers, a book every second or so (5% of them
    stale: older than the last one), and now and then a malformed line."""
    rng = random.Random(seed)
    ids = dict.fromkeys(symbols, 0)
    mids = {symbol: 60_000 // (index + 1) for index, symbol in enumerate(symbols)}
    last_book = dict.fromkeys(symbols, 0)
    sent: list[tuple[int, bytes, dict]] = []  # recent trades: (arrival, line, fields)
    later: list[tuple[int, bytes]] = []  # resends waiting for their arrival time
    stream: list[tuple[int, bytes]] = []
    per_tick = trades_per_second * tick_ms / 1000
    absurd = ("9E+999999", "1" * 30, "0." + "0" * 24 + "1", "1E+30")
    for step in range(int(minutes * 60_000 / tick_ms)):
        now = start_ms + step * tick_ms
        due = [line for at, line in later if at <= now]
        later = [(at, line) for at, line in later if at > now]
        stream.extend((now, line) for line in due)
        for symbol in symbols:
            count = int(per_tick) + (rng.random() < per_tick - int(per_tick))
            for _ in range(count):
                ids[symbol] += 1
                mids[symbol] += rng.choice((-1, 0, 0, 1))
                price = plain(Decimal(mids[symbol] * 10 + rng.randint(-5, 5)) / 10)
                qty = plain(Decimal(rng.randint(1, 5000)) / 1000)
                side = rng.choice(("buy", "sell"))
                ts = now - rng.randint(0, 200)
                roll = rng.random()
                if roll < 0.01:
                    ts = now - rng.randint(1_000, 20_000)  # late, within the bound
                elif roll < 0.011:
                    ts = now - rng.randint(60_001, 600_000)  # beyond the bound
                elif roll < 0.012:
                    ts = now + rng.choice((10_001, 3_600_000, 10**15))  # far future
                elif roll < 0.013:
                    if rng.random() < 0.5:
                        price = rng.choice(absurd)
                    else:
                        qty = rng.choice(absurd)
                line = trade_line(symbol, ids[symbol], price, qty, side, ts)
                stream.append((now, line))
                fields = {"symbol": symbol, "id": ids[symbol], "price": price, "qty": qty}
                sent.append((now, line, {**fields, "side": side, "ts": ts}))
            del sent[:-200]
            roll = rng.random()
            recent = [
                entry
                for entry in sent[-40:]
                if entry[2]["price"] not in absurd and entry[2]["qty"] not in absurd
            ]
            if recent and roll < 0.01 * per_tick:
                _, line, _ = rng.choice(recent)
                later.append((now + rng.randint(0, 20) * tick_ms, line))  # resent as it was
            elif recent and roll < 0.015 * per_tick:
                _, _, fields = rng.choice(recent)
                changed = dict(fields)
                which = rng.choice(("price", "qty", "side"))
                if which == "price":
                    changed["price"] = plain(Decimal(fields["price"]) + Decimal("0.1"))
                elif which == "qty":
                    changed["qty"] = plain(Decimal(rng.randint(1, 5000)) / 1000)
                else:
                    changed["side"] = "sell" if fields["side"] == "buy" else "buy"
                line = trade_line(
                    changed["symbol"],
                    changed["id"],
                    changed["price"],
                    changed["qty"],
                    changed["side"],
                    changed["ts"],
                )
                later.append((now + rng.randint(0, 20) * tick_ms, line))
            if rng.random() < tick_ms / 1000:
                if last_book[symbol] and rng.random() < 0.05:
                    ts = last_book[symbol] - rng.randint(1, 500)  # stale
                else:
                    ts = now - rng.randint(0, 100)
                    last_book[symbol] = max(last_book[symbol], ts)
                stream.append((now, book_line(symbol, mids[symbol], ts, rng)))
        if rng.random() < 0.002:
            stream.append((now, rng.choice((b"not json", b'{"type":"trade"}', b"[]"))))
    return stream
