"""The gateway without its listeners: every part of a node, composed.

This is the embedding surface. An existing Twisted application builds a :class:`Gateway`,
mounts :meth:`Gateway.websocket_resource` in its own ``twisted.web`` site and, if it wants
back ends to publish over HTTP, :meth:`Gateway.api_resource` on an internal port. The
gateway is a ``MultiService`` so a mesh that holds connections (Redis), the heartbeat and
the market engine start and stop with the application. Each part is handed only the parts
it uses; nothing below this module knows the gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource

from exchange_stream.adapters.admitted import TicketedWebSocketResource
from exchange_stream.adapters.compression import SharedFrame
from exchange_stream.adapters.fastwrite import TurnWriter
from exchange_stream.adapters.upstream import quiet_http_client
from exchange_stream.adapters.web import api_root, bearer
from exchange_stream.adapters.websocket import GatewayFactory
from exchange_stream.adapters.ws_api import MeshApiFactory
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.control import CONTROL_CHANNEL
from exchange_stream.core.hub import Hub
from exchange_stream.interfaces import IAuthenticator, IMesh, IProcessReports
from exchange_stream.market_service import market_service
from exchange_stream.mesh import open_mesh
from exchange_stream.services.api import MeshApi
from exchange_stream.services.auth import (
    HttpAuthenticator,
    MeteredAuthenticator,
    StaticAuthenticator,
)
from exchange_stream.services.connections import Admission, Drain, SessionRegistry
from exchange_stream.services.control_receiver import ControlReceiver
from exchange_stream.services.figures import NodeFigures, ProcessFigures
from exchange_stream.services.health import Health
from exchange_stream.services.heartbeat import Heartbeat, Peer
from exchange_stream.services.market_engine import MarketSettings
from exchange_stream.services.metrics import GatewayMetrics
from exchange_stream.services.node import Node
from exchange_stream.services.publisher import Publisher
from exchange_stream.services.simulator import DEMO_TOKENS


class Gateway(MultiService):
    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        reactor: IReactorTime | None = None,
        mesh: IMesh | None = None,
        authenticator: IAuthenticator | None = None,
        http: Any = None,
        serves_market: bool = True,
        workers: IProcessReports | None = None,
    ) -> None:
        """``mesh``, ``authenticator`` and ``http`` (a treq-like client) override what
        ``config`` would build; tests and embedding applications inject them. ``workers``
        are the node's other processes (``--workers``), whose figures ``/metrics`` and
        ``/healthz`` add up; a worker itself passes ``serves_market=False``: only the first
        process runs the market engine."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = installed
        self.config = config = config or GatewayConfig()
        self.reactor = reactor
        if mesh is None:
            mesh = open_mesh(
                config.mesh, reactor, config.streams, config.idempotency_ttl, config.stall_after
            )
        self.mesh = mesh
        if IService.providedBy(self.mesh):
            self.mesh.setServiceParent(self)  # a mesh with connections starts and stops with us
        self.turn_writer = TurnWriter(reactor)  # every connection's frames, clients' and API's
        self.hub = Hub(SharedFrame)
        self.node = Node(self.hub, self.mesh)
        self.metrics = GatewayMetrics()
        if authenticator is None:
            authenticator = (
                StaticAuthenticator(DEMO_TOKENS)
                if config.demo
                else HttpAuthenticator(
                    config.auth_url,
                    http or quiet_http_client(reactor),
                    reactor,
                    config.auth_timeout,
                )
            )
        self.authenticator = MeteredAuthenticator(authenticator, self.metrics.record_auth)
        self.sessions = SessionRegistry(self.node, self.authenticator, config, reactor)
        self._drain = Drain(self.sessions.connections, reactor, config.drain_seconds)
        admission = Admission(
            config.max_connections,
            config.max_connections_per_ip,
            self._is_draining,
            by_peer=config.real_ip_header is None,
        )
        # The API port's own count: back ends' connections, never refused for a drain.
        self.api_admission = Admission(
            config.max_connections, config.max_connections_per_ip, lambda: False
        )
        self.factory = GatewayFactory(self.sessions, admission, self.turn_writer, reactor, config)
        self.process_figures = ProcessFigures(
            self.sessions, self.hub, lambda: self.factory.slow_consumers, self.mesh
        )
        figures = NodeFigures(self.process_figures, self.mesh, workers)
        self.metrics.watch_node(figures, self.mesh)
        self.health = Health(self.mesh, figures, self._is_draining)
        self.publisher = Publisher(self.node, self._is_draining, self.metrics, config.prefix)
        self.api = MeshApi(
            self.publisher,
            self.health,
            self.metrics.registry,
            bearer(config.api_token),
            config.max_publish_size,
            config.streams,
        )
        self._control = ControlReceiver(self.sessions.kick)
        if config.ping_interval:
            # Every connection registered here is a GatewayFactory's protocol, which is an
            # IHeartbeatPeer as well as an IClientConnection.
            peers = cast("Callable[[], Iterable[Peer]]", self.sessions.connections)
            heartbeat = Heartbeat(peers, reactor, config.ping_interval, config.ping_timeout)
            heartbeat.setServiceParent(self)
        self.market = None
        if config.runs_market and serves_market:
            self.market = market_service(
                self.node.publish,
                MarketSettings.of(config),
                reactor,
                feed=config.feed,
                feed_udp=config.feed_udp,
                feed_secret=config.feed_secret,
                book_url=config.book_url,
                book_interval=config.book_interval,
                simulate=config.demo,
                http=http,
            )
            self.market.setServiceParent(self)
            self.metrics.watch_market(self.market.engine, self.market.input)

    @property
    def draining(self) -> bool:
        return self._drain.draining

    def _is_draining(self) -> bool:
        return self._drain.draining

    def startService(self) -> None:
        super().startService()
        self.mesh.subscribe(CONTROL_CHANNEL, self._control)

    def drain(self, window: float | None = None) -> Deferred:
        """Refuse new clients and publishes, then close every client with 4200 within
        ``window`` seconds (default ``drain_seconds``); see ``services.connections.Drain``."""
        return self._drain.start(window)

    def stopService(self) -> Deferred:
        """Drain at once if nobody drained us yet (an embedding application's shutdown),
        then stop the mesh and the market engine."""
        drained = succeed(None) if self.draining else self.drain(window=0)
        drained.addCallback(lambda _: self.mesh.unsubscribe(CONTROL_CHANNEL, self._control))
        return drained.addCallback(lambda _: super(Gateway, self).stopService())

    def websocket_resource(self) -> IResource:
        """The WebSocket endpoint, to mount at ``config.path`` of a ``twisted.web`` site."""
        return TicketedWebSocketResource(self.factory)

    def api_resource(self) -> Resource:
        """The internal API root: ``/v1/mesh/publish``, ``/v1/mesh/kick``, ``/ws/v1``,
        ``/healthz``, ``/metrics``."""
        config = self.config
        websocket_api = MeshApiFactory(
            self.api, self.turn_writer, config.ping_interval, config.ping_timeout,
            self.api_admission,
        )  # fmt: skip
        return api_root(self.api, TicketedWebSocketResource(websocket_api))
