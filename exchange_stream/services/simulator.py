"""A simulated matching engine for ``--demo``: random-walk order flow for a few symbols.

Each step (50 ms) moves each symbol's mid price by a few ticks now and then, refreshes a
60-level book a side (a few levels change size, levels follow the mid), and prints a few
trades at the touch. Every second each symbol gets index prices from three sources and each
demo user (uids 1001 to 1005) its whole balance; now and then a demo user gets an order, a
balance change, a position or an account event. It feeds the engine the same event objects the
TCP/UDP feeds produce.

At start it makes up each symbol's past (``history_minutes`` minutes, 1000 by default: the
bars channels keep that many bars) and hands it to the engine's back-fill, which replays it on
its own time, so a chart has hours of bars on first load. The past is the same random walk run
backwards from the mid price now (a walk looks alike either way), twelve points a minute, with
the volume the live flow has on average (busier and quieter stretches around it, moving more
and less), and it ends where the live market begins. To stay quick each minute is four trades
(its open, high and low in the walk's order, and its close) carrying the minute's volume.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from twisted.internet.interfaces import IReactorTime

from exchange_stream.core.market.decimals import text
from exchange_stream.core.market.events import Book, Event, IndexPrice, PrivateEvent, Trade
from exchange_stream.services.periodic import PeriodicService

DEMO_UIDS = (1001, 1002, 1003, 1004, 1005)
DEMO_TOKENS = {f"demo-{uid}": uid for uid in DEMO_UIDS}

Backfill = Callable[[Sequence[Trade]], None]
_POINTS = 12  # points of the walk per made-up minute
_STEPS = 1200  # live steps (50 ms) in a minute
_MOVES = 0.3 * _STEPS  # a step moves the mid 30% of the time ...
_MOVE_SQUARED = 30 / 8  # ... by -3..3 ticks: a mean square move of 3.75 ticks^2
_POINT_SIGMA = math.sqrt(_MOVES * _MOVE_SQUARED / _POINTS)  # ticks
_TRADES = _STEPS * 7 / 6  # 0, 0, 1, 1, 2 or 3 trades a step
_LOTS = 3  # 1..5 lots a trade (variance 2)

# Each demo user's whole balance goes out every second, changed or not. A matching engine does
# not know who is looking: a real front end reads the balance from the exchange's REST API when
# the user logs in, then applies the @balance pushes (docs/client.md, Recovery). The demo has no
# REST API, so its balances come again every second instead: a page that logs in shows them
# within a second (with only the random changes, a user waited 7.5 s on average), and a client
# that missed a push is right again at the next. Only balances: orders and positions are events,
# not a state to repeat. Cost: one publication a second per demo user, 600 in a @balance
# history of 10 minutes (it keeps up to 10,000).
BALANCE_EVERY = 1.0


@dataclass
class Market:
    """One simulated symbol; prices are kept in whole ticks."""

    symbol: str
    mid_ticks: int
    tick: Decimal
    lot: Decimal
    levels: int = 60
    bids: dict[int, int] = field(default_factory=dict)  # price in ticks -> qty in lots
    asks: dict[int, int] = field(default_factory=dict)

    def price(self, ticks: int) -> Decimal:
        return ticks * self.tick

    def qty(self, lots: int) -> Decimal:
        return lots * self.lot


def demo_markets() -> list[Market]:
    return [
        # lots of a few hundred USDT, so that the book holds the mark price's impact notional
        Market("BTCUSDT", 640_000, Decimal("0.1"), Decimal("0.01")),
        Market("ETHUSDT", 340_000, Decimal("0.01"), Decimal("0.1")),
        Market("SOLUSDT", 15_000, Decimal("0.01"), Decimal("1")),
        Market("BNBUSDT", 60_000, Decimal("0.01"), Decimal("1")),
        Market("XRPUSDT", 6_000, Decimal("0.0001"), Decimal("1000")),
    ]


class Simulator(PeriodicService):
    start_now = True

    def __init__(
        self,
        handle: Callable[[Event], None],
        clock: IReactorTime,
        markets: list[Market] | None = None,
        rng: random.Random | None = None,
        step: float = 0.05,
        backfill: Backfill | None = None,
        history_minutes: int = 1000,
    ) -> None:
        super().__init__(clock)
        self._handle = handle
        self._backfill = backfill
        self.history_minutes = history_minutes
        self.markets = markets or demo_markets()
        self._rng = rng or random.Random()
        self._step = step
        self._trade_id = 0
        self._order_id = 0
        # uid -> asset -> (available, locked), in cents: "12345.25", "100.00"
        self.balances: dict[int, dict[str, tuple[Decimal, Decimal]]] = {
            uid: {
                "USDT": (self._cents(100_000, 9_999_999), Decimal("100.00")),
                "BTC": (self._cents(1, 300), Decimal("0.00")),
            }
            for uid in DEMO_UIDS
        }

    def periodic(self) -> list[tuple[float, Callable[[], object]]]:
        return [
            (self._step, self.step),
            (1.0, self.index),
            (0.3, self.private),
            (BALANCE_EVERY, self.publish_balances),
        ]

    def startService(self) -> None:
        if self._backfill is not None and self.history_minutes > 0:
            now = self._now_ms()
            trades = [t for m in self.markets for t in self.past(m, now - now % 60_000)]
            self._backfill(sorted(trades, key=lambda trade: trade.ts))
        super().startService()

    def past(self, market: Market, end: int) -> list[Trade]:
        """The trades of ``history_minutes`` minutes up to ``end`` (a minute's start, ms),
        oldest first, the last one at the market's mid now."""
        rng = self._rng
        symbol = market.symbol
        floor = market.levels + 1  # the book's levels stay above zero
        price = market.mid_ticks
        minutes: list[list[Trade]] = []
        mood = 0.0  # log of the activity, slowly varying: busy and quiet stretches
        for back in range(1, self.history_minutes + 1):
            mood = 0.85 * mood + rng.gauss(0, 0.25)
            activity = math.exp(mood)
            sigma = _POINT_SIGMA * math.sqrt(activity)
            path = [price]  # from the minute's close back to its open
            for _ in range(_POINTS):
                price = max(floor, price + round(rng.gauss(0, sigma)))
                path.append(price)
            high = max(path) + rng.randint(0, 2)  # trades between the points went further
            low = max(floor, min(path) - rng.randint(0, 2))
            trades = _TRADES * activity
            count = max(1, round(rng.gauss(trades, math.sqrt(trades))))
            lots = max(count, round(rng.gauss(count * _LOTS, math.sqrt(count * 2))))
            start = end - back * 60_000
            middle = [high, low] if path[-1] > path[0] else [low, high]  # falling: high first
            points = [(path[-1], 500), (middle[0], 20_000), (middle[1], 40_000), (path[0], 59_500)]
            shares = [lots // 4 + (1 if n < lots % 4 else 0) for n in range(4)]
            minutes.append(
                [
                    Trade(symbol, 0, market.price(ticks), market.qty(share), "buy", start + at)
                    for (ticks, at), share in zip(points, shares, strict=True)
                    if share
                ]
            )
        minutes.reverse()
        made = [trade for minute in minutes for trade in minute]
        return [replace(trade, id=n) for n, trade in enumerate(made, 1)]

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def step(self) -> None:
        now = self._now_ms()
        for market in self.markets:
            self._walk(market)
            self._refresh_book(market)
            for _ in range(self._rng.choice((0, 0, 1, 1, 2, 3))):
                self._trade(market, now)
            self._handle(self._book(market, now))

    @staticmethod
    def _book(market: Market, now: int) -> Book:
        def levels(side: dict[int, int], best_first_descending: bool):
            ordered = sorted(side.items(), reverse=best_first_descending)
            return tuple((market.price(p), market.qty(q)) for p, q in ordered)

        return Book(market.symbol, levels(market.bids, True), levels(market.asks, False), now)

    def _walk(self, market: Market) -> None:
        if self._rng.random() < 0.3:
            market.mid_ticks += self._rng.choice((-3, -2, -1, -1, 1, 1, 2, 3))

    def _refresh_book(self, market: Market) -> None:
        """Levels follow the mid; a few change size each step; an empty level now and then."""
        for side, sign in ((market.bids, -1), (market.asks, 1)):
            wanted = {market.mid_ticks + sign * k for k in range(1, market.levels + 1)}
            for price in list(side):
                if price not in wanted:
                    del side[price]
            for price in wanted:
                if price not in side:
                    side[price] = self._size(market, price)
            for price in self._rng.sample(sorted(side), k=max(1, len(side) // 12)):
                if self._rng.random() < 0.15 and abs(price - market.mid_ticks) > 3:
                    del side[price]  # a level emptied; it may come back later
                else:
                    side[price] = self._size(market, price)

    def _size(self, market: Market, price: int) -> int:
        distance = abs(price - market.mid_ticks)
        return self._rng.randint(1, 20) * (1 + distance // 10)

    def _trade(self, market: Market, now: int) -> None:
        side = self._rng.choice(("buy", "sell"))
        book = market.asks if side == "buy" else market.bids
        if not book:
            return
        price = min(book) if side == "buy" else max(book)
        self._trade_id += 1
        lots = self._rng.randint(1, 5)
        self._handle(
            Trade(market.symbol, self._trade_id, market.price(price), market.qty(lots), side, now)
        )

    def index(self) -> None:
        now = self._now_ms()
        for market in self.markets:
            for source in ("binance", "okx", "bybit"):
                drift = Decimal(self._rng.randint(-5, 5)) / 10_000
                price = (market.price(market.mid_ticks) * (1 + drift)).quantize(market.tick)
                self._handle(IndexPrice(market.symbol, source, price, now))

    def private(self) -> None:
        uid = self._rng.choice(DEMO_UIDS)
        market = self._rng.choice(self.markets)
        kind = self._rng.choice(("order", "order", "balance", "position", "account"))
        price = text(market.price(market.mid_ticks))
        if kind == "order":
            self._order_id += 1
            data = {
                "orderId": self._order_id,
                "symbol": market.symbol,
                "side": self._rng.choice(("buy", "sell")),
                "price": price,
                "qty": text(market.qty(self._rng.randint(1, 10))),
                "status": self._rng.choice(("new", "partially_filled", "filled", "canceled")),
                "ts": self._now_ms(),
            }
        elif kind == "balance":  # a fill or a transfer: USDT moves by up to 500
            available, locked = self.balances[uid]["USDT"]
            moved = self._cents(-50_000, 50_000)
            self.balances[uid]["USDT"] = (max(Decimal("0.00"), available + moved), locked)
            data = self._balance(uid)
        elif kind == "position":
            data = {
                "symbol": market.symbol,
                "side": "long",
                "qty": text(market.qty(self._rng.randint(1, 50))),
                "entryPrice": price,
            }
        else:
            data = {"uid": uid, "level": "VIP1", "updated": self._now_ms()}
        self._handle(PrivateEvent(kind, str(uid), data))

    def _cents(self, low: int, high: int) -> Decimal:
        return Decimal(self._rng.randint(low, high)).scaleb(-2)

    def publish_balances(self) -> None:
        """Every demo user's whole balance (see ``BALANCE_EVERY``)."""
        for uid in DEMO_UIDS:
            self._handle(PrivateEvent("balance", str(uid), self._balance(uid)))

    def _balance(self, uid: int) -> dict[str, object]:
        assets = self.balances[uid].items()
        return {
            "uid": uid,
            "balances": [
                {"asset": asset, "available": text(free), "locked": text(locked)}
                for asset, (free, locked) in assets
            ],
        }
