"""Candlesticks (klines) per interval, aligned to UTC, as TradingView and Binance draw them.

A bar covers ``[t, t + interval)`` with ``t`` a multiple of the interval since the epoch (so
``1d`` bars start at 00:00 UTC). ``o`` is the price of its first trade by time (``ts``, then
id), ``c`` of its last, ``h``/``l`` the extremes of its trades. A bar is pushed when it changed
(the engine throttles), and once more with ``"closed": true`` when the clock passes its end;
the next bar opens at the previous close with no volume, so a chart never has a hole where
nobody traded, and its first trade then sets all four prices.

A late trade still reaches its bar while that bar ended less than ``grace_ms`` ago (the
engine takes no trade later than that): the closed bar is amended and returned again, and so
are the empty bars after it that carried its close.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from exchange_stream.core.market.decimals import plain, text
from exchange_stream.core.market.events import Trade

FILLED_MS = 24 * 3_600_000  # an advance makes up the skipped intervals of the last day only

INTERVAL_MS = {
    "1m": 60_000,
    "5m": 5 * 60_000,
    "15m": 15 * 60_000,
    "30m": 30 * 60_000,
    "1h": 3_600_000,
    "4h": 4 * 3_600_000,
    "1d": 24 * 3_600_000,
}


@dataclass
class Bar:
    interval: str
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    count: int = 0
    closed: bool = False
    first: tuple[int, int] = (-1, -1)  # (ts, id) of the trade that set the open
    latest: tuple[int, int] = (-1, -1)  # (ts, id) of the trade that set the close

    def take(self, trade: Trade) -> None:
        """Count one trade of the bar's interval, whatever order trades come in."""
        key = (trade.ts, trade.id)
        if not self.count:
            self.open = self.high = self.low = self.close = trade.price
            self.first = self.latest = key
        else:
            if key < self.first:
                self.open, self.first = trade.price, key
            if key > self.latest:
                self.close, self.latest = trade.price, key
            self.high = max(self.high, trade.price)
            self.low = min(self.low, trade.price)
        self.volume += trade.qty
        self.quote_volume += trade.qty * trade.price
        self.count += 1

    def carry(self, close: Decimal) -> bool:
        """An empty bar follows the previous close; whether that changed it."""
        if self.count or self.close == close:
            return False
        self.open = self.high = self.low = self.close = close
        return True

    def message(self) -> dict:
        return {
            "interval": self.interval,
            "t": self.start,
            "o": text(self.open),
            "h": text(self.high),
            "l": text(self.low),
            "c": text(self.close),
            "v": plain(self.volume),
            "q": plain(self.quote_volume),
            "n": self.count,
            "closed": self.closed,
        }


