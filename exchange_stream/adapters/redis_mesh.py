"""The Redis mesh: gateway nodes share one Redis; PUBLISH carries messages between them.

Each node keeps two connections, each under a ``ClientService`` that reconnects with jittered
exponential backoff: one for commands (PUBLISH, snapshots) and one in subscriber mode. A node
SUBSCRIBEs a channel only while it has local subscribers for it, and after a reconnect it
SUBSCRIBEs again, in one command, every channel it still wants.

While the command connection is down, publishing fails at once with ``MeshUnavailable``
(the API answers 503 and the back end may retry): nothing is queued to be sent later.

Wire format on Redis (documented in docs/scaling.md, so back ends may PUBLISH directly):
the message body is the payload, sent to clients as a text frame, unless it starts with a
NUL byte: then the next byte says what follows, ``t`` (text) or ``b`` (binary frame).
Parsing uses txredisapi's hiredis protocol (``hiredis`` is a dependency): txredisapi's
pure-Python parser continues after each bulk string with ``callLater(0)`` on the global
reactor, a reactor turn per message part on the hot path and untestable with a fake clock.

A channel's snapshot is the value of the key ``SNAPSHOT_KEY_PREFIX + channel``, in the same
format; a publish and its snapshot are written by one script, so they are atomic.
"""

from __future__ import annotations

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from txredisapi import RedisProtocol, SubscriberProtocol
from zope.interface import implementer

from exchange_stream.adapters.upstream import redis_command
from exchange_stream.core.meshurl import RedisAddress
from exchange_stream.core.publication import MeshUnavailable, Publication
from exchange_stream.interfaces import IMesh, IMeshReceiver
from exchange_stream.services.selfcheck import SelfCheck

SNAPSHOT_KEY_PREFIX = "es:snapshot:"

# KEYS[1] snapshot key; ARGV: channel, snapshot, message. SET and PUBLISH in one step, so a
# new subscriber never reads a snapshot older than a message it then receives.
_PUBLISH_WITH_SNAPSHOT = (
    "redis.call('SET', KEYS[1], ARGV[2]) return redis.call('PUBLISH', ARGV[1], ARGV[3])"
)

log = Logger()


def encode_wire(publication: Publication) -> bytes:
    """A publication as a Redis message body (see the module docstring)."""
    if publication.binary:
        return b"\x00b" + publication.payload
    if publication.payload[:1] == b"\x00":
        return b"\x00t" + publication.payload
    return publication.payload


def decode_wire(body: bytes) -> Publication:
    if body[:1] != b"\x00":
        return Publication(body)
    return Publication(body[2:], binary=body[1:2] == b"b")


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


class _RedisFactory(Factory):
    """Builds txredisapi protocols for a ``ClientService``.

    txredisapi's own factories schedule on the global reactor; this one leaves connecting
    and backoff to ``ClientService`` (with the injected reactor) and only configures the
    protocol: raw bytes in and out (no charset, no number conversion), AUTH and SELECT.
    """

    noisy = False
    isLazy = False  # txredisapi: report AUTH/SELECT errors to connectionError only
    protocol: type[RedisProtocol]  # always given (Factory declares it optional)

    def __init__(
        self, protocol: type[RedisProtocol], address: RedisAddress, mesh: RedisMesh, ready
    ) -> None:
        self.protocol = protocol
        self._address = address
        self.mesh = mesh
        self._ready = ready

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


class _Subscriber(SubscriberProtocol):
    """Subscriber-mode connection: messages and (un)subscribe confirmations go to the mesh."""

    def messageReceived(self, pattern, channel: bytes, message: bytes) -> None:
        self.factory.mesh._received(channel, message)

    def replyReceived(self, reply) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] in _CONFIRMATIONS:
            self.factory.mesh._confirmed(reply[0], reply[1])
        else:
            super().replyReceived(reply)


_CONFIRMATIONS = (b"subscribe", b"unsubscribe")


