"""The market engine as a service: the engine plus its inputs, inside a gateway or alone.

Inside a gateway (``--demo``, ``--feed ...``) the engine publishes into the gateway's node;
alone (``twistd exchange-market --mesh redis://...``) it publishes into a mesh of its own.
"""

from __future__ import annotations

import os
from typing import IO

from twisted.application import internet, strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python import usage

from exchange_stream.adapters.feed import BookPoller, DatagramFeed, FeedInput, LineFeedFactory
from exchange_stream.adapters.listening import OneLineStartFailures
from exchange_stream.adapters.replay import OutputFile, Replay
from exchange_stream.adapters.upstream import quiet_http_client
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.feeds import feed_endpoint, feed_udp_address
from exchange_stream.mesh import open_mesh
from exchange_stream.options import ShortUsageOnError
from exchange_stream.services.market_engine import MarketEngine, MarketSettings, Publish
from exchange_stream.services.simulator import Simulator

log = Logger()


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
    feed_secret: str | None = None,
    book_url: str | None = None,
    book_interval: float = 0.2,
    simulate: bool = False,
    http=None,
) -> MarketService:
    """The engine fed by the inputs given, listening and polling on ``clock`` (the reactor);
    ``http`` (a treq-like client) is needed with ``book_url`` only. The feeds listen on the
    loopback interface unless one is named (``core.feeds``)."""
    engine = MarketEngine(publish, settings, clock)
    source = FeedInput(engine.handle, engine.limits, engine.refused)
    service = MarketService(engine, source)
    if feed:
        lines = LineFeedFactory(source, feed_secret, clock)
        strports.service(feed_endpoint(feed), lines, reactor=clock).setServiceParent(service)
    if feed_udp:
        interface, port = feed_udp_address(feed_udp)
        datagrams = DatagramFeed(source, feed_secret)
        udp = internet.UDPServer(port, datagrams, interface=interface, reactor=clock)
        udp.setServiceParent(service)
    if book_url:
        if http is None:
            http = quiet_http_client(clock)
        BookPoller(book_url, source, http, clock, book_interval).setServiceParent(service)
    if simulate:
        Simulator(source.event, clock, backfill=engine.backfill).setServiceParent(service)
    return service


_GATEWAY = GatewayConfig()

# Options shared with the gateways' (``twistd exchange-stream``): they must match.
_SHARED = [
    ("prefix", str, "internal channel prefix"),
    ("history-types", str, "channel types that keep a history"),
    ("history-size", int, "publications a stream channel's history keeps"),
    ("history-ttl", float, "seconds a publication stays in its channel's history"),
    ("max-integer-digits", int, "digits before the point in a price or quantity"),
    ("max-places", int, "digits after the point in a price or quantity"),
    ("symbol-limits", str, "per symbol, SYMBOL=INTEGER_DIGITS:PLACES,..."),
    ("max-ahead-ms", int, "how far an event's ts may be ahead of the clock"),
    ("max-late-ms", int, "how far behind (a closed bar is amendable as long)"),
]


