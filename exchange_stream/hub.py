"""The local fan-out index: which of this node's connections listen to which internal channel.

The hub knows nothing of other nodes or of the mesh; it tells its caller when a channel gets
its first local subscriber and when it loses its last, so that the node can take or give back
the mesh subscription. Delivery frames a message once and writes the same frame to every
subscriber, so a publication costs one encoding plus O(subscribers of that channel).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol


class Subscriber(Protocol):
    """What the hub writes to: an Autobahn protocol, or anything that takes a prepared frame."""

    def sendPreparedMessage(self, prepared: Any) -> None: ...


PrepareMessage = Callable[[bytes, bool], Any]


class Hub:
    """Channel → subscribers, and subscriber → channels for O(own channels) clean-up."""

    def __init__(self, prepare: PrepareMessage) -> None:
        self._prepare = prepare
        self._by_channel: dict[str, dict[Subscriber, None]] = {}
        self._by_subscriber: dict[Subscriber, set[str]] = {}
        self.subscription_count = 0
        self.messages_delivered = 0

    def add(self, subscriber: Subscriber, channel: str) -> bool:
        """Subscribe; True when this is the channel's first local subscriber."""
        subscribers = self._by_channel.get(channel)
        first = subscribers is None
        if first:
            subscribers = self._by_channel[channel] = {}
        elif subscriber in subscribers:
            return False
        subscribers[subscriber] = None
        self._by_subscriber.setdefault(subscriber, set()).add(channel)
        self.subscription_count += 1
        return first

    def remove(self, subscriber: Subscriber, channel: str) -> bool:
        """Unsubscribe; True when the channel has no local subscriber left."""
        channels = self._by_subscriber.get(subscriber)
        if channels is None or channel not in channels:
            return False
        channels.discard(channel)
        self.subscription_count -= 1
        if not channels:
            del self._by_subscriber[subscriber]
        subscribers = self._by_channel[channel]
        del subscribers[subscriber]
        if subscribers:
            return False
        del self._by_channel[channel]
        return True

    def remove_all(self, subscriber: Subscriber) -> list[str]:
        """Forget a subscriber (its connection closed); return the channels left empty."""
        emptied = []
        channels = self._by_subscriber.pop(subscriber, ())
        self.subscription_count -= len(channels)
        for channel in channels:
            subscribers = self._by_channel[channel]
            del subscribers[subscriber]
            if not subscribers:
                del self._by_channel[channel]
                emptied.append(channel)
        return emptied

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._by_channel

    def channels(self) -> Iterable[str]:
        return self._by_channel.keys()

    @property
    def channel_count(self) -> int:
        return len(self._by_channel)

    @property
    def subscriber_count(self) -> int:
        return len(self._by_subscriber)

    def deliver(self, channel: str, payload: bytes, binary: bool = False) -> int:
        """Write one publication to every local subscriber of ``channel``; return how many."""
        subscribers = self._by_channel.get(channel)
        if not subscribers:
            return 0
        prepared = self._prepare(payload, binary)
        # A copy: a write can fail a connection, whose clean-up edits this dict.
        for subscriber in tuple(subscribers):
            subscriber.sendPreparedMessage(prepared)
        self.messages_delivered += len(subscribers)
        return len(subscribers)
