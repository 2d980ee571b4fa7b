"""The in-process mesh: the default for one node, and the reference implementation.

Several nodes in one process (tests, an embedding application) may share one instance.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from exchange_stream.core.publication import Publication
from exchange_stream.interfaces import IMesh, IMeshReceiver


@implementer(IMesh)
class MemoryMesh:
    available = True
    receiving = True
    reconnects = 0
    deaf_events = 0

    def __init__(self) -> None:
        self._receivers: dict[str, list[IMeshReceiver]] = {}
        self._snapshots: dict[str, Publication] = {}

    def publish(
        self, channel: str, publication: Publication, snapshot: Publication | None = None
    ) -> Deferred:
        if snapshot is not None:
            self._snapshots[channel] = snapshot
        receivers = self._receivers.get(channel, ())
        for receiver in tuple(receivers):
            receiver.receive(channel, publication)
        return succeed(len(receivers))

    def snapshot(self, channel: str) -> Deferred:
        return succeed(self._snapshots.get(channel))

    def subscribe(self, channel: str, receiver: IMeshReceiver) -> Deferred:
        receivers = self._receivers.setdefault(channel, [])
        if receiver not in receivers:
            receivers.append(receiver)
        return succeed(None)

    def unsubscribe(self, channel: str, receiver: IMeshReceiver) -> Deferred:
        receivers = self._receivers.get(channel)
        if receivers and receiver in receivers:
            receivers.remove(receiver)
            if not receivers:
                del self._receivers[channel]
        return succeed(None)

    def subscribed_channels(self) -> list[str]:
        """Channels some node listens to (for tests and health output)."""
        return list(self._receivers)
