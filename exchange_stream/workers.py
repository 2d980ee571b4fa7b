"""``--workers N``: N processes accept on one listening WebSocket port, joined by the mesh.

One Python process uses one core. The first process (the one ``twistd`` started) opens the
WebSocket port and serves the internal API and the market engine as usual; it then starts
N-1 workers, each a gateway without API or market engine, which inherit the listening socket
(``adoptStreamPort``) and accept on it too. A publication goes through the mesh (Redis) and
reaches every process that has subscribers, like separate nodes.

A worker reads its standard input, a pipe from the first process: when that closes (the first
process stopped or died) the worker drains and exits. On SIGTERM the first process sends
SIGTERM to the workers and waits for their drains as well as its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys

from twisted.application.service import Service
from twisted.internet.address import IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger

from exchange_stream.config import GatewayConfig

CONFIG_ENVIRONMENT = "EXCHANGE_STREAM_WORKER_CONFIG"
LISTENING_FD = 3

log = Logger()


class _Worker(ProcessProtocol):
    def __init__(self, number: int) -> None:
        self.number = number
        self.ended: Deferred = Deferred()

    def processEnded(self, reason) -> None:
        log.info("worker {number} exited ({why})", number=self.number,
                 why=reason.getErrorMessage())  # fmt: skip
        self.ended.callback(None)


class WorkerPool(Service):
    """Started in the first process once its WebSocket port listens."""

    def __init__(self, config: GatewayConfig, count: int, listening: Deferred, reactor) -> None:
        self._config = config
        self._count = count
        self._listening = listening  # fires with the IListeningPort to share
        self._reactor = reactor
        self._workers: list[tuple[_Worker, object]] = []

    def startService(self) -> None:
        super().startService()
        self._listening.addCallback(self._spawn)

    def _spawn(self, port) -> None:
        fd = port.fileno()
        ipv6 = isinstance(port.getHost(), IPv6Address)
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        environment = dict(os.environ)
        environment[CONFIG_ENVIRONMENT] = json.dumps(dataclasses.asdict(self._config))
        for number in range(1, self._count):
            worker = _Worker(number)
            transport = self._reactor.spawnProcess(
                worker,
                sys.executable,
                [sys.executable, "-m", "exchange_stream.workers", str(int(family))],
                env=environment,
                childFDs={0: "w", 1: 1, 2: 2, LISTENING_FD: fd},
            )
            self._workers.append((worker, transport))
        log.info("started {count} workers on the shared port", count=self._count - 1)

    def stopService(self) -> Deferred:
        super().stopService()
        for worker, transport in self._workers:
            if not worker.ended.called:
                transport.signalProcess("TERM")
        ended = [worker.ended for worker, _ in self._workers]
        return DeferredList(ended) if ended else succeed(None)


class _WatchParent(Protocol):
    """The pipe from the first process: its end means the worker should end too."""

    def connectionLost(self, reason) -> None:
        from twisted.internet import reactor

        with contextlib.suppress(ReactorNotRunning):  # stopping already
            reactor.stop()


def main() -> None:
    """A worker process: ``python -m exchange_stream.workers <address family>``."""
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from exchange_stream.gateway import Gateway
    from exchange_stream.service import websocket_site

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    config = GatewayConfig(**json.loads(os.environ[CONFIG_ENVIRONMENT]))
    gateway = Gateway(config, serves_market=False)
    gateway.startService()
    port = reactor.adoptStreamPort(
        LISTENING_FD, socket.AddressFamily(int(sys.argv[1])), websocket_site(gateway)
    )
    os.close(LISTENING_FD)  # the port holds its own copy

    def drain() -> Deferred:
        stopping = maybeDeferred(port.stopListening)
        stopping.addCallback(lambda _: gateway.drain())
        return stopping.addCallback(lambda _: gateway.stopService())

    reactor.addSystemEventTrigger("before", "shutdown", drain)
    StandardIO(_WatchParent())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C reaches the first process
    reactor.run()


if __name__ == "__main__":
    main()
