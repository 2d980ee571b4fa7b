"""Soak: many connect / subscribe / disconnect cycles; memory and the index come back.

Starts ``twistd exchange-stream`` (or uses ``--api``/``--url`` of a running one), records its
RSS and its /metrics (connections, subscriptions, channels) at rest, runs ``--cycles``
connect/subscribe/disconnect cycles from ``--concurrency`` asyncio clients in another process,
and reports RSS and the index after: both should be back at the baseline. Not part of CI.

    python bench/soak.py [--cycles 100000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websockets
from common import rss_kib, start_gateway


def index(api: str) -> dict[str, float]:
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
    done = 0

    async def worker(worker_id: int) -> None:
        nonlocal done
        while done < count:
            done += 1
            async with websockets.connect(url) as ws:
                channels = [f"SYM{(done + k) % 50}USDT@depth" for k in range(3)]
                await ws.send(json.dumps({"op": "subscribe", "channels": channels}))
                await ws.recv()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done


def run_clients(url: str, count: int, concurrency: int) -> None:
    """In a child process, so the clients do not share a core's time with the measurement."""
    here = str(Path(__file__).parent)
    code = (
        f"import asyncio, sys; sys.path.insert(0, {here!r}); import soak; "
        f"print(asyncio.run(soak.cycles({url!r}, {count}, {concurrency})))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server, url, api = start_gateway("--max-connections-per-ip", "100000", "--op-rate", "100000")
    try:
        run_clients(url, 2_000, args.concurrency)  # warm up: allocator pools, caches
        time.sleep(1)
        rss_before, index_before = rss_kib(server.pid), index(api)
        started = time.perf_counter()
        run_clients(url, args.cycles, args.concurrency)
        elapsed = time.perf_counter() - started
        time.sleep(2)
        rss_after, index_after = rss_kib(server.pid), index(api)
        print("soak: connect, subscribe 3 channels, disconnect")
        print(f"  cycles       {args.cycles:,} in {elapsed:.1f} s "
              f"({args.cycles / elapsed:,.0f} cycles/s, {args.concurrency} at a time)")  # fmt: skip
        before, after = rss_before / 1024, rss_after / 1024
        print(f"  server RSS   {before:.1f} MiB before, {after:.1f} MiB after "
              f"({after - before:+.1f} MiB)")  # fmt: skip
        print(f"  index before {index_before}")
        print(f"  index after  {index_after}")
    finally:
        server.terminate()
        server.wait(15)


if __name__ == "__main__":
    os.chdir(Path(__file__).parent)
    main()
