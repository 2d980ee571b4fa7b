"""What a mesh carries: one publication, and the refusal that says nothing was sent."""

from __future__ import annotations

from dataclasses import dataclass


class MeshUnavailable(Exception):
    """The mesh cannot attempt delivery now (e.g. Redis is down); nothing was sent."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One message as a back end published it: ``payload`` goes out byte for byte."""

    payload: bytes
    binary: bool = False
