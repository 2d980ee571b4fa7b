"""How exactly the market engine follows docs/market.md over a long seeded stream.

Feeds ``tests.market_reference.seeded_stream`` (two symbols sharing trade ids, a few trades a
second, 1% resent, 1% late by up to 20 s, conflicting resends, trades beyond the late bound
and far in the future, out-of-bounds numbers, stale books, malformed lines) to the engine on
a simulated clock, in steps of 250 ms, and to the independent reference
(``tests/market_reference.py``), then compares every ``@trades`` batch, every ``@ticker``
message and the last version of every closed bar of every interval (kline and bars channels).

    .venv/bin/python bench/market_exactness.py [--minutes 120] [--seed 20241125] [--rate 1.5]
        [--loops compiled|interpreted]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loops import add_loops_option, use_loops
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from exchange_stream.adapters.feed import FeedInput
from exchange_stream.services.market_engine import MarketEngine, MarketSettings
from tests.market_reference import Reference, compare, seeded_stream

T0_MS = 1_732_540_800_000  # 2024-11-25T13:20:00Z
TICK_MS = 250
START_MS = T0_MS + 125  # clock readings 125 ms past a multiple of 250: exact, never a bar end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120)
    parser.add_argument("--seed", type=int, default=20241125)
    parser.add_argument("--rate", type=float, default=1.5, help="trades a second per symbol")
    add_loops_option(parser)
    args = parser.parse_args()
    use_loops(parser, args.loops)

    began = time.perf_counter()
    stream = seeded_stream(args.seed, args.minutes, START_MS, trades_per_second=args.rate)
    clock = Clock()
    clock.advance(START_MS / 1000)
    now = [START_MS]
    lines = [0]
    published: list[tuple[int, str, bytes, int]] = []

    def publish(channel, publication, snapshot=None):
        published.append((now[0], channel, publication.payload, lines[0]))
        return succeed(1)

    def wait() -> None:
        now[0] += TICK_MS
        clock.advance(now[0] / 1000 - clock.seconds())

    engine = MarketEngine(publish, MarketSettings(), clock)
    engine.startService()
    feed = FeedInput(engine.handle, engine.limits, engine.refused)
    reference = Reference()
    verdicts_differing = 0
    raised = 0
    for at, line in stream:
        while now[0] < at:
            wait()
        before = Counter(dict(getattr(engine, "refused", None) or {}))
        verdict = reference.handle(line, now[0])
        lines[0] += 1
        try:
            feed.raw(line, "bench")
        except Exception:
            raised += 1
        counted = sorted(
            (Counter(dict(getattr(engine, "refused", None) or {})) - before).elements()
        )
        verdicts_differing += counted != ([] if verdict.accepted else [verdict.reason])
    for _ in range(6):
        wait()
    while (now[0] - 1000) // 60_000 != now[0] // 60_000:
        wait()
    fed = time.perf_counter()
    result = compare(published, reference, now[0])
    done = time.perf_counter()

    refused = dict(sorted(reference.refused.items()))
    engine_refused = dict(sorted(dict(getattr(engine, "refused", None) or {}).items()))
    print(
        f"simulated minutes    {args.minutes:g} (seed {args.seed}, {args.rate:g} trades/s/symbol, "
        f"{args.loops} loops)"
    )
    print(f"events               {len(stream)}")
    print(f"accepted             {sum(reference.accepted.values())} {dict(reference.accepted)}")
    print(f"refused (reference)  {sum(refused.values())} {refused}")
    print(f"refused (engine)     {sum(engine_refused.values())} {engine_refused}")
    print(f"verdicts differing   {verdicts_differing}  (feed raised {raised})")
    print(f"ambiguous lines      {len(reference.ambiguous)}")
    print(f"trades               {result.trades_differing} differing of {result.trades_expected}")
    print(f"ticker messages      {result.tickers_differing} differing of {result.tickers_compared}")
    print(f"closed bars          {result.bars_differing} differing of {result.bars_compared}")
    print(f"publications         {len(published)}")
    total, run, comparison = done - began, fed - began, done - fed
    print(f"wall time            {total:.1f} s (run {run:.1f} s, comparison {comparison:.1f} s)")
    for problem in result.problems[:10]:
        print("  ", problem[:200])


if __name__ == "__main__":
    main()