class Options(ShortUsageOnError):
    """``twistd exchange-market``: the engine on its own, publishing into a shared mesh, or
    replaying a recording on its own time."""

    optParameters = [
        ["mesh", None, None, "mesh to publish into: redis://host:port/db"],
        ["feed", None, None, "listening endpoint for JSON lines, e.g. tcp:7001"],
        ["feed-udp", None, None, "[interface:]port for one JSON event per datagram"],
        ["feed-secret", None, None, "what a feed's writers must send first (off 127.0.0.1)"],
        ["book-url", None, None, "URL to poll for book snapshots"],
        ["book-interval", None, 0.2, "seconds between book polls", float],
        ["replay", None, None, "replay this recording (JSON lines) on its events' time, then stop"],
        ["output", None, None, "write every publication to this file, one JSON line each"],
        *[
            [
                option,
                None,
                getattr(_GATEWAY, option.replace("-", "_")),
                f"as the gateways': {text}",
                kind,
            ]
            for option, kind, text in _SHARED
        ],
    ]
    optFlags = [["simulate", None, "feed the engine from the built-in simulated market"]]

    config: GatewayConfig

    def postOptions(self) -> None:
        if self["replay"]:
            if self["feed"] or self["feed-udp"] or self["book-url"] or self["simulate"]:
                raise usage.UsageError("--replay is the only input when it is given")
            if not (self["mesh"] or self["output"]):
                raise usage.UsageError("--replay needs somewhere to publish: --output, --mesh")
        else:
            if not self["mesh"]:
                raise usage.UsageError("--mesh is required (the gateways' redis://...)")
            if not (self["feed"] or self["feed-udp"] or self["book-url"] or self["simulate"]):
                raise usage.UsageError("give at least one input: --feed, --feed-udp, --book-url")
        _check_files(self["replay"], self["output"])
        shared = {option.replace("-", "_"): self[option] for option, _kind, _text in _SHARED}
        feeds = {
            "feed": self["feed"],
            "feed_udp": self["feed-udp"],
            "feed_secret": self["feed-secret"],
        }
        try:
            self.config = GatewayConfig(mesh=self["mesh"] or "memory:", **feeds, **shared)
        except (TypeError, ValueError) as error:
            raise usage.UsageError(str(error)) from None


def _check_files(replay: str | None, output: str | None) -> None:
    """A recording that cannot be read, or an output that cannot be written, is one clear line
    at start (and the output is not emptied for a recording that is not there)."""
    if replay is not None and not (os.path.isfile(replay) and os.access(replay, os.R_OK)):
        raise usage.UsageError(f"--replay {replay}: no such readable file")
    if output is not None:
        folder = os.path.dirname(os.path.abspath(output))
        if os.path.isdir(output) or not os.access(folder, os.W_OK):
            raise usage.UsageError(f"--output {output}: cannot write there")


def makeService(options: Options) -> MultiService:
    from twisted.internet import reactor

    config = options.config
    mesh = open_mesh(config.mesh, reactor, streams=config.streams) if options["mesh"] else None
    publish: Publish | None = mesh.publish if mesh is not None else None
    output = None
    if options["output"]:
        # Open for the life of the process; the replay flushes it before it stops.
        output = OutputFile(open(options["output"], "wb"), publish)  # noqa: SIM115
        publish = output
    assert publish is not None  # postOptions: --mesh, or --replay with --output
    if options["replay"]:
        recording = open(options["replay"], "rb")  # noqa: SIM115 (read to its end by the replay)
        settled = output.settled if output is not None else None
        service, replay = replay_service(recording, publish, MarketSettings.of(config), settled)

        def done(_: object) -> None:
            engine = service.engine
            log.info(
                "replay done: {lines} lines, {published} publications, {failed} the mesh "
                "refused (not sent), events refused {refused}",
                lines=replay.lines,
                published=engine.published,
                failed=engine.publish_failures,
                refused=dict(engine.refused),
            )
            reactor.stop()

        replay.finished.addBoth(done)
    else:
        service = market_service(
            publish,
            MarketSettings.of(config),
            reactor,
            feed=options["feed"],
            feed_udp=options["feed-udp"],
            feed_secret=options["feed-secret"],
            book_url=options["book-url"],
            book_interval=options["book-interval"],
            simulate=options["simulate"],
        )
    if mesh is not None and IService.providedBy(mesh):
        mesh.setServiceParent(service)
    top = OneLineStartFailures({"--feed": options["feed"], "--feed-udp": options["feed-udp"]})
    service.setServiceParent(top)
    return top


def replay_service(
    recording: IO[bytes], publish: Publish, settings: MarketSettings, settled=None
) -> tuple[MarketService, Replay]:
    """The engine on an event-time clock fed by ``recording``; ``replay.finished`` fires
    once it is read and ``settled()`` (every publication answered) has fired."""
    clock = Clock()
    engine = MarketEngine(publish, settings, clock)
    source = FeedInput(engine.handle, engine.limits, engine.refused)
    service = MarketService(engine, source)
    replay = Replay(recording, source, clock, settled or (lambda: succeed(None)))
    replay.setServiceParent(service)
    return service, replay
