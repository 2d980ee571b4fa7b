"""Building the mesh a ``--mesh`` URL names, for the gateway and the market engine alike."""

from __future__ import annotations

from exchange_stream.adapters.redis_mesh import RedisMesh
from exchange_stream.core.meshurl import MEMORY_URLS, check_mesh_url
from exchange_stream.interfaces import IMesh
from exchange_stream.services.memory_mesh import MemoryMesh


def open_mesh(url: str, reactor=None) -> IMesh:
    """``memory:`` (one process on its own), or ``redis://``, ``rediss://``, ``unix://`` (a
    Redis shared by many nodes)."""
    check_mesh_url(url)
    if url in MEMORY_URLS:
        return MemoryMesh()
    return RedisMesh(url, reactor=reactor)
