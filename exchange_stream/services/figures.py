"""What a node counts, across its processes: the figures behind ``/metrics`` and ``/healthz``.

Each process counts its own (:class:`ProcessFigures`); with ``--workers`` every worker sends
its figures to the first process each second, and :class:`NodeFigures` adds them up there so
that the first process speaks for the whole node.
"""

from __future__ import annotations

from collections.abc import Callable, Sized

from exchange_stream.core.hub import Hub
from exchange_stream.interfaces import IMesh, IProcessReports

FIGURES = (
    "connections", "subscriptions", "channels", "messages_delivered", "slow_consumers", "mesh_up",
)  # fmt: skip
COUNTERS = ("messages_delivered", "slow_consumers")  # the others are gauges


class ProcessFigures:
    """This process's figures, read when asked from the parts that keep them."""

    def __init__(
        self, sessions: Sized, hub: Hub, slow_consumers: Callable[[], int], mesh: IMesh
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self._slow_consumers = slow_consumers
        self._mesh = mesh

    def read(self) -> dict[str, int]:
        mesh = self._mesh
        return {
            "connections": len(self._sessions),
            "subscriptions": self._hub.subscription_count,
            "channels": self._hub.channel_count,
            "messages_delivered": self._hub.messages_delivered,
            "slow_consumers": self._slow_consumers(),
            "mesh_up": int(bool(mesh.available and mesh.receiving)),
        }


class NodeFigures:
    """This process's figures and its workers' reports (none without ``--workers``)."""

    def __init__(
        self, own: ProcessFigures, mesh: IMesh, workers: IProcessReports | None = None
    ) -> None:
        self._own = own
        self._mesh = mesh
        self._workers = workers

    def processes(self) -> list[dict[str, int] | None]:
        """Every process's figures, the first process's first; None for a worker not reporting
        (exited and being restarted, or stuck)."""
        reports = self._workers.reports() if self._workers is not None else []
        return [self._own.read(), *reports]

    def receiving(self, processes: list[dict[str, int] | None]) -> bool:
        """This process receives its channels, so does every worker that reports, and no live
        worker is silent."""
        silent = self._workers.silent() if self._workers is not None else 0
        workers = all(figures["mesh_up"] for figures in processes[1:] if figures is not None)
        return bool(self._mesh.receiving) and workers and not silent

    def counter(self, name: str) -> int:
        """A counter over all of the node's processes, restarted workers' included."""
        own = self._own.read()[name]
        return own + (self._workers.counted(name) if self._workers is not None else 0)
