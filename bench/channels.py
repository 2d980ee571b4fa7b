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

With ``--mesh redis`` exchange-stream runs on a throwaway Redis pinned to the server's CPU
beside it (its CPU per publish is a column); ``--kind ticker`` publishes to channels without
a history, so that the history's cost shows against the default ``trades`` (a stream).

    python bench/channels.py                      # every path
    python bench/channels.py --paths ws-batch,nchan --messages 400000
    python bench/channels.py --paths http,ws --mesh redis --kind ticker
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    BenchmarkError,
    CpuSnapshot,
    GatewayCode,
    Processes,
    header_line,
    progress,
    run_header,
    start_redis,
    table,
)
from publishers import PipelinedPublisher, http_request, payload, websocket_publisher
from systems import SERVER_CPU, ExchangeStream, Nchan, System
from wsload import LoadClients, compile_wsload, sum_clients

PATHS = ("ws-batch", "ws", "http-batch", "http", "nchan")


class OwnChannels(ExchangeStream):
    """exchange-stream with every client on a channel of its own, ``C<n>USDT@<kind>``, on
    the memory mesh or (``redis``) on a throwaway Redis pinned beside it."""

    def __init__(self, *args: Any, kind: str = "trades", redis: bool = False) -> None:
        super().__init__(*args)
        self.kind, self.redis = kind, redis
        self.subscribe = f'{{"op":"subscribe","channel":"C%dUSDT@{kind}"}}'  # wsload: %d
        self.redis_pid: int | None = None

    def start(self) -> None:
        options: list[str] = []
        if self.redis:
            redis = start_redis(self.processes, self.workdir, cpu=SERVER_CPU)
            self.running.append(redis.process)
            self.redis_pid = redis.process.pid
            options = ["--mesh", redis.url, "--workers", "1"]
        gateway = self.start_node(self.name, *options, profile=self.profile)
        self.ws_port, self.api_port = gateway.ws_port, gateway.api_port


class NchanOwnChannels(Nchan):
    sub_path = "/sub?id=C%d"


def publisher(path: str, system: System) -> PipelinedPublisher:
    """One connection for ``path``: exchange-stream's ``/ws/v1`` or HTTP API, or nchan's."""
    if path.startswith("ws"):
        url = f"ws://{LOOPBACK}:{system.api_port}/ws/v1"
        return websocket_publisher(url, lambda answer: json.loads(answer)["E"] is None)
    return system.publisher()


