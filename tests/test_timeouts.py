"""The gateway's timeouts on a fake clock: the handshake, the auth back end and the login's
expiry, through the real protocol (bytes on a StringTransport, HTTP through StubTreq)."""

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from exchange_stream.core.config import GatewayConfig
from exchange_stream.service import websocket_site
from tests.support import AuthBackend, MemoryClient, memory_gateway

HANDSHAKING = GatewayConfig(auth_timeout=0.2, handshake_timeout=0.5, ping_interval=0)


def clocked_site(gateway):
    """The WebSocket port's site with its HTTP timeouts on the gateway's clock."""
    site = websocket_site(gateway)
    site.reactor = gateway.reactor  # websocket_site leaves twisted.web on the global reactor
    return site


def test_a_connection_that_never_handshakes_is_closed_at_the_handshake_timeout(clock):
    site = clocked_site(memory_gateway(clock, HANDSHAKING))
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /exchange-stream HTTP/1.1\r\n")  # and then nothing
    clock.advance(0.49)
    assert not transport.disconnecting
    clock.advance(0.02)
    assert transport.disconnecting


def test_an_open_connection_outlives_the_handshake_timeout(clock):
    """The HTTP idle timeout guards the handshake only, not the WebSocket after it."""
    gateway = memory_gateway(clock, HANDSHAKING)
    client = MemoryClient(gateway, site=clocked_site(gateway))
    assert client.status == 101
    clock.advance(60)
    assert not client.lost
    assert client.request({"op": "ping", "id": 1})[0]["op"] == "pong"


def test_a_slow_auth_back_end_times_out_with_code_6_and_others_are_served(clock):
    backend = AuthBackend(clock)
    backend.delay = 10.0
    config = GatewayConfig(auth_url="http://auth/", auth_timeout=0.3, ping_interval=0)
    gateway = memory_gateway(clock, config, http=StubTreq(backend))
    waiting, other = MemoryClient(gateway, 5555), MemoryClient(gateway, 5556)
    assert waiting.request({"op": "auth", "token": "token-1001"}) == []
    assert other.request({"op": "ping", "id": 1})[0]["op"] == "pong"  # not held up
    clock.advance(0.29)
    assert waiting.messages() == []
    clock.advance(0.02)
    assert waiting.messages() == [{"code": 6, "msg": "Auth unavailable"}]
    assert waiting.request({"op": "list"}) == [{"result": []}]  # the connection carries on


def test_the_login_ends_when_the_auth_back_end_said_it_expires(clock):
    """``exp`` from the back end (epoch seconds) ends the login then: private subscriptions
    go, with a notice naming them; public ones stay."""
    clock.advance(1_732_540_000)
    backend = AuthBackend(clock)
    backend.user("short", 1001, expires=clock.seconds() + 60)
    config = GatewayConfig(auth_url="http://auth/websocket_auth", ping_interval=0)
    client = MemoryClient(memory_gateway(clock, config, http=StubTreq(backend)))
    assert client.request({"op": "auth", "token": "short"}) == [{"result": True}]
    subscribe = {"op": "subscribe", "channels": ["@order", "BTCUSDT@depth"]}
    assert client.request(subscribe) == [{"result": True}]
    clock.advance(59)
    assert client.messages() == []
    clock.advance(1)
    assert client.messages() == [
        {"event": "notice", "data": {"type": "auth_expired", "channels": ["@order"]}}
    ]
    assert client.request({"op": "list"}) == [{"result": ["BTCUSDT@depth"]}]


def test_a_handshake_trickled_a_byte_at_a_time_is_cut_at_the_handshake_timeout(clock):
    """Each byte would restart an idle timeout; the whole request has a deadline (slowloris)."""
    site = clocked_site(memory_gateway(clock, HANDSHAKING))
    site.clock = clock
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    request = b"GET /exchange-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    for byte in request[:4]:
        channel.dataReceived(bytes([byte]))
        clock.advance(0.1)
    assert not transport.disconnecting
    for byte in request[4:6]:
        channel.dataReceived(bytes([byte]))
        clock.advance(0.1)
    assert transport.disconnecting, "cut 0.5 s after its first byte, bytes still coming"
    assert site.slow_requests == 1
