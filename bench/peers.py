#!/usr/bin/env python3
"""Side by side in one run: exchange-stream, nchan (nginx) and a plain ``websockets`` server.

How to run (with the repository's virtualenv, which has ``websockets``; ``gcc``, ``nginx``
and ``libnginx-mod-nchan`` must be installed; a full run takes about 3-4 minutes)::

    .venv/bin/python bench/peers.py                          # every system and scenario
    .venv/bin/python bench/peers.py --systems nchan,websockets --scenarios saturated
    .venv/bin/python bench/peers.py --systems exchange-stream-redis --scenarios saturated,rate
    .venv/bin/python bench/peers.py --systems exchange-stream-workers,nchan-workers --scenarios rate
    .venv/bin/python bench/peers.py --clients 500 --rate 50  # other sizes
    .venv/bin/python bench/peers.py --json > peers.json      # figures as JSON on stdout
    .venv/bin/python bench/peers.py --rev HEAD               # the last commit's gateway
    .venv/bin/python bench/peers.py --systems exchange-stream --profile /tmp/prof
    .venv/bin/python bench/peers.py --help                   # every option

Progress goes to stderr, the tables (or the JSON) to stdout. The exit status is 1 if any
scenario lost, duplicated or corrupted a message, or had a connection closed.

The three systems, each started afresh for every scenario, pinned to CPU 0:

* **exchange-stream**: ``twistd -n exchange-stream`` running this checkout as it is
  (``PYTHONPATH`` is the repository), a ``git archive`` of ``--rev``, or the ``--installed``
  package; clients send ``{"op":"subscribe",...}`` and wait for ``{"result":true}``; one
  publish is ``POST /v1/mesh/publish``. ``--profile DIR`` runs it under twistd's cProfile
  (about three times slower) and leaves one pstats file per run in DIR.
* **nchan**: nginx with one worker and a generated configuration (``nchan_publisher`` on
  ``/pub``, ``nchan_subscriber websocket`` on ``/sub``); CPU and RSS are the worker's.
* **exchange-stream-redis** (only when named): two nodes on a throwaway ``redis-server``
  (a free port, never 6379; it must report our pid before it is used), the clients on node
  B, the publisher on node A's API; node B's figures, and the CPU of node A and Redis in a
  line under the tables. Node A answers once Redis took the ``PUBLISH``, so the saturated
  publisher runs ahead of the fan-out: its latency is queueing;
* **exchange-stream-workers** and **nchan-workers** (only when named): every core, for
  latency with all of them (``--scenarios rate``): one exchange-stream node with
  ``--workers 2`` on a throwaway Redis (the clients spread over both processes by the kernel,
  the publisher on the first one's API), and nginx with two nchan workers; neither is pinned
  (the load still is), the figures are the first process's with the other's CPU beside;
* **websockets**: ``bench/peer_websockets.py``, ``websockets.broadcast`` to a set; the
  publisher is one WebSocket connection to ``/pub``.

The load, pinned to CPU 1: ``bench/wsload.c`` (compiled with ``gcc -O2`` into a temporary
directory at the start: one process, one thread, epoll) holds the subscriber connections,
checks every frame's size and per-connection sequence, and keeps a latency histogram. The
publisher is this process: one connection, requests pipelined with at most ``--window`` in
flight (HTTP/1.1 keep-alive for exchange-stream and nchan; for the websockets peer, a
message counts as answered when it comes back on the publisher's own ``/sub`` connection,
which is one extra subscriber not counted in the figures). One connection keeps the
publishes in order, so every client must see seq 0, 1, 2, ... Each payload is
``{"event":"BTCUSDT@depth","data":{"seq":n,"t":T,"pad":"xx…"}}`` padded to ``--size``
bytes, with ``T`` = ``CLOCK_MONOTONIC`` ns just before the request is sent.

Scenarios:

* ``saturated``: ``--clients`` subscribers, ``--saturated-messages`` publishes as fast as the
  server answers (``--window`` in flight);
* ``rate``: the same clients, ``--rate`` publishes/s (message n at start + n/rate);
* ``idle``: ``--idle-connections`` subscribed connections idle for ``--idle-seconds``: server
  RSS before connecting and after, KiB per connection, idle CPU.

Figures: delivered/s (frames received / first publish to last receive); CPU per delivered
message of the server (``/proc/PID/stat``) and of the whole machine (``/proc/stat`` busy
time, both CPUs); the share of one core used by the server, the load client and the
publisher, and by other processes (a high *other* means the run was noisy); latency p50,
p99 and max (publish sent to frame received); lost, duplicate and corrupt frames and
closed connections, which must all be 0.

Reading the figures:

* **saturated depends on ``--window``.** exchange-stream gathers what one reactor turn
  writes to a connection into one ``send``, so the frames of pipelined publishes handled in
  the same turn leave together: the more publishes in flight, the fewer syscalls and TCP
  segments per frame, and its cost per delivery falls steeply with the window. nchan
  writes every message to every subscriber with its own ``writev``, so its cost hardly
  moves. Compare systems at the same window; ``rate`` (one publish every 10 ms) has no such
  batching and is the per-frame cost.
* **Both CPUs share the kernel's work.** Loopback TCP runs the receiver's side in softirq
  on the sender's CPU (and the ACKs' on the receiver's), and the kernel charges it to the
  process it interrupted: the server's figure includes part of the clients' TCP receive
  path, the client's part of the server's. *CPU0 busy* at 100 % with *CPU1 busy* below it
  says the server was the limit; the other way round, the load.
* **Saturated latency is queueing**, not a service time: a publish is answered once its
  frames are in socket buffers, not once they are read, so frames wait there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BenchmarkError,
    CpuSnapshot,
    GatewayCode,
    Processes,
    command_output,
    header_line,
    progress,
    raise_fd_limit,
    rss_kib,
    run_header,
    table,
)
from publishers import payload
from systems import LOAD_CPU, SERVER_CPU, SYSTEM_CLASSES, System
from wsload import LoadClients, compile_wsload, sum_clients

SYSTEMS = ("exchange-stream", "nchan", "websockets")  # the default; also exchange-stream-redis
SCENARIOS = ("saturated", "rate", "idle")


# --- Scenarios -----------------------------------------------------------------------------


@dataclass
class Result:
    """One system in one scenario; ``problems`` lists what makes it invalid (empty: fine)."""

    system: str
    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def run_delivery(
    system: System, args: argparse.Namespace, binary: Path, rate: float | None, messages: int
) -> dict[str, Any]:
    """Subscribe ``--clients``, publish ``messages`` (paced at ``rate`` if given), measure."""
    window = args.rate_window if rate else args.window
    sides = system.side_pids()

    def request(seq: int, sent_ns: int) -> bytes:
        return system.publish_request(payload(seq, sent_ns, args.size))

    with LoadClients(
        system.processes, binary, system, args.clients, messages, args.size,
        timeout=args.timeout, per_process=args.per_process,
    ) as clients, system.publisher() as publisher:  # fmt: skip
        clients.wait_ready(90)
        before = CpuSnapshot.take(system.measured_pid, *sides.values())
        stats = publisher.run(request, [1] * messages, rate, window)
        reports = clients.results(grace=args.grace)
        after = CpuSnapshot.take(system.measured_pid, *sides.values())
    load = sum_clients(reports)
    wall = after.wall - before.wall
    delivered = load["received"]
    window_s = (load["last_ns"] - stats.first_ns) / 1e9 if delivered else 0.0
    spent = [end - start for start, end in zip(before.processes, after.processes, strict=True)]
    server, side = spent[0], spent[1:]
    publisher_cpu = after.own - before.own
    busy = {cpu: after.busy[cpu] - before.busy[cpu] for cpu in before.busy}
    interrupts = after.interrupts - before.interrupts
    machine, clients_cpu = busy["cpu"], load["cpu_s"]
    per_delivery = 1e6 / delivered if delivered else math.nan
    publish_s = (stats.last_ns - stats.first_ns) / 1e9
    ours = server + sum(side) + clients_cpu + publisher_cpu
    return {
        "publishes": stats.answered, "publish_refused": stats.refused,
        "publish_error": stats.error, "publish_s": publish_s,
        "publishes_per_s": (stats.sent - 1) / publish_s if publish_s > 0 else 0.0,
        "publish_max_lag_s": stats.max_lag_s, "window": window,
        "delivered": delivered, "expected": load["connections"] * messages,
        "delivered_per_s": delivered / window_s if window_s > 0 else 0.0,
        "window_s": window_s, "wall_s": wall,
        "server_cpu_us_per_msg": server * per_delivery,
        "machine_cpu_us_per_msg": machine * per_delivery,
        "server_cpu_pct": 100 * server / wall,
        "side_cpu_pct": {role: 100 * cpu / wall for role, cpu in zip(sides, side, strict=True)},
        "client_cpu_pct": 100 * clients_cpu / wall,
        "publisher_cpu_pct": 100 * publisher_cpu / wall,
        "interrupts_cpu_pct": 100 * interrupts / wall,
        "steal_pct": 100 * (after.steal - before.steal) / wall,
        "other_cpu_pct": 100 * (machine - ours) / wall,
        "server_core_busy_pct": 100 * busy[f"cpu{SERVER_CPU}"] / wall,
        "load_core_busy_pct": 100 * busy[f"cpu{LOAD_CPU}"] / wall,
        "server_rss_kib": rss_kib(system.measured_pid),
        "clients": load,
    }  # fmt: skip


def run_idle(system: System, args: argparse.Namespace, binary: Path) -> dict[str, Any]:
    """RSS of the server at rest and with ``--idle-connections`` idle subscribers."""
    time.sleep(1.0)  # Let the server settle after start-up.
    rss_before = rss_kib(system.measured_pid)
    started = time.monotonic()
    with LoadClients(
        system.processes, binary, system, args.idle_connections, 0, args.size,
        timeout=args.idle_seconds + 120, per_process=args.per_process,
    ) as clients:  # fmt: skip
        clients.wait_ready(120)
        connect_s = time.monotonic() - started
        rss_connected = rss_kib(system.measured_pid)
        before = CpuSnapshot.take(system.measured_pid)
        time.sleep(args.idle_seconds)
        after = CpuSnapshot.take(system.measured_pid)
        idle_s = after.wall - before.wall
        rss_after = rss_kib(system.measured_pid)
        clients.stop()
        load = sum_clients(clients.results(grace=15))
    return {
        "connections": load["connections"], "connect_s": connect_s,
        "rss_before_kib": rss_before, "rss_connected_kib": rss_connected,
        "rss_after_kib": rss_after,
        "kib_per_connection": (rss_after - rss_before) / load["connections"],
        "idle_cpu_pct": 100 * (after.processes[0] - before.processes[0]) / idle_s,
        "clients": load,
    }  # fmt: skip


def check(figures: dict[str, Any]) -> list[str]:
    """What makes a result invalid: anything lost, duplicated, corrupt, closed or refused."""
    load, problems = figures["clients"], []
    for key in ("lost", "dups", "corrupt", "closed"):
        if load[key]:
            problems.append(f"{key} {load[key]}")
    if load.get("gaps") and not load["lost"]:
        problems.append(f"out of order {load['gaps']}")
    if figures.get("publish_refused"):
        problems.append(f"refused {figures['publish_refused']}")
    if figures.get("publish_error"):
        problems.append(f"publisher: {figures['publish_error']}")
    return problems


def run_scenario(
    name: str, scenario: str, args: argparse.Namespace, processes: Processes, binary: Path,
    workdir: Path, code: GatewayCode,
) -> Result:  # fmt: skip
    """Start ``name`` afresh, run ``scenario`` on it, stop it, and check the outcome."""
    directory = workdir / f"{name}-{scenario}"
    directory.mkdir()
    profile = args.profile / f"{name}-{scenario}.pstats" if args.profile else None
    system = SYSTEM_CLASSES[name](processes, directory, code, profile)
    result = Result(name, scenario)
    progress(f"{name} / {scenario} ...")
    try:
        system.start()
        if scenario == "idle":
            result.figures = run_idle(system, args, binary)
        elif scenario == "rate":
            result.figures = run_delivery(system, args, binary, args.rate, args.rate_messages)
        else:
            result.figures = run_delivery(system, args, binary, None, args.saturated_messages)
        result.problems = check(result.figures)
    except BenchmarkError as error:
        result.problems = [str(error), *(f"log: {line}" for line in system.log_tail())]
    else:  # The log up to now: what a server logs while it is stopped is not a problem.
        result.problems += [f"log: {line}" for line in system.log_problems()[:5]]
    finally:
        system.stop()
    progress(f"  {summary(result)}")
    return result


# --- Output --------------------------------------------------------------------------------


def summary(result: Result) -> str:
    f = result.figures
    if not f:
        text = "no figures"
    elif result.scenario == "idle":
        text = f"{f['kib_per_connection']:.1f} KiB/connection, idle CPU {f['idle_cpu_pct']:.1f} %"
    else:
        text = (
            f"{f['delivered_per_s'] / 1000:.0f}k delivered/s, server "
            f"{f['server_cpu_us_per_msg']:.2f} us/msg at {f['server_cpu_pct']:.0f} %, "
            f"client {f['client_cpu_pct']:.0f} %"
        )
    return text + ("; PROBLEMS: " + "; ".join(result.problems) if result.problems else "")


def ms(us: float) -> str:
    return f"{us / 1000:.1f}" if us < 100_000 else f"{us / 1000:.0f}"


def report(results: list[Result], header: dict[str, Any]) -> str:
    """The readable tables: deliveries, their CPU, idle connections, then any problems."""
    out = [header_line(header), ""]
    delivery = [r for r in results if r.scenario != "idle" and r.figures]
    if delivery:
        rows, cpu_rows = [], []
        for r in delivery:
            f, load = r.figures, r.figures["clients"]
            rows.append([
                r.system, r.scenario, f"{f['delivered_per_s'] / 1000:.1f}k",
                f"{f['publishes_per_s']:.0f}",
                f"{f['publish_max_lag_s'] * 1000:.0f}" if r.scenario == "rate" else "-",
                ms(load["p50_us"]), ms(load["p99_us"]), ms(load["max_us"]),
                f"{load['lost']}/{load['dups']}/{load['corrupt']}/{load['closed']}",
                "FAIL" if r.problems else "ok",
            ])  # fmt: skip
            cpu_rows.append([
                r.system, r.scenario, f"{f['server_cpu_us_per_msg']:.2f}",
                f"{f['machine_cpu_us_per_msg']:.2f}", f"{f['server_cpu_pct']:.0f}",
                f"{f['client_cpu_pct']:.0f}", f"{f['publisher_cpu_pct']:.0f}",
                f"{f['interrupts_cpu_pct']:.0f}", f"{f['other_cpu_pct']:.0f}",
                f"{f['server_core_busy_pct']:.0f}", f"{f['load_core_busy_pct']:.0f}",
                f"{f['steal_pct']:.0f}",
            ])  # fmt: skip
        out.append(table(
            ["system", "scenario", "delivered/s", "publishes/s", "pub lag ms", "p50 ms",
             "p99 ms", "max ms", "lost/dup/corrupt/closed", "check"], rows))  # fmt: skip
        out.append("")
        out.append(table(
            ["system", "scenario", "server us/msg", "machine us/msg", "server %",
             "client %", "publisher %", "softirq %", "other %", f"CPU{SERVER_CPU} busy %",
             f"CPU{LOAD_CPU} busy %", "steal %"], cpu_rows))  # fmt: skip
        out.append(
            "us/msg: CPU microseconds per delivered message (machine: busy time of all CPUs)."
            "\n%: of one core over the run. softirq: irq + softirq time of all CPUs (loopback"
            " TCP), which is also in the\nfigures of the processes it interrupted. other: busy"
            f" time of other processes. Server on CPU{SERVER_CPU};\nload client and publisher"
            f" on CPU{LOAD_CPU}; CPUn busy: all of that CPU's busy time. steal: time the\n"
            "hypervisor gave to others (both CPUs): high means slow, noisy figures."
            "\npub lag: how far the publisher fell behind its --rate schedule."
        )
        out.append("")
    idle = [r for r in results if r.scenario == "idle" and r.figures]
    if idle:
        rows = [
            [
                r.system, str(r.figures["connections"]),
                f"{r.figures['rss_before_kib'] / 1024:.1f}",
                f"{r.figures['rss_after_kib'] / 1024:.1f}",
                f"{r.figures['kib_per_connection']:.2f}", f"{r.figures['idle_cpu_pct']:.1f}",
                f"{r.figures['connect_s']:.1f}", "FAIL" if r.problems else "ok",
            ]
            for r in idle
        ]  # fmt: skip
        out.append(table(
            ["system", "idle connections", "RSS before MiB", "RSS after MiB", "KiB/conn",
             "idle CPU %", "connect s", "check"], rows))  # fmt: skip
        out.append("")
    for r in delivery:
        if sides_pct := r.figures["side_cpu_pct"]:
            sides = ", ".join(f"{role} {pct:.0f} %" for role, pct in sides_pct.items())
            out.append(f"{r.system} / {r.scenario}: {sides} of one core besides the server")
    for r in results:
        if r.problems:
            out.append(f"PROBLEMS {r.system} / {r.scenario}: " + "; ".join(r.problems))
    return "\n".join(out)


# --- Main ----------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, in order")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--clients", type=int, default=1000, help="subscribers (delivery runs)")
    parser.add_argument("--saturated-messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0, help="publishes/s in 'rate'")
    parser.add_argument("--rate-messages", type=int, default=2000)
    parser.add_argument("--window", type=int, default=4, help="publishes in flight, saturated")
    parser.add_argument("--rate-window", type=int, default=64, help="in flight at most, rate")
    parser.add_argument("--size", type=int, default=280, help="bytes per published message")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--per-process", type=int, default=19_000, help="connections/client")
    parser.add_argument("--timeout", type=float, default=120.0, help="client's receive limit")
    parser.add_argument("--grace", type=float, default=15.0, help="wait after the last publish")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary dir")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run exchange-stream under cProfile: pstats in DIR, one a run",
    )
    GatewayCode.add_options(parser)
    args = parser.parse_args()
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    for name in args.systems:
        if name not in SYSTEM_CLASSES:
            parser.error(f"unknown system {name!r}: choose from {', '.join(SYSTEM_CLASSES)}")
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}: choose from {', '.join(SCENARIOS)}")
    if args.size < 120:
        parser.error("--size must leave room for seq and T (at least 120 bytes)")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    args.per_process = min(args.per_process, hard - 100)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: the ``finally`` clauses stop every child."""
    progress("peers.py: SIGTERM, stopping")
    sys.exit(143)


