#!/usr/bin/env python3
"""Many channels, one client each: how many publishes a second a server takes and delivers.

``--channels`` clients (default 1,000) each subscribe to a channel of their own
(``C<n>USDT@trades``; nchan: ``/sub?id=C<n>``), then ``--messages`` publishes go round-robin
over the channels, so every publish is one delivery to one connection: the cost measured is
the publish path, not the fan-out. The server is pinned to CPU 0; the load client
(``bench/wsload.c``, compiled at the start) and the publisher (this process) to CPU 1. Each
client checks every frame's size and its channel's sequence (0, 1, 2, ...) and keeps the
latency from publish to receipt, as in ``bench/peers.py``, whose machinery this reuses.

The publish paths, each a row (``--paths`` to choose):

* ``ws-batch``: exchange-stream's ``/ws/v1``, ``--batch`` publishes a request, ``--window``
  requests in flight;
* ``ws``: ``/ws/v1``, one publish a request, ``--single-window`` in flight;
* ``http-batch``: ``POST /v1/mesh/publish`` with a JSON array of ``--batch``, pipelined on one
  keep-alive connection, ``--window`` in flight;
* ``http``: one publish a request, pipelined, ``--single-window`` in flight;
* ``nchan``: nginx + nchan, ``POST /pub?id=C<n>`` (nchan has no batch), pipelined,
  ``--single-window`` in flight.

    python bench/channels.py                      # every path
    python bench/channels.py --paths ws-batch,nchan --messages 400000
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peers import (
    LOOPBACK,
    BenchmarkError,
    ExchangeStream,
    LoadClients,
    Nchan,
    Processes,
    PublishStats,
    Snapshot,
    compile_wsload,
    paced_sends,
    progress,
    read_http_response,
    run_header,
    sum_clients,
    table,
)
from websockets.sync.client import connect as ws_connect

PATHS = ("ws-batch", "ws", "http-batch", "http", "nchan")


class OwnChannels(ExchangeStream):
    """exchange-stream with every client on a channel of its own."""

    subscribe = '{"op":"subscribe","channel":"C%dUSDT@trades"}'  # wsload: %d = its number


class NchanOwnChannels(Nchan):
    sub_path = "/sub?id=C%d"


def payload(seq: int, sent_ns: int, size: int) -> str:
    """The text wsload checks: ``size`` bytes with the channel's ``seq`` and the send time."""
    head = f'{{"event":"trades","data":{{"seq":{seq},"t":{sent_ns},"pad":"'
    return head + "x" * (size - len(head) - 3) + '"}}'


# Builds one request's bytes from (channel number, seq in that channel) pairs and the size.
Request = Callable[[list[tuple[int, int]], int], bytes]


