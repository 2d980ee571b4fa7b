"""The gateway without its listeners: node, auth, sessions, and the web resources.

This is the embedding surface. An existing Twisted application builds a :class:`Gateway`,
mounts :meth:`Gateway.websocket_resource` in its own ``twisted.web`` site and, if it wants
back ends to publish over HTTP, :meth:`Gateway.api_resource` on an internal port. The
gateway is a ``MultiService`` so a mesh that holds connections (Redis) starts and stops with
the application.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList
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
from exchange_stream.hub import Hub
from exchange_stream.market.engine import MarketSettings
from exchange_stream.market.service import market_service
from exchange_stream.market.simulator import DEMO_TOKENS
from exchange_stream.mesh import IMesh, open_mesh
from exchange_stream.metrics import GatewayMetrics
from exchange_stream.node import Node
from exchange_stream.session import IClientConnection, Session
from exchange_stream.websocket import GatewayFactory


class Gateway(MultiService):
    close_timeout = 2.0

    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        reactor: IReactorTime | None = None,
        mesh: IMesh | None = None,
        authenticator: IAuthenticator | None = None,
        http: Any = None,
    ) -> None:
        """``mesh``, ``authenticator`` and ``http`` (a treq-like client) override what
        ``config`` would build; tests and embedding applications inject them."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config = config or GatewayConfig()
        self.reactor = reactor
        self.factory = GatewayFactory(self, config.max_message_size)
        self.hub = Hub(self.factory.prepareMessage)
        if mesh is None:
            mesh = open_mesh(config.mesh, reactor)
        if IService.providedBy(mesh):
            mesh.setServiceParent(self)  # a mesh with connections starts and stops with us
        self.node = Node(self.hub, mesh)
        self.sessions: dict[Session, IClientConnection] = {}
        self.metrics = GatewayMetrics(self.hub, mesh, lambda: len(self.sessions))
        if authenticator is None and config.demo:
            authenticator = StaticAuthenticator(DEMO_TOKENS)
        if authenticator is None:
            authenticator = HttpAuthenticator(
                config.auth_url, config.auth_timeout, http=http, reactor=reactor
            )
        self.authenticator = MeteredAuthenticator(authenticator, self.metrics.record_auth)
        self.market = None
        if config.runs_market:
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

    def open_session(self, connection: IClientConnection) -> Session:
        session = Session(connection, self.node, self.authenticator, self.config, self.reactor)
        self.sessions[session] = connection
        return session

    def close_session(self, session: Session) -> None:
        session.close()
        self.sessions.pop(session, None)

    def stopService(self) -> Deferred:
        """Tell every client to go away (1001) so it reconnects to another node at once, and
        give the closing handshakes up to ``close_timeout`` seconds before the mesh stops."""
        closing = []
        for connection in list(self.sessions.values()):
            connection.close(1001, "server shutting down")
            closing.append(connection.is_closed)
        everyone = DeferredList(closing, consumeErrors=True)
        everyone.addTimeout(self.close_timeout, self.reactor)
        everyone.addErrback(lambda _: None)
        return everyone.addCallback(lambda _: super(Gateway, self).stopService())

    def websocket_resource(self) -> Resource:
        """The WebSocket endpoint, to mount at ``config.path`` of a ``twisted.web`` site."""
        return WebSocketResource(self.factory)

    def api_resource(self) -> Resource:
        """The internal API root: ``/v1/mesh/publish``, ``/healthz``, ``/metrics``."""
        return build_api(self)
