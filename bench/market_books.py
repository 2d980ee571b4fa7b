"""What one order book costs the market engine, in process and through the real TCP feed.

Books of ``--levels`` levels a side (prices with one decimal, quantities with three, some with
trailing zeros as fixed-scale feeds write them), each changing 3 to 10 levels a side from the
last, as a matching engine sends them. Three figures:

- parse: ``parse_event`` alone (JSON, checks, bounds, canonical spelling, sorting);
- parse + flush: every book also diffed and rendered (``DepthBook.offer`` + ``flush``: the
  update, the snapshot, the checksum), the worst case of one book per push interval;
- TCP feed: a separate process writes the lines into ``--feed`` of a market engine running on
  the reactor (``market_service``, pushes every 100 ms on the real clock); the engine's process
  CPU per book taken.

    python bench/market_books.py [--books 3000] [--levels 100] [--core 0]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

from common import free_port, header_line, own_cpu_seconds, pinned, run_header

from exchange_stream.core.market.decimals import SymbolLimits
from exchange_stream.core.market.depth import DepthBook
from exchange_stream.core.market.events import parse_event

START_MS = int(time.time() * 1000)

WRITER = """
import socket, sys
lines = open(sys.argv[2], "rb").read()
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as sock:
    sock.sendall(lines)
"""


def make_books(count: int, levels: int, rng: random.Random, symbol: str = "BTCUSDT") -> list[bytes]:
    bids = {640_000 - i: rng.randint(1, 99_999) for i in range(1, levels + 1)}
    asks = {640_000 + i: rng.randint(1, 99_999) for i in range(1, levels + 1)}
    lines = []
    for index in range(count):
        for side in (bids, asks):
            for _ in range(rng.randint(3, 10)):
                side[rng.choice(list(side))] = rng.randint(1, 99_999)
        event = {
            "type": "book",
            "symbol": symbol,
            "bids": [[f"{p / 10:.1f}", f"{q / 1000:.3f}"] for p, q in sorted(bids.items())[::-1]],
            "asks": [[f"{p / 10:.1f}", f"{q / 1000:.3f}"] for p, q in sorted(asks.items())],
            "ts": START_MS + index,
        }
        lines.append(json.dumps(event, separators=(",", ":")).encode())
    return lines


def in_process(lines: list[bytes]) -> tuple[float, float]:
    """µs per book: parse alone, parse + offer + flush."""
    limits = SymbolLimits()
    depth = DepthBook("BTCUSDT")
    parse = flush = 0.0
    for line in lines:
        started = time.perf_counter()
        book = parse_event(line, limits)
        parsed = time.perf_counter()
        depth.offer(book)
        depth.flush()
        flush += time.perf_counter() - parsed
        parse += parsed - started
    return parse / len(lines) * 1e6, (parse + flush) / len(lines) * 1e6


def through_tcp(lines: list[bytes], workdir: str) -> tuple[float, float, int]:
    """(engine CPU µs per book, wall seconds, books taken) with the engine on the reactor."""
    from twisted.internet import reactor

    from exchange_stream.market_service import market_service
    from exchange_stream.services.market_engine import MarketSettings
    from exchange_stream.services.memory_mesh import MemoryMesh

    port = free_port()
    mesh = MemoryMesh()
    settings = MarketSettings(max_ahead_ms=10**12, max_late_ms=10**12)  # stamped at build time
    service = market_service(
        mesh.publish, settings, reactor, feed=f"tcp:{port}:interface=127.0.0.1"
    )
    service.startService()
    path = f"{workdir}/books.jsonl"
    with open(path, "wb") as out:
        out.write(b"".join(line + b"\n" for line in lines))
    result: dict[str, float] = {}

    def start() -> None:
        result["cpu"], result["wall"] = own_cpu_seconds(), time.perf_counter()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(port), path])
        reactor.callLater(0.05, watch, writer)

    def watch(writer: subprocess.Popen) -> None:
        if service.input.received >= len(lines):
            result["cpu"] = own_cpu_seconds() - result["cpu"]
            result["wall"] = time.perf_counter() - result["wall"]
            writer.wait()
            reactor.stop()
        else:
            reactor.callLater(0.01, watch, writer)

    reactor.callWhenRunning(start)
    reactor.run()
    service.stopService()
    return result["cpu"] / len(lines) * 1e6, result["wall"], service.input.received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--books", type=int, default=3000)
    parser.add_argument("--levels", type=int, default=100)
    parser.add_argument("--core", type=int, default=0, help="pin to this core (-1: no pinning)")
    args = parser.parse_args()
    print(header_line(run_header()))
    lines = make_books(args.books, args.levels, random.Random(11))
    size = sum(map(len, lines)) / len(lines)
    with pinned({args.core} if args.core >= 0 else None):
        parse, both = in_process(lines)
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            tcp, wall, taken = through_tcp(lines, workdir)
    print(f"market engine, {args.books:,} books of {args.levels} levels a side ({size:,.0f} bytes)")
    print(f"  parse            {parse:6.0f} us per book")
    print(f"  parse + flush    {both:6.0f} us per book (every book diffed, rendered, checksummed)")
    print(f"  TCP feed         {tcp:6.0f} us engine CPU per book ({taken:,} books in {wall:.2f} s,")
    print("                   pushes every 100 ms on the real clock: not every book is flushed)")
    print(f"  one core keeps up with {1e6 / both:,.0f} books/s when every book is published")


if __name__ == "__main__":
    main()
