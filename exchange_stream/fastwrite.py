"""Write to a TCP socket at once when nothing is queued before it (the fan-out hot path).

Twisted's ``transport.write`` always queues: it registers the socket for writability with
epoll and sends on the next reactor turn, after which it unregisters it again. When a node
writes one small frame to each of many connections per message, those two ``epoll_ctl`` calls
per connection are a large part of the cost (bench/fanout's profile). When the connection's
queue is empty, the same bytes can go out with one ``send`` right away; what the kernel does
not take is queued as before, so ordering and flow control are unchanged.

This reads two private attributes of Twisted's ``FileDescriptor`` (``_tempDataLen``,
``_writeDisconnected``); where they are missing (another transport, TLS, a future Twisted)
it falls back to ``transport.write``.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import tcp


def write_now(transport, data: bytes) -> None:
    """``transport.write(data)``, sending at once when the transport's queue is empty."""
    if (
        type(transport) is not tcp.Server
        or transport.dataBuffer
        or getattr(transport, "_tempDataLen", 1)
        or getattr(transport, "_writeDisconnected", True)
        or not transport.connected
    ):
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if isinstance(sent, BaseException):  # let the reactor's usual path report the loss
        transport.write(data)
    elif sent < len(data):
        transport.write(data[sent:])


class FastSendProtocol(WebSocketServerProtocol):
    """An Autobahn server protocol whose prepared frames go straight to the transport.

    Autobahn's own path (``sendData``) does the same ``transport.write`` but formats a debug
    log line and updates traffic statistics on every send: a third of the cost of a delivery in
    bench/fanout's profile. Compression or queued synchronous sends still go through Autobahn.
    """

    def sendPreparedMessage(self, prepared) -> None:
        if self.state != self.STATE_OPEN:
            return
        if self._perMessageCompress is None and not self.send_queue:
            write_now(self.transport, prepared.payloadHybi)
        else:
            super().sendPreparedMessage(prepared)

    def send_text(self, payload: bytes) -> None:
        """``sendMessage`` for a text message, through the same fast path."""
        self.sendPreparedMessage(self.factory.prepareMessage(payload))
