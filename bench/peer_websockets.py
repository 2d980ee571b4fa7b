#!/usr/bin/env python3
"""A broadcast server on the ``websockets`` library, as a Python team would write one.

It is the plain-Python peer in ``bench/peers.py``: the asyncio server of ``websockets``, a set
of subscribers and ``broadcast``, nothing tuned beyond what the benchmark needs.

* ``/sub``: the connection joins the subscribers as soon as it is open and leaves when it
  closes (the handler of the library's broadcast example); there is no subscribe op, and
  what a subscriber sends is not read.
* ``/pub``: every text message on this connection goes to all subscribers with
  ``websockets.asyncio.server.broadcast`` (one frame per subscriber, written without
  waiting, no backpressure: a slow subscriber's messages pile up in its write buffer).
* Any other path is closed with 1008.

``ping_interval=None``: no keepalive pings, so idle connections cost no CPU (the benchmark's
load client would answer them, but nchan sends none either). Prints ``ready`` once it
listens; SIGTERM or SIGINT stop it.

    python bench/peer_websockets.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

subscribers: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    """Route a connection by its path (the query string, if any, is not looked at)."""
    assert websocket.request is not None  # The handshake is done when the handler runs.
    path = websocket.request.path.partition("?")[0]
    if path == "/sub":
        subscribers.add(websocket)
        try:
            await websocket.wait_closed()
        finally:
            subscribers.discard(websocket)
    elif path == "/pub":
        async for message in websocket:
            broadcast(subscribers, message)
    else:
        await websocket.close(1008, "unknown path")


async def main(host: str, port: int) -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with serve(handler, host, port, ping_interval=None):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.host, arguments.port))
