"""The Autobahn adapter: WebSocket frames in, session calls; replies and pushes out.

Everything the client protocol means lives in ``services.session`` and ``core.wire``; this
module only
translates, and enforces what belongs to the WebSocket layer: admission (connections per node
and per address), text frames only, frame size, heartbeats, and a bound on what a slow client
may leave unsent.
"""

from __future__ import annotations

from types import FunctionType
from typing import TypeVar, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from exchange_stream.adapters.admitted import AdmittedFactory
from exchange_stream.adapters.compression import (
    accept_shared_deflate,
    adopt_shared_deflate,
    parseable_offers,
    release_deflate,
)
from exchange_stream.adapters.fastwrite import FastSendProtocol, TurnWriter, write_now
from exchange_stream.adapters.web import peer_host
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.wire import CloseCode
from exchange_stream.interfaces import IClientConnection, IHeartbeatPeer
from exchange_stream.services.connections import Admission, SessionRegistry
from exchange_stream.services.session import Session

log = Logger()

P = TypeVar("P", bound=WebSocketServerProtocol)


@implementer(IClientConnection, IHeartbeatPeer, IPushProducer)
class GatewayProtocol(FastSendProtocol):
    """One client connection.

    It is also the push producer of its transport: the transport pauses it when its write
    buffer is full (the client reads slower than we write), and frames then wait in order
    (``FastSendProtocol``). Past ``max_backlog`` bytes waiting, the client is too slow: the
    waiting frames are dropped and the 4100 close frame is written instead, right behind the
    bytes the transport already holds (at most its 64 KiB buffer and one turn's frames); the
    connection is kept ``slow_client_grace`` seconds holding only those, so that a client that
    wakes up reads why it was closed, then it is dropped.
    """

    session: Session | None = None
    ticket: str | None = None  # what the admission counts this connection by (connections.py)
    last_heard = 0.0  # when the client last sent anything (see heartbeat.py)

    def connectionMade(self) -> None:
        super().connectionMade()
        # twisted.web's HTTPChannel registered itself for the handshake; the connection is
        # ours now, so is its flow control. (A TCP or TLS transport is also its consumer,
        # which Protocol's ITransport does not say.)
        transport = cast(IConsumer, self.transport)
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    def onConnect(self, request) -> None:
        assert self.transport is not None  # connected before the handshake
        admission = self.factory.admission
        peer = peer_host(self.transport.getPeer())
        if self.ticket is None:  # a resource in a site of its own (embedded): counted now
            self.ticket = self._admitted(admission.arrive(peer))
        header = self.factory.real_ip_header
        if header:  # behind a proxy: the client's own address, or the peer's without one
            address = request.headers.get(header, "").split(",")[-1].strip() or peer
            self.ticket = self._admitted(admission.identify(self.ticket, address))
        self.websocket_extensions = parseable_offers(self.websocket_extensions)

    def _admitted(self, admitted: str | tuple[int, str]) -> str:
        if isinstance(admitted, tuple):
            raise ConnectionDeny(*admitted)
        return admitted

    def dataReceived(self, data: bytes) -> None:
        self.last_heard = self.factory.clock.seconds()
        super().dataReceived(data)

    def onOpen(self) -> None:
        # What only the handshake needed is a couple of KiB per idle connection otherwise.
        # Autobahn's attributes are typed by their values, so not as optional; nothing reads
        # them after the handshake.
        self.http_headers = self.http_request_data = self.http_response_data = None  # type: ignore[assignment]
        window = adopt_shared_deflate(self)
        if window is not None:
            self.deflate_window = window
        self.session = self.factory.sessions.open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.close(CloseCode.UNSUPPORTED_DATA, "text frames only")
            return
        if self.session is not None:
            self.session.handle_frame(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        release_deflate(self)
        if self.session is not None:
            self.factory.sessions.end(self.session)
            self.session = None
        if self.ticket is not None:
            self.factory.admission.leave(self.ticket)
            self.ticket = None

    # -- IClientConnection --------------------------------------------------------------

    def send_reply(self, reply: bytes) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(reply, doNotCompress=True)  # too short to gain

    def send_ping(self, frame: bytes) -> None:
        # Not while paused: a client that does not read needs no ping to be found out (the
        # heartbeat goes by what it hears), and the ping would only add to what waits.
        if self.state == WebSocketProtocol.STATE_OPEN and not self.paused:
            write_now(self.transport, frame)

    def drop_dead(self) -> None:
        """Heard nothing for too long: the peer is gone, or its network is."""
        self.wasClean = False
        self.dropConnection(abort=True)

    def close(self, code: int, reason: str) -> None:
        # sendCloseFrame, unlike sendClose, accepts the protocol-level codes (1001, 1003,
        # 1011) and starts the closing handshake without logging a warning per connection.
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code, reason.encode()[:123], isReply=False)

    def too_slow(self) -> None:
        """Close with 4100 instead of holding more. The close handshake's timeout becomes the
        grace period: a client that reads again within it reads the close frame and answers
        it (a clean close); one that does not is dropped then, which frees the transport's
        buffer."""
        self.factory.slow_consumers += 1
        dropped = self.drop_held()
        log.info("closing a slow client ({peer}): {dropped} bytes unsent, dropped",
                 peer=self.peer, dropped=dropped)  # fmt: skip
        self.closeHandshakeTimeout = self.factory.slow_client_grace
        self.close(CloseCode.TOO_SLOW, "too slow: reconnect with backoff")