def peer_versions(systems: list[str]) -> dict[str, str]:
    """nginx's and nchan's versions, when nchan is in the run."""
    if "nchan" not in systems:
        return {}
    return {
        "nginx": command_output("nginx", "-v").rpartition("/")[2],
        "nchan": command_output("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"),
    }


def main() -> int:
    args = parse_arguments()
    if not {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        raise BenchmarkError(f"needs CPUs {SERVER_CPU} and {LOAD_CPU}")
    os.sched_setaffinity(0, {LOAD_CPU})  # The publisher (this process) runs with the load.
    raise_fd_limit()  # Inherited by the servers and the load clients.
    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="peers-"))
    results: list[Result] = []
    try:
        with Processes() as processes:
            code = GatewayCode.chosen(args, workdir)
            header = run_header(code, **peer_versions(args.systems))
            progress(header_line(header))
            binary = compile_wsload(workdir)
            for name in args.systems:
                for scenario in args.scenarios:
                    result = run_scenario(name, scenario, args, processes, binary, workdir, code)
                    results.append(result)
    finally:
        if args.keep_logs:
            progress(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({**header, "results": [asdict(r) for r in results]}, indent=1))
    else:
        print(report(results, header))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as error:
        sys.exit(f"peers.py: {error}")
    except KeyboardInterrupt:
        sys.exit("peers.py: interrupted")