class Pipelined:
    """Requests of ``batch`` publishes on one connection, at most ``window`` unanswered.

    ``send`` writes a request's bytes, ``answer`` blocks for the next answer and says whether
    it accepted every publish in it; a thread reads the answers and frees window slots.
    """

    def __init__(
        self, send: Callable[[bytes], None], answer: Callable[[], bool], request: Request
    ) -> None:
        self._send, self._answer, self._request = send, answer, request

    def run(self, channels: int, messages: int, batch: int, size: int, window: int) -> PublishStats:
        stats = PublishStats()
        sizes = [min(batch, messages - first) for first in range(0, messages, batch)]
        slots = threading.Semaphore(window)
        reader = threading.Thread(target=self._answers, args=(sizes, slots, stats))
        reader.start()
        try:
            for number in paced_sends(len(sizes), None, slots, stats):
                first = number * batch
                pairs = [(n % channels, n // channels) for n in range(first, first + sizes[number])]
                sent_ns = time.monotonic_ns()
                self._send(self._request(pairs, size))
                stats.first_ns = stats.first_ns or sent_ns
                stats.last_ns = sent_ns
                stats.sent += len(pairs)
        except OSError as error:
            stats.error = f"send: {error}"
        finally:
            reader.join(60)
        return stats

    def _answers(self, sizes: list[int], slots: threading.Semaphore, stats: PublishStats) -> None:
        try:
            for size in sizes:
                if self._answer():
                    stats.answered += size
                else:
                    stats.refused += size
                slots.release()
        except Exception as error:  # a closed socket or WebSocket: the run is over
            stats.error = stats.error or f"answers: {error!r}"
        finally:
            slots.release(len(sizes) or 1)


def _items(pairs: list[tuple[int, int]], size: int) -> list[dict[str, str]]:
    sent_ns = time.monotonic_ns()
    return [{"c": f"ex:C{c}USDT@trades", "d": payload(seq, sent_ns, size)} for c, seq in pairs]


def _http(port: int, path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def http_publisher(port: int, batch: bool, nchan: bool = False) -> tuple[Pipelined, Any]:
    """Pipelined POSTs on one keep-alive connection: exchange-stream's API, or nchan's."""
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    file = sock.makefile("rb")

    def request(pairs: list[tuple[int, int]], size: int) -> bytes:
        if nchan:
            ((channel, seq),) = pairs
            body = payload(seq, time.monotonic_ns(), size).encode()
            return _http(port, f"/pub?id=C{channel}", body)
        items = _items(pairs, size)
        body = json.dumps(items if batch else items[0], separators=(",", ":")).encode()
        return _http(port, "/v1/mesh/publish", body)

    def answer() -> bool:
        status, body = read_http_response(file)
        return status in (201, 202) if nchan else status == 200 and b'"E":null' in body

    return Pipelined(sock.sendall, answer, request), sock


def ws_publisher(port: int, batch: bool) -> tuple[Pipelined, Any]:
    """exchange-stream's persistent publish API, ``/ws/v1``."""
    ws = ws_connect(f"ws://{LOOPBACK}:{port}/ws/v1", compression=None, max_size=None,
                    ping_interval=None)  # fmt: skip
    counter = iter(range(1 << 62))

    def request(pairs: list[tuple[int, int]], size: int) -> bytes:
        items = _items(pairs, size)
        message = {"m": "mesh.publish", "p": items if batch else items[0], "i": next(counter)}
        return json.dumps(message, separators=(",", ":")).encode()

    def answer() -> bool:
        return json.loads(ws.recv(timeout=30))["E"] is None

    return Pipelined(lambda data: ws.send(data.decode()), answer, request), ws


def run_path(path: str, args: argparse.Namespace, processes: Processes, binary: Path,
             workdir: Path) -> dict[str, Any]:  # fmt: skip
    """Start the server afresh, subscribe the clients, publish, measure, stop."""
    directory = workdir / path
    directory.mkdir()
    system = (NchanOwnChannels if path == "nchan" else OwnChannels)(processes, directory)
    batch = args.batch if path.endswith("batch") else 1
    window = args.window if batch > 1 else args.single_window
    per_channel = args.messages // args.channels
    messages = per_channel * args.channels
    progress(f"{path}: {args.channels:,} channels x {per_channel} messages, "
             f"{batch} a request, {window} in flight ...")  # fmt: skip
    try:
        system.start()
        with LoadClients(
            processes, binary, system, args.channels, per_channel, args.size,
            timeout=args.timeout, per_process=19_000,
        ) as clients:  # fmt: skip
            clients.wait_ready(90)
            if path == "nchan":
                publisher, connection = http_publisher(system.ws_port, False, nchan=True)
            elif path.startswith("ws"):
                publisher, connection = ws_publisher(system.api_port, batch > 1)
            else:
                publisher, connection = http_publisher(system.api_port, batch > 1)
            with connection:
                before = Snapshot.take(system.measured_pid)
                stats = publisher.run(args.channels, messages, batch, args.size, window)
                reports = clients.results(grace=30)
                after = Snapshot.take(system.measured_pid)
        problems = [line for line in system.log_problems()[:3]]
    finally:
        system.stop()
    load = sum_clients(reports)
    wall = after.wall - before.wall
    window_s = (load["last_ns"] - stats.first_ns) / 1e9
    server = after.server - before.server
    figures = {
        "path": path, "batch": batch, "window": window, "published": stats.answered,
        "refused": stats.refused, "error": stats.error, "received": load["received"],
        "lost": load["lost"], "dups": load["dups"], "corrupt": load["corrupt"],
        "publishes_per_s": load["received"] / window_s if window_s > 0 else 0.0,
        "server_us_per_publish": 1e6 * server / max(load["received"], 1),
        "server_pct": 100 * server / wall,
        "client_pct": 100 * load["cpu_s"] / wall,
        "publisher_pct": 100 * (after.own - before.own) / wall,
        "p50_ms": load["p50_us"] / 1000, "p99_ms": load["p99_us"] / 1000,
        "problems": problems,
    }  # fmt: skip
    if stats.error or stats.refused or load["lost"] or load["dups"] or load["corrupt"]:
        figures["problems"].append(f"publisher: {stats.error}, refused {stats.refused}")
    progress(f"  {figures['publishes_per_s']:,.0f} publishes/s, "
             f"{figures['server_us_per_publish']:.1f} us server CPU per publish")  # fmt: skip
    return figures


def report(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [" ".join(f"{key}={value}" for key, value in header.items()), ""]
    lines.append(table(
        ["path", "batch", "in flight", "publishes/s", "server us/publish", "server %",
         "client %", "publisher %", "p50 ms", "p99 ms", "lost/dup/corrupt", "check"],
        [[r["path"], str(r["batch"]), str(r["window"]), f"{r['publishes_per_s'] / 1000:.1f}k",
          f"{r['server_us_per_publish']:.1f}", f"{r['server_pct']:.0f}",
          f"{r['client_pct']:.0f}", f"{r['publisher_pct']:.0f}", f"{r['p50_ms']:.1f}",
          f"{r['p99_ms']:.1f}", f"{r['lost']}/{r['dups']}/{r['corrupt']}",
          "ok" if not r["problems"] else "PROBLEM"] for r in rows],
    ))  # fmt: skip
    for row in rows:
        for problem in row["problems"]:
            lines.append(f"PROBLEM {row['path']}: {problem}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated")
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200_000, help="publishes per path")
    parser.add_argument("--size", type=int, default=280, help="bytes per published text")
    parser.add_argument("--batch", type=int, default=100, help="publishes per batch request")
    parser.add_argument("--window", type=int, default=8, help="batch requests in flight")
    parser.add_argument("--single-window", type=int, default=256,
                        help="single-publish requests in flight")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args()
    paths = args.paths.split(",")
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    processes = Processes()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="channels-") as workdir:
            binary = compile_wsload(Path(workdir))
            for path in paths:
                rows.append(run_path(path, args, processes, binary, Path(workdir)))
    except (BenchmarkError, KeyboardInterrupt) as error:
        print(f"channels: {error!r}", file=sys.stderr)
        return 1
    finally:
        processes.stop_all()
    header = run_header()
    print(json.dumps({"header": header, "rows": rows}, indent=1) if args.json
          else report(rows, header))  # fmt: skip
    return 1 if any(row["problems"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
