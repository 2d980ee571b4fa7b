"""``makeService``: the gateway and its listening endpoints under one ``MultiService``.

This is what ``twistd exchange-stream`` runs; an application may call it as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from exchange_stream.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.options import Options
from exchange_stream.workers import WorkerPool

STATIC = str(Path(__file__).parent / "static")

__all__ = ["Options", "api_site", "makeService", "mount", "websocket_site"]


def mount(root: Resource, path: str, resource: Resource) -> None:
    """Put ``resource`` at ``path`` (e.g. ``/exchange-stream`` or ``/ws/v2``) under ``root``."""
    segments = [segment.encode() for segment in path.strip("/").split("/")]
    parent = root
    for segment in segments[:-1]:
        child = parent.children.get(segment)
        if child is None:
            child = Resource()
            parent.putChild(segment, child)
        parent = child
    parent.putChild(segments[-1], resource)


class QuietSite(Site):
    """A site without a per-request access log: publishes and handshakes are too frequent
    for one log line each; ``/metrics`` counts them instead."""

    displayTracebacks = False

    def __init__(self, resource: Resource, timeout: float = 60, forms: bool = True) -> None:
        super().__init__(resource, timeout=timeout, parsePOSTFormSubmission=forms)

    def log(self, request: object) -> None:
        pass


def makeService(options: Options | GatewayConfig, **gateway_args: Any) -> MultiService:
    """The gateway, its WebSocket listener and its internal API listener.

    ``gateway_args`` go to :class:`Gateway` (``reactor``, ``mesh``, ``authenticator``, ...).
    The gateway itself is reachable as ``service.getServiceNamed("gateway")``.
    """
    config = options if isinstance(options, GatewayConfig) else options.config
    gateway = Gateway(config, **gateway_args)
    gateway.setName("gateway")
    reactor = gateway.reactor
    websocket = SharedListener(serverFromString(reactor, config.ws), websocket_site(gateway))
    api = strports.service(config.api, api_site(gateway))
    service = GatewayService(gateway, websocket, api)
    # Injected parts (an embedding application's mesh or authenticator) exist in this
    # process only: workers would build their own from the config.
    processes = config.processes if config.workers is not None or not gateway_args else 1
    injected = sorted(gateway_args.keys() - {"reactor"})
    if processes > 1 and injected:
        raise ValueError("workers > 1 cannot share injected " + ", ".join(injected))
    if processes > 1:
        service.workers = WorkerPool(config, processes, websocket.listening, reactor)
        service.workers.setServiceParent(service)
        gateway.workers = service.workers
    return service


class SharedListener(StreamServerEndpointService):
    """The WebSocket listener; ``listening`` fires with its port, which ``--workers`` share.

    Twisted keeps the port's Deferred as ``_waitingForPort`` and offers no public way to it."""

    _raiseSynchronously = True  # as strports.service: a port in use stops twistd at start

    def __init__(self, endpoint, factory) -> None:
        super().__init__(endpoint, factory)
        self.listening: Deferred = Deferred()

    def privilegedStartService(self) -> None:
        # twistd calls this before startService; startService calls it when nobody did.
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        self.listening.callback(port)
        return port


class GatewayService(MultiService):
    """Starts the gateway, then its listeners; stops in the order a drain needs: no new
    clients, then the drain (publishes refused with 503 meanwhile), then the API, then the
    gateway's mesh and market engine. ``twistd`` waits for it on SIGTERM."""

    workers: WorkerPool | None = None

    def __init__(self, gateway: Gateway, websocket, api) -> None:
        super().__init__()
        self.gateway, self.websocket, self.api = gateway, websocket, api
        for child in (gateway, websocket, api):
            child.setServiceParent(self)

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


def websocket_site(gateway: Gateway) -> Site:
    """The site for the WebSocket port: the gateway's resource at ``config.path``, and with
    ``--demo`` the demo page and the browser client at ``/``."""
    path = gateway.config.path
    timeout = gateway.config.handshake_timeout  # an idle HTTP connection before the upgrade
    if not path.strip("/"):
        return QuietSite(gateway.websocket_resource(), timeout)
    root = File(STATIC) if gateway.config.demo else Resource()
    mount(root, path, gateway.websocket_resource())
    return QuietSite(root, timeout)


def api_site(gateway: Gateway) -> Site:
    """The site for the internal API port. Its bodies are JSON it reads itself, so
    twisted.web need not parse each POST's Content-Type (through the ``email`` package)
    looking for a form to decode."""
    return QuietSite(gateway.api_resource(), forms=False)
