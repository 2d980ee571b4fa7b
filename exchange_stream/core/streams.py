"""Stream positions: which channels keep a history, and how a node keeps their order.

Event channels (a user's ``balance``, ``order``, ``position``, ``account``; public ``trades``)
keep a bounded, ordered history in the mesh, and every publication on them gets an offset
(1, 2, 3, ... within an *epoch*: a string that changes whenever the history is lost, e.g. a
Redis restart). State channels (``depth``, ``ticker``, ``kline``, ``markprice``) have snapshots
instead: what matters there is the latest state, not every message.

A node receives a stream channel's publications from pub/sub, which may drop some (a
reconnect, a connection cut for its output buffer). :class:`Sequence` decides, per channel,
what goes on to the local subscribers: each offset once and in order, and when a range must
be read back from the history first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exchange_stream.core.channels import KLINE_INTERVALS
from exchange_stream.core.publication import Publication

STREAM_TYPES = frozenset({"balance", "order", "position", "account", "trades"})

# The market engine's closed bars, for charts (``GET /v1/market/klines``): channels no client
# can subscribe to, ``<prefix><symbol>@bars_<interval>``, each keeping its last bars.
BARS_KEPT = 1000
BARS_TTL = 30 * 24 * 3600.0
BAR_LIMITS = MappingProxyType(
    {f"bars_{interval}": (BARS_KEPT, BARS_TTL) for interval in KLINE_INTERVALS}
)


BARS_MARK = "@bars_"  # in every bars channel's name, and in no other


def bars_channel(prefix: str, symbol: str, interval: str) -> str:
    return f"{prefix}{symbol}{BARS_MARK}{interval}"


@dataclass(frozen=True)
class StreamPolicy:
    """Which channel types keep a history, and how much: at most ``size`` publications per
    channel, none older than ``ttl`` seconds (a channel idle that long loses its history and
    starts a new epoch). Types in ``kept`` are streams with limits of their own: the bar
    channels keep their last ``BARS_KEPT`` bars for ``BARS_TTL``."""

    types: frozenset[str] = STREAM_TYPES
    size: int = 10_000
    ttl: float = 600.0
    kept: Mapping[str, tuple[int, float]] = field(default_factory=lambda: BAR_LIMITS)

    @classmethod
    def from_options(cls, types: str, size: int, ttl: float) -> StreamPolicy:
        """The policy ``--history-types`` (comma-separated), ``--history-size`` and
        ``--history-ttl`` describe, for a gateway and a standalone market engine alike."""
        if size <= 0 or ttl <= 0:
            raise ValueError("history_size and history_ttl must be positive")
        kinds = frozenset(kind.strip() for kind in types.split(",") if kind.strip())
        return cls(kinds, size, ttl)

    def is_stream(self, channel: str) -> bool:
        """``ex:1001@order`` and ``ex:BTCUSDT@trades`` are streams by default."""
        _, at, kind = channel.rpartition("@")
        return bool(at) and (kind in self.types or kind in self.kept)

    def limits(self, channel: str) -> tuple[int, float]:
        """(size, ttl) of a stream channel's history."""
        return self.kept.get(channel.rpartition("@")[2], (self.size, self.ttl))


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream stands: the offset of its latest publication (0: none yet) in ``epoch``."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class History:
    """What the mesh answers for a position: the stream's current position and, when the
    position asked for could be served, the publications after it (in offset order).
    ``publications`` is None when it could not (another epoch, or older than the history)."""

    position: Position
    publications: list[Publication] | None = None


def with_offset(payload: bytes, offset: int) -> bytes:
    """A JSON object's bytes with ``"offset":N`` added as its last member, without decoding
    it: publications on stream channels are JSON objects (the publish API checks)."""
    body = payload.rstrip()
    inner = body[:-1].rstrip()
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + b'"offset":' + str(offset).encode() + b"}"


