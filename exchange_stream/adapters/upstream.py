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


def redis_command(connection: RedisProtocol, *words: object) -> bytes:
    """One Redis command in RESP, as txredisapi 1.6's private ``_build_command`` writes it.

    The subscriber connection writes (UN)SUBSCRIBE itself and matches Redis's confirmations
    per channel (``SubscriberConnection.replyReceived``): txredisapi's ``subscribe()`` would
    wait for them in its reply queue, one per command, which a SUBSCRIBE of many channels
    answers many times over."""
    return connection._build_command(*words)


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
