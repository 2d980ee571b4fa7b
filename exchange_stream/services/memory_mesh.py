"""The in-process mesh: the default for one node, and the reference implementation.

Several nodes in one process (tests, an embedding application) may share one instance.
Stream channels keep their history here (``core.history``); it is lost with the process, so
every channel's epoch is new after a restart.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from exchange_stream.core.history import KeyWindow, StreamLogs
from exchange_stream.core.publication import Publication, Published
from exchange_stream.core.streams import Position, StreamPolicy
from exchange_stream.interfaces import IMesh, IMeshReceiver


@implementer(IMesh)
class MemoryMesh:
    available = True
    receiving = True
    reconnects = 0
    deaf_events = 0
    lost_publications = 0

    def __init__(
        self,
        streams: StreamPolicy | None = None,
        idempotency_ttl: float = 600.0,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as installed

            clock = installed  # only its seconds(): nothing is scheduled
        self._clock = clock
        self._streams = streams or StreamPolicy()
        self._logs = StreamLogs(self._streams)
        self._keys = KeyWindow(idempotency_ttl)
        self._receivers: dict[str, list[IMeshReceiver]] = {}
        self._snapshots: dict[str, Publication] = {}

    def publish(
        self,
        channel: str,
        publication: Publication,
        snapshot: Publication | None = None,
        key: str | None = None,
    ) -> Deferred:
        now = self._clock.seconds()
        if key is not None:
            answered = self._keys.seen(channel, key, now)
            if answered is not None:
                return succeed(answered)
        if snapshot is not None:
            self._snapshots[channel] = snapshot
        if self._streams.is_stream(channel):
            publication = self._logs.append(channel, publication, now)
        receivers = self._receivers.get(channel, ())
        for receiver in tuple(receivers):
            receiver.receive(channel, publication)
        answer = Published(len(receivers), publication.epoch, publication.offset)
        if key is not None:
            self._keys.remember(channel, key, answer, now)
        return succeed(answer)

    def history(self, channel: str, since: Position | None = None) -> Deferred:
        return succeed(self._logs.history(channel, since, self._clock.seconds()))

    def recent(self, channel: str, count: int) -> Deferred:
        return succeed(self._logs.recent(channel, count, self._clock.seconds()))

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