@implementer(IMesh)
class RedisMesh(MultiService):
    """``--mesh redis://...``; a service: its connections open and close with the gateway."""

    publish_timeout = 5.0

    def __init__(self, url: str, reactor=None, endpoint: IStreamClientEndpoint | None = None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.address = RedisAddress.from_url(url)
        endpoint = endpoint or redis_endpoint(self.address, reactor)
        policy = backoffPolicy(initialDelay=0.5, maxDelay=10.0)
        self._commands: RedisProtocol | None = None
        self._subscriber: _Subscriber | None = None
        self._receivers: dict[str, list[IMeshReceiver]] = {}
        self._waiting: dict[tuple[bytes, bytes], list[Deferred]] = {}
        self._resubscribed = True
        self._stopping = False
        self.connects = 0
        self.self_check = SelfCheck(self, self.restart_subscriber, reactor)
        for protocol, ready in (
            (RedisProtocol, self._commands_ready),
            (_Subscriber, self._subscriber_ready),
        ):
            factory = _RedisFactory(protocol, self.address, self, ready)
            ClientService(endpoint, factory, retryPolicy=policy, clock=reactor).setServiceParent(
                self
            )
        self.self_check.setServiceParent(self)

    # -- state --------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Publishing can be attempted: the command connection is up."""
        return self._commands is not None

    @property
    def receiving(self) -> bool:
        """This node receives its channels: the subscriber connection is up and Redis has
        confirmed the (re)subscription of every channel wanted when it came up."""
        return self._subscriber is not None and self._resubscribed and not self.self_check.deaf

    @property
    def deaf_events(self) -> int:
        return self.self_check.deaf_events

    @property
    def reconnects(self) -> int:
        """Connections made after the first two (one per connection kind)."""
        return max(0, self.connects - 2)

    def stopService(self):
        self._stopping = True  # connections closing now are not news
        return super().stopService()

    def restart_subscriber(self) -> None:
        """Drop the subscriber connection; the reconnect subscribes everything afresh."""
        if self._subscriber is not None:
            self._subscriber.transport.abortConnection()

    def _commands_ready(self, connection: RedisProtocol) -> None:
        self._commands = connection
        self.connects += 1
        connection.whenDisconnected().addCallback(self._commands_lost)
        log.info("Redis mesh: command connection to {address} up", address=self.address)

    def _commands_lost(self, connection: RedisProtocol) -> None:
        if self._commands is connection:
            self._commands = None
            if not self._stopping:
                log.warn("Redis mesh: command connection lost; publishing refused until back")

    def _subscriber_ready(self, connection: _Subscriber) -> None:
        self._subscriber = connection
        self.connects += 1
        connection.whenDisconnected().addCallback(self._subscriber_lost)
        channels = list(self._receivers)
        if channels:
            confirmations = [self._expect(b"subscribe", channel) for channel in channels]
            self._resubscribed = False
            DeferredList(confirmations).addCallback(self._mark_resubscribed, connection)
            connection.transport.write(redis_command(connection, "SUBSCRIBE", *channels))
        log.info(
            "Redis mesh: subscriber connection up, {count} channels subscribed",
            count=len(channels),
        )

    def _mark_resubscribed(self, _, connection: _Subscriber) -> None:
        if self._subscriber is connection:
            self._resubscribed = True

    def _subscriber_lost(self, connection: _Subscriber) -> None:
        if self._subscriber is not connection:
            return
        self._subscriber = None
        if not self._stopping:
            log.warn("Redis mesh: subscriber connection lost; resubscribing after reconnect")
        waiting, self._waiting = self._waiting, {}
        for deferreds in waiting.values():
            for deferred in deferreds:
                deferred.callback(None)

    # -- IMesh --------------------------------------------------------------------------

    def publish(
        self, channel: str, publication: Publication, snapshot: Publication | None = None
    ) -> Deferred:
        connection = self._commands
        if connection is None:
            return fail(MeshUnavailable("Redis command connection is down"))
        if snapshot is None:
            command: tuple[object, ...] = ("PUBLISH", channel, encode_wire(publication))
        else:
            key = SNAPSHOT_KEY_PREFIX + channel
            message, kept = encode_wire(publication), encode_wire(snapshot)
            command = ("EVAL", _PUBLISH_WITH_SNAPSHOT, 1, key, channel, kept, message)
        return self._execute(connection, command)

    def snapshot(self, channel: str) -> Deferred:
        connection = self._commands
        if connection is None:
            return succeed(None)
        reading = self._execute(connection, ("GET", SNAPSHOT_KEY_PREFIX + channel))

        def decoded(body):
            return decode_wire(body) if isinstance(body, bytes) else None

        def unavailable(failure):
            failure.trap(MeshUnavailable)
            log.warn(
                "Redis mesh: snapshot of {channel} not read: {why}",
                channel=channel,
                why=failure.getErrorMessage(),
            )
            return None

        return reading.addCallbacks(decoded, unavailable)

    def subscribe(self, channel: str, receiver: IMeshReceiver) -> Deferred:
        receivers = self._receivers.setdefault(channel, [])
        if receiver in receivers:
            return succeed(None)
        receivers.append(receiver)
        if len(receivers) > 1:
            return succeed(None)
        return self._send_subscription(b"subscribe", channel)

    def unsubscribe(self, channel: str, receiver: IMeshReceiver) -> Deferred:
        receivers = self._receivers.get(channel)
        if not receivers or receiver not in receivers:
            return succeed(None)
        receivers.remove(receiver)
        if receivers:
            return succeed(None)
        del self._receivers[channel]
        return self._send_subscription(b"unsubscribe", channel)

    # -- internals ----------------------------------------------------------------------

    def _send_subscription(self, kind: bytes, channel: str) -> Deferred:
        """Send (UN)SUBSCRIBE; fire on Redis's confirmation, or at once while disconnected
        (the wish is kept in ``_receivers`` and applied on reconnect)."""
        connection = self._subscriber
        if connection is None:
            return succeed(None)
        confirmed = self._expect(kind, channel)
        connection.transport.write(redis_command(connection, kind.decode().upper(), channel))
        return confirmed

    def _expect(self, kind: bytes, channel: str) -> Deferred:
        """A Deferred for Redis's next confirmation of ``kind`` for ``channel``."""
        confirmed: Deferred[None] = Deferred()
        self._waiting.setdefault((kind, channel.encode()), []).append(confirmed)
        return confirmed

    def _confirmed(self, kind: bytes, channel: bytes) -> None:
        waiting = self._waiting.get((kind, channel))
        if waiting:
            waiting.pop(0).callback(None)
            if not waiting:
                del self._waiting[(kind, channel)]

    def _received(self, channel: bytes, message: bytes) -> None:
        name = channel.decode()
        receivers = self._receivers.get(name)
        if not receivers:
            return  # unsubscribed while the message was on its way
        publication = decode_wire(message)
        for receiver in tuple(receivers):
            receiver.receive(name, publication)

    def _execute(self, connection: RedisProtocol, command: tuple) -> Deferred:
        """Run one command; any failure is ``MeshUnavailable``. A reply that does not come
        in time aborts the connection: replies are matched by order, so the connection
        cannot be trusted after one is skipped."""
        try:
            reply = connection.execute_command(*command)
        except Exception as error:  # txredisapi raises ConnectionError when not connected
            return fail(MeshUnavailable(str(error)))
        reply.addTimeout(self.publish_timeout, self._reactor)

        def classify(failure):
            if failure.check(TimeoutError):
                connection.transport.abortConnection()
            raise MeshUnavailable(failure.getErrorMessage() or failure.type.__name__)

        return reply.addErrback(classify)
