"""``/healthz``: whether this node can take clients and publishes now, and why not."""

from __future__ import annotations

from collections.abc import Callable

from exchange_stream.interfaces import IMesh
from exchange_stream.services.figures import NodeFigures


class Health:
    def __init__(self, mesh: IMesh, figures: NodeFigures, is_draining: Callable[[], bool]):
        self._mesh = mesh
        self._figures = figures
        self._is_draining = is_draining

    def check(self) -> tuple[bool, dict]:
        """(healthy, the answer's body). Healthy while the mesh publishes and every process
        that reports receives. A worker that is being restarted does not make the node
        unhealthy (its clients went to the others); one that reports a deaf mesh does (its
        clients would miss messages), and so does one that is alive but silent (stuck,
        holding its clients)."""
        mesh = self._mesh
        draining = self._is_draining()
        processes = self._figures.processes()
        reporting = [figures for figures in processes if figures is not None]
        receiving = self._figures.receiving(processes)
        healthy = bool(mesh.available) and receiving and not draining
        body: dict = {
            "status": "ok" if healthy else "draining" if draining else "unavailable",
            "mesh": "up" if mesh.available and receiving else "down",
            "publishing": bool(mesh.available),
            "receiving": receiving,
            "connections": sum(figures["connections"] for figures in reporting),
        }
        if len(processes) > 1:
            body["processes"] = {"expected": len(processes), "reporting": len(reporting)}
        return healthy, body
