"""Many channels, one client each: how many publishes a second one gateway takes and delivers.

Starts ``twistd exchange-stream`` pinned to CPU 0, connects ``--channels`` clients (each
subscribed to its own channel) from a process on CPU 1, and publishes ``--messages``
round-robin over the channels from a third process, through the persistent WebSocket publish
API (``/ws/v1``, ``--window`` requests in flight, ``--batch N`` publishes a request) or HTTP
batches (``--http --batch N``). Prints publishes/s (until every delivery arrived) and the
gateway's CPU per publish.

    python bench/channels.py [--channels 1000] [--messages 100000] [--batch 0] [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websockets
from common import cpu_seconds, start_gateway

HERE = Path(__file__).parent


async def receive(url: str, channels: int, messages: int) -> None:
    """The clients: one per channel; print "ready", then the time the last message came."""
    clients = []
    for index in range(channels):
        ws = await websockets.connect(url, ping_interval=None, open_timeout=30)
        await ws.send(json.dumps({"op": "subscribe", "channel": f"C{index}USDT@trades"}))
        await ws.recv()
        clients.append(ws)
    print("ready", flush=True)
    per_client = messages // channels

    async def drain(ws) -> None:
        for _ in range(per_client):
            await ws.recv()

    await asyncio.gather(*(drain(ws) for ws in clients))
    print(f"done {time.time()}", flush=True)


def publish_item(n: int, channels: int) -> dict:
    channel = f"ex:C{n % channels}USDT@trades"
    return {"c": channel, "d": json.dumps({"event": "trades", "data": [{"id": n}]})}


async def publish_ws(api_ws: str, channels: int, messages: int, window: int, batch: int) -> None:
    """``window`` requests in flight, each one publish (``batch`` 0) or ``batch`` of them."""
    per_request = batch or 1
    async with websockets.connect(api_ws, max_size=None) as ws:
        sent = answered = 0

        async def answers() -> None:
            nonlocal answered
            while answered < messages:
                reply = json.loads(await ws.recv())
                assert reply["E"] is None, reply
                answered += per_request

        reader = asyncio.create_task(answers())
        while sent < messages:
            while sent - answered < window * per_request and sent < messages:
                items = [publish_item(n, channels) for n in range(sent, sent + per_request)]
                request = {"m": "mesh.publish", "p": items if batch else items[0], "i": sent}
                await ws.send(json.dumps(request))
                sent += per_request
            await asyncio.sleep(0)
        await reader


def publish_http(api: str, channels: int, messages: int, batch: int) -> None:
    for start in range(0, messages, batch):
        items = [publish_item(n, channels) for n in range(start, min(messages, start + batch))]
        request = urllib.request.Request(f"{api}/v1/mesh/publish", json.dumps(items).encode())
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200


def child(code: str, core: int) -> subprocess.Popen:
    program = f"import sys; sys.path.insert(0, {str(HERE)!r}); import asyncio, channels; {code}"
    command = ["taskset", "-c", str(core), sys.executable, "-c", program]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=500, help="/ws/v1 requests in flight")
    parser.add_argument("--batch", type=int, default=0, help="N publishes a request")
    parser.add_argument("--http", action="store_true", help="HTTP batches instead of /ws/v1")
    args = parser.parse_args()
    if args.http and not args.batch:
        parser.error("--http needs --batch N")
    messages = args.messages - args.messages % (args.channels * (args.batch or 1))
    server, url, api = start_gateway("--max-connections-per-ip", "100000")
    os.sched_setaffinity(server.pid, {0})
    processes = [server]
    try:
        clients = child(f"asyncio.run(channels.receive({url!r}, {args.channels}, {messages}))", 1)
        processes.append(clients)
        assert clients.stdout.readline().strip() == "ready"
        cpu_before, started = cpu_seconds(server.pid), time.time()
        if args.http:
            code = f"channels.publish_http({api!r}, {args.channels}, {messages}, {args.batch})"
        else:
            api_ws = api.replace("http://", "ws://") + "/ws/v1"
            code = (f"asyncio.run(channels.publish_ws({api_ws!r}, {args.channels}, "
                    f"{messages}, {args.window}, {args.batch}))")  # fmt: skip
        publisher = child(code, 1)
        processes.append(publisher)
        finished = float(clients.stdout.readline().split()[1])
        publisher.wait(120)
        elapsed, cpu = finished - started, cpu_seconds(server.pid) - cpu_before
        how = f"/ws/v1, {args.window} requests in flight"
        if args.http:
            how = f"HTTP batches of {args.batch}"
        elif args.batch:
            how += f", batches of {args.batch}"
        print(f"channels ({os.cpu_count()} CPUs; gateway on CPU 0, load on CPU 1)")
        print(
            f"  load         {args.channels:,} channels x 1 client, {messages:,} publishes, {how}"
        )
        print(f"  rate         {messages / elapsed:,.0f} publishes/s delivered "
              f"({messages:,} in {elapsed:.2f} s)")  # fmt: skip
        print(f"  gateway CPU  {cpu / messages * 1e6:.1f} us per publish (delivery included), "
              f"{cpu / elapsed * 100:.0f} % of a core")  # fmt: skip
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


if __name__ == "__main__":
    main()
