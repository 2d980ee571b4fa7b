"""Order book depth: diffs between consecutive book snapshots, with sequence and checksum.

Several snapshots arriving within one push interval are coalesced: the engine offers every
snapshot and flushes once per interval, so a diff spans everything that changed since the
last one. Each diff carries ``seq``/``prevSeq`` (a client applies a diff only when its
``prevSeq`` is the seq it holds) and OKX's checksum of the top 25 levels of the book after it.

A flush is a few C-level passes over each side, not Python code per level: the levels come
sorted best first (``parse_event`` sorts them: that is checked, anything else is sorted
here), the diff is set arithmetic on the levels of the last published book and this one (by
value), and only the levels that changed are written out as text and put in order.
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from itertools import chain, islice
from operator import gt, itemgetter, lt

from exchange_stream.core.market.events import Book, Level

CHECKSUM_LEVELS = 25


def checksum_text(bids: list[list[str]], asks: list[list[str]]) -> str:
    """The top 25 levels, bid and ask interleaved: ``bid1p:bid1q:ask1p:ask1q:bid2p:...``
    (when one side is shorter, the other just goes on)."""
    top = CHECKSUM_LEVELS
    return _interleaved(list(map(":".join, bids[:top])), list(map(":".join, asks[:top])))


def _interleaved(bids: list[str], asks: list[str]) -> str:
    """:func:`checksum_text` of levels written as ``price:qty`` lines."""
    bids, asks = bids[:CHECKSUM_LEVELS], asks[:CHECKSUM_LEVELS]
    both = min(len(bids), len(asks))
    pairs = chain.from_iterable(zip(bids[:both], asks[:both], strict=True))
    return ":".join(chain(pairs, bids[both:] or asks[both:]))


def signed_crc32(data: bytes) -> int:
    crc = zlib.crc32(data)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's book checksum: CRC32 of :func:`checksum_text`, as a signed 32-bit integer."""
    return signed_crc32(checksum_text(bids, asks).encode())


class _Side:
    """One side of the published book: its levels (best first), as a set, and a
    ``[price, qty]`` text list per level (a snapshot's level lists are those of the last one
    where a level did not change).

    Levels are compared by value: a level is a pair of Decimals, and Decimals that are equal
    hash alike whatever their spelling ("1.50" and "1.5"), so set arithmetic on them is the
    definition of a changed level. It is cheap because the feed's Decimals are the same
    objects book after book (``events.Spellings``), whose hashes Python keeps: only the few
    levels that changed are written out as text.
    """

    __slots__ = ("better", "descending", "keys", "levels", "lists")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.better = gt if descending else lt
        self.levels: tuple[Level, ...] = ()
        self.keys: set[Level] = set()
        self.lists: dict[Level, list[str]] = {}

    def diff(self, levels: tuple[Level, ...]) -> _Diff:
        prices = list(map(itemgetter(0), levels))
        if len(levels) > 1 and not all(map(self.better, prices, islice(prices, 1, None))):
            # not strictly best first: sorted as a dict (a repeated price: its first key and
            # its last quantity)
            levels = tuple(sorted(dict(levels).items(), reverse=self.descending))
        keys = set(levels)
        added, gone = keys - self.keys, self.keys - keys
        fresh = {level: [format(level[0], "f"), format(level[1], "f")] for level in added}
        if not (added or gone):
            update = []
        else:
            # The price of a level gone is still in the book when a level added has it; a
            # price removed is written as the old book wrote it, at quantity 0.
            removed = {level[0]: self.lists[level][0] for level in gone}
            for level in added:
                removed.pop(level[0], None)
            order = [(level[0], text) for level, text in fresh.items()]
            order += [(price, [text, "0"]) for price, text in removed.items()]
            order.sort(key=itemgetter(0), reverse=self.descending)
            update = [text for _, text in order]
        return _Diff(levels, keys, gone, fresh, update)

    def publish(self, diff: _Diff) -> list[list[str]]:
        """The diff's book becomes the published one; its levels in text, best first."""
        lists = self.lists
        for level in diff.gone:
            del lists[level]
        lists.update(diff.fresh)
        self.levels, self.keys = diff.levels, diff.keys
        return list(map(lists.__getitem__, diff.levels))


class _Diff:
    """A side's next book (its levels in order and as a set), the levels gone from the last
    one and those added (with their text lists), and the update."""

    __slots__ = ("fresh", "gone", "keys", "levels", "update")

    def __init__(
        self,
        levels: tuple[Level, ...],
        keys: set[Level],
        gone: set[Level],
        fresh: dict[Level, list[str]],
        update: list[list[str]],
    ) -> None:
        self.levels, self.keys = levels, keys
        self.gone, self.fresh, self.update = gone, fresh, update


class DepthBook:
    """One symbol's published book and the latest snapshot not yet published.

    The ``[price, qty]`` lists of the updates and snapshots :meth:`flush` returns are shared
    between them (an unchanged level is the same list in the next snapshot): read them, do
    not change them."""

    def __init__(self, symbol: str, levels: int = 200) -> None:
        self.symbol = symbol
        self.levels = levels
        self.seq = 0
        self._bids = _Side(True)
        self._asks = _Side(False)
        self._pending: Book | None = None

    def offer(self, book: Book) -> None:
        """Take a new snapshot; only the latest one before a flush counts."""
        self._pending = book

    def flush(self) -> tuple[dict, dict] | None:
        """The diff since the last flush and the full book, or None when nothing changed."""
        book, self._pending = self._pending, None
        if book is None:
            return None
        bids = self._bids.diff(book.bids[: self.levels])
        asks = self._asks.diff(book.asks[: self.levels])
        if self.seq and not bids.update and not asks.update:
            return None
        previous, self.seq = self.seq, self.seq + 1
        full_bids, full_asks = self._bids.publish(bids), self._asks.publish(asks)
        common = {"seq": self.seq, "prevSeq": previous}
        crc = checksum(full_bids, full_asks)
        tail = {"checksum": crc, "ts": book.ts}
        update = {"type": "update", **common, "bids": bids.update, "asks": asks.update, **tail}
        snapshot = {"type": "snapshot", **common, "bids": full_bids, "asks": full_asks, **tail}
        return update, snapshot

    @property
    def best_bid(self) -> Decimal | None:
        levels = self._bids.levels
        return levels[0][0] if levels else None

    @property
    def best_ask(self) -> Decimal | None:
        levels = self._asks.levels
        return levels[0][0] if levels else None
