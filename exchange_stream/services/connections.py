"""A node's client connections: who may connect, the open sessions, and the drain.

Three small parts the WebSocket adapter and the wiring share: :class:`Admission` counts
connections per node and per address, :class:`SessionRegistry` holds every open session (and
finds a uid's sessions for a kick), and :class:`Drain` closes them all politely on shutdown.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from exchange_stream.core.config import GatewayConfig
from exchange_stream.core.wire import CloseCode, encode_notice
from exchange_stream.interfaces import IAuthenticator, IClientConnection
from exchange_stream.services.node import Node
from exchange_stream.services.session import Session

log = Logger()

SHARE_WARNING_FROM = 100  # connections from one address before a large share is worth a warning


Refusal = tuple[int, str]  # an HTTP status and its reason


class Admission:
    """Connections on this node and per client address, within the configured limits.

    A connection is counted from its first moment (``arrive``, when it is accepted), not once
    its handshake is complete: a handshake trickled a byte at a time holds a place as long as
    it lasts, so one address cannot open more than its share however slowly it writes. What is
    counted is a **ticket**, handed back by ``leave``: the address counted, or ``""`` for a
    connection counted on the node only. That is every connection when ``by_peer`` is false
    (``--real-ip-header``: the peer is a proxy, the client's own address comes with the
    handshake's headers and is counted then, with ``identify``).

    Counting peers, the first time one address holds 100 connections that are more than half
    of the node's (and again at 200, 400, ...), a warning says it may be a proxy.
    """

    def __init__(
        self,
        max_connections: int,
        max_per_address: int,
        is_draining: Callable[[], bool],
        by_peer: bool = True,
    ) -> None:
        self._max_connections = max_connections
        self._max_per_address = max_per_address
        self._is_draining = is_draining
        self._by_peer = by_peer
        self._per_address: dict[str, int] = {}
        self._admitted = 0
        self._warn_at = SHARE_WARNING_FROM

    def arrive(self, peer: str) -> str | Refusal:
        """Count a new connection from ``peer``: its ticket, or why not."""
        if self._is_draining():
            return 503, "server shutting down"
        if self._admitted >= self._max_connections:
            return 503, "too many connections on this node"
        if not self._by_peer:
            self._admitted += 1
            return ""
        refusal = self._count_address(peer)
        if refusal is None:
            self._admitted += 1
            self._warn_on_a_large_share(peer)
            return peer
        return refusal

    def identify(self, ticket: str, address: str) -> str | Refusal:
        """The client's own address is known now (a proxy's header): count it, unless the
        ticket counts an address already. The new ticket, or why not (the old one still
        holds its place on the node until ``leave``)."""
        if ticket:
            return ticket
        return self._count_address(address) or address

    def leave(self, ticket: str) -> None:
        """A connection that :meth:`arrive` counted has closed."""
        self._admitted -= 1
        if ticket:
            left = self._per_address.get(ticket, 0) - 1
            if left > 0:
                self._per_address[ticket] = left
            else:
                self._per_address.pop(ticket, None)

    def _count_address(self, address: str) -> Refusal | None:
        held = self._per_address.get(address, 0)
        if held >= self._max_per_address:
            return 429, "too many connections from your address"
        self._per_address[address] = held + 1
        return None

    def _warn_on_a_large_share(self, address: str) -> None:
        held = self._per_address[address]
        if held >= self._warn_at and 2 * held > self._admitted:
            log.warn(
                "{held} of {admitted} connections come from {address}: if that is a proxy or "
                "a load balancer, set --real-ip-header, or its clients share one address's "
                "limit (--max-connections-per-ip {limit})",
                held=held, admitted=self._admitted, address=address,
                limit=self._max_per_address,
            )  # fmt: skip
            self._warn_at *= 2


class SessionRegistry:
    """Every open session of this process, with the connection it speaks through."""

    def __init__(
        self,
        node: Node,
        authenticator: IAuthenticator,
        config: GatewayConfig,
        clock: IReactorTime,
    ) -> None:
        self._node = node
        self._authenticator = authenticator
        self._config = config
        self._clock = clock
        self._sessions: dict[Session, IClientConnection] = {}

    def open(self, connection: IClientConnection) -> Session:
        session = Session(connection, self._node, self._authenticator, self._config, self._clock)
        self._sessions[session] = connection
        return session

    def end(self, session: Session) -> None:
        """The session's connection has closed: give back its subscriptions."""
        session.end()
        self._sessions.pop(session, None)

    def connections(self) -> Iterable[IClientConnection]:
        return self._sessions.values()

    def kick(self, uid: str) -> None:
        """Log ``uid`` out of every session here, and out of every auth in flight. A kick is
        rare, so it looks through the sessions rather than keep an index by uid on the path
        of every auth."""
        for session in list(self._sessions):
            session.kick(uid)

    def __len__(self) -> int:
        return len(self._sessions)


class Drain:
    """Shutting down politely: refuse new connections and publishes (503) while ``draining``,
    then close every client with 4200 ("reconnect now") at a random moment of the window,
    each with a notice giving a random reconnect delay of up to a second, so that the clients
    of a node do not all land on the others at once."""

    close_timeout = 2.0  # after the window, for the last closing handshakes

    def __init__(
        self,
        connections: Callable[[], Iterable[IClientConnection]],
        clock: IReactorTime,
        window: float,
        chance: random.Random | None = None,
    ) -> None:
        self._connections = connections
        self._clock = clock
        self._window = window
        self._random = chance or random.Random()
        self.draining = False

    def start(self, window: float | None = None) -> Deferred:
        """Fires when every client is gone, or ``close_timeout`` after the window (default:
        the configured one)."""
        window = self._window if window is None else window
        self.draining = True
        closing = []
        for connection in list(self._connections()):
            self._clock.callLater(self._random.uniform(0, window), self._send_away, connection)
            closing.append(connection.is_closed)
        everyone = DeferredList(closing, consumeErrors=True)
        everyone.addTimeout(window + self.close_timeout, self._clock)
        return everyone.addErrback(lambda _: None)

    def _send_away(self, connection: IClientConnection) -> None:
        reconnect_in = self._random.randint(0, 1000)
        connection.send_reply(encode_notice({"type": "reconnect", "reconnectInMs": reconnect_in}))
        connection.close(
            CloseCode.RECONNECT, f"server shutting down; reconnect in {reconnect_in} ms"
        )
