"""The local fan-out index: which of this node's connections listen to which internal channel.

The hub knows nothing of other nodes or of the mesh; it tells its caller when a channel gets
its first local subscriber and when it loses its last, so that the node can take or give back
the mesh subscription. Delivery frames a message once and writes the same frame to every
subscriber, so a publication costs one encoding plus O(subscribers of that channel).

A new subscriber starts *held*: what is published for it is queued until :meth:`Hub.release`
writes the channel's snapshot first and the queue after it. That is how a new subscriber
gets the snapshot before any live message, whatever the mesh's round trips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from exchange_stream.core.publication import Publication


class Subscriber(Protocol):
    """What the hub writes to: an Autobahn protocol, or anything that takes a prepared frame."""

    def sendPreparedMessage(self, prepared: Any) -> None: ...


PrepareMessage = Callable[[bytes, bool], Any]


class Hub:
    """Channel → subscribers, and subscriber → channels for O(own channels) clean-up."""

    def __init__(self, prepare: PrepareMessage) -> None:
        self._prepare = prepare
        self._live: dict[str, dict[Subscriber, None]] = {}
        self._held: dict[str, dict[Subscriber, list[Any]]] = {}
        self._by_subscriber: dict[Subscriber, set[str]] = {}
        self.subscription_count = 0
        self.messages_delivered = 0

    def add(self, subscriber: Subscriber, channel: str) -> bool:
        """Subscribe, held until :meth:`release`; True for the channel's first subscriber."""
        channels = self._by_subscriber.setdefault(subscriber, set())
        if channel in channels:
            return False
        first = not self.has_subscribers(channel)
        channels.add(channel)
        self._held.setdefault(channel, {})[subscriber] = []
        self.subscription_count += 1
        return first

    def release(self, subscriber: Subscriber, channel: str, snapshot: Publication | None) -> None:
        """Write ``snapshot`` and then what was queued; go live.

        A subscriber that left in the meantime, or is live already, is left alone.
        """
        held = self._held.get(channel)
        queued = held.pop(subscriber, None) if held else None
        if queued is None:
            return
        if not held:
            del self._held[channel]
        if snapshot is not None:
            queued.insert(0, self._prepare(snapshot.payload, snapshot.binary))
        for prepared in queued:
            subscriber.sendPreparedMessage(prepared)
        self.messages_delivered += len(queued)
        self._live.setdefault(channel, {})[subscriber] = None

    def remove(self, subscriber: Subscriber, channel: str) -> bool:
        """Unsubscribe; True when the channel has no local subscriber left."""
        channels = self._by_subscriber.get(subscriber)
        if channels is None or channel not in channels:
            return False
        channels.discard(channel)
        if not channels:
            del self._by_subscriber[subscriber]
        self.subscription_count -= 1
        self._forget(subscriber, channel)
        return not self.has_subscribers(channel)

    def remove_all(self, subscriber: Subscriber) -> list[str]:
        """Forget a subscriber (its connection closed); return the channels left empty."""
        channels = self._by_subscriber.pop(subscriber, ())
        self.subscription_count -= len(channels)
        emptied = []
        for channel in channels:
            self._forget(subscriber, channel)
            if not self.has_subscribers(channel):
                emptied.append(channel)
        return emptied

    def _forget(self, subscriber: Subscriber, channel: str) -> None:
        for index in (self._live, self._held):
            subscribers = index.get(channel)
            if subscribers is not None and subscriber in subscribers:
                del subscribers[subscriber]
                if not subscribers:
                    del index[channel]

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._live or channel in self._held

    def channels(self) -> Iterable[str]:
        return self._live.keys() | self._held.keys()

    @property
    def channel_count(self) -> int:
        return len(self._live.keys() | self._held.keys())

    @property
    def subscriber_count(self) -> int:
        return len(self._by_subscriber)

    def deliver(self, channel: str, payload: bytes, binary: bool = False) -> int:
        """Write one publication to every local subscriber of ``channel``; return how many."""
        live = self._live.get(channel)
        held = self._held.get(channel)
        if not live and not held:
            return 0
        prepared = self._prepare(payload, binary)
        if held:
            for queue in held.values():
                queue.append(prepared)
        if not live:
            return 0
        # A copy: a write can fail a connection, whose clean-up edits this dict.
        for subscriber in tuple(live):
            subscriber.sendPreparedMessage(prepared)
        self.messages_delivered += len(live)
        return len(live)
