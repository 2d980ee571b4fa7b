"""Idle connections: RSS per connection, idle CPU with heartbeats on, and time to drain.

Starts ``twistd exchange-stream`` (the checkout, ``--rev`` or ``--installed``), opens
``--connections`` WebSocket connections (default 10,000) from client processes, each
subscribed to one channel, and measures:

- server RSS per idle connection (RSS with the connections minus RSS at rest, divided),
- server CPU while idle for ``--idle-seconds`` (heartbeats on: ping frames every
  ``--ping-interval`` seconds),
- after SIGTERM, how long until every client was sent away (notice + close 4200, spread
  over ``--drain-seconds``) and until the server process exited.

A process may hold at most 20,000 file descriptors here, so 50,000 connections need
``--workers 3`` (a throwaway ``redis-server`` joins them; RSS and CPU are those of all the
gateway's processes) and at least 3 client processes. Client process *i* connects from
127.0.0.*i+1*, so no source address runs out of ephemeral ports.

    python bench/idle.py [--connections 10000] [--drain-seconds 5]
    python bench/idle.py --connections 50000 --workers 3 --client-procs 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import websockets
from common import (
    HERE,
    BenchmarkError,
    Gateway,
    GatewayCode,
    Processes,
    child_pids,
    header_line,
    process_cpu_seconds,
    raise_fd_limit,
    read_line,
    rss_kib,
    run_header,
    start_gateway,
    start_redis,
)


async def hold(url: str, count: int, source: str, limit: float, deflate: bool = True) -> None:
    """Open ``count`` subscribed connections from address ``source``, say "ready", wait
    until the server has closed them all (``limit`` seconds at most), then print the time of
    the last close. With ``deflate`` (the library's default, as browsers do) each connection
    negotiates permessage-deflate and sends its subscribe op compressed."""
    raise_fd_limit()
    connections = []
    for index in range(count):
        ws = await websockets.connect(
            url, ping_interval=None, open_timeout=30, local_addr=(source, 0),
            compression="deflate" if deflate else None,
        )  # fmt: skip
        await ws.send(json.dumps({"op": "subscribe", "channel": f"S{index % 100}@ticker"}))
        await asyncio.wait_for(ws.recv(), 30)
        connections.append(ws)
    print("ready", flush=True)
    last_close = 0.0

    async def wait_closed(ws: websockets.ClientConnection) -> None:
        nonlocal last_close
        await ws.wait_closed()
        last_close = max(last_close, time.time())

    await asyncio.wait_for(asyncio.gather(*(wait_closed(ws) for ws in connections)), limit)
    print(f"closed {last_close}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--drain-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes")
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="clients do not offer permessage-deflate (by default they do)",
    )
    GatewayCode.add_options(parser)
    args = parser.parse_args()
    options = [
        "--max-connections-per-ip", "1000000", "--max-connections", "1000000",
        "--op-rate", "1000", "--ping-interval", str(args.ping_interval),
        "--drain-seconds", str(args.drain_seconds), "--workers", str(args.workers),
    ]  # fmt: skip
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="idle-") as scratch, Processes() as processes:
        workdir = Path(scratch)
        code = GatewayCode.chosen(args, workdir)
        print(header_line(run_header(code)))
        if args.workers > 1:
            options += ["--mesh", start_redis(processes, workdir).url]
        gateway = start_gateway(processes, code, workdir, *options)
        run(args, processes, gateway)


def wait_for_workers(api: str, workers: int) -> None:
    """Until ``/healthz`` says every worker reports (30 s at most)."""
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{api}/healthz", timeout=2) as answer:
                health = json.load(answer)
        except urllib.error.HTTPError as unhealthy:  # 503 until the mesh is up everywhere
            health = json.load(unhealthy)
        if (
            health["status"] == "ok"
            and health.get("processes", {"reporting": 1})["reporting"] == workers
        ):
            return
        time.sleep(0.1)
    raise BenchmarkError("the workers did not report")


def run(args: argparse.Namespace, processes: Processes, gateway: Gateway) -> None:
    wait_for_workers(gateway.api_url, args.workers)
    time.sleep(0.5)
    pids = [gateway.process.pid, *child_pids(gateway.process.pid)]
    rest = sum(map(rss_kib, pids))
    share = args.connections // args.client_procs
    limit = args.idle_seconds + args.drain_seconds + 120
    opening = time.perf_counter()
    clients = []
    for number in range(args.client_procs):
        code = (
            f"import asyncio, sys; sys.path.insert(0, {str(HERE)!r}); import idle; "
            f"asyncio.run(idle.hold({gateway.ws_url!r}, {share}, '127.0.0.{number + 1}', {limit},"
            f" deflate={not args.no_deflate}))"
        )
        command = [sys.executable, "-c", code]
        clients.append(processes.spawn(command, stdout=subprocess.PIPE, text=True))
    for client in clients:
        if read_line(client.stdout, 120, "idle client") != "ready":
            raise BenchmarkError("an idle client did not say ready")
    opened = time.perf_counter() - opening
    time.sleep(2)
    loaded = sum(map(rss_kib, pids))
    cpu_before = sum(map(process_cpu_seconds, pids))
    time.sleep(args.idle_seconds)
    idle_cpu = (sum(map(process_cpu_seconds, pids)) - cpu_before) / args.idle_seconds
    total = share * args.client_procs
    sigterm = time.time()
    gateway.process.send_signal(signal.SIGTERM)
    closes = [read_line(c.stdout, args.drain_seconds + 60, "idle client") for c in clients]
    last_close = max(float(line.split()[1]) for line in closes)
    with contextlib.suppress(subprocess.TimeoutExpired):
        gateway.process.wait(60)
    exited = time.time()
    print(f"idle connections ({len(pids)} gateway processes)")
    offer = "no compression offered" if args.no_deflate else "permessage-deflate negotiated"
    print(f"  connections  {total:,} opened in {opened:.1f} s, each subscribed to 1 channel, "
          f"{offer}")  # fmt: skip
    print(f"  server RSS   {rest / 1024:.1f} MiB at rest, {loaded / 1024:.1f} MiB loaded: "
          f"{(loaded - rest) / total:.1f} KiB per idle connection")  # fmt: skip
    print(f"  idle CPU     {idle_cpu * 100:.2f} % of a core over {args.idle_seconds:.0f} s "
          f"(ping frames every {args.ping_interval:.0f} s)")  # fmt: skip
    print(f"  drain        last client sent away {last_close - sigterm:.2f} s after SIGTERM "
          f"(window {args.drain_seconds:.0f} s); process exited after "
          f"{exited - sigterm:.2f} s")  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        sys.exit(f"idle.py: {error}")
