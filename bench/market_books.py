"""What one order book costs the market engine, in process and through the real TCP feed.

Books of ``--levels`` levels a side that move as a matching engine's do: each new book changes
5 to 20 levels (quantities changed, levels taken out, new ones put in between, the best level
eaten by a trade), prices on a 0.01 tick written with 1 or 2 decimals, quantities with 3 or 4
("64000.1", "64000.15"; "0.125", "1.2500" as fixed-scale feeds write them). Four figures, each
the median of ``--runs`` runs (the spread after it):

- parse: ``parse_event`` alone (JSON, checks, bounds, canonical spelling, sorting);
- flush: ``DepthBook.offer`` + ``flush`` alone, on books parsed beforehand (the diff, the
  checksum, the update's and the snapshot's JSON);
- line to publication: the engine on an event-time clock taking each book and pushing it,
  every book published (the worst case of one book per push interval, as with 300 symbols at
  10 books/s each): parse, admission, flush, the messages' bytes;
- TCP feed: a separate writer process (on another core) connects to ``--feed`` of a market
  engine running on the reactor (``market_service``, pushes every 100 ms on the real clock)
  and writes the lines as fast as the engine reads them; books/s and the engine process's CPU
  per book, from the writer's first byte to the engine's last book.

With ``--symbols N``, instead: N such markets' books interleaved (one of each in turn), written
through the TCP feed at ``--rate`` books/s in all for ``--seconds``, paced in 10 ms batches, so
that each symbol's book is published about every push, as in production. The engine's share of
a core and its CPU per book (many symbols cost more than one: each symbol's book and memory
are out of the caches when it comes round again), and how far behind its schedule the writer
fell: more than a few milliseconds means the engine did not keep up. The writer is Python's
sockets, or with ``--writer node`` Node's (``feed_writer.mjs``: another client stack, the same
schedule).

With ``--loops interpreted``, a book's per-level loops run as their Python definitions, as
on an install that had no C compiler (``core/market/level_scan.py``).

    python bench/market_books.py [--books 3000] [--levels 100] [--runs 3] [--core 0]
    python bench/market_books.py --symbols 300 --rate 3000 [--seconds 20] [--writer node]
    python bench/market_books.py ... --loops interpreted
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    Processes,
    free_port,
    header_line,
    own_cpu_seconds,
    pinned,
    progress,
    run_header,
)
from loops import add_loops_option, use_loops
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from exchange_stream.core.market.decimals import SymbolLimits
from exchange_stream.core.market.depth import DepthBook
from exchange_stream.core.market.events import parse_event
from exchange_stream.core.market.spellings import Spellings
from exchange_stream.core.publication import Publication
from exchange_stream.services.market_engine import MarketEngine, MarketSettings

START_MS = int(time.time() * 1000)
TICK = 100  # price ticks per unit: 0.01
LOT = 10_000  # quantity lots per unit: 0.0001

# Connects, waits for the go line on stdin, writes sys.argv[3] lines a second in 10 ms
# batches (catching up when late), closes; prints how far behind the schedule it fell.
PACED_WRITER = """
import socket, sys, time
lines = open(sys.argv[2], "rb").read().split(b"\\n")[:-1]
rate = int(sys.argv[3])
batch = max(1, rate // 100)
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as sock:
    sys.stdin.readline()
    start, behind = time.monotonic(), 0.0
    for first in range(0, len(lines), batch):
        due = start + first / rate
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            behind = max(behind, now - due)
        sock.sendall(b"".join(line + b"\\n" for line in lines[first : first + batch]))
print(f"{behind:.3f}", flush=True)
"""

# Connects, waits for the go line on stdin, writes every line at once, closes.
WRITER = """
import socket, sys
lines = open(sys.argv[2], "rb").read()
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as sock:
    sys.stdin.readline()
    sock.sendall(lines)
"""


def _price(ticks: int) -> str:
    """2 decimals, one trailing zero dropped: 64000.15, 64000.1, 64000.0."""
    spelled = f"{ticks // TICK}.{ticks % TICK:02d}"
    return spelled[:-1] if spelled.endswith("0") else spelled


def _qty(lots: int) -> str:
    """4 decimals, one trailing zero dropped: 0.1255, 0.125, 1.250."""
    spelled = f"{lots // LOT}.{lots % LOT:04d}"
    return spelled[:-1] if spelled.endswith("0") else spelled


def _lots(rng: random.Random) -> int:
    return int(rng.lognormvariate(8.5, 1.5)) + 1  # 0.0001 to tens of units, mostly < 1


class MovingBook:
    """A book of ticks -> lots a side, moved a few levels at a time, published ``levels``
    deep (the levels below the top ``levels`` only refill it)."""

    def __init__(self, levels: int, rng: random.Random, mid: int = 64_000 * TICK) -> None:
        self.levels, self.rng = levels, rng
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bids[mid - 1], self.asks[mid + 1] = _lots(rng), _lots(rng)
        self._refill()

    def _top(self, side: dict[int, int], bids: bool) -> list[int]:
        return sorted(side, reverse=bids)[: self.levels]

    def _refill(self) -> None:
        """Deep enough again: new levels 1 to 3 ticks below the last one."""
        for side, step in ((self.bids, -1), (self.asks, 1)):
            last = min(side) if step < 0 else max(side)
            while len(side) < self.levels + 10:
                last += step * self.rng.randint(1, 3)
                side[last] = _lots(self.rng)

    def move(self) -> None:
        rng = self.rng
        for _ in range(rng.randint(5, 20)):
            bids = rng.random() < 0.5
            side, other = (self.bids, self.asks) if bids else (self.asks, self.bids)
            top = self._top(side, bids)
            near = top[min(int(len(top) * rng.random() ** 2), len(top) - 1)]  # mostly the top
            action = rng.random()
            if action < 0.55:
                side[near] = _lots(rng)  # a quantity changed
            elif action < 0.75 and len(side) > 1:
                del side[near]  # cancelled
            elif action < 0.9:
                # a new level between the best of the other side and the last published one
                best_other = min(other) if bids else max(other)
                low, high = (top[-1], best_other - 1) if bids else (best_other + 1, top[-1])
                if low <= high:
                    side.setdefault(rng.randint(low, high), _lots(rng))
            elif len(side) > 1:
                del side[top[0]]  # the best level eaten by a trade
        self._refill()

    def line(self, ts: int, symbol: str = "BTCUSDT") -> bytes:
        event = {
            "type": "book",
            "symbol": symbol,
            "bids": [[_price(p), _qty(self.bids[p])] for p in self._top(self.bids, True)],
            "asks": [[_price(p), _qty(self.asks[p])] for p in self._top(self.asks, False)],
            "ts": ts,
        }
        return json.dumps(event, separators=(",", ":")).encode()


def many_symbols(symbols: int, count: int, levels: int, rng: random.Random) -> list[bytes]:
    """``count`` books of each of ``symbols`` markets, interleaved (one book of each in turn),
    stamped ``ts`` 0 onwards (the engine's time bounds are off in these runs)."""
    books = [MovingBook(levels, rng) for _ in range(symbols)]
    lines = []
    for index in range(count):
        for number, book in enumerate(books):
            book.move()
            lines.append(book.line(START_MS + index, f"SYM{number:03d}USDT"))
    return lines


def make_books(count: int, levels: int, rng: random.Random) -> list[bytes]:
    book = MovingBook(levels, rng)
    lines = []
    for index in range(count):
        book.move()
        lines.append(book.line(START_MS + index))
    return lines


def in_process(lines: list[bytes]) -> dict[str, float]:
    """µs per book: parse alone, the flush alone (of books parsed beforehand: the diff, the
    checksum and the messages' JSON), and everything from the line to the publication (the
    engine on an event-time clock taking each book and pushing it, every book published, as
    with 300 symbols at 10 books/s each); parsed as the feed parses (remembering each
    symbol's spellings)."""
    limits = SymbolLimits()
    spellings = Spellings()
    started = time.perf_counter()
    for line in lines:
        parse_event(line, limits, spellings)
    parse = time.perf_counter() - started

    spellings = Spellings()
    books = [parse_event(line, limits, spellings) for line in lines]
    gc.freeze()  # 3,000 books kept alive would make every collection slower: not the engine's
    depth = DepthBook("BTCUSDT", 200)
    started = time.perf_counter()
    for book in books:
        depth.offer(book)
        depth.flush()
    flush = time.perf_counter() - started
    gc.unfreeze()
    del books

    published: list[int] = []

    def publish(_channel: str, message: Publication, snapshot: Publication | None) -> Deferred:
        published.append(len(message.payload))
        return succeed(1)

    clock = Clock()
    clock.advance(START_MS / 1000)
    engine = MarketEngine(publish, MarketSettings(), clock)
    spellings = Spellings()
    started = time.perf_counter()
    for line in lines:
        book = parse_event(line, limits, spellings)
        clock.advance(book.ts / 1000 - clock.seconds())
        engine.handle(book)
        engine.push()
    both = time.perf_counter() - started
    assert len(published) == len(lines), "every book is published"
    scale = 1e6 / len(lines)
    return {"parse": parse * scale, "flush": flush * scale, "both": both * scale}


def through_tcp(lines: list[bytes], runs: int, writer_cpu: int | None) -> list[dict[str, float]]:
    """Per run: engine CPU µs per book and books/s, with the engine on the reactor (which
    cannot be restarted, so every run is a new engine on a new port within one reactor run)."""
    from twisted.internet import reactor

    from exchange_stream.market_service import market_service
    from exchange_stream.services.memory_mesh import MemoryMesh

    settings = MarketSettings(max_ahead_ms=10**12, max_late_ms=10**12)  # stamped at build time
    results: list[dict[str, float]] = []
    failure: list[BaseException] = []
    with tempfile.TemporaryDirectory() as workdir, Processes() as processes:
        path = Path(workdir) / "books.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))

        def run() -> None:
            if len(results) == runs:
                reactor.stop()
                return
            port = free_port()
            service = market_service(
                MemoryMesh().publish, settings, reactor, feed=f"tcp:{port}:interface=127.0.0.1"
            )
            service.startService()
            writer = processes.spawn(
                [sys.executable, "-c", WRITER, str(port), str(path)],
                cpu=writer_cpu,
                stdin=subprocess.PIPE,
            )
            source, event = service.input, service.input.event
            started: dict[str, float] = {}

            def counted(parsed) -> None:  # the feed's counter, and the end of the run
                event(parsed)
                if source.received == len(lines):
                    cpu, wall = own_cpu_seconds() - started["cpu"], time.perf_counter()
                    results.append(
                        {
                            "cpu": cpu / len(lines) * 1e6,
                            "rate": len(lines) / (wall - started["wall"]),
                            "refused": sum(service.engine.refused.values()),
                            "depth": service.engine.published,
                        }
                    )
                    reactor.callLater(0, finish, service, writer)
                    source.event = event

            source.event = counted

            def go() -> None:
                started["cpu"], started["wall"] = own_cpu_seconds(), time.perf_counter()
                assert writer.stdin is not None
                writer.stdin.write(b"go\n")
                writer.stdin.close()

            reactor.callLater(0.3, go)  # the writer has started and connected by then

        def finish(service, writer: subprocess.Popen) -> None:
            try:
                processes.stop(writer)  # done writing: it exits by itself
                service.stopService()
            except BaseException as error:  # reported after the reactor stops
                failure.append(error)
                reactor.stop()
                return
            reactor.callLater(0.2, run)

        reactor.callWhenRunning(run)
        reactor.run()
    if failure:
        raise failure[0]
    return results


def paced_tcp(
    lines: list[bytes], rate: int, writer_cpu: int | None, stack: str = "python"
) -> dict[str, float]:
    """Many symbols at ``rate`` books/s through the real TCP feed into an engine on the
    reactor (pushes every 100 ms on the real clock, so each symbol's book is published
    about every push): the engine process's share of a core, the books it published, and
    how far behind its schedule the writer fell (a full socket: the engine not keeping up)."""
    from twisted.internet import reactor

    from exchange_stream.market_service import market_service
    from exchange_stream.services.memory_mesh import MemoryMesh

    settings = MarketSettings(max_ahead_ms=10**12, max_late_ms=10**12)
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir, Processes() as processes:
        path = Path(workdir) / "books.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        port = free_port()
        service = market_service(
            MemoryMesh().publish, settings, reactor, feed=f"tcp:{port}:interface=127.0.0.1"
        )
        service.startService()
        command = (
            ["node", str(Path(__file__).with_name("feed_writer.mjs"))]
            if stack == "node"
            else [sys.executable, "-c", PACED_WRITER]
        )
        writer = processes.spawn(
            [*command, str(port), str(path), str(rate)],
            cpu=writer_cpu,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        source, event = service.input, service.input.event
        started: dict[str, float] = {}

        def counted(parsed) -> None:
            event(parsed)
            if source.received == len(lines):
                source.event = event
                reactor.callLater(0.2, done)  # the last books' push

        def done() -> None:
            cpu, wall = own_cpu_seconds() - started["cpu"], time.perf_counter() - started["wall"]
            assert writer.stdout is not None
            result.update(
                share=cpu / wall,
                wall=wall,
                cpu_per_book=cpu / len(lines) * 1e6,
                published=service.engine.published,
                refused=sum(service.engine.refused.values()),
                behind=float(writer.stdout.readline() or "nan"),
            )
            service.stopService()
            reactor.stop()

        def go() -> None:
            started["cpu"], started["wall"] = own_cpu_seconds(), time.perf_counter()
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.close()

        source.event = counted
        reactor.callLater(0.5, go)
        reactor.run()
    return result


def spread(values: list[float], digits: int = 0) -> str:
    """The median, and the range of the runs after it."""
    figure = f"{{:,.{digits}f}}"
    median = figure.format(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({figure.format(min(values))}-{figure.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--books", type=int, default=3000)
    parser.add_argument("--levels", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="pin to this core (-1: no pinning)")
    parser.add_argument(
        "--writer-core", type=int, default=1, help="the TCP writer's core (-1: no pinning)"
    )
    parser.add_argument(
        "--symbols",
        type=int,
        default=0,
        help="instead: this many symbols through the TCP feed at --rate books/s in all",
    )
    parser.add_argument("--rate", type=int, default=3000, help="books/s in all (--symbols)")
    parser.add_argument("--seconds", type=int, default=20, help="how long (--symbols)")
    add_loops_option(parser)
    parser.add_argument(
        "--writer",
        choices=("python", "node"),
        default="python",
        help="who writes the books (--symbols): Python's sockets, or bench/feed_writer.mjs",
    )
    args = parser.parse_args()
    use_loops(parser, args.loops)
    print(header_line(run_header()))
    if args.symbols:
        _many(args)
        return
    lines = make_books(args.books, args.levels, random.Random(11))
    size = sum(map(len, lines)) / len(lines)
    runs = []
    with pinned({args.core} if args.core >= 0 else None):
        for run in range(args.runs):
            progress(f"in process, run {run + 1} of {args.runs}")
            runs.append(in_process(lines))
        progress(f"TCP feed, {args.runs} runs")
        tcp = through_tcp(lines, args.runs, args.writer_core if args.writer_core >= 0 else None)
    parse, flush, both = ([run[key] for run in runs] for key in ("parse", "flush", "both"))
    cpu, rate = [run["cpu"] for run in tcp], [run["rate"] for run in tcp]
    print(
        f"market engine, {args.books:,} books of {args.levels} levels a side "
        f"({size:,.0f} bytes), {args.loops} loops, median of {args.runs} runs (min-max)"
    )
    print(f"  parse            {spread(parse)} us per book")
    print(f"  flush            {spread(flush)} us per book (diff, checksum, JSON)")
    print(f"  line to publication {spread(both)} us per book (every book published)")
    print(f"  TCP feed         {spread(cpu)} us engine CPU per book, {spread(rate)} books/s")
    refused = max(run["refused"] for run in tcp)
    published = statistics.median(run["depth"] for run in tcp)
    print(
        f"                   ({refused} refused; pushes every 100 ms on the real clock: "
        f"{published:.0f} publications, not every book is flushed)"
    )
    print(
        f"  one core keeps up with {1e6 / statistics.median(both):,.0f} books/s "
        "when every book is published"
    )


def _many(args: argparse.Namespace) -> None:
    per_symbol = args.rate * args.seconds // args.symbols
    progress(f"{args.symbols} symbols x {per_symbol} books")
    lines = many_symbols(args.symbols, per_symbol, args.levels, random.Random(11))
    size = sum(map(len, lines)) / len(lines)
    with pinned({args.core} if args.core >= 0 else None):
        progress(f"TCP feed at {args.rate:,} books/s for {args.seconds} s")
        writer_cpu = args.writer_core if args.writer_core >= 0 else None
        run = paced_tcp(lines, args.rate, writer_cpu, args.writer)
    print(
        f"market engine, {args.symbols} symbols, {len(lines):,} books of {args.levels} levels "
        f"a side ({size:,.0f} bytes) at {args.rate:,} books/s through the TCP feed "
        f"({args.writer} writer, {args.loops} loops)"
    )
    print(
        f"  engine: {run['share']:.0%} of a core over {run['wall']:.1f} s, "
        f"{run['cpu_per_book']:.0f} us CPU per book, {run['published']:,} publications "
        f"({run['refused']} refused)"
    )
    print(f"  writer at most {run['behind'] * 1000:.0f} ms behind its schedule")


if __name__ == "__main__":
    main()
