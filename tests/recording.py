"""A seeded recording of a matching engine's events, with the faults the engine must absorb:
resent and conflicting trades, late trades (within and beyond the bound), a trade in the far
future, numbers out of bounds, books resent out of order, an index source that goes quiet,
and private events. ``python -m tests.recording > tests/data/market-recording.jsonl`` writes
the committed copy; tests/test_market_replay.py checks that it still comes out the same.
"""

from __future__ import annotations

import json
import random
import sys
from decimal import Decimal

START_MS = 1_732_540_800_000 + 17_000  # not on a minute: the first bar is a partial one
SYMBOLS = {"BTCUSDT": Decimal("64000"), "ETHUSDT": Decimal("3400")}


def recording(minutes: int = 3, seed: int = 20261203) -> list[str]:
    """The lines, in arrival order."""
    rng = random.Random(seed)
    arrivals: list[tuple[int, int, dict]] = []  # (arrival ms, tie-break, event)
    order = 0

    def arrive(at: int, event: dict) -> None:
        nonlocal order
        order += 1
        arrivals.append((at, order, event))

    end = START_MS + minutes * 60_000
    for symbol, price in SYMBOLS.items():
        trade_id = 1000
        step = Decimal("0.1")
        t = START_MS
        while t < end:
            t += rng.randint(50, 700)
            price += step * rng.randint(-3, 3)
            trade_id += 1
            qty = str(Decimal(rng.randint(1, 5000)) / 1000)
            side = rng.choice(["buy", "sell"])
            trade = {"type": "trade", "symbol": symbol, "id": trade_id, "price": str(price)}
            trade.update(qty=qty, side=side, ts=t)
            roll = rng.random()
            if roll < 0.02:  # late within the bound: arrives up to 20 s after it happened
                arrive(t + rng.randint(1_000, 20_000), trade)
            elif roll < 0.025:  # too late: refused
                arrive(t + 70_000, trade)
            else:
                arrive(t, trade)
            if rng.random() < 0.02:  # resent as it was, a little later
                arrive(t + rng.randint(10, 3_000), trade)
            if rng.random() < 0.005:  # another trade under the same id
                arrive(t + rng.randint(10, 3_000), {**trade, "price": str(price + 1)})
        t = START_MS
        while t < end:
            t += 2_000
            mid = price + step * rng.randint(-20, 20)
            bids = [[str(mid - step * (i + 1)), _size(rng)] for i in range(5)]
            asks = [[str(mid + step * (i + 1)), _size(rng)] for i in range(5)]
            book = {"type": "book", "symbol": symbol, "bids": bids, "asks": asks, "ts": t}
            arrive(t, book)
            if rng.random() < 0.03:  # the same book again, 241 ms later, after a newer one
                arrive(t + 2_241, book)
        t = START_MS
        while t < end:
            t += 1_000
            for source in ("okx", "binance"):
                quiet = source == "binance" and START_MS + 60_000 < t < START_MS + 100_000
                if not quiet:
                    index = price + step * rng.randint(-5, 5)
                    event = {"type": "index", "symbol": symbol, "source": source}
                    arrive(t, {**event, "price": str(index), "ts": t})
    absurd_at = START_MS + 90_000
    base = {"type": "trade", "symbol": "BTCUSDT", "side": "buy"}
    arrive(absurd_at, {**base, "id": 1, "price": "64000", "qty": "1", "ts": 10**15})
    arrive(absurd_at, {**base, "id": 2, "price": "64000", "qty": "9E+999999", "ts": absurd_at})
    arrive(absurd_at, {**base, "id": 3, "price": "1E+30", "qty": "1", "ts": absurd_at})
    for n in range(5):
        arrive(START_MS + 30_000 * (n + 1), {"type": "order", "uid": 1001, "data": {"orderId": n}})
    arrivals.sort(key=lambda item: (item[0], item[1]))
    return [json.dumps(event, separators=(",", ":")) for _, _, event in arrivals]


def _size(rng: random.Random) -> str:
    return str(Decimal(rng.randint(1, 900)) / 100)


if __name__ == "__main__":
    sys.stdout.write("".join(line + "\n" for line in recording()))
