"""The canary for ``adapters.upstream``: each private member of Twisted, Autobahn or
txredisapi that the gateway reaches into still exists and has the shape it relies on. When
one of these fails after an upgrade, the fix is in ``exchange_stream/adapters/upstream.py``.
"""

import inspect

import pytest
import pytest_twisted
from autobahn.websocket.compress import PerMessageDeflate
from autobahn.websocket.protocol import PreparedMessage, WebSocketServerProtocol
from twisted.application import strports
from twisted.internet import abstract, reactor, tcp
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from txredisapi import RedisProtocol, ResponseError

from exchange_stream.adapters.compression import SharedFrame
from exchange_stream.adapters.redis_commands import encode_command
from exchange_stream.adapters.upstream import (
    forget_compressor,
    forget_decompressor,
    listening_port,
    negotiated_compression,
    quiet_http_client,
    replace_negotiated_compression,
    send_command,
    tcp_send_queue_empty,
)
from exchange_stream.testing import in_memory_gateway


@pytest_twisted.ensureDeferred
async def test_listening_port_fires_and_leaves_the_service_able_to_stop():
    service = strports.service("tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol))
    service.startService()
    port = await listening_port(service)
    assert IListeningPort.providedBy(port)
    await service.stopService()  # it still has its port: stopping closes it
    assert not port.connected


def test_file_descriptors_keep_their_queue_where_tcp_send_queue_empty_reads_it():
    descriptor = abstract.FileDescriptor()
    assert descriptor.dataBuffer == b"" and descriptor._tempDataLen == 0
    assert descriptor._writeDisconnected is False
    assert issubclass(tcp.Server, abstract.FileDescriptor)
    assert not tcp_send_queue_empty(StringTransport())  # any other transport: plain path


def test_the_connection_pool_builds_connections_with_its_private_factory():
    pool = HTTPConnectionPool(reactor)
    assert pool._factory is _HTTP11ClientFactory
    assert quiet_http_client(reactor) is not None


def test_our_resp_is_txredisapis_for_the_same_words():
    words = ("EVALSHA", "ab12", 4, b"es:{ex:1001@order}:meta", "ex:1001@\u00e9", b"\x00o1 2\nx", 0)
    assert encode_command(*words) == RedisProtocol()._build_command(*words)
    assert (
        encode_command("SUBSCRIBE", "a", b"b") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n"
    )
    with pytest.raises(TypeError):
        encode_command("SET", "k", 1.5)


def test_txredisapi_matches_replies_to_commands_from_its_reply_queue():
    connection = RedisProtocol()
    with pytest.raises(ConnectionError):  # never connected
        send_command(connection, encode_command("PING"))
    transport = StringTransport()
    connection.makeConnection(transport)
    connection.connected = 1
    first = send_command(connection, encode_command("GET", "a"))
    second = send_command(connection, encode_command("GET", "b"))
    assert transport.value() == encode_command("GET", "a") + encode_command("GET", "b")
    first.cancel()  # timed out: the queue's own Deferred stays, the next reply is second's
    first.addErrback(lambda failure: None)
    connection.replyReceived(b"for a")
    connection.replyReceived(b"for b")
    assert second.result == b"for b"
    errored = send_command(connection, encode_command("GET", "c"))
    connection.replyReceived(ResponseError("WRONGTYPE"))
    with pytest.raises(ResponseError):
        errored.result.raiseException()
    errored.addErrback(lambda failure: None)


def test_autobahn_keeps_the_negotiated_compression_and_prepares_frames():
    memory = in_memory_gateway()
    protocol = memory.gateway.factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    assert protocol._perMessageCompress is None and negotiated_compression(protocol) is None
    parameters = list(inspect.signature(PreparedMessage).parameters)
    assert parameters == ["payload", "isBinary", "applyMask", "doNotCompress"]
    assert SharedFrame(b"hi").payloadHybi == b"\x81\x02hi"  # FIN + text, unmasked
    assert "send_queue" in vars(protocol) and isinstance(protocol, WebSocketServerProtocol)


def test_autobahn_lists_the_negotiated_compression_and_holds_zlib_state_where_we_forget_it():
    negotiated = PerMessageDeflate(True, True, True, 15, 15, 4)
    assert negotiated._compressor is None and negotiated._decompressor is None
    negotiated.start_compress_message()
    negotiated.start_decompress_message()
    assert negotiated._compressor is not None and negotiated._decompressor is not None
    forget_compressor(negotiated)
    forget_decompressor(negotiated)
    assert negotiated._compressor is None and negotiated._decompressor is None
    protocol = WebSocketServerProtocol()
    protocol._perMessageCompress = negotiated
    protocol.websocket_extensions_in_use = [negotiated]
    replacement = PerMessageDeflate(True, True, True, 15, 15, 4)
    replace_negotiated_compression(protocol, replacement)
    assert protocol._perMessageCompress is replacement
    assert protocol.websocket_extensions_in_use == [replacement]


def test_listening_port_refuses_a_service_that_has_not_started():
    service = strports.service("tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol))
    with pytest.raises(RuntimeError):
        listening_port(service)
