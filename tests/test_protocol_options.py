"""Autobahn's protocol options live on the protocol class, not in every connection."""

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from exchange_stream.core.config import GatewayConfig
from exchange_stream.gateway import Gateway
from exchange_stream.services.auth import StaticAuthenticator

HANDSHAKE = (
    b"GET /exchange-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)


def open_connection(config: GatewayConfig):
    gateway = Gateway(config, reactor=Clock(), authenticator=StaticAuthenticator({}))
    protocol = gateway.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    gateway.reactor.advance(0)
    return protocol, transport


def test_an_open_connection_holds_no_copy_of_the_options():
    protocol, transport = open_connection(GatewayConfig(max_message_size=4096))
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    assert protocol.state == WebSocketProtocol.STATE_OPEN
    copied = set(vars(protocol)) & set(protocol.CONFIG_ATTRS)
    assert copied == set()
    assert protocol.maxMessagePayloadSize == 4096  # the factory's, read from the class


def test_a_client_offering_compression_is_answered_with_it():
    # perMessageCompressionAccept is a function on the class: it must not become a method.
    _, transport = open_connection(GatewayConfig())
    answer = transport.value().split(b"\r\n\r\n")[0]
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover" in answer


def test_with_no_compression_a_client_offering_it_is_answered_without_it():
    _, transport = open_connection(GatewayConfig(no_compression=True))
    answer = transport.value().split(b"\r\n\r\n")[0]
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"permessage-deflate" not in answer
