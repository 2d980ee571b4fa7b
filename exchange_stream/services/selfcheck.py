"""Deaf-node self-check: a node hears its own heartbeat through the mesh, or it is deaf.

Pub/sub connections can stay up while delivering nothing (a subscription lost on the Redis
side, a connection Redis cut for its output buffer limit that the node has not noticed yet).
Every ``interval`` the node publishes a heartbeat on a channel only it listens to, through the
same path as real traffic; a heartbeat that was accepted for publishing but has not come back
within ``timeout`` means the node is deaf: it reports so (``/healthz`` fails) and asks the mesh
to start its subscriber connection afresh, which resubscribes every channel.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.logger import Logger
from zope.interface import implementer

from exchange_stream.core.publication import Publication
from exchange_stream.interfaces import IMesh, IMeshReceiver
from exchange_stream.services.periodic import PeriodicService

log = Logger()


@implementer(IMeshReceiver)
class SelfCheck(PeriodicService):
    def __init__(
        self,
        mesh: IMesh,
        restart: Callable[[], None],
        clock,
        interval: float = 2.0,
        timeout: float = 6.0,
    ) -> None:
        super().__init__(clock)
        self.channel = f"es:heartbeat:{os.urandom(8).hex()}"
        self._mesh = mesh
        self._restart = restart
        self._interval = interval
        self._timeout = timeout
        self._sequence = 0
        self._heard = 0  # the latest heartbeat heard back
        self._sent: dict[int, float] = {}  # accepted heartbeats not heard yet: seq -> time
        self.deaf = False
        self.deaf_events = 0

    def periodic(self) -> list[tuple[float, Callable[[], object]]]:
        return [(self._interval, self.beat)]

    def startService(self) -> None:
        self._mesh.subscribe(self.channel, self)
        super().startService()

    def stopService(self) -> None:
        self._mesh.unsubscribe(self.channel, self)
        super().stopService()

    def beat(self) -> None:
        now = self._clock.seconds()
        overdue = [seq for seq, sent in self._sent.items() if now - sent > self._timeout]
        if overdue:
            self._sent.clear()
            self.deaf = True
            self.deaf_events += 1
            log.warn(
                "mesh self-check: no heartbeat heard back for {timeout} s; restarting the "
                "subscriber connection",
                timeout=self._timeout,
            )
            self._restart()
        self._sequence += 1
        sequence = self._sequence
        accepted = self._mesh.publish(self.channel, Publication(str(sequence).encode()))
        accepted.addCallbacks(self._accepted, lambda _: None, callbackArgs=(sequence,))

    def _accepted(self, _: object, sequence: int) -> None:
        """Redis ran the PUBLISH: the heartbeat is on its way from now (not from when it was
        sent: Redis may have been stalled). It may even be heard already, the subscriber
        connection being faster than the command connection's reply."""
        if sequence > self._heard:
            self._sent[sequence] = self._clock.seconds()

    def receive(self, channel: str, publication: Publication) -> None:
        try:
            sequence = int(publication.payload)
        except ValueError:
            return
        self._heard = max(self._heard, sequence)
        for seq in [seq for seq in self._sent if seq <= sequence]:
            del self._sent[seq]
        self.deaf = False
