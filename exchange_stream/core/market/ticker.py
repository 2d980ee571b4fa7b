"""The rolling 24-hour ticker, kept in one-minute buckets.

Granularity: a minute. A bucket counts while its minute started less than 24 hours ago, so
the window is 24 h give or take the current minute. ``open`` is the first price in the window,
``change`` is ``last - open`` and ``changePercent`` is that in percent of ``open``, rounded
half-even to two places; everything else is exact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from exchange_stream.core.market.decimals import text
from exchange_stream.core.market.events import Trade

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS


@dataclass
class _Bucket:
    minute: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    count: int


class RollingTicker:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._buckets: deque[_Bucket] = deque()
        self._last: Decimal | None = None
        self._latest = (-1, -1)  # (ts, id) of the trade that set the last price

    def add(self, trade: Trade) -> None:
        minute = trade.ts // MINUTE_MS
        if (trade.ts, trade.id) > self._latest:
            self._last, self._latest = trade.price, (trade.ts, trade.id)
        bucket = self._bucket_for(minute, trade.price)
        if bucket is None:
            return  # older than the buckets kept: outside any window we will show
        bucket.high = max(bucket.high, trade.price)
        bucket.low = min(bucket.low, trade.price)
        bucket.close = trade.price
        bucket.volume += trade.qty
        bucket.quote_volume += trade.qty * trade.price
        bucket.count += 1

    def _bucket_for(self, minute: int, price: Decimal) -> _Bucket | None:
        if self._buckets and self._buckets[-1].minute == minute:
            return self._buckets[-1]
        if not self._buckets or self._buckets[-1].minute < minute:
            bucket = _Bucket(minute, price, price, price, price, Decimal(0), Decimal(0), 0)
            self._buckets.append(bucket)
            return bucket
        for bucket in reversed(self._buckets):  # a late trade: rare, search back
            if bucket.minute == minute:
                return bucket
        return None

    def message(self, now_ms: int) -> dict | None:
        """The ticker at ``now_ms``, or None before the first trade."""
        oldest = (now_ms - DAY_MS) // MINUTE_MS
        while self._buckets and self._buckets[0].minute <= oldest:
            self._buckets.popleft()
        if self._last is None:
            return None
        last = self._last
        buckets = self._buckets
        open_ = buckets[0].open if buckets else last
        change = last - open_
        percent = (change * 100 / open_).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        if percent.is_zero():
            percent = percent.copy_abs()  # "0.00", not "-0.00"
        return {
            "symbol": self.symbol,
            "open": text(open_),
            "high": text(max((b.high for b in buckets), default=last)),
            "low": text(min((b.low for b in buckets), default=last)),
            "last": text(last),
            "volume": text(sum((b.volume for b in buckets), Decimal(0))),
            "quoteVolume": text(sum((b.quote_volume for b in buckets), Decimal(0))),
            "change": text(change),
            "changePercent": text(percent),
            "count": sum(b.count for b in buckets),
            "ts": now_ms,
        }
