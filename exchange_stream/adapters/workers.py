"""``--workers N``: N processes accept on one listening WebSocket port, joined by the mesh.

One Python process uses one core. The first process (the one ``twistd`` started) opens the
WebSocket port and serves the internal API and the market engine as usual; it then starts
N-1 workers, each a gateway without API or market engine, which inherit the listening socket
(``adoptStreamPort``) and accept on it too. A publication goes through the mesh (Redis) and
reaches every process that has subscribers, like separate nodes.

A worker reads its standard input, a pipe from the first process: when that closes (the first
process stopped or died) the worker drains and exits. On SIGTERM the first process sends
SIGTERM to the workers and waits for their drains as well as its own.

Every second a worker writes its figures (connections, subscriptions, deliveries, mesh state;
see ``services.figures``) as a JSON line to another pipe, so that the first process's
``/metrics`` and ``/healthz`` speak for the whole node. A worker that exits while the pool
runs is started again after a second: its clients reconnect to the other processes meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.internet import tcp
from twisted.internet.address import IPv6Address
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import implementer

from exchange_stream.core.config import GatewayConfig
from exchange_stream.interfaces import IProcessReports
from exchange_stream.services.figures import COUNTERS, FIGURES

CONFIG_ENVIRONMENT = "EXCHANGE_STREAM_WORKER_CONFIG"
LISTENING_FD = 3
REPORT_FD = 4
REPORT_INTERVAL = 1.0
STARTUP_GRACE = 10.0  # seconds a new worker may take before its first report
MAX_REPORT = 64 * 1024
RESTART_DELAY = 1.0

log = Logger()


class _Worker(ProcessProtocol):
    """One worker process, as the first process sees it: its last report and its end."""

    def __init__(self, number: int, clock) -> None:
        self.number = number
        self.ended: Deferred = Deferred()
        self.figures: dict[str, int] | None = None
        self._clock = clock
        self._started = self._heard = clock.seconds()
        self._partial = b""

    @property
    def reporting(self) -> bool:
        """Alive and heard from lately."""
        recent = self._clock.seconds() - self._heard < 3 * REPORT_INTERVAL
        return not self.ended.called and self.figures is not None and recent

    @property
    def silent(self) -> bool:
        """Alive but not heard from lately, past its start-up: its reactor is stuck, or its
        report pipe broke. It still holds its clients, so the node is not healthy."""
        if self.ended.called or self.reporting:
            return False
        return self._clock.seconds() - self._started > STARTUP_GRACE

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != REPORT_FD:
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > MAX_REPORT:  # not ours, whatever it is: drop it
            self._partial = b""
        for line in lines:
            figures = _figures(line)
            if figures is not None:
                self.figures, self._heard = figures, self._clock.seconds()

    def processEnded(self, reason) -> None:
        log.info("worker {number} exited ({why})", number=self.number,
                 why=reason.getErrorMessage())  # fmt: skip
        self.ended.callback(self._clock.seconds() - self._started)


def _figures(line: bytes) -> dict[str, int] | None:
    """A report line, or None if it is not one (a worker never writes anything else there,
    but the first process must not be the one that breaks if it does)."""
    try:
        figures = json.loads(line)
    except ValueError:
        return None
    if not isinstance(figures, dict) or set(figures) != set(FIGURES):
        return None
    if not all(type(value) is int for value in figures.values()):
        return None
    return figures


def usable_cores() -> int:
    """Cores this process may run on (taskset, cpusets), capped by a cgroup CPU quota
    (containers): one process per core must not mean more processes than CPU time."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores or 1
    if quota != "max":
        cores = min(cores or 1, max(1, -(-int(quota) // int(period))))
    return cores or 1


def process_count(config: GatewayConfig) -> int:
    """How many processes accept on the WebSocket port: ``workers`` if given; otherwise,
    with a shared mesh (Redis) and a plain ``tcp:`` WebSocket endpoint, one per core this
    process may use; else one."""
    if config.workers is not None:
        return config.workers
    return usable_cores() if config.shares_mesh and config.plain_tcp else 1


@implementer(IProcessReports)
class WorkerPool(Service):
    """Started in the first process once its WebSocket port listens."""

    def __init__(self, config: GatewayConfig, count: int, reactor) -> None:
        self._config = config
        self._count = count
        self._reactor = reactor
        self._listening: Callable[[], Deferred] | None = None
        self._port: tcp.Port | None = None  # the shared listener: --workers needs tcp:
        self._workers: dict[int, tuple[_Worker, IProcessTransport]] = {}
        self._restarts: dict[int, IDelayedCall] = {}  # number -> the DelayedCall of its restart
        self._delays: dict[int, float] = {}
        self.retired = dict.fromkeys(COUNTERS, 0)  # counters of worker processes that ended

    @property
    def count(self) -> int:
        """Processes accepting on the WebSocket port, the first one included."""
        return self._count

    def _current(self) -> list[_Worker]:
        return [self._workers[number][0] for number in sorted(self._workers)]

    def reports(self) -> list[dict[str, int] | None]:
        """Each worker's last figures, or None for one that is not reporting."""
        return [worker.figures if worker.reporting else None for worker in self._current()]

    def silent(self) -> int:
        """Workers alive but not reporting (see ``_Worker.silent``)."""
        return sum(worker.silent for worker in self._current())

    def counted(self, name: str) -> int:
        """A counter over every worker process this pool ran: it never goes down when one is
        restarted or stops reporting for a while (Prometheus would read a reset)."""
        last = sum((worker.figures or {}).get(name, 0) for worker in self._current())
        return last + self.retired[name]

    def share(self, listening: Callable[[], Deferred]) -> None:
        """What gives the port the workers accept on, once the pool starts: a Deferred that
        fires with the WebSocket listener's ``IListeningPort``."""
        self._listening = listening

    def startService(self) -> None:
        if self._listening is None:
            raise RuntimeError("WorkerPool.share(...) was not called")
        super().startService()
        self._listening().addCallback(self._spawn_all)

    def _spawn_all(self, port: tcp.Port) -> None:
        self._port = port
        for number in range(1, self._count):
            self._spawn(number)
        log.info("started {count} workers on the shared port", count=self._count - 1)

    def _spawn(self, number: int) -> None:
        self._restarts.pop(number, None)
        if not self.running:
            return
        port = self._port
        assert port is not None  # _spawn_all set it before the first spawn
        ipv6 = isinstance(port.getHost(), IPv6Address)
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        environment = dict(os.environ)
        environment[CONFIG_ENVIRONMENT] = json.dumps(dataclasses.asdict(self._config))
        worker = _Worker(number, self._reactor)
        transport = self._reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, "-m", "exchange_stream.worker", str(int(family))],
            env=environment,
            childFDs={0: "w", 1: 1, 2: 2, LISTENING_FD: port.fileno(), REPORT_FD: "r"},
        )
        self._workers[number] = (worker, transport)
        worker.ended.addCallback(self._ended, worker)

    def _ended(self, lived: float, worker: _Worker) -> None:
        for name in COUNTERS:
            self.retired[name] += (worker.figures or {}).get(name, 0)
        worker.figures = None
        if not self.running:
            return
        # One that dies young is restarted later and later (up to a minute), not every second.
        delay = self._delays.get(worker.number, RESTART_DELAY)
        delay = RESTART_DELAY if lived > 10 * RESTART_DELAY else min(2 * delay, 60.0)
        self._delays[worker.number] = delay
        log.warn("restarting worker {number} in {delay:.0f} s", number=worker.number,
                 delay=delay)  # fmt: skip
        self._restarts[worker.number] = self._reactor.callLater(delay, self._spawn, worker.number)

    def stopService(self) -> Deferred:
        super().stopService()
        for restart in self._restarts.values():
            restart.cancel()
        self._restarts.clear()
        for worker, transport in self._workers.values():
            if not worker.ended.called:
                with contextlib.suppress(ProcessExitedAlready):  # reaped, not yet reported
                    transport.signalProcess("TERM")
        ended = [worker.ended for worker, _ in self._workers.values()]
        return DeferredList(ended) if ended else succeed(None)
