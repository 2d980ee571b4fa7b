"""The Redis mesh: gateway nodes share one Redis; PUBLISH carries messages between them.

Each node keeps two connections, each under a ``ClientService`` that reconnects with jittered
exponential backoff: one for commands (publishes, snapshots, history reads) and one in
subscriber mode. A node SUBSCRIBEs a channel only while it has local subscribers for it, and
after a reconnect it SUBSCRIBEs again, in one command, every channel it still wants.

Pub/sub is at most once: a reconnect, a connection Redis cut for its output buffer, or a node
that went deaf loses what was published meanwhile. So stream channels (``core.streams``)
keep a history beside the pub/sub (``redis_wire``), every publication carries its position,
and the node keeps each stream channel's :class:`~exchange_stream.core.streams.Sequence`:
after a reconnect, and whenever an offset is skipped, it reads what it missed from the
history and passes it on in order, once, before the live publications that came meanwhile.
State channels get their snapshot again after a reconnect instead, so books resync.

While the command connection is down, publishing fails at once with ``MeshUnavailable``
(the API answers 503: nothing was sent). A publish whose answer does not come in time fails
with ``MeshOutcomeUnknown``: it was written and may have been carried out.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import RedisProtocol
from zope.interface import implementer

from exchange_stream.adapters import redis_wire
from exchange_stream.adapters.redis_catchup import CatchUp
from exchange_stream.adapters.redis_commands import Deadline, encode_command, execute, run_script
from exchange_stream.adapters.redis_protocol import (
    RedisConnectionFactory,
    ReportingEndpoint,
    SubscriberConnection,
    redis_endpoint,
)
from exchange_stream.adapters.redis_wire import decode_wire, encode_wire, key
from exchange_stream.core.meshurl import RedisAddress
from exchange_stream.core.publication import (
    MeshUnavailable,
    Publication,
    Published,
)
from exchange_stream.core.streams import Position, StreamPolicy
from exchange_stream.interfaces import IMesh, IMeshReceiver
from exchange_stream.services.selfcheck import SelfCheck

log = Logger()

MEANWHILE = {  # what an unreachable Redis means, by connection
    "command": "publishes answer 503 meanwhile",
    "subscriber": "this node receives nothing meanwhile (/healthz 503)",
}


@implementer(IMesh)
class RedisMesh(MultiService):
    """``--mesh redis://...``; a service: its connections open and close with the gateway."""

    publish_timeout = 5.0

    def __init__(
        self,
        url: str,
        reactor: Any = None,
        endpoint: IStreamClientEndpoint | None = None,
        streams: StreamPolicy | None = None,
        idempotency_ttl: float = 600.0,
        self_check: tuple[float, ...] = (2.0, 6.0, 2.0),
    ) -> None:
        """``self_check`` is the heartbeat's (interval, timeout, stall_after) in seconds (see
        ``services.selfcheck``)."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = installed
        self._reactor = reactor
        self._deadline = Deadline(self.publish_timeout, reactor)
        self._streams = streams or StreamPolicy()
        self._idempotency_ttl = idempotency_ttl
        self.address = RedisAddress.from_url(url)
        endpoint = endpoint or redis_endpoint(self.address, reactor)
        policy = backoffPolicy(initialDelay=0.5, maxDelay=10.0)
        self._commands: RedisProtocol | None = None
        self._subscriber: SubscriberConnection | None = None
        self._receivers: dict[str, list[IMeshReceiver]] = {}
        self._in_effect: set[str] = set()  # confirmed on the current subscriber connection
        self._waiting: dict[tuple[bytes, bytes], list[Deferred]] = {}
        self._resubscribed = True
        self._stopping = False
        self.connects = 0
        self._catch_up = CatchUp(
            self._deliver,
            lambda channel, since: self._read_history(channel, since, catching_up=True),
            self.snapshot,
            self._in_effect.__contains__,
            lambda: self.available,
            reactor,
        )
        self.self_check = SelfCheck(self, self.restart_subscriber, reactor, *self_check)
        for protocol, ready, receiver, role in (
            (RedisProtocol, self._commands_ready, None, "command"),
            (SubscriberConnection, self._subscriber_ready, self, "subscriber"),
        ):
            factory = RedisConnectionFactory(protocol, self.address, ready, receiver)
            meanwhile = MEANWHILE[role]
            reporting = ReportingEndpoint(
                endpoint, f"{self.address} ({role} connection)", meanwhile
            )
            service = ClientService(reporting, factory, retryPolicy=policy, clock=reactor)
            service.setServiceParent(self)
        self.self_check.setServiceParent(self)

    # -- state --------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Publishing can be attempted: the command connection is up."""
        return self._commands is not None

    @property
    def receiving(self) -> bool:
        """This node receives its channels: the subscriber connection is up, Redis has
        confirmed the (re)subscription of every channel wanted when it came up, and neither
        the self-check found the node deaf nor is Redis stalled."""
        check = self.self_check
        return (
            self._subscriber is not None
            and self._resubscribed
            and not check.deaf
            and not check.stalled
        )

    @property
    def deaf_events(self) -> int:
        return self.self_check.deaf_events

    @property
    def lost_publications(self) -> int:
        """Publications gone from the history too before this node could read them back."""
        return self._catch_up.lost

    @property
    def reconnects(self) -> int:
        """Connections made after the first two (one per connection kind)."""
        return max(0, self.connects - 2)

    def stopService(self) -> Deferred:
        self._stopping = True  # connections closing now are not news
        return super().stopService()

    def restart_subscriber(self) -> None:
        """Drop the subscriber connection; the reconnect subscribes everything afresh and
        reads from the histories what came meanwhile."""
        if self._subscriber is not None and self._subscriber.transport is not None:
            self._subscriber.transport.abortConnection()

    # -- connections --------------------------------------------------------------------

    def _commands_ready(self, connection: RedisProtocol) -> None:
        self._commands = connection
        self.connects += 1
        connection.whenDisconnected().addCallback(self._commands_lost)
        log.info("Redis mesh: command connection to {address} up", address=self.address)
        self._catch_up.commands_back()

    def _commands_lost(self, connection: RedisProtocol) -> None:
        if self._commands is connection:
            self._commands = None
            if not self._stopping:
                log.warn("Redis mesh: command connection lost; publishing refused until back")

    def _subscriber_ready(self, connection: SubscriberConnection) -> None:
        self._subscriber = connection
        self.connects += 1
        connection.whenDisconnected().addCallback(self._subscriber_lost)
        channels = list(self._receivers)
        if channels:
            confirmations = [self._expect(b"subscribe", channel) for channel in channels]
            self._resubscribed = False
            DeferredList(confirmations).addCallback(self._mark_resubscribed, connection)
            assert connection.transport is not None  # connected: it just said so
            connection.transport.write(encode_command("SUBSCRIBE", *channels))
        log.info(
            "Redis mesh: subscriber connection up, {count} channels subscribed",
            count=len(channels),
        )

    def _mark_resubscribed(self, _: object, connection: SubscriberConnection) -> None:
        if self._subscriber is connection:
            self._resubscribed = True

    def _subscriber_lost(self, connection: SubscriberConnection) -> None:
        if self._subscriber is not connection:
            return
        self._subscriber = None
        self._catch_up.interrupted(self._in_effect)  # read what comes meanwhile, later
        self._in_effect.clear()
        if not self._stopping:
            log.warn("Redis mesh: subscriber connection lost; resubscribing after reconnect")
        # An unsubscribe is in effect once the connection is gone; a subscribe is not: it
        # waits for the resubscription's confirmation.
        for (kind, channel), deferreds in list(self._waiting.items()):
            if kind == b"unsubscribe":
                del self._waiting[(kind, channel)]
                for deferred in deferreds:
                    deferred.callback(None)

    # -- IMesh --------------------------------------------------------------------------

    def publish(
        self,
        channel: str,
        publication: Publication,
        snapshot: Publication | None = None,
        key: str | None = None,
    ) -> Deferred:
        connection = self._commands
        if connection is None:
            return fail(MeshUnavailable("Redis command connection is down"))
        stream = self._streams.is_stream(channel)
        body = encode_wire(publication)
        if not stream and snapshot is None and key is None:
            sent = execute(
                connection, self._deadline, ("PUBLISH", channel, body), written_matters=True
            )
            return sent.addCallback(lambda nodes: Published(int(nodes)))
        keys = [redis_wire.key(channel, kind) for kind in ("meta", "stream", "snapshot")]
        keys.append(redis_wire.key(channel, f"key:{key or ''}"))
        size, ttl = self._streams.limits(channel)
        arguments = (
            channel,
            body,
            encode_wire(snapshot) if snapshot is not None else b"",
            "1" if stream else "0",
            size,
            max(1, int(ttl)),
            os.urandom(6).hex(),
            "1" if key is not None else "0",
            max(1, int(self._idempotency_ttl)),
        )
        ran = run_script(
            connection, self._deadline, redis_wire.PUBLISH, keys, arguments, written_matters=True
        )
        return ran.addCallback(redis_wire.published)

    def history(self, channel: str, since: Position | None = None) -> Deferred:
        return self._read_history(channel, since, catching_up=False)

    def recent(self, channel: str, count: int) -> Deferred:
        connection = self._commands
        if connection is None:
            return fail(MeshUnavailable("Redis command connection is down"))
        reading = execute(
            connection,
            self._deadline,
            ("XREVRANGE", key(channel, "stream"), "+", "-", "COUNT", count),
        )
        return reading.addCallback(redis_wire.recent)

    def snapshot(self, channel: str) -> Deferred:
        connection = self._commands
        if connection is None:
            return succeed(None)
        reading = execute(connection, self._deadline, ("GET", key(channel, "snapshot")))

        def decoded(body: object) -> Publication | None:
            return decode_wire(body) if isinstance(body, bytes) else None

        def unavailable(failure: Failure) -> None:
            failure.trap(MeshUnavailable)
            log.warn(
                "Redis mesh: snapshot of {channel} not read: {why}",
                channel=channel,
                why=failure.getErrorMessage(),
            )

        return reading.addCallbacks(decoded, unavailable)

    def subscribe(self, channel: str, receiver: IMeshReceiver) -> Deferred:
        """Fires once Redis has confirmed the subscription (while the subscriber connection
        is down: once the reconnect's resubscription is confirmed), so that every message
        published from then on reaches ``receiver``."""
        receivers = self._receivers.setdefault(channel, [])
        if receiver in receivers:
            return succeed(None)
        receivers.append(receiver)
        if self._streams.is_stream(channel):
            self._catch_up.follow(channel)
        if channel in self._in_effect:
            return succeed(None)
        confirmed = self._expect(b"subscribe", channel)
        if len(receivers) == 1 and self._subscriber is not None:
            self._write_subscription(b"subscribe", channel)
        return confirmed

    def unsubscribe(self, channel: str, receiver: IMeshReceiver) -> Deferred:
        receivers = self._receivers.get(channel)
        if not receivers or receiver not in receivers:
            return succeed(None)
        receivers.remove(receiver)
        if receivers:
            return succeed(None)
        del self._receivers[channel]
        self._catch_up.forget(channel)
        self._in_effect.discard(channel)
        for waiting in self._waiting.pop((b"subscribe", channel.encode()), []):
            waiting.callback(None)  # nobody waits for it any more
        if self._subscriber is None:
            return succeed(None)
        confirmed = self._expect(b"unsubscribe", channel)
        self._write_subscription(b"unsubscribe", channel)
        return confirmed

    # -- subscriber events (redis_protocol.SubscriberEvents) ----------------------------

    def confirmed(self, kind: bytes, channel: bytes) -> None:
        name = channel.decode()
        if kind == b"subscribe" and name in self._receivers:
            resubscribed = name not in self._in_effect
            self._in_effect.add(name)
            if resubscribed:
                self._catch_up.resumed(name)
        waiting = self._waiting.get((kind, channel))
        if not waiting:
            return
        # One SUBSCRIBE serves every wish to receive the channel; an UNSUBSCRIBE, its own.
        fired = waiting[:] if kind == b"subscribe" else waiting[:1]
        del waiting[: len(fired)]
        if not waiting:
            del self._waiting[(kind, channel)]
        for deferred in fired:
            deferred.callback(None)

    def message(self, channel: bytes, body: bytes) -> None:
        name = channel.decode()
        if name not in self._receivers:
            return  # unsubscribed while the message was on its way
        self._catch_up.arrived(name, decode_wire(body))

    def _deliver(self, channel: str, publications: list[Publication]) -> None:
        receivers = self._receivers.get(channel)
        if not receivers or not publications:
            return
        for publication in publications:
            for receiver in tuple(receivers):
                receiver.receive(channel, publication)

    # -- commands -----------------------------------------------------------------------

    def _read_history(self, channel: str, since: Position | None, catching_up: bool) -> Deferred:
        connection = self._commands
        if connection is None:
            return fail(MeshUnavailable("Redis command connection is down"))
        keys = [key(channel, "meta"), key(channel, "stream")]
        arguments = (
            since.epoch if since is not None else "",
            since.offset if since is not None else 0,
            os.urandom(6).hex(),
            max(1, int(self._streams.limits(channel)[1])),
            "1" if since is not None else "0",
        )
        ran = run_script(connection, self._deadline, redis_wire.HISTORY, keys, arguments)
        ttl = self._streams.limits(channel)[1]
        return ran.addCallback(redis_wire.history, since, ttl, catching_up)

    def _write_subscription(self, kind: bytes, channel: str) -> None:
        connection = self._subscriber
        assert connection is not None and connection.transport is not None
        connection.transport.write(encode_command(kind.decode().upper(), channel))

    def _expect(self, kind: bytes, channel: str) -> Deferred:
        """A Deferred for Redis's next confirmation of ``kind`` for ``channel``."""
        confirmed: Deferred[None] = Deferred()
        self._waiting.setdefault((kind, channel.encode()), []).append(confirmed)
        return confirmed
