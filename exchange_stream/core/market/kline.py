"""Candlesticks (klines) per interval, aligned to UTC, as TradingView expects them.

A bar covers ``[t, t + interval)`` with ``t`` a multiple of the interval since the epoch (so
``1d`` bars start at 00:00 UTC). A bar is pushed when it changed (the engine throttles), and
once more with ``"closed": true`` when time passes its end; the next bar then opens at the
previous close with no volume, so a chart never has a hole where nobody traded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from exchange_stream.core.market.decimals import text
from exchange_stream.core.market.events import Trade

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
    latest: tuple[int, int] = (-1, -1)  # (ts, id) of the trade that set the close

    def message(self) -> dict:
        return {
            "interval": self.interval,
            "t": self.start,
            "o": text(self.open),
            "h": text(self.high),
            "l": text(self.low),
            "c": text(self.close),
            "v": text(self.volume),
            "q": text(self.quote_volume),
            "n": self.count,
            "closed": self.closed,
        }


class KlineSeries:
    """One symbol's bars for one interval: the open bar and whether it changed."""

    def __init__(self, symbol: str, interval: str) -> None:
        self.symbol = symbol
        self.interval = interval
        self.length = INTERVAL_MS[interval]
        self.bar: Bar | None = None
        self.changed = False
        self.late_trades = 0

    def add(self, trade: Trade) -> list[dict]:
        """Take a trade; return the messages of bars it closed (a trade past the bar's end)."""
        start = trade.ts - trade.ts % self.length
        closed = self.advance(trade.ts)
        bar = self.bar
        if bar is None:
            bar = self.bar = Bar(self.interval, start, *(trade.price,) * 4)
        elif start < bar.start:
            self.late_trades += 1  # its bar is closed and published already
            return closed
        bar.high = max(bar.high, trade.price)
        bar.low = min(bar.low, trade.price)
        if (trade.ts, trade.id) > bar.latest:  # trades may arrive out of order
            bar.close, bar.latest = trade.price, (trade.ts, trade.id)
        bar.volume += trade.qty
        bar.quote_volume += trade.qty * trade.price
        bar.count += 1
        self.changed = True
        return closed

    def advance(self, now_ms: int) -> list[dict]:
        """Close the open bar if ``now_ms`` is past its end and open the bar of ``now_ms``."""
        bar = self.bar
        if bar is None or now_ms < bar.start + self.length:
            return []
        bar.closed = True
        start = now_ms - now_ms % self.length
        self.bar = Bar(self.interval, start, *(bar.close,) * 4)
        self.changed = True
        return [bar.message()]

    def take_change(self) -> dict | None:
        """The open bar's message if it changed since the last call."""
        if not self.changed or self.bar is None:
            return None
        self.changed = False
        return self.bar.message()
