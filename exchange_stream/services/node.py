"""A gateway node: its local hub, and the mesh subscriptions that follow the hub's channels.

The node holds a mesh subscription for a channel exactly while the hub has a local subscriber
for it. Mesh calls may be asynchronous (Redis), so the node serialises them per channel and
reconciles after each: whatever the order of subscribes and unsubscribes, the mesh ends up
subscribed iff the hub still wants the channel, and a subscriber's Deferred fires only once
messages published from then on will reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from exchange_stream.core.hub import Hub, Subscriber
from exchange_stream.core.publication import Publication
from exchange_stream.core.streams import History, Position
from exchange_stream.interfaces import IMesh, IMeshReceiver


@implementer(IMeshReceiver)
class Node:
    log = Logger()

    def __init__(self, hub: Hub, mesh: IMesh) -> None:
        self.hub = hub
        self.mesh = mesh
        self._meshed: set[str] = set()
        self._locks: dict[str, DeferredLock] = {}
        # Callers of the alignment that waits behind the running one, per channel.
        self._queued: dict[str, list[Deferred]] = {}

    def receive(self, channel: str, publication: Publication) -> None:
        self.hub.deliver(channel, publication.payload, publication.binary, publication.offset)

    def publish(
        self,
        channel: str,
        publication: Publication,
        snapshot: Publication | None = None,
        key: str | None = None,
    ) -> Deferred:
        """Publishing always goes through the mesh, even on a single node."""
        return self.mesh.publish(channel, publication, snapshot, key)

    def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        positioned: bool = False,
        since: Position | None = None,
    ) -> Deferred:
        """Add a local subscription, held until :meth:`release`.

        Fires, once the node receives ``channel`` from the mesh, with the :class:`Start` to
        pass to :meth:`release`: the channel's snapshot; or, for a subscriber that wants
        positions on a stream channel, its position (read after the subscription is in
        effect, so nothing falls between) and, resuming ``since``, what it missed.
        """
        self.hub.add(subscriber, channel, positioned)
        in_effect = self._reconcile(channel)
        if not positioned:
            in_effect.addCallback(lambda _: self.mesh.snapshot(channel))
            return in_effect.addCallback(lambda snapshot: Start(snapshot=snapshot))
        in_effect.addCallback(lambda _: self.mesh.history(channel, since))
        return in_effect.addCallback(_started, since)

    def release(self, subscriber: Subscriber, channel: str, start: Start) -> None:
        """Send the snapshot or what was missed, then what arrived meanwhile, then live
        messages."""
        after = start.position.offset if start.position is not None else None
        self.hub.release(subscriber, channel, start.snapshot, start.replay, after)

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        if self.hub.remove(subscriber, channel):
            self._reconcile(channel).addErrback(_logged)

    def drop(self, subscriber: Subscriber) -> None:
        """A connection went away: forget all of its subscriptions."""
        for channel in self.hub.remove_all(subscriber):
            self._reconcile(channel).addErrback(_logged)

    def _reconcile(self, channel: str) -> Deferred:
        """Bring the mesh subscription in line with the hub; fires once it is.

        At most one alignment per channel runs and at most one waits behind it: a change
        while one waits is seen by that one when it starts, so its callers share it. A
        queue of one alignment per caller would be released recursively, one nested call
        per waiter: hundreds of clients subscribing to one channel during one Redis round
        trip exhausted Python's stack (bench/peers' two-node run).
        """
        in_step = (channel in self._meshed) == self.hub.has_subscribers(channel)
        if in_step and channel not in self._locks:
            # Nothing to change and nothing in flight: the common case costs no lock.
            return succeed(None)
        follower: Deferred = Deferred()
        queued = self._queued.get(channel)
        if queued is not None:
            queued.append(follower)
            return follower
        lock = self._locks.get(channel)
        if lock is None:
            lock = self._locks[channel] = DeferredLock()
        followers = self._queued[channel] = [follower]  # until it starts (see _align)
        done = lock.run(self._align, channel)
        done.addBoth(self._aligned, channel, lock, followers)
        return follower

    @inlineCallbacks
    def _align(self, channel: str):
        self._queued.pop(channel, None)  # started: later changes need another alignment
        wanted = self.hub.has_subscribers(channel)
        if wanted and channel not in self._meshed:
            yield self.mesh.subscribe(channel, self)
            self._meshed.add(channel)
        elif not wanted and channel in self._meshed:
            self._meshed.discard(channel)
            yield self.mesh.unsubscribe(channel, self)

    def _aligned(self, result, channel: str, lock: DeferredLock, followers: list[Deferred]):
        if not lock.locked and not lock.waiting and self._locks.get(channel) is lock:
            del self._locks[channel]
        if isinstance(result, Failure):  # once, however many callers share it
            self.log.failure("aligning the mesh subscription of {channel} failed", result,
                             channel=channel)  # fmt: skip
        for follower in followers:
            if isinstance(result, Failure):
                follower.errback(result)
            else:
                follower.callback(None)


@dataclass(frozen=True)
class Start:
    """What a new subscriber gets before live messages: a snapshot, or a position (and
    whether a resume could be served, with what it missed)."""

    snapshot: Publication | None = None
    position: Position | None = None
    recovered: bool | None = None
    replay: list[Publication] = field(default_factory=list)


def _started(history: History, since: Position | None) -> Start:
    if since is None:
        return Start(position=history.position)
    if history.publications is None:
        return Start(position=history.position, recovered=False)
    return Start(position=history.position, recovered=True, replay=history.publications)


def _logged(failure: Failure) -> None:
    """An unsubscribe's alignment failed: ``_aligned`` logged it; nobody waits for it."""
