"""Carrying out the control messages nodes send each other on ``es:control``
(``core.control`` has the channel and the messages)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger
from zope.interface import implementer

from exchange_stream.core.control import decode_kick
from exchange_stream.core.publication import Publication
from exchange_stream.interfaces import IMeshReceiver

log = Logger()


@implementer(IMeshReceiver)
class ControlReceiver:
    """``{"kick": uid}`` calls ``kick(uid)``: the session registry logs that user out here."""

    def __init__(self, kick: Callable[[str], None]) -> None:
        self._kick = kick

    def receive(self, channel: str, publication: Publication) -> None:
        uid = decode_kick(publication.payload)
        if uid is None:
            log.warn("ignored a malformed control message on {channel}", channel=channel)
            return
        self._kick(uid)
