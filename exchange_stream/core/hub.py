"""The local fan-out index: which of this node's connections listen to which internal channel.

The hub knows nothing of other nodes or of the mesh; it tells its caller when a channel gets
its first local subscriber and when it loses its last, so that the node can take or give back
the mesh subscription. Delivery frames a message once and writes the same frame to every
subscriber, so a publication costs one encoding plus O(subscribers of that channel).

A new subscriber starts *held*: what is published for it is queued until :meth:`Hub.release`
writes the channel's snapshot (or, for a client resuming a stream, what it missed) first and
the queue after it. That is how a new subscriber gets the snapshot before any live message,
whatever the mesh's round trips.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from exchange_stream.core.publication import Publication
from exchange_stream.core.streams import with_offset


class Subscriber(Protocol):
    """What the hub writes to: an Autobahn protocol, or anything that takes a prepared frame."""

    def sendPreparedMessage(self, prepared: Any) -> None: ...


PrepareMessage = Callable[[bytes, bool], Any]


class Hub:
    """Channel → subscribers, and subscriber → channels for O(own channels) clean-up.

    A subscriber may want positions (a client that asked to ``recover``): on a stream
    channel its pushes carry the publication's offset. That frame is prepared once per
    publication too, beside the plain one, and only while such a subscriber exists.

    The snapshot frames of the last ``snapshot_frames_kept`` channels subscribed to are kept
    (while those channels have subscribers) and given to the next subscriber whose snapshot
    is the same: a reconnect storm frames (and compresses) a book once, not once per client,
    and a node with a private channel per user holds no more than that many."""

    snapshot_frames_kept = 256

    def __init__(self, prepare: PrepareMessage) -> None:
        self._prepare = prepare
        self._live: dict[str, dict[Subscriber, bool]] = {}  # subscriber -> wants positions
        self._held: dict[str, dict[Subscriber, tuple[bool, list[tuple[int | None, Any]]]]] = {}
        self._positioned: dict[str, int] = {}  # channel -> subscribers wanting positions
        self._snapshots: OrderedDict[str, tuple[Publication, Any]] = OrderedDict()
        self._by_subscriber: dict[Subscriber, set[str]] = {}
        self.subscription_count = 0
        self.messages_delivered = 0

    def add(self, subscriber: Subscriber, channel: str, positioned: bool = False) -> bool:
        """Subscribe, held until :meth:`release`; True for the channel's first subscriber."""
        channels = self._by_subscriber.setdefault(subscriber, set())
        if channel in channels:
            return False
        first = not self.has_subscribers(channel)
        channels.add(channel)
        self._held.setdefault(channel, {})[subscriber] = (positioned, [])
        if positioned:
            self._positioned[channel] = self._positioned.get(channel, 0) + 1
        self.subscription_count += 1
        return first

    def release(
        self,
        subscriber: Subscriber,
        channel: str,
        snapshot: Publication | None,
        replay: Iterable[Publication] = (),
        after: int | None = None,
    ) -> None:
        """Write ``snapshot``, then ``replay`` (a resume's publications, with their offsets),
        then what was queued (on a stream, only what comes after offset ``after``, the
        position the subscriber was given); go live.

        A subscriber that left in the meantime, or is live already, is left alone.
        """
        held = self._held.get(channel)
        entry = held.pop(subscriber, None) if held else None
        if entry is None:
            return
        if not held:
            del self._held[channel]
        positioned, queued = entry
        frames = []
        if snapshot is not None:
            frames.append(self._snapshot_frame(channel, snapshot))
        for publication in replay:
            assert publication.offset is not None, "a replay comes from a stream's history"
            frames.append(
                self._prepare(with_offset(publication.payload, publication.offset), False)
            )
        for offset, prepared in queued:
            if after is None or offset is None or offset > after:
                frames.append(prepared)
        for prepared in frames:
            subscriber.sendPreparedMessage(prepared)
        self.messages_delivered += len(frames)
        self._live.setdefault(channel, {})[subscriber] = positioned

    def _snapshot_frame(self, channel: str, snapshot: Publication) -> Any:
        kept = self._snapshots.get(channel)
        if kept is not None:
            known, frame = kept
            if known.payload == snapshot.payload and known.binary == snapshot.binary:
                self._snapshots.move_to_end(channel)
                return frame
        frame = self._prepare(snapshot.payload, snapshot.binary)
        self._snapshots[channel] = (snapshot, frame)
        self._snapshots.move_to_end(channel)
        if len(self._snapshots) > self.snapshot_frames_kept:
            self._snapshots.popitem(last=False)
        return frame

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
        channels = self._by_subscriber.pop(subscriber, set())
        self.subscription_count -= len(channels)
        emptied = []
        for channel in channels:
            self._forget(subscriber, channel)
            if not self.has_subscribers(channel):
                emptied.append(channel)
        return emptied

    def _forget(self, subscriber: Subscriber, channel: str) -> None:
        positioned = False
        live = self._live.get(channel)
        if live is not None and subscriber in live:
            positioned = live.pop(subscriber)
            if not live:
                del self._live[channel]
        held = self._held.get(channel)
        if held is not None and subscriber in held:
            positioned = held.pop(subscriber)[0]
            if not held:
                del self._held[channel]
        if not self.has_subscribers(channel):
            self._snapshots.pop(channel, None)
        if positioned:
            left = self._positioned[channel] - 1
            if left:
                self._positioned[channel] = left
            else:
                del self._positioned[channel]

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

    def deliver(
        self, channel: str, payload: bytes, binary: bool = False, offset: int | None = None
    ) -> int:
        """Write one publication to every local subscriber of ``channel``; return how many.
        ``offset`` is its position on a stream channel."""
        live = self._live.get(channel)
        held = self._held.get(channel)
        if not live and not held:
            return 0
        prepared = positioned = self._prepare(payload, binary)
        if offset is not None and channel in self._positioned:
            positioned = self._prepare(with_offset(payload, offset), False)
        if held:
            for wants, queue in held.values():
                queue.append((offset, positioned if wants else prepared))
        if not live:
            return 0
        # A copy: a write can fail a connection, whose clean-up edits this dict.
        if positioned is prepared:
            for subscriber in tuple(live):
                subscriber.sendPreparedMessage(prepared)
        else:
            for subscriber, wants in tuple(live.items()):
                subscriber.sendPreparedMessage(positioned if wants else prepared)
        self.messages_delivered += len(live)
        return len(live)
