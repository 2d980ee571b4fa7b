"""Building the mesh a ``--mesh`` URL names, for the gateway and the market engine alike."""

from __future__ import annotations

from typing import Any

from exchange_stream.adapters.redis_mesh import RedisMesh
from exchange_stream.core.meshurl import MEMORY_URLS, check_mesh_url
from exchange_stream.core.streams import StreamPolicy
from exchange_stream.interfaces import IMesh
from exchange_stream.services.memory_mesh import MemoryMesh


def open_mesh(
    url: str,
    reactor: Any = None,
    streams: StreamPolicy | None = None,
    idempotency_ttl: float = 600.0,
    stall_after: float = 2.0,
) -> IMesh:
    """``memory:`` (one process on its own), or ``redis://``, ``rediss://``, ``unix://`` (a
    Redis shared by many nodes); ``streams`` says which channels keep a history,
    ``stall_after`` how long Redis may leave a heartbeat unanswered (``services.selfcheck``)."""
    check_mesh_url(url)
    if url in MEMORY_URLS:
        return MemoryMesh(streams, idempotency_ttl, reactor)
    return RedisMesh(
        url, reactor, streams=streams, idempotency_ttl=idempotency_ttl,
        self_check=(2.0, 6.0, stall_after),
    )  # fmt: skip
