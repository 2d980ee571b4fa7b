"""Meshes carry publications to every gateway node that has subscribers for a channel.

The interface lives in :mod:`exchange_stream.mesh.interface`; :func:`open_mesh` turns a
``--mesh`` URL into an implementation.
"""

from __future__ import annotations

from exchange_stream.mesh.interface import IMesh, IMeshReceiver, MeshUnavailable, Publication
from exchange_stream.mesh.memory import MemoryMesh

__all__ = ["IMesh", "IMeshReceiver", "MemoryMesh", "MeshUnavailable", "Publication", "open_mesh"]


def open_mesh(url: str) -> IMesh:
    """Build the mesh a ``--mesh`` URL names; ``memory:`` is one process on its own."""
    if url == "memory:" or url == "memory":
        return MemoryMesh()
    raise ValueError(f"unsupported mesh URL {url!r} (supported: memory:)")