class GatewayFactory(AdmittedFactory, WebSocketServerFactory):
    """Client connections: each is admitted, gets a session, and writes through the turn
    writer. ``slow_consumers`` counts the clients closed with 4100 (for metrics)."""

    protocol = GatewayProtocol

    def __init__(
        self,
        sessions: SessionRegistry,
        admission: Admission,
        turn_writer: TurnWriter,
        clock: IReactorTime,
        config: GatewayConfig,
    ) -> None:
        super().__init__(server="exchange-stream")
        self.sessions = sessions
        self.admission = admission
        self.turn_writer = turn_writer
        self.clock = clock
        self.slow_consumers = 0
        self.max_backlog = config.max_backlog
        self.slow_client_grace = config.slow_client_grace
        header = config.real_ip_header
        self.real_ip_header = header.lower() if header else None
        origins = config.origins
        self.setProtocolOptions(
            # Oversize frames are closed with 1009 and binary ones with 1003: that needs a
            # closing handshake instead of Autobahn's default of dropping the TCP connection.
            failByDrop=False,
            maxFramePayloadSize=config.max_message_size,
            maxMessagePayloadSize=config.max_message_size,
            webStatus=False,
            openHandshakeTimeout=config.handshake_timeout,
            autoPingInterval=0,  # heartbeat.py pings every connection from one timer
            allowedOrigins=origins,
            # Given explicitly: every setProtocolOptions call resets it to False otherwise.
            # Pages opened from a file send Origin "null"; allowed only when any origin is.
            allowNullOrigin=origins == ["*"],
            # None keeps Autobahn's default, which accepts no offer.
            perMessageCompressionAccept=None if config.no_compression else accept_shared_deflate,
        )
        self.protocol = options_on_the_class(self.protocol, self)


def options_on_the_class(base: type[P], factory: WebSocketServerFactory) -> type[P]:
    """A subclass of ``base`` (``factory.protocol``) that holds the factory's protocol options.

    Autobahn copies each of its ~35 options from the factory into every new connection's
    ``__dict__`` unless the protocol class has it already. Kept on the class, they cost nothing
    per connection: an idle connection's attribute dict drops from 89 keys (3.3 KiB) to 54
    (1.6 KiB). Options set on the factory after this call would not reach new connections.
    Functions (``perMessageCompressionAccept``) are wrapped so that they stay unbound.
    """
    options = {}
    for name in base.CONFIG_ATTRS:
        value = getattr(factory, name)
        options[name] = staticmethod(value) if isinstance(value, FunctionType) else value
    subclass = type(base.__name__, (base,), {**options, "__module__": base.__module__})
    return cast("type[P]", subclass)  # type() with three arguments is typed as a plain type
