"""Soak: many connect / subscribe / disconnect cycles; memory and the index come back.

Starts ``twistd exchange-stream`` (the checkout, ``--rev`` or ``--installed``), records its
RSS and its /metrics (connections, subscriptions, channels) at rest, runs ``--cycles``
connect/subscribe/disconnect cycles from ``--concurrency`` asyncio clients in another process
(``--timeout`` at most), and reports RSS and the index after: both should be back at the
baseline. Not part of CI.

    python bench/soak.py [--cycles 100000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets
from common import (
    HERE,
    BenchmarkError,
    GatewayCode,
    Processes,
    header_line,
    raise_fd_limit,
    rss_kib,
    run_header,
    start_gateway,
)


def index(api: str) -> dict[str, float]:
    """The gateway's own count of connections, subscriptions and channels (``/metrics``)."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    wanted = ("exchange_stream_connections", "exchange_stream_subscriptions",
              "exchange_stream_channels")  # fmt: skip
    return {
        name.removeprefix("exchange_stream_"): float(value)
        for name, value in (line.split() for line in lines if line and line[0] != "#")
        if name in wanted
    }


async def cycles(url: str, count: int, concurrency: int) -> int:
    """``count`` connect / subscribe / disconnect cycles, ``concurrency`` at a time."""
    done = 0

    async def worker() -> None:
        nonlocal done
        while done < count:
            done += 1
            async with websockets.connect(url, open_timeout=10) as ws:
                channels = [f"SYM{(done + k) % 50}USDT@depth" for k in range(3)]
                await ws.send(json.dumps({"op": "subscribe", "channels": channels}))
                await asyncio.wait_for(ws.recv(), 10)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def run_clients(url: str, count: int, concurrency: int, timeout: float) -> None:
    """In a child process, so the clients do not share a core's time with the measurement."""
    code = (
        f"import asyncio, sys; sys.path.insert(0, {str(HERE)!r}); import soak; "
        f"print(asyncio.run(soak.cycles({url!r}, {count}, {concurrency})))"
    )
    try:
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL,
                       timeout=timeout)  # fmt: skip
    except subprocess.SubprocessError as error:
        raise BenchmarkError(f"the soak clients failed: {error}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the cycles")
    GatewayCode.add_options(parser)
    args = parser.parse_args()
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch, Processes() as processes:
        workdir = Path(scratch)
        code = GatewayCode.chosen(args, workdir)
        print(header_line(run_header(code)))
        options = ("--max-connections-per-ip", "100000", "--op-rate", "100000")
        gateway = start_gateway(processes, code, workdir, *options)
        pid, api = gateway.process.pid, gateway.api_url
        run_clients(gateway.ws_url, 2_000, args.concurrency, 120)  # warm up: allocator, caches
        time.sleep(1)
        rss_before, index_before = rss_kib(pid), index(api)
        started = time.perf_counter()
        run_clients(gateway.ws_url, args.cycles, args.concurrency, args.timeout)
        elapsed = time.perf_counter() - started
        time.sleep(2)
        rss_after, index_after = rss_kib(pid), index(api)
    print("soak: connect, subscribe 3 channels, disconnect")
    print(f"  cycles       {args.cycles:,} in {elapsed:.1f} s "
          f"({args.cycles / elapsed:,.0f} cycles/s, {args.concurrency} at a time)")  # fmt: skip
    before, after = rss_before / 1024, rss_after / 1024
    print(f"  server RSS   {before:.1f} MiB before, {after:.1f} MiB after "
          f"({after - before:+.1f} MiB)")  # fmt: skip
    print(f"  index before {index_before}")
    print(f"  index after  {index_after}")


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        sys.exit(f"soak.py: {error}")
