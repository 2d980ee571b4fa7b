"""The API port's lean HTTP/1.1 (adapters/http_api.py), on real sockets: what it answers is
what the twisted.web site answers; pipelined requests are answered in order; keep-alive,
Connection: close, Expect: 100-continue, the body limit before and while reading, malformed
requests; any other first request is the site's, with what was read of it."""

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol

from exchange_stream.core.config import GatewayConfig
from exchange_stream.service import api_site
from tests.support import LOCAL, start_gateway


class Raw(Protocol):
    """Writes ``data`` once connected and keeps what comes back until the server closes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.received, self.closed = data, b"", Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(self.received)


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Everything the server sends for ``data`` until it closes (or ``timeout``)."""
    raw = Raw(data)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(lambda: raw))
    reactor.callLater(timeout, lambda: raw.transport.loseConnection())
    return await raw.closed


def answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP answers in ``data``: (status, headers lower-cased, body), in order."""
    found = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        if status == 100:
            found.append((status, headers, b""))
            continue
        length = int(headers.get("content-length", "0"))
        found.append((status, headers, data[:length]))
        data = data[length:]
    return found


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: api", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def publish(channel: str, data: str = "{}") -> bytes:
    return post("/v1/mesh/publish", json.dumps({"c": channel, "d": data}).encode())


CLOSE = b"GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_pipelined_publishes_are_answered_in_order_and_delivered():
    running = await start_gateway(GatewayConfig(ping_interval=0))
    try:
        client = await running.connect()
        await client.request({"op": "subscribe", "channel": "BTCUSDT@depth"})
        requests = b"".join(publish("ex:BTCUSDT@depth", json.dumps({"n": n})) for n in range(100))
        got = answers(await exchange(running.api_port, requests + CLOSE))
        assert [status for status, _, _ in got] == [200] * 101
        assert all(json.loads(body)["r"]["s"] == 1 for _, _, body in got[:100])
        assert got[-1][1]["connection"] == "close"  # and the server closed: exchange returned
        for n in range(100):
            assert json.loads((await client.next_raw())[0])["n"] == n
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_the_lean_answers_are_the_sites_answers():
    """The same requests through the lean protocol and through twisted.web (the site an
    embedding application mounts): the same status and the same body."""
    running = await start_gateway(GatewayConfig(ping_interval=0, api_token="s3cret"))
    site_port = await serverFromString(reactor, LOCAL).listen(api_site(running.gateway))
    token = "Authorization: Bearer s3cret"
    cases = [
        post("/v1/mesh/publish", b'{"c":"ex:BTCUSDT@depth","d":"{}"}', token),
        post("/v1/mesh/publish", b'{"c":"ex:BTCUSDT@depth","d":"{}"}'),  # no token: 401
        post("/v1/mesh/publish", b'{"c":"ex:BTCUSDT@depth"}', token),  # no d: 400
        post("/v1/mesh/publish", b"not json", token),
        post("/v1/mesh/publish", b'[{"c":"ex:A@depth","d":"1"},{"c":"ex:B@depth","d":"2"}]', token),
        post("/v1/mesh/kick", b'{"uid":1001}', token),
        post("/v1/mesh/kick", b'{"uid":"@x"}', token),
        b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n",
    ]
    try:
        for request in cases:
            lean = answers(await exchange(running.api_port, request + CLOSE))[0]
            web = answers(await exchange(site_port.getHost().port, request + CLOSE))[0]
            assert (lean[0], lean[2]) == (web[0], web[2]), request
            assert lean[1]["content-type"] == web[1]["content-type"]
    finally:
        await site_port.stopListening()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_expect_100_continue_and_the_body_limit():
    running = await start_gateway(GatewayConfig(ping_interval=0, max_publish_size=100))
    try:
        body = b'{"c":"ex:BTCUSDT@depth","d":"{}"}'
        got = answers(
            await exchange(
                running.api_port, post("/v1/mesh/publish", body, "Expect: 100-continue") + CLOSE
            )
        )
        assert [status for status, _, _ in got] == [100, 200, 200]
        announced = post("/v1/mesh/publish", b"", "Content-Length: 99999999999999999999")
        got = answers(
            await exchange(running.api_port, announced.replace(b"Content-Length: 0\r\n", b""))
        )
        assert got[0][0] == 413 and json.loads(got[0][2])["E"]["c"] == 103  # then closed
        chunked = (
            b"POST /v1/mesh/publish HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"40\r\n"
            + b"x" * 64
            + b"\r\n"
            + b"40\r\n"
            + b"x" * 64
            + b"\r\n0\r\n\r\n"
        )
        got = answers(await exchange(running.api_port, chunked))
        assert [status for status, _, _ in got] == [413]
        metrics = "\n".join(await running.metrics())
        assert 'exchange_stream_publish_errors_total{code="103"} 2.0' in metrics
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_other_first_requests_are_the_sites_and_later_ones_404():
    running = await start_gateway(GatewayConfig(ping_interval=0))
    try:
        head = await exchange(
            running.api_port, b"HEAD /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 200 OK") and b"twisted" in head.lower()  # the site's
        missing = await exchange(
            running.api_port, b"GET /nope HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
        )
        assert missing.startswith(b"HTTP/1.1 404")
        later = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\nGET /nope HTTP/1.1\r\nHost: api\r\n\r\n"
        got = answers(await exchange(running.api_port, later + CLOSE))
        assert [status for status, _, _ in got] == [200, 404, 200]
        bad = await exchange(running.api_port, b"GET /healthz HTTP/1.1\r\nHost api\r\n\r\n")
        assert answers(bad)[0][0] == 400  # malformed: answered, then closed
    finally:
        await running.stop()


def lean_connection(clock, **config):
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from exchange_stream.service import api_factory
    from exchange_stream.services.memory_mesh import MemoryMesh
    from tests.support import memory_gateway

    gateway = memory_gateway(
        clock, GatewayConfig(ping_interval=0, handshake_timeout=5.0, **config),
        mesh=MemoryMesh(clock=clock),
    )  # fmt: skip
    protocol = api_factory(gateway).buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_request_trickled_in_is_cut_at_its_deadline_and_a_whole_one_is_not():
    from twisted.internet.task import Clock

    clock = Clock()
    protocol, transport = lean_connection(clock)
    request = publish("ex:BTCUSDT@depth")
    for byte in request[:-1]:  # a byte every 0.04 s: 4.4 s so far
        protocol.dataReceived(bytes([byte]))
        clock.advance(0.04)
    assert not transport.disconnecting
    protocol.dataReceived(request[-1:])  # whole within 5 s: answered, the deadline gone
    clock.advance(0)
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    clock.advance(10)
    assert not transport.disconnecting
    protocol.dataReceived(request[:10])  # the next one starts its own deadline
    clock.advance(5.01)
    assert transport.disconnecting  # aborted


def test_the_first_request_trickled_is_cut_five_seconds_after_its_first_byte():
    """The deadline runs from the connection's first byte, through the first line (read
    before the parser exists) and the headers: not restarted when parsing begins."""
    from twisted.internet.task import Clock

    clock = Clock()
    protocol, transport = lean_connection(clock)
    request = publish("ex:BTCUSDT@depth")
    step = 6.0 / len(request)  # the whole request would take 6 s
    for byte in request[:-1]:
        if transport.disconnecting:
            break
        protocol.dataReceived(bytes([byte]))
        clock.advance(step)
    assert transport.disconnecting and clock.seconds() <= 5.0 + step


def test_an_idle_connection_is_closed_after_a_minute_and_a_busy_one_is_not():
    from twisted.internet.task import Clock

    clock = Clock()
    protocol, transport = lean_connection(clock)
    clock.advance(59)
    assert not transport.disconnecting
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n")
    clock.advance(59)  # idle again from its answer
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting  # closed, not aborted: its answers went out first


def test_nothing_after_a_closing_answer_is_run():
    """A 413 (or Connection: close) answered: a publish behind it in the same read is not
    run (found by an outside review: it was delivered although the client saw only 413)."""
    from twisted.internet.task import Clock

    clock = Clock()
    too_big = post("/v1/mesh/publish", b"x" * 101)
    closing = b"GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
    for first in (too_big, closing):
        protocol, transport = lean_connection(clock, max_publish_size=100)
        protocol.dataReceived(first + publish("ex:BTCUSDT@depth", "{}"))
        clock.advance(0)
        assert len(answers(transport.value())) == 1
        *_, metrics = protocol.factory.api.metrics()
        assert b"exchange_stream_messages_published_total 0.0" in metrics


def test_a_head_too_large_is_431_and_trailers_are_not_headers():
    from twisted.internet.task import Clock

    clock = Clock()
    protocol, transport = lean_connection(clock)
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Big: ")
    for _ in range(40):
        protocol.dataReceived(b"a" * 1024)  # a header line that never ends
    clock.advance(0)
    assert answers(transport.value())[0][0] == 431 and transport.disconnecting
    protocol, transport = lean_connection(clock, api_token="s3cret")
    chunked = (
        b"POST /v1/mesh/publish HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"21\r\n" + b'{"c":"ex:BTCUSDT@depth","d":"{}"}' + b"\r\n"
        b"0\r\nAuthorization: Bearer s3cret\r\n\r\n"
    )
    protocol.dataReceived(chunked)
    clock.advance(0)
    assert answers(transport.value())[0][0] == 401  # the token in a trailer does not count


@pytest_twisted.ensureDeferred
async def test_a_head_request_gets_headers_and_no_body_and_no_log_line():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    running = await start_gateway(GatewayConfig(ping_interval=0))
    try:
        head = b"HEAD /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
        got = await exchange(running.api_port, head)  # a first request: twisted.web's
        assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n")
    finally:
        await running.stop()
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "eat it" in str(e.get("log_format", ""))]


def test_an_answer_that_raises_is_a_500_and_the_connection_goes_on(monkeypatch):
    """A bug while answering (here /metrics raising) is logged and answered 500, like
    twisted.web's processingFailed; the requests pipelined behind it are answered."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    clock = Clock()
    protocol, transport = lean_connection(clock)

    def broken():
        raise RuntimeError("a collector broke")

    monkeypatch.setattr(protocol.factory.api, "metrics", broken)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        protocol.dataReceived(
            b"GET /metrics HTTP/1.1\r\nHost: api\r\n\r\nGET /healthz HTTP/1.1\r\nHost: api\r\n\r\n"
        )
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [status for status, _, _ in answers(transport.value())] == [500, 200]
    assert not transport.disconnecting
    assert any(e.get("log_failure") and "collector" in str(e["log_failure"].value) for e in logged)
    publishing = Deferred()
    monkeypatch.setattr(protocol.factory.api, "publish", lambda *_: publishing)
    transport.clear()
    protocol.dataReceived(publish("ex:BTCUSDT@depth"))
    publishing.errback(RuntimeError("a publisher bug"))
    clock.advance(0)
    assert [status for status, _, _ in answers(transport.value())] == [500]


def test_an_idle_timeout_while_an_answer_is_pending_waits_for_it(monkeypatch):
    """The idle timer that runs out while a publish is still being answered is armed again:
    the connection is closed a minute after the answer, not kept for ever."""
    from twisted.internet.task import Clock

    clock = Clock()
    protocol, transport = lean_connection(clock)
    publishing = Deferred()
    monkeypatch.setattr(protocol.factory.api, "publish", lambda *_: publishing)
    protocol.dataReceived(publish("ex:BTCUSDT@depth"))
    clock.advance(61)  # idle ran out with the answer pending: not closed
    assert not transport.disconnecting
    publishing.callback((200, {"E": None, "r": {"s": 0, "f": 0}}))
    clock.advance(0)
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    clock.advance(61)
    assert transport.disconnecting
