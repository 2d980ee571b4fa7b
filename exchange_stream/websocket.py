"""The Autobahn adapter: WebSocket frames in, session calls; replies and pushes out.

Everything the client protocol means lives in ``session`` and ``protocol``; this module only
translates, and enforces what belongs to the WebSocket layer (text frames only, frame size).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from zope.interface import implementer

from exchange_stream.session import IClientConnection, Session

if TYPE_CHECKING:
    from exchange_stream.gateway import Gateway


@implementer(IClientConnection)
class GatewayProtocol(WebSocketServerProtocol):
    session: Session | None = None

    def onOpen(self) -> None:
        self.session = self.factory.gateway.open_session(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.close(WebSocketProtocol.CLOSE_STATUS_CODE_UNSUPPORTED_DATA, "text frames only")
            return
        if self.session is not None:
            self.session.receive(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.session is not None:
            self.factory.gateway.close_session(self.session)
            self.session = None

    def send_reply(self, reply: bytes) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(reply)

    def close(self, code: int, reason: str) -> None:
        # sendCloseFrame, unlike sendClose, accepts the protocol-level codes (1001, 1003,
        # 1011) and starts the closing handshake without logging a warning per connection.
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code, reason.encode()[:123], isReply=False)


class GatewayFactory(WebSocketServerFactory):
    protocol = GatewayProtocol

    def __init__(self, gateway: Gateway, max_message_size: int) -> None:
        super().__init__(server="exchange-stream")
        self.gateway = gateway
        self.setProtocolOptions(
            # Oversize frames are closed with 1009 and binary ones with 1003: that needs a
            # closing handshake instead of Autobahn's default of dropping the TCP connection.
            failByDrop=False,
            maxFramePayloadSize=max_message_size,
            maxMessagePayloadSize=max_message_size,
            webStatus=False,
            # Given explicitly: every setProtocolOptions call resets it to False otherwise.
            allowNullOrigin=True,
        )
