"""``makeService``: the gateway and its listening endpoints under one ``MultiService``.

This is what ``twistd exchange-stream`` runs; an application may call it as well.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from exchange_stream import __version__
from exchange_stream.adapters.http_api import LeanApiFactory
from exchange_stream.adapters.listening import OneLineStartFailures
from exchange_stream.adapters.market_history import BesideWebSocket, KlinesResource, overlaps
from exchange_stream.adapters.upstream import listening_port
from exchange_stream.adapters.web import QuietSite, mount
from exchange_stream.adapters.workers import WorkerPool, process_count
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.endpoints import with_backlog
from exchange_stream.core.market.bars import PATH as KLINES_PATH
from exchange_stream.core.meshurl import redacted
from exchange_stream.gateway import Gateway
from exchange_stream.options import Options

STATIC = str(Path(__file__).parent / "static")
log = Logger()

__all__ = ["Options", "api_factory", "api_site", "makeService", "mount", "websocket_site"]


def makeService(options: Options | GatewayConfig, **gateway_args: Any) -> MultiService:
    """The gateway, its WebSocket listener and its internal API listener.

    ``gateway_args`` go to :class:`Gateway` (``reactor``, ``mesh``, ``authenticator``, ...).
    The gateway itself is reachable as ``service.getServiceNamed("gateway")``.
    """
    config = options if isinstance(options, GatewayConfig) else options.config
    # Injected parts (an embedding application's mesh or authenticator) exist in this
    # process only: workers would build their own from the config.
    processes = process_count(config) if config.workers is not None or not gateway_args else 1
    injected = sorted(gateway_args.keys() - {"reactor"})
    if processes > 1 and injected:
        raise ValueError("workers > 1 cannot share injected " + ", ".join(injected))
    reactor = gateway_args.get("reactor")
    if reactor is None:
        from twisted.internet import reactor
    gateway_args["reactor"] = reactor
    workers = WorkerPool(config, processes, reactor) if processes > 1 else None
    gateway = Gateway(config, workers=workers, **gateway_args)
    gateway.setName("gateway")
    websocket = _listener("--ws", config.ws, config.backlog, websocket_site(gateway), reactor)
    api = _listener("--api", config.api, config.backlog, api_factory(gateway), reactor)
    if workers is not None:
        workers.share(lambda: listening_port(websocket))
    return GatewayService(gateway, websocket, api, workers)


def _listener(
    option: str, description: str, backlog: int, site: Factory[Any], reactor: Any
) -> StreamServerEndpointService:
    """The listening service for an endpoint option; a string Twisted cannot use (an unknown
    kind, a missing TLS file) stops the start with one line naming the option, no traceback."""
    try:
        return strports.service(with_backlog(description, backlog), site, reactor=reactor)
    except (ValueError, OSError, ImportError) as error:
        raise SystemExit(f"exchange-stream: {option} {description}: {error}") from None


class GatewayService(OneLineStartFailures):
    """Starts the gateway, then its listeners (then the workers, which share the WebSocket
    port); stops in the order a drain needs: no new clients, then the drain (publishes
    refused with 503 meanwhile), then the API, then the gateway's mesh and market engine.
    ``twistd`` waits for it on SIGTERM."""

    def __init__(
        self,
        gateway: Gateway,
        websocket: IService,
        api: IService,
        workers: WorkerPool | None = None,
    ) -> None:
        config = gateway.config
        super().__init__(
            {"--ws": config.ws, "--api": config.api, "--feed": config.feed,
             "--feed-udp": config.feed_udp}
        )  # fmt: skip
        self.gateway, self.websocket, self.api, self.workers = gateway, websocket, api, workers
        for child in (gateway, websocket, api, workers):
            if child is not None:
                child.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        log.info("{summary}", summary=startup_summary(self.gateway.config, self.workers))

    def stopService(self) -> Deferred:
        self.running = 0
        # The workers drain at the same time as this process (they got SIGTERM too).
        workers = self.workers.stopService() if self.workers is not None else None
        stopping = maybeDeferred(self.websocket.stopService)
        stopping.addCallback(lambda _: self.gateway.drain())
        if workers is not None:
            stopping.addCallback(lambda _: workers)
        stopping.addCallback(lambda _: self.api.stopService())
        stopping.addCallback(lambda _: self.gateway.stopService())
        return stopping


def startup_summary(config: GatewayConfig, workers: WorkerPool | None) -> str:
    """One line saying what this node is: its endpoints, mesh, auth and market inputs (no
    password or token)."""
    parts = [
        f"exchange-stream {__version__}: clients on {config.ws} at {config.path}",
        f"API on {config.api}" + (" (bearer token required)" if config.api_token else ""),
        f"mesh {redacted(config.mesh)}",
        "auth: demo tokens demo-1001..demo-1005" if config.demo else f"auth {config.auth_url}",
    ]
    inputs = [
        f"{name} {value}"
        for name, value in (("feed", config.feed), ("feed-udp", config.feed_udp),
                            ("book-url", config.book_url))
        if value
    ]  # fmt: skip
    if config.demo:
        inputs.insert(0, "the simulated market")
    if inputs:
        parts.append("market engine on " + ", ".join(inputs))
    if workers is not None:
        parts.append(f"{workers.count} processes")
    return "; ".join(parts)


def websocket_site(gateway: Gateway) -> Site:
    """The site for the WebSocket port: the gateway's resource at ``config.path``, the bars
    history at ``/v1/market/klines`` (on every gateway: it reads the mesh), and with
    ``--demo`` the demo page and the browser client at ``/``.

    With the WebSocket at ``/`` every path but the history's is the WebSocket (and there is
    no demo page); a WebSocket path that is the history's, a folder of it or under it
    (``/v1``, ``/v1/market/klines/ws``) wins, and there is no history on that port."""
    config = gateway.config
    path = config.path
    timeout = config.handshake_timeout  # an idle HTTP connection before the upgrade
    # ... and the whole handshake request, however it trickles in
    site = partial(
        QuietSite,
        timeout=timeout,
        deadline=timeout,
        clock=gateway.reactor,
        admission=gateway.factory.admission,
    )
    klines = KlinesResource(gateway.mesh, config.prefix)
    if not path.strip("/"):
        return site(BesideWebSocket(gateway.websocket_resource(), klines))
    root = File(STATIC) if config.demo else Resource()
    if overlaps(path):
        log.warn("no bars history on the WebSocket port: --path {path} is in its way", path=path)
    else:
        mount(root, KLINES_PATH, klines)
    mount(root, path, gateway.websocket_resource())
    return site(root)


def api_factory(gateway: Gateway) -> LeanApiFactory:
    """The internal API port: the lean HTTP/1.1 protocol for the API's own requests, the
    twisted.web site of :func:`api_site` for every other connection (``/ws/v1``, anything
    else), both counted by one admission and bound by one deadline."""
    return LeanApiFactory(gateway.api, api_site(gateway), gateway.turn_writer)


def api_site(gateway: Gateway) -> QuietSite:
    """The site for the internal API port. Its bodies are JSON it reads itself, so
    twisted.web need not parse each POST's Content-Type (through the ``email`` package)
    looking for a form to decode."""
    config = gateway.config
    return QuietSite(
        gateway.api_resource(),
        forms=False,
        deadline=config.handshake_timeout,  # each request, headers and body, in this time
        max_body=config.max_publish_size,
        clock=gateway.reactor,
        admission=gateway.api_admission,
        count_refusal=gateway.api.count_refusal,
    )
