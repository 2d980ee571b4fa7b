"""Order book depth: diffs between consecutive book snapshots, with sequence and checksum.

Several snapshots arriving within one push interval are coalesced: the engine offers every
snapshot and flushes once per interval, so a diff spans everything that changed since the
last one. Each diff carries ``seq``/``prevSeq`` (a client applies a diff only when its
``prevSeq`` is the seq it holds) and OKX's checksum of the top 25 levels of the book after it.

A flush is a few C-level passes over each side, not Python code per level: the levels come
sorted best first (``parse_event`` sorts them), the diff is set arithmetic on the levels of
the last published book and this one (by value), only the levels that changed are written
out as text and put in order, and the messages are joined from the texts of their levels.
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from itertools import chain
from operator import itemgetter

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


def _message(kind: str, head: str, bids: list[str], asks: list[str], tail: str) -> str:
    """What ``encode`` writes for the depth message of these level texts."""
    return f'{{"type":"{kind}",{head}{",".join(bids)}],"asks":[{",".join(asks)}{tail}'


class _Side:
    """One side of the published book: its levels (best first), as a set, and the JSON text
    (``["64000.1","1.5"]``) and checksum text (``64000.1:1.5``) of each level, written when
    the level first appeared.

    Levels are compared by value: a level is a pair of Decimals, and Decimals that are equal
    hash alike whatever their spelling ("1.50" and "1.5"), so set arithmetic on them is the
    definition of a changed level. It is cheap because the feed's Decimals are the same
    objects book after book (``spellings.Spellings``), whose hashes Python keeps: only the
    few levels that changed are written out as text.
    """

    __slots__ = ("checks", "descending", "keys", "levels", "texts")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.levels: tuple[Level, ...] = ()
        self.keys: set[Level] = set()
        self.texts: dict[Level, str] = {}
        self.checks: dict[Level, str] = {}

    def diff(self, levels: tuple[Level, ...]) -> _Diff:
        keys = set(levels)
        added, gone = keys - self.keys, self.keys - keys
        fresh = {level: (format(level[0], "f"), format(level[1], "f")) for level in added}
        if not (added or gone):
            update = []
        else:
            # The price of a level gone is still in the book when a level added has it; a
            # price removed is written as the old book wrote it, at quantity 0.
            removed = {level[0]: self.checks[level].partition(":")[0] for level in gone}
            for level in added:
                removed.pop(level[0], None)
            order = [(level[0], f'["{price}","{qty}"]') for level, (price, qty) in fresh.items()]
            order += [(price, f'["{text}","0"]') for price, text in removed.items()]
            order.sort(key=itemgetter(0), reverse=self.descending)
            update = [text for _, text in order]
        return _Diff(levels, keys, gone, fresh, update)

    def publish(self, diff: _Diff) -> tuple[list[str], list[str]]:
        """The diff's book becomes the published one; the JSON texts of its levels, best
        first, and the checksum texts of the top 25."""
        texts, checks = self.texts, self.checks
        for level in diff.gone:
            del texts[level], checks[level]
        for level, (price, qty) in diff.fresh.items():
            texts[level] = f'["{price}","{qty}"]'
            checks[level] = f"{price}:{qty}"
        self.levels, self.keys = diff.levels, diff.keys
        top = diff.levels[:CHECKSUM_LEVELS]
        return list(map(texts.__getitem__, diff.levels)), list(map(checks.__getitem__, top))


class _Diff:
    """A side's next book (its levels in order and as a set), the levels gone from the last
    one and those added (with their price and quantity texts), and the update (JSON texts
    of the levels changed, best first)."""

    __slots__ = ("fresh", "gone", "keys", "levels", "update")

    def __init__(
        self,
        levels: tuple[Level, ...],
        keys: set[Level],
        gone: set[Level],
        fresh: dict[Level, tuple[str, str]],
        update: list[str],
    ) -> None:
        self.levels, self.keys = levels, keys
        self.gone, self.fresh, self.update = gone, fresh, update


class DepthBook:
    """One symbol's published book and the latest snapshot not yet published.

    A book's levels come best first, one level a price (``Book``'s promise: ``parse_event``
    sorts them). :meth:`flush` writes the update and the snapshot as JSON text itself, by
    joining the texts of their levels: a snapshot of 200 levels is one ``join``, where a
    JSON encoder would write 400 strings again on every push."""

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

    def flush(self) -> tuple[str, str] | None:
        """The diff since the last flush and the full book, as JSON texts
        (``{"type":"update",...}``, ``{"type":"snapshot",...}``), or None when nothing
        changed."""
        book, self._pending = self._pending, None
        if book is None:
            return None
        bids = self._bids.diff(book.bids[: self.levels])
        asks = self._asks.diff(book.asks[: self.levels])
        if self.seq and not bids.update and not asks.update:
            return None
        previous, self.seq = self.seq, self.seq + 1
        full_bids, bid_checks = self._bids.publish(bids)
        full_asks, ask_checks = self._asks.publish(asks)
        crc = signed_crc32(_interleaved(bid_checks, ask_checks).encode())
        head = f'"seq":{self.seq},"prevSeq":{previous},"bids":['
        tail = f'],"checksum":{crc},"ts":{book.ts}}}'
        update = _message("update", head, bids.update, asks.update, tail)
        return update, _message("snapshot", head, full_bids, full_asks, tail)

    @property
    def best_bid(self) -> Decimal | None:
        levels = self._bids.levels
        return levels[0][0] if levels else None

    @property
    def best_ask(self) -> Decimal | None:
        levels = self._asks.levels
        return levels[0][0] if levels else None
