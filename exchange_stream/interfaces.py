"""Every ``zope.interface`` the gateway's parts meet at, each with its contract.

An implementation says ``@implementer(...)``, and ``tests/test_interfaces.py`` checks each
real one with ``verifyObject``. The values these contracts speak of (``Publication``,
``Identity``, ``MeshUnavailable``, ``AuthFailed``, ``AuthUnavailable``) are plain classes in
``core`` and ``services.auth``.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from exchange_stream.core.publication import Publication
from exchange_stream.core.streams import Position


class IMeshReceiver(Interface):
    """What a mesh hands publications to: a node, the control receiver, the self-check."""

    def receive(channel: str, publication: Publication) -> None:
        """Deliver a ``Publication`` on internal ``channel`` to this receiver's subscribers."""


class IMesh(Interface):
    """Node-to-node pub/sub.

    A node subscribes a channel only while it has local subscribers for it, so a mesh carries
    only traffic some node wants. Publishing always goes through the mesh, also on one node.
    """

    available = Attribute("True while publish() can attempt delivery.")
    receiving = Attribute("True while this node receives the channels it subscribed.")
    reconnects = Attribute("How many times the mesh had to reconnect (0 for memory).")
    deaf_events = Attribute("Times the node found itself deaf and resubscribed (0 for memory).")
    lost_publications = Attribute(
        "Stream publications this node could not pass on: gone from the history before it "
        "could read them back (0 for memory)."
    )

    def publish(
        channel: str,
        publication: Publication,
        snapshot: Publication | None = None,
        key: str | None = None,
    ) -> Deferred:
        """Accept ``publication`` for every node subscribed to ``channel``.

        With ``snapshot``, keep it as the channel's state for new subscribers, in the same
        step as the publish (so a snapshot is never older than a message that follows it).
        On a stream channel (``core.streams``) the publication gets the next offset and joins
        the channel's history in the same step. With ``key``, a second publish with the same
        key on the same channel within the idempotency window is not sent again: it answers
        what the first one did.

        Returns a Deferred firing with a ``Published`` (the number of nodes that had
        subscribers, 0 when nobody listens, and the position on a stream channel) once the
        mesh has accepted the message; failing with ``MeshUnavailable`` when it was not sent,
        or ``MeshOutcomeUnknown`` when it may have been.
        """

    def history(channel: str, since: Position | None = None) -> Deferred:
        """A Deferred firing with the stream channel's ``History``: its current position and,
        when ``since`` is given and can be served (same epoch, still in the history), the
        publications after it, in order. Fails with ``MeshUnavailable`` when the mesh cannot
        answer now."""

    def recent(channel: str, count: int) -> Deferred:
        """A Deferred firing with the stream channel's last ``count`` publications (fewer if
        it holds fewer), oldest first, with their positions; for charts' bar history."""

    def snapshot(channel: str) -> Deferred:
        """A Deferred firing with the channel's kept ``Publication``, or None; never fails (a
        mesh that cannot answer now answers None and logs why)."""

    def subscribe(channel: str, receiver: IMeshReceiver) -> Deferred:
        """Start handing ``channel``'s publications to ``receiver``; a Deferred that fires when
        in effect. Never fails: a mesh that cannot subscribe now keeps the wish and subscribes
        when it can (a Redis reconnect resubscribes every wanted channel)."""

    def unsubscribe(channel: str, receiver: IMeshReceiver) -> Deferred:
        """Stop handing ``channel``'s publications to ``receiver``; a Deferred that fires
        when in effect."""


class IAuthenticator(Interface):
    """Token → ``Identity`` (uid and optional expiry)."""

    def authenticate(token: str) -> Deferred:
        """A Deferred firing with an ``Identity``, or failing with ``AuthFailed`` (the token
        is not valid) or ``AuthUnavailable`` (the back end could not say); never with anything
        else."""


class IClientConnection(Interface):
    """What a session and the drain need from a client's transport (the Autobahn protocol,
    or ``testing.RecordingConnection``)."""

    is_closed = Attribute("A Deferred that fires when the connection is closed.")

    def send_reply(reply: bytes) -> None:
        """Send one text frame to this client (dropped when it is no longer open)."""

    def close(code: int, reason: str) -> None:
        """Start the closing handshake with a WebSocket close code."""

    def sendPreparedMessage(prepared: object) -> None:
        """Write a frame prepared once for many subscribers (the hub's fan-out)."""


class IHeartbeatPeer(Interface):
    """A connection that the heartbeat pings and drops when it goes silent."""

    last_heard = Attribute("When the peer last sent anything (the clock's seconds).")

    def send_ping(frame: bytes) -> None:
        """Write a ping frame (prepared once for every peer)."""

    def drop_dead() -> None:
        """Drop the connection without a closing handshake: the peer is gone."""


class IProcessReports(Interface):
    """The other processes of a node (``--workers``), as the first process sees them."""

    def reports() -> list[dict[str, int] | None]:
        """Each worker's last figures (a dict of ``FIGURES``), or None for one not reporting."""

    def silent() -> int:
        """How many workers are alive but have not reported lately (stuck)."""

    def counted(name: str) -> int:
        """A counter over every worker process run so far: it never goes down."""
