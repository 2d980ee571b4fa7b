"""The gateway without its listeners: node, auth, sessions, and the web resources.

This is the embedding surface. An existing Twisted application builds a :class:`Gateway`,
mounts :meth:`Gateway.websocket_resource` in its own ``twisted.web`` site and, if it wants
back ends to publish over HTTP, :meth:`Gateway.api_resource` on an internal port. The
gateway is a ``MultiService`` so a mesh that holds connections (Redis) starts and stops with
the application.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from autobahn.twisted.resource import WebSocketResource
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from exchange_stream.api import build_api
from exchange_stream.auth import (
    HttpAuthenticator,
    IAuthenticator,
    MeteredAuthenticator,
    StaticAuthenticator,
)
from exchange_stream.config import GatewayConfig
from exchange_stream.control import CONTROL_CHANNEL, ControlReceiver
from exchange_stream.fastwrite import TurnWriter
from exchange_stream.heartbeat import Heartbeat
from exchange_stream.hub import Hub
from exchange_stream.market.engine import MarketSettings
from exchange_stream.market.service import market_service
from exchange_stream.market.simulator import DEMO_TOKENS
from exchange_stream.mesh import IMesh, open_mesh
from exchange_stream.metrics import GatewayMetrics
from exchange_stream.node import Node
from exchange_stream.protocol import CloseCode
from exchange_stream.publishing import Publisher
from exchange_stream.session import IClientConnection, Session
from exchange_stream.websocket import GatewayFactory

if TYPE_CHECKING:
    from exchange_stream.workers import WorkerPool


class Gateway(MultiService):
    close_timeout = 2.0  # after the drain window, for the last closing handshakes

    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        reactor: IReactorTime | None = None,
        mesh: IMesh | None = None,
        authenticator: IAuthenticator | None = None,
        http: Any = None,
        serves_market: bool = True,
    ) -> None:
        """``mesh``, ``authenticator`` and ``http`` (a treq-like client) override what
        ``config`` would build; tests and embedding applications inject them. A ``--workers``
        worker passes ``serves_market=False``: only the first process runs the engine."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config = config or GatewayConfig()
        self.reactor = reactor
        self.turn_writer = TurnWriter(reactor)  # every connection's frames, clients' and API's
        self.factory = GatewayFactory(self, config)
        self.draining = False
        self.workers: WorkerPool | None = None  # the node's other processes (--workers)
        self.slow_consumers = 0
        self._per_address: dict[str, int] = {}
        self._admitted = 0
        self._random = random.Random()
        self.hub = Hub(self.factory.prepareMessage)
        if mesh is None:
            mesh = open_mesh(config.mesh, reactor)
        if IService.providedBy(mesh):
            mesh.setServiceParent(self)  # a mesh with connections starts and stops with us
        self.node = Node(self.hub, mesh)
        self.sessions: dict[Session, IClientConnection] = {}
        self._control = ControlReceiver(lambda: self.sessions)
        self.metrics = GatewayMetrics(self)
        if authenticator is None and config.demo:
            authenticator = StaticAuthenticator(DEMO_TOKENS)
        if authenticator is None:
            authenticator = HttpAuthenticator(
                config.auth_url, config.auth_timeout, http=http, reactor=reactor
            )
        self.authenticator = MeteredAuthenticator(authenticator, self.metrics.record_auth)
        self.publisher = Publisher(self)
        if config.ping_interval:
            self.heartbeat = Heartbeat(
                self.sessions.values, reactor, config.ping_interval, config.ping_timeout
            )
            self.heartbeat.setServiceParent(self)
        self.market = None
        if config.runs_market and serves_market:
            self.market = market_service(
                self.node.publish,
                MarketSettings(prefix=config.prefix),
                reactor,
                feed=config.feed,
                feed_udp=config.feed_udp,
                book_url=config.book_url,
                book_interval=config.book_interval,
                simulate=config.demo,
                http=http,
            )
            self.market.setServiceParent(self)
            self.metrics.watch_market(self.market)

    @property
    def mesh(self) -> IMesh:
        return self.node.mesh

    def startService(self) -> None:
        super().startService()
        self.mesh.subscribe(CONTROL_CHANNEL, self._control)

    def admit(self, address: str) -> tuple[int, str] | None:
        """Take a new connection from ``address``, or say why not (HTTP status, reason)."""
        if self.draining:
            return 503, "server shutting down"
        if self._admitted >= self.config.max_connections:
            return 503, "too many connections on this node"
        if self._per_address.get(address, 0) >= self.config.max_connections_per_ip:
            return 429, "too many connections from your address"
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._admitted += 1
        return None

    def release(self, address: str) -> None:
        self._admitted -= 1
        left = self._per_address.get(address, 0) - 1
        if left > 0:
            self._per_address[address] = left
        else:
            self._per_address.pop(address, None)

    def open_session(self, connection: IClientConnection) -> Session:
        session = Session(connection, self.node, self.authenticator, self.config, self.reactor)
        self.sessions[session] = connection
        return session

    def close_session(self, session: Session) -> None:
        session.close()
        self.sessions.pop(session, None)

    def drain(self, window: float | None = None) -> Deferred:
        """Shut down politely: refuse new connections and publishes (503), then close every
        client with 4200 ("reconnect now") at a random moment of the ``window`` (default
        ``drain_seconds``), each with a notice giving a random reconnect delay of up to a
        second, so that the clients of a node do not all land on the others at once.
        Fires when every client is gone, or ``close_timeout`` after the window."""
        window = self.config.drain_seconds if window is None else window
        self.draining = True
        closing = []
        for connection in list(self.sessions.values()):
            delay = self._random.uniform(0, window)
            self.reactor.callLater(delay, self._send_away, connection)
            closing.append(connection.is_closed)
        everyone = DeferredList(closing, consumeErrors=True)
        everyone.addTimeout(window + self.close_timeout, self.reactor)
        return everyone.addErrback(lambda _: None)

    def _send_away(self, connection: IClientConnection) -> None:
        reconnect_in = self._random.randint(0, 1000)
        notice = {"event": "notice", "data": {"type": "reconnect", "reconnectInMs": reconnect_in}}
        connection.send_reply(json.dumps(notice, separators=(",", ":")).encode())
        connection.close(
            CloseCode.RECONNECT, f"server shutting down; reconnect in {reconnect_in} ms"
        )

    def stopService(self) -> Deferred:
        """Drain at once if nobody drained us yet (an embedding application's shutdown),
        then stop the mesh and the market engine."""
        drained = succeed(None) if self.draining else self.drain(window=0)
        drained.addCallback(lambda _: self.mesh.unsubscribe(CONTROL_CHANNEL, self._control))
        return drained.addCallback(lambda _: super(Gateway, self).stopService())

    def websocket_resource(self) -> Resource:
        """The WebSocket endpoint, to mount at ``config.path`` of a ``twisted.web`` site."""
        return WebSocketResource(self.factory)

    def api_resource(self) -> Resource:
        """The internal API root: ``/v1/mesh/publish``, ``/healthz``, ``/metrics``."""
        return build_api(self)
