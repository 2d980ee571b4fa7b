"""A ``--workers`` worker process: ``python -m exchange_stream.worker <address family>``.

Started by ``adapters.workers.WorkerPool`` in the first process, with the settings in the
environment, the shared listening socket on fd 3 and the report pipe on fd 4. It serves
WebSocket clients only (no internal API, no market engine), reports its figures every second,
and drains and exits when the first process goes away or sends SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorSocket
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_stream.adapters.workers import (
    CONFIG_ENVIRONMENT,
    LISTENING_FD,
    REPORT_FD,
    REPORT_INTERVAL,
)
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.encoding import encode
from exchange_stream.gateway import Gateway
from exchange_stream.service import websocket_site

log = Logger()


class _WatchParent(Protocol):
    """The pipe from the first process: its end means the worker should end too."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        with contextlib.suppress(ReactorNotRunning):  # stopping already
            self._reactor.stop()


def main() -> None:
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    config = GatewayConfig(**json.loads(os.environ[CONFIG_ENVIRONMENT]))
    gateway = Gateway(config, reactor=reactor, serves_market=False)
    gateway.startService()
    # IReactorSocket asks for a bare ServerFactory, whose protocol type variable is invariant:
    # no concrete factory (a Site's is ServerFactory[HTTPChannel]) matches it.
    port = IReactorSocket(reactor).adoptStreamPort(
        LISTENING_FD,
        socket.AddressFamily(int(sys.argv[1])),
        websocket_site(gateway),  # type: ignore[arg-type]
    )
    os.close(LISTENING_FD)  # the port holds its own copy

    def drain() -> Deferred:
        stopping = maybeDeferred(port.stopListening)
        stopping.addCallback(lambda _: gateway.drain())
        return stopping.addCallback(lambda _: gateway.stopService())

    def stop_reporting(failure) -> None:
        """A worker that cannot report ends (and is restarted): unseen, it is unwatched."""
        log.failure("worker: reporting to the first process failed; exiting", failure)
        with contextlib.suppress(ReactorNotRunning):
            reactor.stop()

    reactor.addSystemEventTrigger("before", "shutdown", drain)
    parent = _WatchParent(reactor)
    # twisted.internet.stdio picks the POSIX StandardIO at run time; mypy reads the Windows
    # one, which has no stdin or stdout.
    reports = StandardIO(parent, stdin=0, stdout=REPORT_FD, reactor=reactor)  # type: ignore[call-arg]
    report = LoopingCall(lambda: reports.write(encode(gateway.process_figures.read()) + b"\n"))
    report.clock = reactor
    report.start(REPORT_INTERVAL).addErrback(stop_reporting)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C reaches the first process
    reactor.run()


if __name__ == "__main__":
    main()
