"""The market feeds as the docs write them are not open to the network (docs/market.md,
"Running it"): loopback unless an interface is named, and then a shared secret, on real
sockets."""

import json
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import deferLater
from twisted.python import usage

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.feeds import check_feeds, feed_endpoint, feed_udp_address
from exchange_stream.market_service import Options as MarketOptions
from exchange_stream.market_service import market_service
from exchange_stream.options import Options
from exchange_stream.services.market_engine import MarketSettings
from tests.support import free_port, until


def order_line(order_id: int) -> bytes:
    return json.dumps({"type": "order", "uid": 1001, "data": {"orderId": order_id}}).encode()


def test_feeds_listen_on_loopback_unless_an_interface_is_named():
    assert feed_endpoint("tcp:7001") == "tcp:7001:interface=127.0.0.1"
    assert feed_endpoint("tcp:7001:interface=0.0.0.0") == "tcp:7001:interface=0.0.0.0"
    assert feed_endpoint("unix:/run/feed.sock") == "unix:/run/feed.sock"
    assert feed_endpoint("tcp6:7001") == "tcp6:7001:interface=\\:\\:1"  # not "::", all of them
    assert feed_udp_address("7002") == ("127.0.0.1", 7002)
    assert feed_udp_address("10.0.0.5:7002") == ("10.0.0.5", 7002)


@pytest.mark.parametrize(
    "argv",
    [
        ["--feed", "tcp:7001:interface=0.0.0.0"],
        ["--feed-udp", "0.0.0.0:7002"],
        ["--feed", "tcp:7001:interface=10.0.0.5", "--feed-secret", ""],
        ["--feed", "tcp6:7001:interface=\\:\\:"],
        ["--feed", "systemd:domain=INET:index=0"],  # anywhere, for all we know
    ],
)
def test_a_feed_beyond_this_host_needs_a_secret(argv):
    with pytest.raises(usage.UsageError, match="--feed-secret"):
        Options().parseOptions(argv)
    with pytest.raises(usage.UsageError, match="--feed-secret"):
        MarketOptions().parseOptions(["--mesh", "memory:", *argv])
    check_feeds("tcp:7001", "7002", None)  # loopback: no secret needed


def test_the_defaults_need_no_secret():
    assert GatewayConfig(feed="tcp:7001", feed_udp="7002").feed_secret is None


def started(secret=None, interface=None):
    published = []

    def publish(channel, publication, snapshot=None):
        published.append((channel, json.loads(publication.payload)))
        return succeed(1)

    tcp, udp = free_port(), free_port()
    feed = f"tcp:{tcp}" + (f":interface={interface}" if interface else "")
    feed_udp = f"{interface}:{udp}" if interface else str(udp)
    service = market_service(
        publish, MarketSettings(), reactor, feed=feed, feed_udp=feed_udp, feed_secret=secret
    )
    service.startService()
    return service, published, tcp, udp


def this_hosts_address() -> str:
    """An address of this host other than loopback (the one its default route leaves from)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("10.255.255.255", 1))  # no packet is sent: UDP connect only picks a route
    address = probe.getsockname()[0]
    probe.close()
    assert not address.startswith("127."), "this test needs an address beyond loopback"
    return address


@pytest_twisted.ensureDeferred
async def test_feeds_as_the_docs_write_them_cannot_be_reached_from_other_hosts():
    service, published, tcp, udp = started()
    outside = this_hosts_address()
    try:
        await until(lambda: _accepts(tcp))
        with pytest.raises(OSError):
            socket.create_connection((outside, tcp), timeout=2)
        datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        datagrams.sendto(order_line(1), (outside, udp))
        datagrams.sendto(order_line(2), ("127.0.0.1", udp))
        await until(lambda: len(published) >= 1)
        await deferLater(reactor, 0.2, lambda: None)
        assert [p[1]["data"]["orderId"] for p in published] == [2]
        datagrams.close()
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_with_a_secret_only_writers_who_send_it_are_heard():
    service, published, tcp, udp = started(secret="s3cr3t", interface="0.0.0.0")
    try:
        await until(lambda: _accepts(tcp))
        stranger = socket.create_connection(("127.0.0.1", tcp))
        stranger.sendall(order_line(1) + b"\n")  # no AUTH line: closed
        engine = socket.create_connection(("127.0.0.1", tcp))
        engine.sendall(b"AUTH s3cr3t\n" + order_line(2) + b"\n")
        datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        datagrams.sendto(order_line(3), ("127.0.0.1", udp))  # no secret: dropped
        datagrams.sendto(b"s3cr3t\n" + order_line(4), ("127.0.0.1", udp))
        datagrams.sendto(b"s3cr3t\r\n" + order_line(5), ("127.0.0.1", udp))
        await until(lambda: len(published) >= 3)
        await until(lambda: service.input.refused["unauthorised"] == 2)
        assert sorted(p[1]["data"]["orderId"] for p in published) == [2, 4, 5]
        stranger.settimeout(5)
        assert stranger.recv(100) == b"", "the stranger's connection was closed"
        for sock in (stranger, engine, datagrams):
            sock.close()
    finally:
        await service.stopService()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        time.sleep(0.01)
        return False


@pytest_twisted.ensureDeferred
async def test_a_tcp6_feed_without_an_interface_is_on_loopback_too():
    published = []
    port = free_port()
    service = market_service(
        lambda c, p, s=None: published.append(c) or succeed(1),
        MarketSettings(),
        reactor,
        feed=f"tcp6:{port}",
    )
    service.startService()
    try:
        await until(lambda: _accepts_on("::1", port, socket.AF_INET6))
        assert not _accepts_on(this_hosts_address(), port, socket.AF_INET)
    finally:
        await service.stopService()


def _accepts_on(host: str, port: int, family: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            probe.connect((host, port))
        return True
    except OSError:
        time.sleep(0.01)
        return False


def test_a_connection_that_never_sends_its_auth_line_is_closed():
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from exchange_stream.adapters.feed import FeedInput, LineFeedFactory

    clock = Clock()
    feed = FeedInput(lambda event: None)
    factory = LineFeedFactory(feed, "s3cr3t", clock)
    protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 4000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    clock.advance(9.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting and feed.refused["unauthorised"] == 1
    answered = factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 4001))
    answered.makeConnection(StringTransport())
    answered.dataReceived(b"AUTH s3cr3t\n")
    clock.advance(60)
    assert not answered.transport.disconnecting


def test_trade_ids_stay_within_what_javascript_holds_exactly():
    from exchange_stream.core.market.events import MalformedEvent, parse_event

    line = '{"type":"trade","symbol":"B","id":%d,"price":"1","qty":"1","side":"buy","ts":1}'
    assert parse_event(line % (2**53 - 1)).id == 2**53 - 1
    with pytest.raises(MalformedEvent, match="JavaScript"):
        parse_event(line % 2**53)


def test_a_udp_feed_host_name_is_one_line_not_a_traceback():
    """localhost is the loopback interface; another name is refused at start, not by
    Twisted's resolver later (a 42-line traceback)."""
    from exchange_stream.core.feeds import feed_udp_address

    assert feed_udp_address("localhost:7002") == ("127.0.0.1", 7002)
    with pytest.raises(ValueError, match="must be an IP address"):
        feed_udp_address("feeds.example.com:7002")