def requests(path: str, port: int, channels: int, messages: int, batch: int, size: int, kind: str):
    """Request n's bytes: publishes n * batch onwards (``messages`` in all), round-robin over
    the channels: publish m goes to channel m % channels as that channel's seq m // channels.
    """
    ids = iter(range(messages + 1))  # /ws/v1 request ids

    def texts(number: int, sent_ns: int) -> list[tuple[int, str]]:
        first = number * batch
        return [
            (m % channels, payload(m // channels, sent_ns, size, event=kind))
            for m in range(first, min(first + batch, messages))
        ]

    def request(number: int, sent_ns: int) -> bytes:
        if path == "nchan":
            ((channel, text),) = texts(number, sent_ns)
            return http_request(port, f"/pub?id=C{channel}", text.encode())
        items = [{"c": f"ex:C{c}USDT@{kind}", "d": text} for c, text in texts(number, sent_ns)]
        publishes = items if batch > 1 else items[0]
        if path.startswith("ws"):
            message = {"m": "mesh.publish", "p": publishes, "i": next(ids)}
            return json.dumps(message, separators=(",", ":")).encode()
        body = json.dumps(publishes, separators=(",", ":")).encode()
        return http_request(port, "/v1/mesh/publish", body)

    return request


def run_path(
    path: str, args: argparse.Namespace, processes: Processes, binary: Path, workdir: Path,
    code: GatewayCode,
) -> dict[str, Any]:  # fmt: skip
    """Start the server afresh, subscribe the clients, publish, measure, stop."""
    directory = workdir / path
    directory.mkdir()
    system: System
    if path == "nchan":
        system = NchanOwnChannels(processes, directory, code)
    else:
        profile = args.profile / f"{path}.pstats" if args.profile else None
        redis = args.mesh == "redis"
        system = OwnChannels(processes, directory, code, profile, kind=args.kind, redis=redis)
    batch = args.batch if path.endswith("batch") else 1
    window = args.window if batch > 1 else args.single_window
    per_channel = args.messages // args.channels
    messages = per_channel * args.channels
    sizes = [min(batch, messages - first) for first in range(0, messages, batch)]
    progress(f"{path}: {args.channels:,} channels x {per_channel} messages, "
             f"{batch} a request, {window} in flight ...")  # fmt: skip
    try:
        system.start()
        port = system.ws_port if path == "nchan" else system.api_port
        request = requests(path, port, args.channels, messages, batch, args.size, args.kind)
        redis_pid = getattr(system, "redis_pid", None)
        measured = [system.measured_pid, *([redis_pid] if redis_pid else [])]
        with LoadClients(
            processes, binary, system, args.channels, per_channel, args.size,
            timeout=args.timeout, per_process=19_000,
        ) as clients:  # fmt: skip
            clients.wait_ready(90)
            with publisher(path, system) as connection:
                before = CpuSnapshot.take(*measured)
                stats = connection.run(request, sizes, None, window)
                reports = clients.results(grace=30)
                after = CpuSnapshot.take(*measured)
        problems = system.log_problems()[:3]
    finally:
        system.stop()
    load = sum_clients(reports)
    wall = after.wall - before.wall
    window_s = (load["last_ns"] - stats.first_ns) / 1e9
    server = after.processes[0] - before.processes[0]
    redis = after.processes[1] - before.processes[1] if redis_pid else 0.0
    figures = {
        "path": path, "batch": batch, "window": window, "published": stats.answered,
        "refused": stats.refused, "error": stats.error, "received": load["received"],
        "lost": load["lost"], "dups": load["dups"], "corrupt": load["corrupt"],
        "publishes_per_s": load["received"] / window_s if window_s > 0 else 0.0,
        "server_us_per_publish": 1e6 * server / max(load["received"], 1),
        "redis_us_per_publish": 1e6 * redis / max(load["received"], 1),
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


def report(rows: list[dict[str, Any]], header: dict[str, object]) -> str:
    lines = [header_line(header), ""]
    lines.append(table(
        ["path", "batch", "in flight", "publishes/s", "server us/publish", "redis us/publish",
         "server %", "client %", "publisher %", "p50 ms", "p99 ms", "lost/dup/corrupt", "check"],
        [[r["path"], str(r["batch"]), str(r["window"]), f"{r['publishes_per_s'] / 1000:.1f}k",
          f"{r['server_us_per_publish']:.1f}", f"{r['redis_us_per_publish']:.1f}",
          f"{r['server_pct']:.0f}",
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
    parser.add_argument(
        "--mesh",
        choices=("memory", "redis"),
        default="memory",
        help="exchange-stream's mesh (redis: a throwaway one, pinned beside it)",
    )
    parser.add_argument(
        "--kind",
        default="trades",
        help="channel type: trades keeps a history (a stream), ticker does not",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="a directory for the gateway's cProfile pstats, a file per path (about 3x slower)",
    )
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    GatewayCode.add_options(parser)
    args = parser.parse_args()
    paths = args.paths.split(",")
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="channels-") as scratch, Processes() as processes:
            workdir = Path(scratch)
            code = GatewayCode.chosen(args, workdir)
            header = run_header(code)
            progress(header_line(header))
            binary = compile_wsload(workdir)
            for path in paths:
                rows.append(run_path(path, args, processes, binary, workdir, code))
    except (BenchmarkError, KeyboardInterrupt) as error:
        print(f"channels: {error!r}", file=sys.stderr)
        return 1
    print(json.dumps({"header": header, "rows": rows}, indent=1) if args.json
          else report(rows, header))  # fmt: skip
    return 1 if any(row["problems"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
