"""Meshes carry publications to every gateway node that has subscribers for a channel.

The interface lives in :mod:`exchange_stream.mesh.interface`; :func:`open_mesh` turns a
``--mesh`` URL into an implementation.
"""

from __future__ import annotations

from exchange_stream.mesh.interface import IMesh, IMeshReceiver, MeshUnavailable, Publication
from exchange_stream.mesh.memory import MemoryMesh

__all__ = [
    "IMesh",
    "IMeshReceiver",
    "MemoryMesh",
    "MeshUnavailable",
    "Publication",
    "check_mesh_url",
    "open_mesh",
]


def check_mesh_url(url: str) -> None:
    """Raise ValueError unless ``url`` names a mesh :func:`open_mesh` can build."""
    if url in ("memory:", "memory"):
        return
    if url.startswith(("redis://", "rediss://", "unix:")):
        from exchange_stream.mesh.redis import RedisAddress

        RedisAddress.from_url(url)
        return
    raise ValueError(f"unsupported mesh URL {url!r} (memory:, redis://, rediss://, unix://)")


def open_mesh(url: str, reactor=None) -> IMesh:
    """Build the mesh a ``--mesh`` URL names: ``memory:`` (one process on its own), or
    ``redis://``, ``rediss://``, ``unix://`` (a Redis shared by many nodes)."""
    check_mesh_url(url)
    if url in ("memory:", "memory"):
        return MemoryMesh()
    from exchange_stream.mesh.redis import RedisMesh

    return RedisMesh(url, reactor=reactor)
