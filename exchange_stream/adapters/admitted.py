"""A WebSocket keeps the admission ticket its connection took when it was accepted.

``web.DeadlineChannel`` counts every connection from the moment it is accepted
(``services.connections.Admission``) and gives its place back when it closes. A connection
that becomes a WebSocket is taken over by the WebSocket protocol, and the HTTP channel never
hears of it again: the ticket has to go with the connection, to be given back by the protocol
when it closes (its ``onClose``). Autobahn's resource builds the protocol deep inside its
``render``; the factory is the one place both see, so the ticket waits there for the one
synchronous ``buildProtocol`` call of that render.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource


class AdmittedFactory:
    """A WebSocket server factory mixin: each protocol it builds gets ``ticket``, the one
    ``TicketedWebSocketResource`` left in ``arriving`` (None: counted by nobody yet)."""

    arriving: str | None = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)  # type: ignore[misc]
        protocol.ticket, self.arriving = self.arriving, None
        return protocol


class TicketedWebSocketResource(WebSocketResource):
    """Autobahn's resource, handing the connection's ticket to the WebSocket protocol that
    takes the connection over."""

    def __init__(self, factory: AdmittedFactory) -> None:
        super().__init__(factory)
        self._admitted_factory = factory

    def render(self, request: Any) -> Any:
        factory, channel = self._admitted_factory, request.channel
        take = getattr(channel, "take_ticket", None)  # a DeadlineChannel's; not in a plain Site
        factory.arriving = take() if take is not None else None
        try:
            return super().render(request)
        finally:
            if factory.arriving is not None:  # no protocol took it: the channel keeps it
                channel.ticket, factory.arriving = factory.arriving, None
