"""A gateway node: its local hub, and the mesh subscriptions that follow the hub's channels.

The node holds a mesh subscription for a channel exactly while the hub has a local subscriber
for it. Mesh calls may be asynchronous (Redis), so the node serialises them per channel and
reconciles after each: whatever the order of subscribes and unsubscribes, the mesh ends up
subscribed iff the hub still wants the channel, and a subscriber's Deferred fires only once
messages published from then on will reach it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from exchange_stream.core.hub import Hub, Subscriber
from exchange_stream.core.publication import Publication
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
        self.hub.deliver(channel, publication.payload, publication.binary)

    def publish(
        self, channel: str, publication: Publication, snapshot: Publication | None = None
    ) -> Deferred:
        """Publishing always goes through the mesh, even on a single node."""
        return self.mesh.publish(channel, publication, snapshot)

    def subscribe(self, subscriber: Subscriber, channel: str) -> Deferred:
        """Add a local subscription, held until :meth:`release`.

        Fires, once the node receives ``channel`` from the mesh, with the channel's snapshot
        (a :class:`Publication`, or None) for the caller to pass to :meth:`release`.
        """
        self.hub.add(subscriber, channel)
        in_effect = self._reconcile(channel)
        return in_effect.addCallback(lambda _: self.mesh.snapshot(channel))

    def release(self, subscriber: Subscriber, channel: str, snapshot: Publication | None) -> None:
        """Send the snapshot, then what arrived meanwhile, then live messages."""
        self.hub.release(subscriber, channel, snapshot)

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


def _logged(failure: Failure) -> None:
    """An unsubscribe's alignment failed: ``_aligned`` logged it; nobody waits for it."""
