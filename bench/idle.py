"""Idle connections: RSS per connection, idle CPU with heartbeats on, and time to drain.

Starts ``twistd exchange-stream``, opens ``--connections`` WebSocket connections (default
10,000) from client processes, each subscribed to one channel, and measures:

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
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import websockets
from common import cpu_seconds, rss_kib, start_gateway
from fanout import RedisProcess, redis_server_executable

HERE = Path(__file__).parent


async def hold(url: str, count: int, source: str) -> None:
    """Open ``count`` subscribed connections from address ``source``, say "ready", wait until
    all are closed by the server, then print the time of the last close."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    connections = []
    for index in range(count):
        ws = await websockets.connect(
            url, ping_interval=None, open_timeout=30, local_addr=(source, 0)
        )
        await ws.send(json.dumps({"op": "subscribe", "channel": f"S{index % 100}@ticker"}))
        await ws.recv()
        connections.append(ws)
    print("ready", flush=True)
    last_close = 0.0

    async def wait_closed(ws) -> None:
        nonlocal last_close
        await ws.wait_closed()
        last_close = max(last_close, time.time())

    await asyncio.gather(*(wait_closed(ws) for ws in connections))
    print(f"closed {last_close}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--drain-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes")
    args = parser.parse_args()
    options = [
        "--max-connections-per-ip", "1000000", "--max-connections", "1000000",
        "--op-rate", "1000", "--ping-interval", str(args.ping_interval),
        "--drain-seconds", str(args.drain_seconds), "--workers", str(args.workers),
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        if args.workers > 1:
            redis = stack.enter_context(RedisProcess(redis_server_executable()))
            options += ["--mesh", redis.url]
        run(args, *start_gateway(*options))


def gateway_pids(pid: int) -> list[int]:
    """The gateway and its workers."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def wait_for_workers(api: str, workers: int) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{api}/healthz") as answer:
                health = json.load(answer)
        except urllib.error.HTTPError as unhealthy:  # 503 until the mesh is up everywhere
            health = json.load(unhealthy)
        if (
            health["status"] == "ok"
            and health.get("processes", {"reporting": 1})["reporting"] == workers
        ):
            return
        time.sleep(0.1)
    raise RuntimeError("the workers did not report")


def run(args: argparse.Namespace, server: subprocess.Popen, url: str, api: str) -> None:
    clients = []
    try:
        wait_for_workers(api, args.workers)
        time.sleep(0.5)
        pids = gateway_pids(server.pid)
        rest = sum(map(rss_kib, pids))
        share = args.connections // args.client_procs
        opening = time.perf_counter()
        for number in range(args.client_procs):
            code = (
                f"import asyncio, sys; sys.path.insert(0, {str(HERE)!r}); import idle; "
                f"asyncio.run(idle.hold({url!r}, {share}, '127.0.0.{number + 1}'))"
            )
            clients.append(
                subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            )
        for client in clients:
            assert client.stdout.readline().strip() == "ready"
        opened = time.perf_counter() - opening
        time.sleep(2)
        loaded = sum(map(rss_kib, pids))
        cpu_before = sum(map(cpu_seconds, pids))
        time.sleep(args.idle_seconds)
        idle_cpu = (sum(map(cpu_seconds, pids)) - cpu_before) / args.idle_seconds
        total = share * args.client_procs
        sigterm = time.time()
        server.send_signal(signal.SIGTERM)
        last_close = max(float(c.stdout.readline().split()[1]) for c in clients)
        server.wait(60)
        exited = time.time()
        print(f"idle connections ({os.cpu_count()} CPUs, {len(pids)} gateway processes)")
        print(f"  connections  {total:,} opened in {opened:.1f} s, each subscribed to 1 channel")
        print(f"  server RSS   {rest / 1024:.1f} MiB at rest, {loaded / 1024:.1f} MiB loaded: "
              f"{(loaded - rest) / total:.1f} KiB per idle connection")  # fmt: skip
        print(f"  idle CPU     {idle_cpu * 100:.2f} % of a core over {args.idle_seconds:.0f} s "
              f"(ping frames every {args.ping_interval:.0f} s)")  # fmt: skip
        print(f"  drain        last client sent away {last_close - sigterm:.2f} s after SIGTERM "
              f"(window {args.drain_seconds:.0f} s); process exited after "
              f"{exited - sigterm:.2f} s")  # fmt: skip
    finally:
        for process in [server, *clients]:
            if process.poll() is None:
                process.kill()


if __name__ == "__main__":
    main()
