"""Test doubles for applications that embed the gateway, and for the gateway's own tests.

As ``treq.testing`` does for HTTP, this module runs the real gateway in memory: a fake clock
(``MemoryReactorClock``, advanced by hand), a mesh whose outages a test switches on and off
(:class:`FakeMesh`), an authenticator whose answers a test controls
(:class:`FakeAuthenticator`), and client connections that record every frame
(:class:`RecordingConnection`). Everything above the WebSocket adapter is the real code::

    memory = in_memory_gateway(tokens={"token-1001": "1001"})
    client = memory.connect()
    client.send({"op": "subscribe", "channel": "BTCUSDT@trades", "id": 1})
    memory.publish("ex:BTCUSDT@trades", {"event": "BTCUSDT@trades", "data": []})
    assert client.received() == [{"result": True, "id": 1},
                                 {"event": "BTCUSDT@trades", "data": []}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.encoding import encode
from exchange_stream.core.publication import MeshUnavailable, Publication
from exchange_stream.core.streams import StreamPolicy
from exchange_stream.gateway import Gateway
from exchange_stream.interfaces import IAuthenticator, IClientConnection, IHeartbeatPeer, IMesh
from exchange_stream.services.auth import AuthFailed, AuthUnavailable, Identity
from exchange_stream.services.memory_mesh import MemoryMesh
from exchange_stream.services.session import Session


@implementer(IMesh)
class FakeMesh(MemoryMesh):
    """The in-memory mesh, with an outage switch and a record of what was published.

    While ``available`` is False every publish fails with ``MeshUnavailable`` (nothing is
    delivered), as the Redis mesh does while its command connection is down."""

    def __init__(
        self,
        clock: IReactorTime | None = None,
        streams: StreamPolicy | None = None,
        idempotency_ttl: float = 600.0,
    ) -> None:
        super().__init__(streams, idempotency_ttl, clock)
        self.available = True
        self.published: list[tuple[str, Publication]] = []

    def publish(
        self,
        channel: str,
        publication: Publication,
        snapshot: Publication | None = None,
        key: str | None = None,
    ) -> Deferred:
        if not self.available:
            return fail(MeshUnavailable("the fake mesh is switched off"))
        self.published.append((channel, publication))
        return super().publish(channel, publication, snapshot, key)


@implementer(IAuthenticator)
class FakeAuthenticator:
    """Tokens → uids, answered at once; with ``hold = True`` every answer waits in
    ``waiting`` until the test calls :meth:`answer_all`, so an auth can be left in flight."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.hold = False
        self.unavailable = False
        self.asked: list[str] = []
        self.waiting: list[tuple[str, Deferred]] = []

    def authenticate(self, token: str) -> Deferred:
        self.asked.append(token)
        if self.hold:
            answer: Deferred = Deferred()
            self.waiting.append((token, answer))
            return answer
        return self._outcome(token)

    def answer_all(self) -> None:
        """Answer every held auth, as the tokens and ``unavailable`` now say."""
        waiting, self.waiting = self.waiting, []
        for token, answer in waiting:
            self._outcome(token).chainDeferred(answer)

    def _outcome(self, token: str) -> Deferred:
        if self.unavailable:
            return fail(AuthUnavailable("the fake back end is switched off"))
        uid = self.tokens.get(token)
        return succeed(Identity(uid)) if uid is not None else fail(AuthFailed())


@implementer(IClientConnection, IHeartbeatPeer)
class RecordingConnection:
    """A client connection that keeps every frame written to it, in order."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None
        self.is_closed: Deferred = Deferred()
        self.last_heard = 0.0
        self.pings = 0
        self.dropped = False

    def send_reply(self, reply: bytes) -> None:
        if self.closed_with is None:
            self.frames.append(reply)

    def sendPreparedMessage(self, prepared: Any) -> None:
        if self.closed_with is None:
            self.frames.append(prepared.payload)

    def close(self, code: int, reason: str) -> None:
        if self.closed_with is None:
            self.closed_with = (int(code), reason)

    def send_ping(self, frame: bytes) -> None:
        self.pings += 1

    def drop_dead(self) -> None:
        self.dropped = True


class RecordingClient:
    """One client of an in-memory gateway: ops in, decoded frames out."""

    def __init__(self, gateway: Gateway, session: Session, connection: RecordingConnection):
        self._gateway = gateway
        self.session = session
        self.connection = connection
        self._read = 0

    def send(self, op: object) -> None:
        """Send one op (a dict, encoded as JSON; bytes as they are)."""
        self.session.handle_frame(op if isinstance(op, bytes) else encode(op))

    def received(self) -> list[Any]:
        """The frames that arrived since the last call, decoded."""
        frames = self.connection.frames[self._read :]
        self._read = len(self.connection.frames)
        return [json.loads(frame) for frame in frames]

    def leave(self) -> None:
        """The client goes away: its session ends as when a WebSocket closes."""
        self._gateway.sessions.end(self.session)
        self.connection.is_closed.callback(None)


@dataclass
class InMemoryGateway:
    """A started gateway and the doubles it runs on: advance ``clock`` to let time pass,
    switch ``mesh.available`` for an outage, set ``auth.tokens`` / ``auth.hold``."""

    gateway: Gateway
    clock: MemoryReactorClock
    mesh: FakeMesh
    auth: FakeAuthenticator

    def connect(self) -> RecordingClient:
        """A new client session, as if its WebSocket handshake had completed."""
        connection = RecordingConnection()
        session = self.gateway.sessions.open(connection)
        return RecordingClient(self.gateway, session, connection)

    def publish(self, channel: str, message: object) -> Deferred:
        """Publish ``message`` (JSON-encoded unless bytes) as a back end would."""
        payload = message if isinstance(message, bytes) else encode(message)
        return self.gateway.node.publish(channel, Publication(payload))


def in_memory_gateway(
    config: GatewayConfig | None = None, tokens: Mapping[str, str] | None = None
) -> InMemoryGateway:
    """The real gateway, started, on a fake clock, a fake mesh and a fake authenticator
    that knows ``tokens`` (token → uid)."""
    config = config or GatewayConfig()
    clock = MemoryReactorClock()
    mesh = FakeMesh(clock, config.streams, config.idempotency_ttl)
    auth = FakeAuthenticator(tokens)
    gateway = Gateway(config, reactor=clock, mesh=mesh, authenticator=auth)
    gateway.startService()
    return InMemoryGateway(gateway, clock, mesh, auth)
