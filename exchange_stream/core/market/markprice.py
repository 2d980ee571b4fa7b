"""Index price, mark price and funding rate of a perpetual contract.

After the public formulas of Binance USDⓈ-M futures (docs/market.md works an example):

- index price: the median of the latest price of each source, sources older than
  ``stale_ms`` left out;
- impact bid / ask price: the average fill price of selling / buying ``impact_notional`` (quote
  currency) into the book;
- premium index ``P = (max(0, impact bid - index) - max(0, index - impact ask)) / index``,
  sampled once a minute;
- funding rate ``F = avg(P) + clamp(I - avg(P), -0.05%, +0.05%)``, capped at ``±cap``, where
  ``avg(P)`` weights the n-th sample of the funding interval by n and ``I`` is 0.01% per
  8-hour interval;
- mark price: the median of ``index * (1 + F * time to funding / interval)``,
  ``index + 5-minute average of (mid price - index)`` (the basis, sampled each second) and
  the last traded price;
- next funding time: the next 00:00, 08:00 or 16:00 UTC;
- estimated settlement price: the average of the index over the last hour (per-second samples).

The averages are over time, not counts: the samples taken in the last 300 s and 3,600 s (a
second without a fresh index or a two-sided book takes none). When no source is fresh, the
message keeps the last values computed from a fresh index and says ``"stale": true``.

Everything is ``Decimal``; published values are rounded half-even to 8 decimal places.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal

from exchange_stream.core.market.decimals import text
from exchange_stream.core.market.events import Book, IndexPrice, Level

FUNDING_INTERVAL_MS = 8 * 3_600_000
INTEREST_RATE = Decimal("0.0001")  # per funding interval
PREMIUM_CLAMP = Decimal("0.0005")
PLACES = Decimal("0.00000001")
BASIS_MS = 300_000
HOUR_MS = 3_600_000
ZERO = Decimal(0)


def rounded(value: Decimal) -> Decimal:
    return value.quantize(PLACES, ROUND_HALF_EVEN)


def median(values: Sequence[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def clamp(value: Decimal, low: Decimal, high: Decimal) -> Decimal:
    return max(low, min(high, value))


def impact_price(levels: Iterable[Level], notional: Decimal) -> Decimal | None:
    """Average price of filling ``notional`` (quote currency) from ``levels``, best first;
    None when the book is too thin to fill it."""
    remaining, quantity = notional, ZERO
    for price, qty in levels:
        level_notional = price * qty
        if level_notional >= remaining:
            quantity += remaining / price
            return notional / quantity
        quantity += qty
        remaining -= level_notional
    return None


def premium_index(index: Decimal, impact_bid: Decimal, impact_ask: Decimal) -> Decimal:
    return (max(ZERO, impact_bid - index) - max(ZERO, index - impact_ask)) / index


def weighted_average(samples: Sequence[Decimal]) -> Decimal:
    """Sample n weighs n: later premiums in the interval count more."""
    if not samples:
        return ZERO
    weights = len(samples) * (len(samples) + 1) // 2
    return sum((n * value for n, value in enumerate(samples, 1)), ZERO) / weights


def funding_rate(average_premium: Decimal, cap: Decimal) -> Decimal:
    rate = average_premium + clamp(INTEREST_RATE - average_premium, -PREMIUM_CLAMP, PREMIUM_CLAMP)
    return clamp(rate, -cap, cap)


def next_funding_time(now_ms: int) -> int:
    return (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


def mark_price(
    index: Decimal, funding: Decimal, now_ms: int, basis: Decimal, last: Decimal | None
) -> Decimal:
    until_funding = Decimal(next_funding_time(now_ms) - now_ms) / FUNDING_INTERVAL_MS
    price1 = index * (1 + funding * until_funding)
    price2 = index + basis
    return median([price1, price2] if last is None else [price1, price2, last])


def mean(values: Iterable[Decimal]) -> Decimal | None:
    values = list(values)
    return sum(values, ZERO) / len(values) if values else None


class MarkPrice:
    """One symbol's index sources and the samples the formulas average over."""

    def __init__(
        self,
        symbol: str,
        impact_notional: Decimal = Decimal(25_000),
        stale_ms: int = 30_000,
        cap: Decimal = Decimal("0.003"),
    ) -> None:
        self.symbol = symbol
        self.impact_notional = impact_notional
        self.stale_ms = stale_ms
        self.cap = cap
        self._sources: dict[str, IndexPrice] = {}
        self._basis: deque[tuple[int, Decimal]] = deque()  # (ms, sample), the last 5 minutes
        self._index_hour: deque[tuple[int, Decimal]] = deque()  # the last hour
        self._last_good: dict | None = None
        self._premiums: list[Decimal] = []
        self._premium_minute: int | None = None
        self._funding_period: int | None = None

    def add_index(self, price: IndexPrice) -> None:
        known = self._sources.get(price.source)
        if known is None or price.ts >= known.ts:
            self._sources[price.source] = price

    def index(self, now_ms: int) -> Decimal | None:
        fresh = [p.price for p in self._sources.values() if now_ms - p.ts <= self.stale_ms]
        return median(fresh) if fresh else None

    def sample(self, now_ms: int, book: Book | None) -> None:
        """Take this second's samples (call once a second)."""
        index = self.index(now_ms)
        if index is None:
            return
        _window(self._index_hour, now_ms, HOUR_MS).append((now_ms, index))
        if book is None or not book.bids or not book.asks:
            return
        basis = (book.bids[0][0] + book.asks[0][0]) / 2 - index
        _window(self._basis, now_ms, BASIS_MS).append((now_ms, basis))
        period = now_ms // FUNDING_INTERVAL_MS
        if period != self._funding_period:
            self._funding_period, self._premiums = period, []
        minute = now_ms // 60_000
        if minute == self._premium_minute:
            return
        impact_bid = impact_price(book.bids, self.impact_notional)
        impact_ask = impact_price(book.asks, self.impact_notional)
        if impact_bid is not None and impact_ask is not None:
            self._premium_minute = minute
            self._premiums.append(premium_index(index, impact_bid, impact_ask))

    def message(self, now_ms: int, last: Decimal | None) -> dict | None:
        """The values now; with no fresh index the last good ones, ``"stale": true`` (None
        before the first index price)."""
        index = self.index(now_ms)
        if index is None:
            if self._last_good is None:
                return None
            return {**self._last_good, "stale": True, "ts": now_ms}
        premium = self._premiums[-1] if self._premiums else ZERO
        funding = funding_rate(weighted_average(self._premiums), self.cap)
        basis = mean(v for _, v in _window(self._basis, now_ms, BASIS_MS)) or ZERO
        settle = mean(v for _, v in _window(self._index_hour, now_ms, HOUR_MS)) or index
        self._last_good = {
            "symbol": self.symbol,
            "indexPrice": text(rounded(index)),
            "markPrice": text(rounded(mark_price(index, funding, now_ms, basis, last))),
            "premiumIndex": text(rounded(premium)),
            "fundingRate": text(rounded(funding)),
            "nextFundingTime": next_funding_time(now_ms),
            "estimatedSettlePrice": text(rounded(settle)),
            "stale": False,
            "ts": now_ms,
        }
        return self._last_good


def _window(
    samples: deque[tuple[int, Decimal]], now_ms: int, length_ms: int
) -> deque[tuple[int, Decimal]]:
    """``samples`` without those taken ``length_ms`` or more before ``now_ms``."""
    while samples and samples[0][0] <= now_ms - length_ms:
        samples.popleft()
    return samples
