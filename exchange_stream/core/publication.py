"""What a mesh carries: one publication, and the refusal that says nothing was sent."""

from __future__ import annotations

from dataclasses import dataclass


class MeshUnavailable(Exception):
    """The mesh cannot attempt delivery now (e.g. Redis is down); nothing was sent."""


class MeshOutcomeUnknown(Exception):
    """The mesh took the request but did not answer in time: it may or may not have been
    delivered. A retry with the same idempotency key cannot duplicate it."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One message as a back end published it: ``payload`` goes out byte for byte.

    On a stream channel the mesh gives it a position: ``offset`` within ``epoch`` (see
    ``core.streams``); elsewhere both are None."""

    payload: bytes
    binary: bool = False
    epoch: str | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """What the mesh answers for an accepted publish: how many nodes had subscribers, and on a
    stream channel the publication's position."""

    nodes: int
    epoch: str | None = None
    offset: int | None = None
