"""Connections to Redis for the mesh: where to, how they are built, and subscriber mode.

Parsing uses txredisapi's hiredis protocol (``hiredis`` is a dependency): txredisapi's
pure-Python parser continues after each bulk string with ``callLater(0)`` on the global
reactor, a reactor turn per message part on the hot path and untestable with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import RedisProtocol, SubscriberProtocol
from zope.interface import implementer

from exchange_stream.core.meshurl import RedisAddress

log = Logger()


class SubscriberEvents(Protocol):
    """What a subscriber connection reports: messages, and Redis's confirmations."""

    def message(self, channel: bytes, body: bytes) -> None: ...

    def confirmed(self, kind: bytes, channel: bytes) -> None: ...


def redis_endpoint(address: RedisAddress, reactor) -> IStreamClientEndpoint:
    """The Twisted endpoint that reaches ``address``: a UNIX socket, TCP, or TLS over TCP
    verified against the system's CAs or the given ``ca`` file."""
    if address.path is not None:
        return UNIXClientEndpoint(reactor, address.path, timeout=5)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, address.host, address.port, timeout=5
    )
    if address.tls:
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        trust = None
        if address.ca is not None:
            with open(address.ca, "rb") as pem:
                trust = Certificate.loadPEM(pem.read())
        endpoint = wrapClientTLS(optionsForClientTLS(address.host, trustRoot=trust), endpoint)
    return endpoint


@implementer(IStreamClientEndpoint)
class ReportingEndpoint:
    """``endpoint``, naming Redis when it cannot be reached: ``ClientService`` retries with
    back-off but only logs "Scheduling retry ... HostnameEndpoint" at info level, which no
    operator reads as "Redis is down". A warning names the address and the error at the 1st,
    2nd, 4th, 8th, ... consecutive failure (repeated, with back-off), and an info line says when
    it is reached again."""

    log = Logger()

    def __init__(self, endpoint: IStreamClientEndpoint, what: str, meanwhile: str) -> None:
        self._endpoint = endpoint
        self._what = what
        self._meanwhile = meanwhile  # what the outage means, for the warning
        self.failures = 0

    def connect(self, protocolFactory) -> Deferred:
        attempt = self._endpoint.connect(protocolFactory)
        attempt.addCallbacks(self._reached, self._failed)
        return attempt

    def _reached(self, protocol: object) -> object:
        if self.failures:
            self.log.info(
                "Redis mesh: {what} reached again after {count} failed attempts",
                what=self._what,
                count=self.failures,
            )
        self.failures = 0
        return protocol

    def _failed(self, failure: Failure) -> Failure:
        self.failures += 1
        if self.failures & (self.failures - 1) == 0:  # 1, 2, 4, 8, ...
            self.log.warn(
                "Redis mesh: cannot reach {what} ({why}); {count} attempt(s) failed, retrying "
                "with back-off; {meanwhile}",
                what=self._what,
                why=failure.getErrorMessage() or getattr(failure.type, "__name__", "error"),
                count=self.failures,
                meanwhile=self._meanwhile,
            )
        return failure


class RedisConnectionFactory(Factory):
    """Builds txredisapi protocols for a ``ClientService``.

    txredisapi's own factories schedule on the global reactor; this one leaves connecting
    and backoff to ``ClientService`` (with the injected reactor) and only configures the
    protocol: raw bytes in and out (no charset, no number conversion), AUTH and SELECT.
    """

    noisy = False
    isLazy = False  # txredisapi: report AUTH/SELECT errors to connectionError only
    protocol: type[RedisProtocol]  # always given (Factory declares it optional)

    def __init__(
        self,
        protocol: type[RedisProtocol],
        address: RedisAddress,
        ready: Callable[[Any], object],
        receiver: SubscriberEvents | None = None,
    ) -> None:
        self.protocol = protocol
        self._address = address
        self._ready = ready
        self.receiver = receiver  # what a subscriber connection reports to

    def buildProtocol(self, addr):
        connection = self.protocol(
            charset=None,
            convertNumbers=False,
            password=self._address.password,
            username=self._address.username,
            dbid=self._address.db or None,
        )
        connection.factory = self
        # Ready once AUTH and SELECT passed. Not ClientService's prepareConnection: a
        # connection that drops while that is pending (a wrong password) trips its state
        # machine; as a plain connection that drops, it is retried with backoff.
        connection.whenConnected().addCallback(self._ready)
        return connection

    # Called by txredisapi when AUTH or SELECT fails; ClientService keeps retrying.
    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        log.error("Redis mesh: {why}", why=why)


class SubscriberConnection(SubscriberProtocol):
    """Subscriber-mode connection: messages and (un)subscribe confirmations go to the
    factory's ``receiver`` (the mesh)."""

    factory: RedisConnectionFactory

    def messageReceived(self, pattern, channel: bytes, message: bytes) -> None:
        assert self.factory.receiver is not None  # a subscriber's factory always has one
        self.factory.receiver.message(channel, message)

    def replyReceived(self, reply) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] in _CONFIRMATIONS:
            assert self.factory.receiver is not None
            self.factory.receiver.confirmed(reply[0], reply[1])
        else:
            super().replyReceived(reply)


_CONFIRMATIONS = (b"subscribe", b"unsubscribe")
