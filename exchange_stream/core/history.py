"""Bounded, ordered histories and idempotency keys, kept in memory (the memory mesh's).

Pure: times are passed in (seconds). The Redis mesh keeps the same structures in Redis (a
stream and a hash per channel, written by one script); these are the reference semantics.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from exchange_stream.core.publication import Publication, Published
from exchange_stream.core.streams import History, Position, StreamPolicy


def new_epoch() -> str:
    return os.urandom(6).hex()


@dataclass
class _Log:
    epoch: str
    touched: float  # when it was made or last written
    top: int = 0
    entries: deque[tuple[float, Publication]] = field(default_factory=deque)


class StreamLogs:
    """Every stream channel's history, within its limits (``StreamPolicy.limits``: so many
    publications, none older than a ttl). A channel with no publication for its ttl is
    forgotten, so its next publication starts a new epoch (its old positions could not be
    served any more). Channels are swept per ttl, least recently touched first, so a sweep
    stops at the first channel still in time."""

    def __init__(self, policy: StreamPolicy) -> None:
        self._policy = policy
        self._logs: dict[float, OrderedDict[str, _Log]] = {}  # ttl -> its channels

    def append(self, channel: str, publication: Publication, now: float) -> Publication:
        """The publication with its position, kept in the channel's history."""
        size, ttl = self._policy.limits(channel)
        log = self._log(channel, now, ttl)
        log.top += 1
        log.touched = now
        self._logs[ttl].move_to_end(channel)
        # Built directly: dataclasses.replace looks the fields up on every call.
        positioned = Publication(publication.payload, publication.binary, log.epoch, log.top)
        log.entries.append((now, positioned))
        if len(log.entries) > size:
            log.entries.popleft()
        return positioned

    def recent(self, channel: str, count: int, now: float) -> list[Publication]:
        """The channel's last ``count`` publications still in its history, oldest first."""
        ttl = self._policy.limits(channel)[1]
        logs = self._logs.get(ttl)
        log = logs.get(channel) if logs is not None else None
        if log is None:
            return []
        oldest = now - ttl
        kept = [p for at, p in log.entries if at >= oldest]
        return kept[-count:] if count else []

    def history(self, channel: str, since: Position | None, now: float) -> History:
        """The channel's position and, when ``since`` can be served, what came after it."""
        log = self._log(channel, now)
        position = Position(log.epoch, log.top)
        if since is None:
            return History(position)
        if since.epoch != log.epoch or not 0 <= since.offset <= log.top:
            return History(position, None)
        oldest = now - self._policy.limits(channel)[1]
        after = [(at, p) for at, p in log.entries if (p.offset or 0) > since.offset]
        if since.offset < log.top:
            first_at, first = after[0] if after else (0.0, None)
            if first is None or first.offset != since.offset + 1 or first_at < oldest:
                return History(position, None)  # trimmed past it, or too old
        return History(position, [p for _, p in after])

    def _log(self, channel: str, now: float, ttl: float | None = None) -> _Log:
        if ttl is None:
            ttl = self._policy.limits(channel)[1]
        logs = self._logs.setdefault(ttl, OrderedDict())
        while logs:  # forget the idle ones, least recently touched first
            first = next(iter(logs.values()))
            if first.touched >= now - ttl:
                break
            logs.popitem(last=False)
        log = logs.get(channel)
        if log is None:
            log = logs[channel] = _Log(new_epoch(), now)
        return log


class KeyWindow:
    """Idempotency keys: the answer of the first publish with a key, for ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._answers: OrderedDict[tuple[str, str], tuple[float, Published]] = OrderedDict()

    def seen(self, channel: str, key: str, now: float) -> Published | None:
        self._expire(now)
        kept = self._answers.get((channel, key))
        return kept[1] if kept is not None else None

    def remember(self, channel: str, key: str, answer: Published, now: float) -> None:
        self._answers[(channel, key)] = (now + self._ttl, answer)

    def _expire(self, now: float) -> None:
        while self._answers:
            expires, _ = next(iter(self._answers.values()))
            if expires > now:
                return
            self._answers.popitem(last=False)
