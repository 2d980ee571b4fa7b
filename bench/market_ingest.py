"""How many matching-engine events a second the market engine ingests on one core.

Feeds pre-encoded JSON lines (a realistic mix: full 50-level books, trades, index prices,
private events) through the same path the TCP/UDP feeds use (parse, check, route), with the
engine's periodic pushes (depth diffs, trade batches, klines, ticker, mark price) run on a
simulated clock in between, and publishing into an in-memory mesh with no subscriber.

    python bench/market_ingest.py [--events 200000] [--symbols 5] [--core 0]
        [--loops compiled|interpreted]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from common import header_line, own_cpu_seconds, pinned, run_header
from loops import add_loops_option, use_loops
from twisted.internet.task import Clock

from exchange_stream.adapters.feed import FeedInput
from exchange_stream.services.market_engine import MarketEngine, MarketSettings
from exchange_stream.services.memory_mesh import MemoryMesh


def make_lines(count: int, symbols: int, rng: random.Random, per_tick: int) -> list[bytes]:
    """A stream in which a book comes every 4th event, the rest mostly trades, stamped with
    the time the engine's clock will show when it takes them (``per_tick`` a 100 ms tick)."""
    names = [f"SYM{index}USDT" for index in range(symbols)]
    mids = {name: 10_000 + 1_000 * index for index, name in enumerate(names)}
    lines, trade_id = [], 0
    for index in range(count):
        name = names[index % symbols]
        ts = 1_732_540_800_000 + index // per_tick * 100
        kind = index % 8
        if kind in (0, 4):
            mid = mids[name] = mids[name] + rng.choice((-1, 0, 1))
            bids = [[f"{mid - k}.5", f"{rng.randint(1, 99)}.{rng.randint(0, 999):03d}"]
                    for k in range(1, 51)]  # fmt: skip
            asks = [[f"{mid + k}.5", f"{rng.randint(1, 99)}.{rng.randint(0, 999):03d}"]
                    for k in range(0, 50)]  # fmt: skip
            event = {"type": "book", "symbol": name, "bids": bids, "asks": asks, "ts": ts}
        elif kind == 7:
            event = {"type": "index", "symbol": name, "source": "okx",
                     "price": f"{mids[name]}.1", "ts": ts}  # fmt: skip
        elif kind == 3:
            event = {"type": "order", "uid": 1000 + index % 50, "data": {"orderId": index}}
        else:
            trade_id += 1
            event = {"type": "trade", "symbol": name, "id": trade_id, "price": f"{mids[name]}.5",
                     "qty": "0.25", "side": rng.choice(("buy", "sell")), "ts": ts}  # fmt: skip
        lines.append(json.dumps(event).encode())
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=5)
    parser.add_argument("--core", type=int, default=0, help="pin to this core (-1: no pinning)")
    parser.add_argument("--events-per-tick", type=int, default=2_000,
                        help="events between two 100 ms engine ticks")  # fmt: skip
    add_loops_option(parser)
    args = parser.parse_args()
    use_loops(parser, args.loops)
    print(header_line(run_header()))
    lines = make_lines(args.events, args.symbols, random.Random(7), args.events_per_tick)
    sizes = sum(len(line) for line in lines)

    clock = Clock()
    clock.advance(1_732_540_800)
    mesh = MemoryMesh()
    engine = MarketEngine(mesh.publish, MarketSettings(), clock)
    engine.startService()
    feed = FeedInput(engine.handle, engine.limits, engine.refused)

    with pinned({args.core} if args.core >= 0 else None):
        started_wall, started_cpu = time.perf_counter(), own_cpu_seconds()
        for index, line in enumerate(lines, 1):
            feed.raw(line, "bench")
            if index % args.events_per_tick == 0:
                clock.advance(0.1)
        clock.advance(1.0)
        wall, cpu = time.perf_counter() - started_wall, own_cpu_seconds() - started_cpu

    print("market engine ingest")
    print(f"  events       {args.events:,} ({sizes / args.events:.0f} bytes average), "
          f"{args.symbols} symbols, {args.loops} loops, {feed.malformed} malformed")  # fmt: skip
    print(f"  refused      {sum(engine.refused.values()):,} {dict(engine.refused)} (the ingestion "
          f"stage; a bench stream should have none)")  # fmt: skip
    print(f"  published    {engine.published:,} messages, {engine.publish_failures} failures")
    print(f"  wall         {wall:.2f} s, cpu {cpu:.2f} s on one core (os.cpu_count() = "
          f"{os.cpu_count()})")  # fmt: skip
    print(f"  rate         {args.events / cpu:,.0f} events/s per core-second of CPU "
          f"({cpu / args.events * 1e6:.1f} us per event); {args.events / wall:,.0f} events/s "
          f"by the wall clock")  # fmt: skip


if __name__ == "__main__":
    main()
