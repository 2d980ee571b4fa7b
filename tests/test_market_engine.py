"""The engine on a fake clock, the feeds on real sockets, and the demo end to end."""

import json
import time
from decimal import Decimal as D

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site

from exchange_stream.adapters.feed import FeedInput
from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.market.depth import checksum
from exchange_stream.core.market.events import Book, IndexPrice, PrivateEvent, Trade
from exchange_stream.core.publication import MeshUnavailable
from exchange_stream.market_service import Options as MarketOptions
from exchange_stream.market_service import makeService as make_market_service
from exchange_stream.market_service import market_service
from exchange_stream.services.market_engine import MarketEngine, MarketSettings
from exchange_stream.services.simulator import DEMO_UIDS
from tests.support import (
    MemoryClient,
    free_port,
    memory_gateway,
    start_gateway,
    stub_request,
    until,
)

T0 = 1_732_540_800.0  # seconds, 2024-11-25T13:20:00Z


class Published:
    """A publish callable that records what the engine sends."""

    def __init__(self, refuse=False):
        self.messages = []
        self.refuse = refuse

    def __call__(self, channel, publication, snapshot):
        if self.refuse:
            return fail(MeshUnavailable("down"))
        kept = json.loads(snapshot.payload) if snapshot else None
        self.messages.append((channel, json.loads(publication.payload), kept))
        return succeed(1)

    def on(self, channel):
        return [(message, kept) for name, message, kept in self.messages if name == channel]


def engine_on_clock(refuse=False):
    clock = Clock()
    clock.advance(T0)
    published = Published(refuse)
    engine = MarketEngine(published, MarketSettings(), clock)
    engine.startService()
    return engine, clock, published


def test_engine_turns_events_into_channels():
    engine, clock, published = engine_on_clock()
    now = int(T0 * 1000)
    engine.handle(Book("BTCUSDT", ((D("100"), D("1")),), ((D("101"), D("2")),), now))
    engine.handle(Trade("BTCUSDT", 2, D("100.5"), D("1"), "buy", now))
    engine.handle(Trade("BTCUSDT", 1, D("100.4"), D("1"), "sell", now))
    engine.handle(IndexPrice("BTCUSDT", "okx", D("100.2"), now))
    engine.handle(PrivateEvent("order", "1001", {"orderId": 7, "price": "100.5"}))
    assert published.on("ex:1001@order") == [
        ({"event": "@order", "data": {"orderId": 7, "price": "100.5"}}, None)
    ]
    clock.advance(0.1)
    (depth, kept), *_ = published.on("ex:BTCUSDT@depth")
    assert depth["event"] == "BTCUSDT@depth" and depth["data"]["type"] == "update"
    assert kept["data"]["type"] == "snapshot" and kept["data"]["seq"] == depth["data"]["seq"]
    (trades, no_snapshot), *_ = published.on("ex:BTCUSDT@trades")
    assert [t["id"] for t in trades["data"]] == [1, 2] and no_snapshot is None
    clock.advance(0.4)
    kline, kline_kept = published.on("ex:BTCUSDT@kline_1m")[-1]
    assert kline == kline_kept  # retained
    assert published.on("ex:BTCUSDT@kline")[-1][0]["event"] == "BTCUSDT@kline"
    assert kline["data"]["c"] == "100.5" and kline["data"]["n"] == 2
    assert published.on("ex:BTCUSDT@kline_1d")
    clock.advance(0.5)
    ticker, ticker_kept = published.on("ex:BTCUSDT@ticker")[-1]
    assert ticker == ticker_kept and ticker["data"]["last"] == "100.5"
    mark, _ = published.on("ex:BTCUSDT@markprice")[-1]
    assert mark["data"]["indexPrice"] == "100.20000000"
    count = len(published.messages)
    clock.advance(1.0)  # nothing changed: ticker and mark price are not sent again
    assert not published.on("ex:BTCUSDT@ticker")[1:]
    assert len(published.messages) == count