@dataclass
class Sequence:
    """One stream channel as this node receives it.

    ``last`` is the offset of the latest publication passed on in ``epoch`` (None until the
    first publication or a baseline). A publication at ``last + 1`` passes; one at or below
    ``last`` is a duplicate (a history read and pub/sub both brought it); one beyond
    ``last + 1``, or in a new epoch, means pub/sub lost the ones between: the node reads them
    from the history (after :meth:`read_from`) and holds live ones until the read is back.
    ``lost`` counts publications that were gone from the history too (past its window).

    A node that starts following a channel (``awaiting``) holds what pub/sub brings until it
    knows the stream's position just after it subscribed (:meth:`baseline`): without it, a
    publication lost right after the subscription could not be told from one published
    before it."""

    epoch: str | None = None
    last: int | None = None
    reading: bool = False
    held: list[Publication] = field(default_factory=list)
    lost: int = 0
    awaiting: bool = False

    def baseline(self, position: Position) -> list[Publication]:
        """The stream's position read just after this node subscribed: what to pass on now.
        Held publications up to it came by pub/sub, so after the subscription: they pass, in
        order; past it, a gap is one (read it)."""
        self.awaiting = False
        held, self.held = self.held, []
        if self.last is not None or self.reading:
            return self._replay(held)
        self.epoch, self.last = position.epoch, position.offset
        early = sorted(
            (p for p in held if p.epoch == self.epoch and (p.offset or 0) <= position.offset),
            key=lambda p: p.offset or 0,
        )
        passed = [
            p for index, p in enumerate(early) if index == 0 or p.offset != early[index - 1].offset
        ]
        return passed + self._replay([p for p in held if p not in early])

    def without_baseline(self) -> list[Publication]:
        """The position could not be read: start from the first publication heard."""
        self.awaiting = False
        held, self.held = self.held, []
        return self._replay(held)

    def _replay(self, publications: list[Publication]) -> list[Publication]:
        passed: list[Publication] = []
        for publication in publications:
            passed.extend(self.arrived(publication))
        return passed

    def arrived(self, publication: Publication) -> list[Publication]:
        """A publication from pub/sub: what to pass on now, in order. When it reveals a gap,
        nothing is, and ``reading`` is True until :meth:`read` brings the history."""
        if self.reading or self.awaiting:
            self.held.append(publication)
            return []
        offset = publication.offset
        if offset is None:  # published around the history (straight into Redis): as it is
            return [publication]
        if self.last is None:  # no baseline: the first one heard is where this node starts
            self.epoch, self.last = publication.epoch, offset
            return [publication]
        if publication.epoch != self.epoch:  # the history began again: read it from its start
            self.epoch, self.last = publication.epoch, 0
        if offset <= self.last:
            return []
        if offset == self.last + 1:
            self.last = offset
            return [publication]
        self.reading = True
        self.held.append(publication)
        return []

    def interrupted(self) -> None:
        """Pub/sub stopped for a while (a reconnect, a deaf connection): what came meanwhile
        is read from the history once the node has subscribed again."""
        if self.last is not None:
            self.reading = True

    def read_from(self) -> Position | None:
        """The position a history read must start after, while one is needed."""
        if not self.reading or self.epoch is None or self.last is None:
            return None
        return Position(self.epoch, self.last)

    def read(self, history: History) -> list[Publication]:
        """The history read came back: what to pass on now, in order: the publications after
        ``last`` that it holds, then those that arrived meanwhile."""
        self.reading = False
        if history.position.epoch != self.epoch or self.last is None:
            self.epoch, self.last = history.position.epoch, 0
        passed: list[Publication] = []
        for publication in history.publications or []:
            offset = publication.offset
            if offset is None or offset <= self.last:
                continue
            self.lost += offset - self.last - 1  # trimmed from the history before we read
            self.last = offset
            passed.append(publication)
        if history.position.offset > self.last and history.publications is not None:
            self.lost += history.position.offset - self.last
            self.last = history.position.offset
        held, self.held = self.held, []
        return passed + self._replay(held)
