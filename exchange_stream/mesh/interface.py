"""The contract between a node (hub side) and a mesh (other-nodes side)."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class MeshUnavailable(Exception):
    """The mesh cannot attempt delivery now (e.g. Redis is down); nothing was sent."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One message as a back end published it: ``payload`` goes out byte for byte."""

    payload: bytes
    binary: bool = False


class IMeshReceiver(Interface):
    """A node: what a mesh hands publications to."""

    def receive(channel: str, publication: Publication) -> None:
        """Deliver ``publication`` on internal ``channel`` to this node's local subscribers."""


class IMesh(Interface):
    """Node-to-node pub/sub.

    A node subscribes a channel only while it has local subscribers for it, so a mesh carries
    only traffic some node wants. Publishing always goes through the mesh, also on one node.
    """

    available = Attribute("True while publish() can attempt delivery.")
    receiving = Attribute("True while this node receives the channels it subscribed.")
    reconnects = Attribute("How many times the mesh had to reconnect (0 for memory).")

    def publish(
        channel: str, publication: Publication, snapshot: Publication | None = None
    ) -> Deferred:
        """Accept ``publication`` for every node subscribed to ``channel``.

        With ``snapshot``, keep it as the channel's state for new subscribers, in the same
        step as the publish (so a snapshot is never older than a message that follows it).
        Fires with the number of nodes that had subscribers (0: nobody listens) once the mesh
        has accepted the message; fails with :class:`MeshUnavailable` when it was not sent.
        """

    def snapshot(channel: str) -> Deferred:
        """Fire with the channel's kept :class:`Publication`, or None; never fails (a mesh
        that cannot answer now answers None and logs why)."""

    def subscribe(channel: str, receiver: IMeshReceiver) -> Deferred:
        """Start handing ``channel``'s publications to ``receiver``; fires when in effect.

        Never fails: a mesh that cannot subscribe now keeps the wish and subscribes when it
        can (a Redis reconnect resubscribes every wanted channel).
        """

    def unsubscribe(channel: str, receiver: IMeshReceiver) -> Deferred:
        """Stop handing ``channel``'s publications to ``receiver``; fires when in effect."""
