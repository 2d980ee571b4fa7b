"""Heartbeats for all of a node's connections from one timer.

Every ``interval`` one pass writes a ping frame (framed once, written to each connection) and
drops the connections that sent nothing at all for ``interval + timeout``: a pong, an op or
any frame counts. Autobahn's own heartbeat keeps two timers per connection per ping, which at
10,000 idle connections is most of an idle node's CPU (bench/idle.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from exchange_stream.services.periodic import PeriodicService

PING_FRAME = b"\x89\x00"  # FIN + opcode 9 (ping), no payload, unmasked: server to client

log = Logger()


class Peer(Protocol):
    last_heard: float

    def send_ping(self, frame: bytes) -> None: ...

    def drop_dead(self) -> None: ...


class Heartbeat(PeriodicService):
    def __init__(
        self,
        peers: Callable[[], Iterable[Peer]],
        clock: IReactorTime,
        interval: float,
        timeout: float,
    ) -> None:
        super().__init__(clock)
        self._peers = peers
        self.interval = interval
        self.timeout = timeout
        self.dropped = 0

    def periodic(self):
        return [(self.interval, self.beat)]

    def beat(self) -> None:
        silent_since = self._clock.seconds() - self.interval - self.timeout
        for peer in list(self._peers()):
            if peer.last_heard < silent_since:
                self.dropped += 1
                peer.drop_dead()
            else:
                peer.send_ping(PING_FRAME)
