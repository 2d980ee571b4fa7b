"""The rolling 24-hour ticker, as Binance counts it, kept in one-minute buckets.

The window is the trades whose ``ts`` is at or after ``now - 24 h`` rounded down to a whole
minute: between 24 h and 24 h 59.999 s, never shorter (Binance: "no more than 59999 ms from
the requested window"). ``open`` is the price of the window's first trade by time (``ts``,
then id), ``last`` that of the latest trade by time, whenever it came; ``change`` is
``last - open`` and ``changePercent`` that in percent of ``open``, rounded half-even to two
places; everything else is exact, and computed values are spelled canonically (``plain``).
Volumes and the count are running sums (a trade adds, a bucket leaving the window
subtracts), so a message costs O(1), not O(minutes).
"""

from __future__ import annotations

from collections import deque
from decimal import ROUND_HALF_EVEN, Decimal

from exchange_stream.core.market.decimals import plain, text
from exchange_stream.core.market.events import Trade

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
ZERO = Decimal(0)


class _Bucket:
    __slots__ = ("count", "first", "high", "low", "minute", "open", "quote_volume", "volume")

    def __init__(self, minute: int, trade: Trade) -> None:
        self.minute = minute
        self.first = (trade.ts, trade.id)
        self.open = self.high = self.low = trade.price
        self.volume = ZERO
        self.quote_volume = ZERO
        self.count = 0


class RollingTicker:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._buckets: deque[_Bucket] = deque()  # by minute, oldest first
        self._last: Decimal | None = None
        self._latest = (-1, -1)  # (ts, id) of the trade that set the last price
        self._volume = ZERO
        self._quote_volume = ZERO
        self._count = 0
        self._high: Decimal | None = None  # over the buckets kept; None: to be recomputed
        self._low: Decimal | None = None
        self._oldest: int | None = None  # the window's oldest minute, once a message set it

    def add(self, trade: Trade) -> None:
        if (trade.ts, trade.id) > self._latest:
            self._last, self._latest = trade.price, (trade.ts, trade.id)
        bucket = self._bucket_for(trade)
        if bucket is None:
            return  # its minute has left the window already
        if (trade.ts, trade.id) < bucket.first:
            bucket.first, bucket.open = (trade.ts, trade.id), trade.price
        bucket.high = max(bucket.high, trade.price)
        bucket.low = min(bucket.low, trade.price)
        quote = trade.qty * trade.price
        bucket.volume += trade.qty
        bucket.quote_volume += quote
        bucket.count += 1
        self._volume += trade.qty
        self._quote_volume += quote
        self._count += 1
        if self._high is not None:
            self._high = max(self._high, trade.price)
        if self._low is not None:
            self._low = min(self._low, trade.price)

    def _bucket_for(self, trade: Trade) -> _Bucket | None:
        minute = trade.ts // MINUTE_MS
        buckets = self._buckets
        if not buckets or buckets[-1].minute < minute:
            buckets.append(_Bucket(minute, trade))
            return buckets[-1]
        # The current minute, or a late trade (rare): search back from the newest.
        for index in range(len(buckets) - 1, -1, -1):
            if buckets[index].minute == minute:
                return buckets[index]
            if buckets[index].minute < minute:
                buckets.insert(index + 1, _Bucket(minute, trade))
                return buckets[index + 1]
        if self._oldest is not None and minute < self._oldest:
            return None
        buckets.appendleft(_Bucket(minute, trade))
        return buckets[0]

    def message(self, now_ms: int) -> dict | None:
        """The ticker at ``now_ms``, or None before the first trade."""
        oldest = (now_ms - DAY_MS) // MINUTE_MS
        self._oldest = oldest
        buckets = self._buckets
        while buckets and buckets[0].minute < oldest:
            gone = buckets.popleft()
            self._volume -= gone.volume
            self._quote_volume -= gone.quote_volume
            self._count -= gone.count
            if gone.high == self._high:
                self._high = None
            if gone.low == self._low:
                self._low = None
        if self._last is None:
            return None
        last = self._last
        if buckets and (self._high is None or self._low is None):
            self._high = max(b.high for b in buckets)
            self._low = min(b.low for b in buckets)
        open_ = buckets[0].open if buckets else last
        high = self._high if buckets and self._high is not None else last
        low = self._low if buckets and self._low is not None else last
        change = last - open_
        percent = (change * 100 / open_).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        if percent.is_zero():
            percent = percent.copy_abs()  # "0.00", not "-0.00"
        return {
            "symbol": self.symbol,
            "open": text(open_),
            "high": text(high),
            "low": text(low),
            "last": text(last),
            "volume": plain(self._volume),
            "quoteVolume": plain(self._quote_volume),
            "change": plain(change),
            "changePercent": text(percent),
            "count": self._count,
            "ts": now_ms,
        }
