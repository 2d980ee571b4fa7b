"""Deaf-node self-check: a node hears its own heartbeat through the mesh, or it is deaf.

Pub/sub connections can stay up while delivering nothing (a subscription lost on the Redis
side, a connection Redis cut for its output buffer limit that the node has not noticed yet).
Every ``interval`` the node publishes a heartbeat on a channel only it listens to, through the
same path as real traffic; a heartbeat that was accepted for publishing but has not come back
within ``timeout`` means the node is deaf: it reports so (``/healthz`` fails) and asks the mesh
to start its subscriber connection afresh, which resubscribes every channel.

A heartbeat that Redis has not even answered (not accepted, not heard) for ``stall_after``
seconds means Redis is stalled (paused, swapping, a long script, a network that holds
packets): nothing is delivered meanwhile, so the node reports it is not receiving
(``/healthz`` fails) until Redis answers again. That is not deafness: restarting the subscriber
would not help, and the publishes waiting are answered when Redis runs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from exchange_stream.core.publication import MeshUnavailable, Publication
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
        stall_after: float = 2.0,
    ) -> None:
        super().__init__(clock)
        self.channel = f"es:heartbeat:{os.urandom(8).hex()}"
        self._mesh = mesh
        self._restart = restart
        self._interval = interval
        self._timeout = timeout
        self._stall_after = stall_after
        self._sequence = 0
        self._heard = 0  # the latest heartbeat heard back
        self._sent: dict[int, float] = {}  # accepted heartbeats not heard yet: seq -> time
        self._unanswered: dict[int, float] = {}  # published, no word from Redis yet: seq -> time
        self._stall_reported = False
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
        if self.stalled and not self._stall_reported:
            self._stall_reported = True
            log.warn(
                "mesh self-check: Redis has not answered for more than {after} s; the node "
                "reports unhealthy until it does",
                after=self._stall_after,
            )
        self._sequence += 1
        sequence = self._sequence
        self._unanswered[sequence] = now
        accepted = self._mesh.publish(self.channel, Publication(str(sequence).encode()))
        accepted.addCallbacks(
            self._accepted, self._not_sent, callbackArgs=(sequence,), errbackArgs=(sequence,)
        )

    @property
    def stalled(self) -> bool:
        """Redis has left a heartbeat unanswered for more than ``stall_after`` seconds."""
        oldest = next(iter(self._unanswered.values()), None)
        return oldest is not None and self._clock.seconds() - oldest > self._stall_after

    def _accepted(self, _: object, sequence: int) -> None:
        """Redis ran the PUBLISH: the heartbeat is on its way from now (not from when it was
        sent: Redis may have been stalled). It may even be heard already, the subscriber
        connection being faster than the command connection's reply."""
        self._answered(sequence)
        if sequence > self._heard:
            self._sent[sequence] = self._clock.seconds()

    def _not_sent(self, failure: Failure, sequence: int) -> None:
        """The connection is down (``MeshUnavailable``): not a stall. An unknown outcome
        (written, no answer within the publish deadline) is one: it stays unanswered."""
        if failure.check(MeshUnavailable):
            self._unanswered.pop(sequence, None)

    def _answered(self, sequence: int) -> None:
        for seq in [seq for seq in self._unanswered if seq <= sequence]:
            del self._unanswered[seq]
        if self._stall_reported and not self.stalled:
            self._stall_reported = False
            log.info("mesh self-check: Redis answers again")

    def receive(self, channel: str, publication: Publication) -> None:
        try:
            sequence = int(publication.payload)
        except ValueError:
            return
        self._heard = max(self._heard, sequence)
        self._answered(sequence)
        for seq in [seq for seq in self._sent if seq <= sequence]:
            del self._sent[seq]
        self.deaf = False
