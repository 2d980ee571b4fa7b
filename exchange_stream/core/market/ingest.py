"""The one gate every parsed event goes through before any computation sees it.

Parsing (``events.parse_event``) already refused what is not an event or has numbers out of
bounds. Here an event is checked against the engine's clock and against what was taken
before: a ``ts`` too far ahead or behind, a trade id taken already (the same trade resent, or
another one under its id), a book older than the last one, an index price older than its
source's last. What passes is taken by every computation alike — the trades channel, the
ticker and the klines see the same trades — and what does not is counted by reason.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from exchange_stream.core.market.events import Book, Event, IndexPrice, Trade


@dataclass(frozen=True)
class TimeBounds:
    """How far an event's ``ts`` may be from the engine's clock, in milliseconds."""

    ahead_ms: int = 10_000
    late_ms: int = 60_000


class _SymbolMemory:
    """What one symbol has taken: recent trades by id (for as long as a resend of them could
    still be accepted), the last book's and each index source's ``ts``."""

    def __init__(self) -> None:
        self.trades: dict[int, Trade] = {}
        self.arrivals: deque[Trade] = deque()
        self.book_ts = -1
        self.index_ts: dict[str, int] = {}


class Admission:
    """Decides, for each event at the engine's ``now``, whether it is taken.

    ``refused`` counts refusals by reason (``future``, ``late``, ``duplicate``, ``conflict``,
    ``stale_book``, ``stale_index``), and is shared with the parser's (``malformed``,
    ``number``), so that one counter says what the feed lost and why.
    """

    def __init__(self, bounds: TimeBounds, refused: Counter[str]) -> None:
        self.bounds = bounds
        self.refused = refused
        self._symbols: dict[str, _SymbolMemory] = {}

    def admit(self, event: Event, now_ms: int) -> bool:
        if not isinstance(event, Trade | Book | IndexPrice):
            return True  # private events: passed through, no time of their own
        if event.ts > now_ms + self.bounds.ahead_ms:
            return self._refuse("future")
        if event.ts < now_ms - self.bounds.late_ms:
            return self._refuse("late")
        memory = self._symbols.get(event.symbol)
        if memory is None:
            memory = self._symbols[event.symbol] = _SymbolMemory()
        if isinstance(event, Trade):
            return self._trade(event, memory, now_ms)
        if isinstance(event, Book):
            if event.ts < memory.book_ts:
                return self._refuse("stale_book")
            memory.book_ts = event.ts
            return True
        known = memory.index_ts.get(event.source, -1)
        if event.ts < known:
            return self._refuse("stale_index")
        memory.index_ts[event.source] = event.ts
        return True

    def _trade(self, trade: Trade, memory: _SymbolMemory, now_ms: int) -> bool:
        # An id is forgotten once its trade is too old to be accepted again: a resend of it
        # would be refused as late, so no duplicate gets through, and memory stays bounded.
        horizon = now_ms - self.bounds.late_ms
        arrivals = memory.arrivals
        while arrivals and arrivals[0].ts < horizon:
            old = arrivals.popleft()
            if memory.trades.get(old.id) is old:
                del memory.trades[old.id]
        first = memory.trades.get(trade.id)
        if first is not None:
            return self._refuse("duplicate" if first == trade else "conflict")
        memory.trades[trade.id] = trade
        arrivals.append(trade)
        return True

    def _refuse(self, reason: str) -> bool:
        self.refused[reason] += 1
        return False
