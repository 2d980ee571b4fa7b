"""Every reach into a private member of Twisted, Autobahn or txredisapi, in one place.

Each is here because no public route does the job (said beside it), with the upstream
version it was read from. ``tests/test_upstream.py`` is the canary: it fails when one of
these members disappears or changes shape, so an upgrade shows at once what to look at.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from txredisapi import RedisProtocol


def listening_port(service: StreamServerEndpointService) -> Deferred:
    """A Deferred firing with the port a started ``StreamServerEndpointService`` listens on.

    Twisted 26.10 keeps the port's Deferred as ``_waitingForPort`` (set by
    ``privilegedStartService``) and offers no public way to it; ``--workers`` needs the port
    to share its socket. The service's own Deferred is left as it was: its ``stopService``
    needs the port from it."""
    waiting = service._waitingForPort
    if waiting is None:
        raise RuntimeError("the service has not started listening")
    port: Deferred = Deferred()

    def pass_on(result: object) -> object:
        port.callback(result)
        return result

    waiting.addBoth(pass_on)
    return port


def tcp_send_queue_empty(transport: Any) -> bool:
    """Nothing is queued before new bytes on this TCP transport, and it is open, so bytes
    may be sent at once with ``writeSomeData``.

    Twisted 26.10's ``FileDescriptor`` keeps queued bytes in ``dataBuffer`` and
    ``_tempDataLen``, and ``_writeDisconnected`` once ``loseWriteConnection`` ran. Another
    transport (TLS, a test's ``StringTransport``) is never "empty": it takes the plain path."""
    return not (
        type(transport) is not tcp.Server
        or transport.dataBuffer
        or getattr(transport, "_tempDataLen", True)
        or getattr(transport, "_writeDisconnected", True)
        or not transport.connected
    )


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


def quiet_http_client(reactor: IReactorTime) -> HTTPClient:
    """A treq client on a persistent connection pool whose connection factory does not log
    every connection's start and stop (one log line per auth call otherwise).

    Twisted 26.10's ``HTTPConnectionPool`` builds connections with its private ``_factory``
    (an ``_HTTP11ClientFactory``); ``noisy`` is the only way to quiet them."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = _QuietClientFactory
    return HTTPClient(Agent(reactor, pool=pool))


def send_command(connection: RedisProtocol, command: bytes) -> Deferred:
    """Write ``command`` (already in RESP) on a txredisapi connection; a Deferred of its reply.

    txredisapi 1.6's ``execute_command`` builds the RESP itself, one Python call per byte
    string and two per argument (a fifth of the gateway's CPU per stream publish through
    Redis, in the profile of bench/RESULTS.md), then takes the reply's Deferred from its
    ``replyQueue`` and passes it through ``handle_reply`` (which raises an error reply). This
    does the second half alone. The reply's Deferred is our own, fired from the queue's: one
    that times out (and is cancelled) leaves the queue's in place, so the replies still match
    their commands until the connection is aborted."""
    if not connection.connected or connection.transport is None:
        raise ConnectionError("Not connected")
    connection.transport.write(command)
    reply: Deferred = Deferred()

    def fire(value: object) -> None:
        if not reply.called:
            reply.callback(value)

    connection.replyQueue.get().addCallback(connection.handle_reply).addBoth(fire)
    return reply


def negotiated_compression(protocol: WebSocketProtocol) -> Any:
    """The permessage-deflate a connection negotiated, None when off (Autobahn 26.11 keeps it
    in ``_perMessageCompress``; the public ``websocket_extensions_in_use`` lists it among
    any others, and cannot be assigned to)."""
    return protocol._perMessageCompress


def replace_negotiated_compression(protocol: Any, replacement: Any) -> None:
    """Make ``replacement`` the connection's negotiated compression, where Autobahn 26.11
    reads it (``_perMessageCompress``) and lists it (``websocket_extensions_in_use``).
    Autobahn builds it from a fixed registry of classes, so a subclass cannot be
    negotiated directly."""
    current = protocol._perMessageCompress
    protocol._perMessageCompress = replacement
    protocol.websocket_extensions_in_use = [
        replacement if extension is current else extension
        for extension in protocol.websocket_extensions_in_use
    ]


def forget_compressor(compression: Any) -> None:
    """Let go of the zlib compressor an Autobahn 26.11 ``PerMessageDeflate`` keeps between
    messages (``_compressor``; made again by ``start_compress_message`` when None)."""
    compression._compressor = None


def forget_decompressor(compression: Any) -> None:
    """The same for its decompressor (``_decompressor``, ``start_decompress_message``)."""
    compression._decompressor = None
