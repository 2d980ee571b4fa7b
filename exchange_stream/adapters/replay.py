"""Replaying a recording of the matching engine's events on the events' own time.

The engine runs on an event-time clock (a ``twisted.internet.task.Clock``): before each event,
the clock moves to the event's ``ts`` (never back), so every window the engine closes — pushes,
bars, the ticker's minutes, the mark price's samples — closes where it did when the events
happened, and the output depends only on the recording. The lines are read in chunks, one per
reactor turn (``task.cooperate``), so that a mesh the engine publishes into keeps up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from exchange_stream.adapters.feed import FeedInput
from exchange_stream.core.encoding import encode
from exchange_stream.core.market.events import PrivateEvent
from exchange_stream.core.publication import Publication

DAY_MS = 24 * 3_600_000
CHUNK = 500  # lines per reactor turn


class Replay(Service):
    """Feeds the lines of ``recording`` to ``source`` (whose engine runs on ``clock``),
    moving the clock to each event's time; a ``ts`` more than ``max_gap_ms`` ahead of the
    clock does not move it (the engine then refuses the event as too far ahead). When the file
    ends the clock runs ``tail`` seconds more, ``settled()`` is awaited and ``finished`` fires.
    """

    log = Logger()

    def __init__(
        self,
        recording: IO[bytes],
        source: FeedInput,
        clock: task.Clock,
        settled: Callable[[], Deferred],
        max_gap_ms: int = DAY_MS,
        tail: float = 1.0,
    ) -> None:
        self._recording = recording
        self._source = source
        self._clock = clock
        self._settled = settled
        self._max_gap_ms = max_gap_ms
        self._tail = tail
        self.lines = 0
        self.finished: Deferred = Deferred()

    def startService(self) -> None:
        super().startService()
        work = task.cooperate(self._steps())
        work.whenDone().addCallback(lambda _: self._settled()).chainDeferred(self.finished)

    def _steps(self) -> Iterator[None]:
        for number, line in enumerate(self._recording, 1):
            if line.strip():
                self._one(line)
            self.lines = number
            if number % CHUNK == 0:
                yield None
        self._clock.advance(self._tail)
        self.log.info("replay: {lines} lines, clock at {ms} ms", lines=self.lines, ms=self._ms())

    def _one(self, line: bytes) -> None:
        event = self._source.parse(line, "replay")
        if event is None:
            return
        if not isinstance(event, PrivateEvent):
            now = self._ms()
            if now == 0 or 0 < event.ts - now <= self._max_gap_ms:
                self._clock.advance(event.ts / 1000 - self._clock.seconds())
        self._source.event(event)

    def _ms(self) -> int:
        return round(self._clock.seconds() * 1000)


class OutputFile:
    """A publish callable that writes each publication as a line in the publish API's shape,
    ``{"c": channel, "d": "<message>"}``, and passes it on to ``then`` (a mesh's publish)
    if given. ``settled()`` waits for every publication ``then`` has not answered yet."""

    def __init__(self, output: IO[bytes], then: Callable[..., Deferred] | None = None) -> None:
        self._output = output
        self._then = then
        self._pending: set[Deferred] = set()

    def __call__(
        self, channel: str, publication: Publication, snapshot: Publication | None = None
    ) -> Deferred:
        self._output.write(encode({"c": channel, "d": publication.payload.decode()}) + b"\n")
        if self._then is None:
            return succeed(0)
        sent = self._then(channel, publication, snapshot)
        self._pending.add(sent)
        sent.addBoth(self._answered, sent)
        return sent

    def _answered(self, result: object, sent: Deferred) -> object:
        self._pending.discard(sent)
        return result

    def settled(self) -> Deferred:
        self._output.flush()
        return DeferredList(list(self._pending), consumeErrors=False)
