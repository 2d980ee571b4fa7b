"""Publish → receive latency at a fixed rate, measured by Node's ``ws`` (``ws_fanout.mjs``):
the second generator beside ``peers.py --scenarios rate`` (wsload).

For each of ``--systems`` (any of ``systems.py``; ``exchange-stream-workers`` and
``nchan-workers`` run on every core, the others on CPU 0), started afresh: ``--clients``
subscribers on one channel, ``--messages`` publishes of ``--size`` bytes paced at ``--rate``
per second over HTTP keep-alive from the same Node process (so that one clock times both
ends), and the latency of every frame from its publish's post to its receipt. The server's
CPU is that of all of its processes (and Redis's, for the workers).

    NODE_PATH=/path/to/node_modules .venv/bin/python bench/latency.py
    .venv/bin/python bench/latency.py --systems exchange-stream,nchan --rate 100
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import (
    CpuSnapshot,
    GatewayCode,
    Processes,
    header_line,
    raise_fd_limit,
    run_header,
    table,
)
from nodeload import node_run
from systems import SYSTEM_CLASSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="exchange-stream-workers,nchan-workers")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="publishes/s")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=280)
    GatewayCode.add_options(parser)
    args = parser.parse_args()
    raise_fd_limit()
    rows = []
    with tempfile.TemporaryDirectory() as scratch, Processes() as processes:
        code = GatewayCode.chosen(args, Path(scratch))
        print(header_line(run_header(code)), flush=True)
        for name in args.systems.split(","):
            workdir = Path(scratch) / name
            workdir.mkdir()
            system = SYSTEM_CLASSES[name](processes, workdir, code)
            system.start()
            try:
                pids = [system.measured_pid, *system.side_pids().values()]
                before = CpuSnapshot.take(*pids)
                result = node_run(
                    system, args.clients, args.messages, "pad", "plain", args.rate, args.size
                )
                after = CpuSnapshot.take(*pids)
            finally:
                system.stop()
            server = sum(after.processes) - sum(before.processes)
            machine = after.busy["cpu"] - before.busy["cpu"]
            rows.append([
                name, f"{result['delivered']:,}", f"{result['delivered_per_s']:,}",
                f"{result['p50_ms']:.1f}", f"{result['p99_ms']:.1f}", f"{result['max_ms']:.1f}",
                f"{server / result['delivered'] * 1e6:.2f}",
                f"{machine / result['delivered'] * 1e6:.2f}",
                f"{100 * server / (after.wall - before.wall):.0f}",
            ])  # fmt: skip
            print(" | ".join(rows[-1]), flush=True)
    print(table(
        ["system", "delivered", "delivered/s", "p50 ms", "p99 ms", "max ms",
         "server µs/delivery", "machine µs/delivery", "server % of a core"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
