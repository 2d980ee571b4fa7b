"""Catching up after pub/sub lost something: the Redis mesh's per-channel recovery.

Each subscribed stream channel has a :class:`~exchange_stream.core.streams.Sequence`. When
it reveals a gap, or pub/sub was interrupted (a reconnect, a deaf restart, a connection cut
for its output buffer), :class:`CatchUp` reads what was missed from the channel's history
once the channel is subscribed again, and passes it on in order, once, before the live
publications held meanwhile. A state channel that had subscribers gets its snapshot again
after an interruption instead, so books resync.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_stream.core.publication import MeshOutcomeUnknown, MeshUnavailable, Publication
from exchange_stream.core.streams import History, Position, Sequence

log = Logger()

Deliver = Callable[[str, list[Publication]], None]
ReadHistory = Callable[[str, Position | None], Deferred]  # a node's catching-up read
ReadSnapshot = Callable[[str], Deferred]


class CatchUp:
    """Reads that failed wait together: they are tried again all at once, when the command
    connection is back (:meth:`commands_back`) or, if it never went, after ``retry_after``;
    never one timer per channel, nor attempts while there is no connection to try on."""

    retry_after = 0.5

    def __init__(
        self,
        deliver: Deliver,
        read_history: ReadHistory,
        read_snapshot: ReadSnapshot,
        subscribed: Callable[[str], bool],
        available: Callable[[], bool],
        clock: IReactorTime,
    ) -> None:
        self._deliver = deliver
        self._read_history = read_history
        self._read_snapshot = read_snapshot
        self._subscribed = subscribed
        self._available = available
        self._clock = clock
        self._failed: set[str] = set()  # channels whose read failed, waiting to try again
        self._retry: IDelayedCall | None = None
        self._sequences: dict[str, Sequence] = {}
        self._reading: set[str] = set()  # stream channels with a history read in flight
        self._resync: set[str] = set()  # state channels to give their snapshot again
        self.lost = 0  # publications gone from the history before they could be read

    def follow(self, channel: str) -> None:
        """``channel`` is a stream channel this node subscribes to."""
        self._sequences.setdefault(channel, Sequence(awaiting=True))

    def forget(self, channel: str) -> None:
        self._sequences.pop(channel, None)
        self._resync.discard(channel)

    def arrived(self, channel: str, publication: Publication) -> None:
        """A publication from pub/sub."""
        sequence = self._sequences.get(channel)
        if sequence is None or publication.offset is None:
            self._deliver(channel, [publication])
            return
        self._deliver(channel, sequence.arrived(publication))
        if sequence.reading:
            self._read_missed(channel)

    def interrupted(self, subscribed: set[str]) -> None:
        """Pub/sub stopped; ``subscribed`` were in effect until then."""
        self._resync = {channel for channel in subscribed if channel not in self._sequences}
        for sequence in self._sequences.values():
            sequence.interrupted()

    def resumed(self, channel: str) -> None:
        """Redis confirmed the channel's subscription (again): a stream reads its baseline or
        what it missed, a state channel that had subscribers before gets its snapshot."""
        sequence = self._sequences.get(channel)
        if sequence is None:
            if channel in self._resync:
                self._resync.discard(channel)
                self._read_snapshot(channel).addCallback(self._snapshot_read, channel)
            return
        if sequence.reading:
            self._read_missed(channel)
        elif sequence.last is None:
            baseline = self._read_history(channel, None)
            baseline.addCallbacks(
                self._baseline, self._no_baseline, callbackArgs=(channel,), errbackArgs=(channel,)
            )

    def _baseline(self, history: History, channel: str) -> None:
        sequence = self._sequences.get(channel)
        if sequence is not None:
            self._deliver(channel, sequence.baseline(history.position))
            if sequence.reading:
                self._read_missed(channel)

    def _no_baseline(self, failure: Failure, channel: str) -> None:
        failure.trap(MeshUnavailable, MeshOutcomeUnknown)
        sequence = self._sequences.get(channel)
        if sequence is not None:
            log.warn(
                "Redis mesh: position of {channel} not read ({why}); a publication lost "
                "before the first one heard would go unnoticed",
                channel=channel,
                why=failure.getErrorMessage(),
            )
            self._deliver(channel, sequence.without_baseline())

    def _snapshot_read(self, snapshot: Publication | None, channel: str) -> None:
        if snapshot is not None:
            self._deliver(channel, [snapshot])

    def _read_missed(self, channel: str) -> None:
        """One read in flight per channel, and only once the channel is subscribed
        (:meth:`resumed` asks again on the confirmation)."""
        sequence = self._sequences.get(channel)
        since = sequence.read_from() if sequence is not None else None
        if since is None or channel in self._reading or not self._subscribed(channel):
            return
        self._reading.add(channel)
        reading = self._read_history(channel, since)
        reading.addCallbacks(
            self._caught_up, self._read_failed, callbackArgs=(channel,), errbackArgs=(channel,)
        )

    def _caught_up(self, history: History, channel: str) -> None:
        self._reading.discard(channel)
        sequence = self._sequences.get(channel)
        if sequence is None:
            return
        before = sequence.lost
        self._deliver(channel, sequence.read(history))
        if sequence.lost > before:
            self.lost += sequence.lost - before
            log.warn(
                "Redis mesh: {count} publications on {channel} were gone from the history "
                "before this node could read them",
                count=sequence.lost - before,
                channel=channel,
            )
        if sequence.reading:
            self._read_missed(channel)

    def _read_failed(self, failure: Failure, channel: str) -> None:
        failure.trap(MeshUnavailable, MeshOutcomeUnknown)
        self._failed.add(channel)
        if self._retry is None and self._available():
            self._retry = self._clock.callLater(self.retry_after, self.commands_back)

    def commands_back(self) -> None:
        """Try again every read that failed (the command connection is up, or was)."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        failed, self._failed = self._failed, set()
        for channel in failed:
            self._reading.discard(channel)
            self._read_missed(channel)