def test_bars_close_on_time_even_without_trades():
    engine, clock, published = engine_on_clock()
    engine.handle(Trade("BTCUSDT", 1, D("100"), D("1"), "buy", int(T0 * 1000)))
    clock.advance(60)
    closed = [m for m, _ in published.on("ex:BTCUSDT@kline_1m") if m["data"]["closed"]]
    assert len(closed) == 1 and closed[0]["data"]["t"] == int(T0 * 1000)
    assert published.on("ex:BTCUSDT@kline_1m")[-1][0]["data"]["t"] == int(T0 * 1000) + 60_000


def test_publish_failures_are_counted_and_the_engine_carries_on():
    engine, clock, published = engine_on_clock(refuse=True)
    engine.handle(Book("BTCUSDT", ((D("1"), D("1")),), (), int(T0 * 1000)))
    clock.advance(0.1)
    assert engine.publish_failures == 1
    published.refuse = False
    engine.handle(Book("BTCUSDT", ((D("1"), D("2")),), (), int(T0 * 1000)))
    clock.advance(0.1)
    assert published.on("ex:BTCUSDT@depth")[0][0]["data"]["seq"] == 2  # a gap clients see


def test_feed_counts_malformed_events_and_keeps_going():
    events = []
    feed = FeedInput(events.append)
    for raw in (b"garbage", b'{"type":"trade"}', b'{"type":"order","uid":1,"data":{}}'):
        feed.raw(raw, "test")
    assert (feed.received, feed.malformed, len(events)) == (3, 2, 1)


class Lines(Protocol):
    pass


@pytest_twisted.ensureDeferred
async def test_tcp_udp_and_book_url_feeds_on_real_sockets():
    class BookSource(Resource):
        isLeaf = True

        def render_GET(self, request):
            now = int(time.time() * 1000)
            book = {"symbol": "ETHUSDT", "bids": [["3400.1", "2"]], "asks": [], "ts": now}
            return json.dumps([book]).encode()

    book_port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Site(BookSource())
    )
    tcp_port, udp_port = free_port(), free_port()
    published = Published()
    service = market_service(
        published,
        MarketSettings(),
        reactor,
        feed=f"tcp:{tcp_port}:interface=127.0.0.1",
        feed_udp=f"127.0.0.1:{udp_port}",
        book_url=f"http://127.0.0.1:{book_port.getHost().port}/book",
        book_interval=0.05,
    )
    service.startService()
    try:
        engine = TCP4ClientEndpoint(reactor, "127.0.0.1", tcp_port)
        writer = await engine.connect(_factory(Lines))
        writer.transport.write(
            b"not json\n"
            b'{"type":"order","uid":1001,"data":{"id":1}}\n'
            + b"x" * (5 * 1024 * 1024)  # an overlong line is skipped ...
            + b'\n{"type":"order","uid":1001,"data":{"id":2}}\n'  # ... and the feed goes on
        )
        sender = DatagramProtocol()
        udp = reactor.listenUDP(0, sender, interface="127.0.0.1")
        sender.transport.write(b'{"type":"balance","uid":1002,"data":{}}', ("127.0.0.1", udp_port))
        sender.transport.write(b"{broken", ("127.0.0.1", udp_port))
        for _ in range(100):
            await deferLater(reactor, 0.05, lambda: None)
            if len(published.on("ex:1001@order")) == 2 and published.on("ex:ETHUSDT@depth"):
                break
        assert [m["data"]["id"] for m, _ in published.on("ex:1001@order")] == [1, 2]
        assert published.on("ex:1002@balance")
        assert published.on("ex:ETHUSDT@depth")[0][0]["data"]["bids"] == [["3400.1", "2"]]
        assert service.input.malformed >= 3  # not json, the long line, the broken datagram
        writer.transport.loseConnection()
        await udp.stopListening()
    finally:
        await service.stopService()
        await book_port.stopListening()


def _factory(protocol):
    from twisted.internet.protocol import Factory

    return Factory.forProtocol(protocol)