def test_bytes_before_the_auth_line_are_not_held_past_its_length():
    """A writer that has not authenticated cannot make the engine buffer a line of up to
    4 MiB: past the AUTH line's length without a newline it is refused and closed."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from exchange_stream.adapters.feed import FeedInput, LineFeedFactory

    feed = FeedInput(lambda event: None)
    protocol = LineFeedFactory(feed, "s3cr3t", Clock()).buildProtocol(
        IPv4Address("TCP", "10.0.0.9", 4000)
    )
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"AUTH s3cr3")  # a prefix of the right line: waited for
    assert not transport.disconnecting
    protocol.dataReceived(b"x" * 64)
    assert transport.disconnecting and feed.refused["unauthorised"] == 1


def test_knocking_on_a_feed_without_its_secret_is_counted_not_logged_line_by_line():
    """A scanner that connects a thousand times without the AUTH line costs one warning per
    ``log_every`` and no connected / disconnected lines; an admitted writer is logged."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.logger import formatEvent, globalLogPublisher

    from exchange_stream.adapters.feed import FeedInput, LineFeedFactory

    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "exchange_stream.adapters.feed":
            lines.append(formatEvent(event))

    feed = FeedInput(lambda event: None)
    feed.log_every = 100
    factory = LineFeedFactory(feed, "s3cr3t", Clock())
    globalLogPublisher.addObserver(observe)
    try:
        for port in range(250):
            protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 4000 + port))
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(b"GET / HTTP/1.1\r\n")
            protocol.connectionLost()
        assert feed.refused["unauthorised"] == 250
        assert len(lines) == 3 and all("AUTH" in line for line in lines)  # 1st, 101st, 201st
        writer = factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 9000))
        writer.makeConnection(StringTransport())
        writer.dataReceived(b"AUTH s3cr3t\n")
        writer.connectionLost()
        assert len(lines) == 5
        assert "matching engine connected from" in lines[3] and lines[4].endswith("disconnected")
    finally:
        globalLogPublisher.removeObserver(observe)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_book_url_that_answers_too_much_is_refused_and_not_kept(chunked):
    """``--book-url`` is read within ``BookPoller.MAX_ANSWER`` bytes (announced or arriving):
    past it the poll is counted as failed and the next poll goes on."""
    from treq.testing import StubTreq
    from twisted.internet.task import Clock
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET

    from exchange_stream.adapters.feed import BookPoller, FeedInput

    book = json.dumps({"symbol": "BTCUSDT", "bids": [["1", "1"]], "asks": [["2", "1"]], "ts": 1})

    class Books(Resource):
        isLeaf = True
        size = 0

        def render_GET(self, request):
            if not self.size:
                return book.encode()
            body = book.encode() + b" " * self.size  # valid JSON, but too much of it
            if chunked:  # no Content-Length: counted as it arrives
                request.write(body)
                request.finish()
                return NOT_DONE_YET
            return body

    resource = Books()
    events = []
    feed = FeedInput(events.append)
    poller = BookPoller("http://books.test/book", feed, StubTreq(resource), Clock())
    poller.MAX_ANSWER = 1000
    resource.size = 1001
    poller.poll()
    assert poller.failures == 1 and feed.refused["malformed"] == 1 and events == []
    resource.size = 0
    poller.poll()
    assert poller.failures == 1 and len(events) == 1
