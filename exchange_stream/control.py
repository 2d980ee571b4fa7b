"""Control messages between gateway nodes, carried by the mesh like any publication.

The gateway's own channels start with ``es:`` (``es:control``, the self-check's
``es:heartbeat:<node>``, snapshot keys ``es:snapshot:<channel>``); clients cannot name them
and the publish API refuses them. Every node listens to ``es:control`` all the time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.logger import Logger
from zope.interface import implementer

from exchange_stream.mesh.interface import IMeshReceiver, Publication

RESERVED_PREFIX = "es:"
CONTROL_CHANNEL = "es:control"

log = Logger()


class LoggedIn(Protocol):
    uid: str | None

    def log_out(self, why: str) -> None: ...


@implementer(IMeshReceiver)
class ControlReceiver:
    """Carries out control messages on this node: ``{"kick": uid}`` logs that user out of
    every session here. A kick is rare, so it looks through the sessions rather than keep an
    index by uid on the path of every auth."""

    def __init__(self, sessions: Callable[[], Iterable[LoggedIn]]) -> None:
        self._sessions = sessions

    def receive(self, channel: str, publication: Publication) -> None:
        try:
            message = json.loads(publication.payload)
            uid = message["kick"]
        except (ValueError, KeyError, TypeError):
            log.warn("ignored a malformed control message on {channel}", channel=channel)
            return
        for session in list(self._sessions()):
            if session.uid == uid:
                session.log_out("kicked")