class BookKeeper:
    """The client recipe of docs/market.md: snapshot, then diffs by prevSeq, checksum."""

    def __init__(self):
        self.seq = 0  # before any snapshot: the empty book; the first diff (prevSeq 0) is whole
        self.bids, self.asks = {}, {}
        self.verified = 0

    def apply(self, data):
        if data["type"] == "snapshot":
            self.seq = data["seq"]
            self.bids = dict(map(tuple, data["bids"]))
            self.asks = dict(map(tuple, data["asks"]))
        else:
            if data["seq"] <= self.seq:
                return  # already in the snapshot
            assert data["prevSeq"] == self.seq, "gap"
            self.seq = data["seq"]
            for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
                for price, qty in levels:
                    if D(qty) == 0:
                        side.pop(price, None)
                    else:
                        side[price] = qty
        bids = sorted(self.bids.items(), key=lambda level: D(level[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda level: D(level[0]))
        assert checksum([list(b) for b in bids], [list(a) for a in asks]) == data["checksum"]
        self.verified += 1
        return len(bids), len(asks)


class DemoWatcher:
    """What a demo client checks in each message: the book by the docs' recipe, trade ids
    only going up, private events only its own."""

    def __init__(self, uid=None):
        self.keeper, self.seen, self.last_trade, self.levels = BookKeeper(), set(), 0, None
        self.uid = uid

    def check(self, message):
        self.seen.add(message["event"])
        if message["event"] == "BTCUSDT@depth":
            self.levels = self.keeper.apply(message["data"])
        elif message["event"] == "BTCUSDT@trades":
            ids = [trade["id"] for trade in message["data"]]
            assert ids == sorted(ids) and ids[0] > self.last_trade
            self.last_trade = ids[-1]
        elif message["event"] == "@balance":
            assert message["data"]["uid"] == self.uid


def test_demo_keeps_a_consistent_book_for_ten_seconds(clock):
    """The demo gateway (simulator, engine, hub, clients' connections) for ten seconds of its
    clock: every depth checksum right, 50+ levels a side, trade ids increasing, the ticker,
    each demo user's orders and balances to that user only, the engine's figures in /metrics."""
    clock.advance(T0)
    gateway = memory_gateway(clock, GatewayConfig(demo=True, ping_interval=0), authenticator=None)
    watchers = {}
    for uid in DEMO_UIDS:  # one client per demo user: private events are random, a few a second
        client = MemoryClient(gateway, uid)
        channels = ["@order", "@balance"]
        if uid == 1003:
            channels += ["BTCUSDT@depth", "BTCUSDT@trades", "BTCUSDT@ticker"]
        assert client.request({"op": "auth", "token": f"demo-{uid}"}) == [{"result": True}]
        assert client.request({"op": "subscribe", "channels": channels}) == [{"result": True}]
        watchers[client] = DemoWatcher(uid)
    for _ in range(200):
        clock.advance(0.05)
        for client, watcher in watchers.items():
            for message in client.messages():
                watcher.check(message)
    book = next(watcher for watcher in watchers.values() if watcher.uid == 1003)
    assert book.keeper.verified >= 80  # ten diffs a second
    assert min(book.levels) >= 50  # a realistic book: 50+ levels a side
    assert {"BTCUSDT@depth", "BTCUSDT@trades", "BTCUSDT@ticker"} <= book.seen
    assert {"@order", "@balance"} <= set().union(*(w.seen for w in watchers.values()))
    _, _, body = stub_request(StubTreq(gateway.api_resource()), "GET", "http://api/metrics")
    metrics = {line.split()[0]: float(line.split()[1]) for line in body.decode().splitlines()
               if line.startswith("exchange_stream_market")}  # fmt: skip
    assert metrics["exchange_stream_market_events_total"] > 1000
    assert metrics["exchange_stream_market_published_total"] > 100
    assert metrics["exchange_stream_market_malformed_events_total"] == 0
    # The simulator's events all pass the ingestion stage; a bad one is counted by reason.
    assert not [name for name in metrics if name.startswith("exchange_stream_market_refused")]
    gateway.market.input.raw(b'{"type":"index","symbol":"BTCUSDT","source":"x","price":"1",'
                             b'"ts":1}', "test")  # fmt: skip
    _, _, body = stub_request(StubTreq(gateway.api_resource()), "GET", "http://api/metrics")
    assert 'exchange_stream_market_refused_total{reason="late"} 1.0' in body.decode()


@pytest_twisted.ensureDeferred
async def test_the_demo_streams_a_consistent_book_over_a_real_socket():
    """``--demo`` on real sockets: the snapshot, then diffs whose checksums hold, and trades."""
    running = await start_gateway(GatewayConfig(demo=True))
    try:
        client = await running.connect()
        channels = ["BTCUSDT@depth", "BTCUSDT@trades"]
        assert await client.request({"op": "subscribe", "channels": channels}) == {"result": True}
        watcher = DemoWatcher()
        while watcher.keeper.verified < 3 or "BTCUSDT@trades" not in watcher.seen:
            watcher.check(await client.next())
    finally:
        await running.stop()


async def trades_history_of_exchange_market(redis_server, history_types: str) -> int | None:
    """Run ``twistd exchange-market --simulate --history-types ... --history-size 5`` until
    10 BTCUSDT trades went out; the length of their channel's history (None: it has none)."""
    redis = redis_server.client()
    redis.flushall()
    listener = redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("ex:BTCUSDT@trades")
    options = MarketOptions()
    argv = ["--mesh", redis_server.url, "--simulate", "--history-types", history_types]
    options.parseOptions([*argv, "--history-size", "5"])
    service = make_market_service(options)
    heard = []

    def ten_trades_heard() -> bool:
        while message := listener.get_message():
            heard.append(message)
        return len(heard) >= 10

    service.startService()
    try:
        await until(ten_trades_heard, timeout=20)
    finally:
        await service.stopService()
        listener.close()
    history = b"es:{ex:BTCUSDT@trades}:stream"
    return redis.xlen(history) if redis.exists(history) else None


@pytest_twisted.ensureDeferred
async def test_exchange_market_keeps_the_history_its_options_name(redis_server):
    """The standalone engine writes the history of the channels it publishes as its
    ``--history-types`` and ``--history-size`` say (they must match the gateways')."""
    assert await trades_history_of_exchange_market(redis_server, "order,trades") == 5
    assert await trades_history_of_exchange_market(redis_server, "order") is None


def test_exchange_market_refuses_a_history_size_of_zero():
    with pytest.raises(usage.UsageError, match="history_size"):
        MarketOptions().parseOptions(["--mesh", "memory:", "--simulate", "--history-size", "0"])


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--replay", "r.jsonl"], "somewhere to publish"),
        (["--replay", "r.jsonl", "--output", "o", "--simulate"], "only input"),
        (["--mesh", "memory:", "--simulate", "--symbol-limits", "BTC=1"], "SYMBOL=INTEGER"),
        (["--mesh", "memory:", "--simulate", "--max-late-ms", "0"], "max_late_ms"),
    ],
)
def test_exchange_market_options_say_what_is_wrong(argv, complaint):
    with pytest.raises(usage.UsageError, match=complaint):
        MarketOptions().parseOptions(argv)


def test_the_gateways_market_bounds_come_from_its_options():
    from exchange_stream.options import Options as GatewayOptions

    options = GatewayOptions()
    options.parseOptions(["--demo", "--max-late-ms", "5000", "--symbol-limits", "SHIBUSDT=12:18"])
    settings = MarketSettings.of(options.config)
    assert settings.max_late_ms == 5000 and settings.limits.of("SHIBUSDT").integer_digits == 12
    assert settings.limits.of("BTCUSDT").integer_digits == 15


def test_replay_files_that_cannot_be_used_are_one_clear_line(tmp_path):
    kept = tmp_path / "kept.jsonl"
    kept.write_bytes(b"12345")
    with pytest.raises(usage.UsageError, match="no such readable file"):
        MarketOptions().parseOptions(["--replay", str(tmp_path / "none"), "--output", str(kept)])
    assert kept.read_bytes() == b"12345", "the output is not emptied"
    recording = tmp_path / "r.jsonl"
    recording.write_bytes(b"")
    with pytest.raises(usage.UsageError, match="cannot write there"):
        MarketOptions().parseOptions(["--replay", str(recording), "--output", "/no/such/dir/x"])
