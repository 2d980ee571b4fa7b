"""The market engine as a service: the engine plus its inputs, inside a gateway or alone.

Inside a gateway (``--demo``, ``--feed ...``) the engine publishes into the gateway's node;
alone (``twistd exchange-market --mesh redis://...``) it publishes into a mesh of its own.
"""

from __future__ import annotations

from twisted.application import internet, strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from exchange_stream.adapters.feed import BookPoller, DatagramFeed, FeedInput, LineFeedFactory
from exchange_stream.adapters.upstream import quiet_http_client
from exchange_stream.core.config import GatewayConfig, check_udp
from exchange_stream.core.meshurl import check_mesh_url
from exchange_stream.core.streams import StreamPolicy
from exchange_stream.mesh import open_mesh
from exchange_stream.services.market_engine import MarketEngine, MarketSettings, Publish
from exchange_stream.services.simulator import Simulator


class MarketService(MultiService):
    """The engine and whichever inputs are given; ``engine`` and ``input`` (the parsed-event
    counter every input feeds) are there for metrics and tests."""

    def __init__(self, engine: MarketEngine, source: FeedInput) -> None:
        super().__init__()
        self.engine = engine
        self.input = source
        engine.setServiceParent(self)


def market_service(
    publish: Publish,
    settings: MarketSettings,
    clock,
    *,
    feed: str | None = None,
    feed_udp: str | None = None,
    book_url: str | None = None,
    book_interval: float = 0.2,
    simulate: bool = False,
    http=None,
) -> MarketService:
    """The engine fed by the inputs given, listening and polling on ``clock`` (the reactor);
    ``http`` (a treq-like client) is needed with ``book_url`` only."""
    engine = MarketEngine(publish, settings, clock)
    source = FeedInput(engine.handle, engine.limits, engine.refused)
    service = MarketService(engine, source)
    if feed:
        strports.service(feed, LineFeedFactory(source), reactor=clock).setServiceParent(service)
    if feed_udp:
        interface, _, port = feed_udp.rpartition(":")
        datagrams = DatagramFeed(source)
        udp = internet.UDPServer(int(port), datagrams, interface=interface, reactor=clock)
        udp.setServiceParent(service)
    if book_url:
        if http is None:
            http = quiet_http_client(clock)
        BookPoller(book_url, source, http, clock, book_interval).setServiceParent(service)
    if simulate:
        Simulator(source.event, clock, backfill=engine.backfill).setServiceParent(service)
    return service


_GATEWAY = GatewayConfig()


class Options(usage.Options):
    """``twistd exchange-market``: the engine on its own, publishing into a shared mesh."""

    optParameters = [
        ["mesh", None, None, "mesh to publish into: redis://host:port/db (required)"],
        ["prefix", None, "ex:", "internal channel prefix (as the gateways')"],
        ["feed", None, None, "listening endpoint for JSON lines, e.g. tcp:7001"],
        ["feed-udp", None, None, "[interface:]port for one JSON event per datagram"],
        ["book-url", None, None, "URL to poll for book snapshots"],
        ["book-interval", None, 0.2, "seconds between book polls", float],
        # The history of the channels it publishes (trades, bars) is written by the publisher:
        # these must match the gateways' options.
        ["history-types", None, _GATEWAY.history_types, "as the gateways' --history-types"],
        ["history-size", None, _GATEWAY.history_size, "as the gateways' --history-size", int],
        ["history-ttl", None, _GATEWAY.history_ttl, "as the gateways' --history-ttl", float],
    ]
    optFlags = [["simulate", None, "feed the engine from the built-in simulated market"]]

    streams: StreamPolicy

    def postOptions(self) -> None:
        if not self["mesh"]:
            raise usage.UsageError("--mesh is required (the gateways' redis://...)")
        try:
            check_mesh_url(self["mesh"])
            if self["feed-udp"]:
                check_udp(self["feed-udp"])
            self.streams = StreamPolicy.from_options(
                self["history-types"], self["history-size"], self["history-ttl"]
            )
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        if not (self["feed"] or self["feed-udp"] or self["book-url"] or self["simulate"]):
            raise usage.UsageError("give at least one input: --feed, --feed-udp, --book-url")


def makeService(options: Options) -> MultiService:
    from twisted.internet import reactor

    mesh = open_mesh(options["mesh"], reactor, streams=options.streams)
    service = market_service(
        mesh.publish,
        MarketSettings(prefix=options["prefix"]),
        reactor,
        feed=options["feed"],
        feed_udp=options["feed-udp"],
        book_url=options["book-url"],
        book_interval=options["book-interval"],
        simulate=options["simulate"],
    )
    if IService.providedBy(mesh):
        mesh.setServiceParent(service)
    return service
