"""Meshes carry publications to every gateway node that has subscribers for a channel.

The interface lives in :mod:`exchange_stream.mesh.interface`; :func:`open_mesh` turns a
``--mesh`` URL into an implementation.
"""

from __future__ import annotations

from exchange_stream.mesh.interface import IMesh, IMeshReceiver, MeshUnavailable, Publication
from exchange_stream.mesh.memory import MemoryMesh

__all__ = ["IMesh", "IMeshReceiver", "MemoryMesh", "MeshUnavailable", "Publication", "open_mesh"]


def open_mesh(url: str, reactor=None) -> IMesh:
    """Build the mesh a ``--mesh`` URL names: ``memory:`` (one process on its own), or
    ``redis://``, ``rediss://``, ``unix://`` (a Redis shared by many nodes)."""
    if url in ("memory:", "memory"):
        return MemoryMesh()
    if url.startswith(("redis://", "rediss://", "unix:")):
        from exchange_stream.mesh.redis import RedisMesh

        return RedisMesh(url, reactor=reactor)
    raise ValueError(f"unsupported mesh URL {url!r} (memory:, redis://, rediss://, unix://)")
