"""The internal API's body limit is enforced before the body is read (no temporary file for
an oversized one) and while it arrives, and each request has a deadline (issue 12, item 2):
real twisted.web parsing, on a StringTransport and a fake clock."""

import json

from prometheus_client import generate_latest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from exchange_stream.core.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.service import api_site
from exchange_stream.services.auth import StaticAuthenticator
from exchange_stream.services.memory_mesh import MemoryMesh


def channel_on(clock, **config):
    gateway = Gateway(
        GatewayConfig(max_publish_size=1000, handshake_timeout=2.0, auth_timeout=1.0, **config),
        reactor=clock,
        mesh=MemoryMesh(clock=clock),
        authenticator=StaticAuthenticator({}),
    )
    site = api_site(gateway)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    site.metrics = lambda: generate_latest(gateway.metrics.registry).decode()  # for the test
    return site, channel, transport


def head(length: bytes) -> bytes:
    return b"POST /v1/mesh/publish HTTP/1.1\r\nHost: api\r\nContent-Length: " + length + b"\r\n\r\n"


def answer(transport) -> tuple[bytes, dict]:
    status_line, _, rest = transport.value().partition(b"\r\n")
    return status_line, json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_body_announced_too_big_is_refused_before_a_byte_of_it_is_read():
    for length in (b"1001", b"100000000", b"99999999999999999999"):
        site, channel, transport = channel_on(Clock())
        channel.dataReceived(head(length))
        status, body = answer(transport)
        assert status == b"HTTP/1.1 413 Request Entity Too Large", length
        assert body == {"E": {"c": 103, "m": "body larger than 1000 bytes"}}
        assert transport.disconnecting and site.refused_bodies == 1
        assert channel.requests[0].content is None, "nothing spooled"
        # counted on /metrics, as a publish refused after reading it would be
        assert 'exchange_stream_publish_errors_total{code="103"} 1.0' in site.metrics()


def test_a_chunked_body_is_refused_as_it_passes_the_limit():
    _, channel, transport = channel_on(Clock())
    channel.dataReceived(
        b"POST /v1/mesh/publish HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 600
    channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert transport.value() == b"" and not transport.disconnecting
    channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert answer(transport)[0] == b"HTTP/1.1 413 Request Entity Too Large"
    assert transport.disconnecting


def test_a_body_within_the_limit_is_published():
    site, channel, transport = channel_on(Clock())
    body = json.dumps({"c": "ex:BTCUSDT@depth", "d": "{}"}).encode()
    channel.dataReceived(head(str(len(body)).encode()) + body)
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    assert site.refused_bodies == 0


def test_a_request_trickled_in_is_cut_at_its_deadline():
    clock = Clock()
    site, channel, transport = channel_on(clock)
    request = head(b"40") + b"{"
    for byte in request:  # 90 bytes, one each 50 ms: 4.5 s
        channel.dataReceived(bytes([byte]))
        clock.advance(0.05)
        if transport.disconnecting:
            break
    assert transport.disconnecting and site.slow_requests == 1
    assert 2.0 <= clock.seconds() <= 2.0 + 0.05, "cut at the deadline, from the first byte"


def test_keep_alive_requests_each_get_their_own_deadline():
    clock = Clock()
    site, channel, transport = channel_on(clock)
    body = json.dumps({"c": "ex:a", "d": "{}"}).encode()
    for _ in range(5):
        channel.dataReceived(head(str(len(body)).encode()) + body)
        clock.advance(1.5)  # 7.5 s in all, each request whole at once
    assert not transport.disconnecting and site.slow_requests == 0
    assert transport.value().count(b"HTTP/1.1 200 OK") == 5


def test_a_refused_body_is_answered_once_and_not_run():
    """413 and nothing after it: no '100 Continue' behind it, no second answer when the rest
    of a chunked body arrives (found by a review of the API's HTTP)."""
    site, channel, transport = channel_on(Clock())
    channel.dataReceived(head(b"5000").replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
    assert transport.value().count(b"HTTP/1.1") == 1 and b"100 Continue" not in transport.value()
    site, channel, transport = channel_on(Clock())
    chunked = b"POST /v1/mesh/publish HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n"
    channel.dataReceived(chunked + b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1") == 1  # the 413 only
    assert 'exchange_stream_publish_errors_total{code="103"} 1.0' in site.metrics()