class KlineSeries:
    """One symbol's bars for one interval: the open bar, whether it changed, and the closed
    bars a late trade may still amend (those that ended less than ``grace_ms`` ago)."""

    def __init__(self, symbol: str, interval: str, grace_ms: int = 60_000) -> None:
        self.symbol = symbol
        self.interval = interval
        self.length = INTERVAL_MS[interval]
        self.grace_ms = grace_ms
        self.bar: Bar | None = None
        self.recent: deque[Bar] = deque()  # closed bars still amendable, oldest first
        self.changed = False
        self.late_trades = 0
        self._horizon = 0  # bars that ended before this (ms) are past amending
        self._ahead: list[Trade] = []  # trades for an interval the clock has not reached

    def add(self, trade: Trade, now_ms: int) -> list[dict]:
        """Take a trade at the clock's ``now_ms``; return the messages of the bars the clock
        closed meanwhile, or the trade amended (a late trade, for a closed bar), in time order.
        Only the clock closes a bar: a trade ahead of it (the engine takes up to
        ``--max-ahead-ms``) waits for its interval to open."""
        start = trade.ts - trade.ts % self.length
        if start > now_ms - now_ms % self.length:
            self._ahead.append(trade)
            return self.advance(now_ms)
        if self.bar is None:
            self.bar = Bar(self.interval, start, *(trade.price,) * 4)
            self.bar.take(trade)
            self.changed = True
            return self.advance(now_ms)
        closed = self.advance(now_ms)
        if start >= self.bar.start:
            self.bar.take(trade)
            self.changed = True
            return closed
        return closed + self._amend(trade, start)

    def _amend(self, trade: Trade, start: int) -> list[dict]:
        """A trade for a closed bar: amend it (or add it, and the empty ones up to the next,
        before the first bar the series had) and carry its close to the empty bars after."""
        recent = self.recent
        index = next((i for i, b in enumerate(recent) if b.start >= start), len(recent))
        if index < len(recent) and recent[index].start == start:
            amended = [recent[index]]
        elif start + self.length <= self._horizon or self.bar is None:
            self.late_trades += 1  # past amending (the engine's bounds keep this from happening)
            return []
        else:
            following = recent[index].start if index < len(recent) else self.bar.start
            amended = [
                Bar(self.interval, at, *(trade.price,) * 4, closed=True)
                for at in range(start, following, self.length)
            ]
            for offset, bar in enumerate(amended):
                recent.insert(index + offset, bar)
        amended[0].take(trade)
        close = amended[0].close
        for later in list(recent)[index + len(amended) :]:
            if not later.carry(close):
                break
            amended.append(later)
        else:
            if self.bar.carry(close):  # type: ignore[union-attr]  # set before any amending
                self.changed = True
        return [bar.message() for bar in amended]

    def advance(self, now_ms: int) -> list[dict]:
        """Close the open bar if ``now_ms`` is past its end, with an empty closed bar for each
        interval skipped (a clock that stood still, a replay's pause; those of the last
        ``FILLED_MS`` only), and open the bar of ``now_ms``, with the trades that were
        waiting for it; forget closed bars too old to amend."""
        self._horizon = max(self._horizon, now_ms - self.grace_ms)
        recent = self.recent
        while recent and recent[0].start + self.length <= self._horizon:
            recent.popleft()
        current = now_ms - now_ms % self.length
        if self.bar is None:
            self._open_first(current)
        bar = self.bar
        if bar is None or now_ms < bar.start + self.length:
            return []
        done = [bar]
        start = max(bar.start + self.length, current - FILLED_MS // self.length * self.length)
        while start <= current:
            following = Bar(self.interval, start, *(done[-1].close,) * 4)
            for trade in [t for t in self._ahead if t.ts - t.ts % self.length == start]:
                self._ahead.remove(trade)
                following.take(trade)
            done.append(following)
            start += self.length
        self._forget_skipped(current)
        self.bar = done.pop()
        for closed in done:
            closed.closed = True
            if closed.start + self.length > self._horizon:
                recent.append(closed)
        self.changed = True
        return [closed.message() for closed in done]

    def _forget_skipped(self, current: int) -> None:
        """Trades that waited for an interval the clock jumped over without making it up
        (more than a day at once): past amending, counted so."""
        waiting = [t for t in self._ahead if t.ts - t.ts % self.length > current]
        self.late_trades += len(self._ahead) - len(waiting)
        self._ahead = waiting

    def _open_first(self, current: int) -> None:
        """The series' first bar, when its first trades came ahead of the clock and the
        clock has reached them."""
        due = [t.ts - t.ts % self.length for t in self._ahead]
        if not due or min(due) > current:
            return
        start = min(due)
        trades = [t for t, at in zip(self._ahead, due, strict=True) if at == start]
        self.bar = Bar(self.interval, start, *(trades[0].price,) * 4)
        for trade in trades:
            self._ahead.remove(trade)
            self.bar.take(trade)
        self.changed = True

    def take_change(self) -> dict | None:
        """The open bar's message if it changed since the last call."""
        if not self.changed or self.bar is None:
            return None
        self.changed = False
        return self.bar.message()
