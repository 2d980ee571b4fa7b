"""Services that call some of their methods at fixed intervals, on an injected clock."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class PeriodicService(Service):
    """Runs the ``(interval, callable)`` pairs that :meth:`periodic` lists while the service
    runs. A call that raises is logged and the schedule goes on; a call that returns a
    Deferred is not called again before it fires (a slow poll never overlaps itself)."""

    start_now = False  # also call once at start, not only after the first interval

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._loops: list[LoopingCall] = []

    def periodic(self) -> list[tuple[float, Callable[[], object]]]:
        raise NotImplementedError

    def startService(self) -> None:
        super().startService()
        for interval, call in self.periodic():
            loop = LoopingCall(self._guarded, call)
            loop.clock = self._clock
            loop.start(interval, now=self.start_now)
            self._loops.append(loop)

    def stopService(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        super().stopService()

    def _guarded(self, call: Callable[[], object]) -> object:
        try:
            return call()
        except Exception:
            log.failure("{service} failed in {call}", service=type(self).__name__, call=call)
            return None
