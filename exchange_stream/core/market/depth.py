"""Order book depth: diffs between consecutive book snapshots, with sequence and checksum.

Several snapshots arriving within one push interval are coalesced: the engine offers every
snapshot and flushes once per interval, so a diff spans everything that changed since the
last one. Each diff carries ``seq``/``prevSeq`` (a client applies a diff only when its
``prevSeq`` is the seq it holds) and OKX's checksum of the top 25 levels of the book after it.

A flush is a few C-level passes over each side, not Python code per level: the levels come
sorted best first (``parse_event`` sorts them: that is checked, anything else is sorted
here), the side is written out in one ``%`` format as ``price:qty`` lines (the rare exponent
respelled alone), and the diff is set arithmetic on the lines of the last published book and
this one. Only the changed levels are read as numbers again, to be put in order. Nothing
hashes a ``Decimal`` (a fresh one's hash costs more than its text).
"""

from __future__ import annotations

import re
import zlib
from decimal import Decimal, getcontext
from itertools import chain
from operator import gt, itemgetter, lt

from exchange_stream.core.market.events import Book, Level

CHECKSUM_LEVELS = 25
_ZERO = Decimal(0)


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


def _lines(levels: tuple[Level, ...], values: tuple[Decimal, ...]) -> list[str]:
    """``f"{text(price)}:{text(qty)}"`` for each level (``values``: the levels flattened), in
    one ``%`` format: ``str`` spells a decimal as ``text`` does unless it gives it an exponent
    (``Decimal("6.4E+4")``, as ``normalize`` leaves 64000), which is looked for once in the
    whole side and respelled alone."""
    if not levels:
        return []
    written = ("%s:%s\n" * len(levels)) % values
    lines = written.split("\n")
    lines.pop()  # after the last newline
    marker = "E" if getcontext().capitals else "e"  # str's exponent, as the context spells it
    found = written.find(marker)
    index = start = 0
    while found >= 0:
        index += written.count("\n", start, found)
        price, qty = levels[index]
        lines[index] = f"{price:f}:{qty:f}"  # decimals.text
        start = written.find("\n", found)
        found = written.find(marker, start)
    return lines


# A number that can be written in another way too, so that two lines of different text may
# still be the same level: a trailing fractional zero ("1.50" is "1.5"), a negative zero,
# anything but digits and a point (NaN, Infinity). parse_event's numbers never are.
_RESPELLABLE = re.compile(r"\.[0-9]*0(?=[:\n]|$)|(?:^|[:\n])-0(?=[:\n]|$)|[^-0-9.:\n]")


class _Side:
    """One side of the published book: its levels (best first), their ``price:qty`` lines,
    and a ``[price, qty]`` list per line (a snapshot's level lists are those of the last one
    where a level did not change).

    Two levels of the same text have the same value; lines that changed are compared by value
    (:meth:`_by_value`, the definition) when one of them has a number that can be written in
    another way; otherwise, as for everything parse_event gives, text and value say the same.
    """

    __slots__ = ("better", "descending", "levels", "lines", "lists")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.better = gt if descending else lt
        self.levels: tuple[Level, ...] = ()
        self.lines: set[str] = set()
        self.lists: dict[str, list[str]] = {}

    def diff(self, levels: tuple[Level, ...]) -> _Diff:
        values = tuple(chain.from_iterable(levels))
        if len(levels) > 1 and not all(map(self.better, values[0:-2:2], values[2::2])):
            # not strictly best first: sorted as a dict (a repeated price: its first key and
            # its last quantity)
            levels = tuple(sorted(dict(levels).items(), reverse=self.descending))
            values = tuple(chain.from_iterable(levels))
        lines = _lines(levels, values)
        keys = set(lines)
        added, gone = keys - self.lines, self.lines - keys
        fresh = {line: line.split(":") for line in added}
        if not (added or gone):
            update = []
        elif _RESPELLABLE.search("\n".join(chain(added, gone))):
            update = self._by_value(levels)
        else:
            # The price of a line gone is still in the book when a line added has it.
            removed = {line.partition(":")[0] for line in gone}
            removed.difference_update(level[0] for level in fresh.values())
            order = [(Decimal(level[0]), level) for level in fresh.values()]
            order += [(Decimal(price), [price, "0"]) for price in removed]
            order.sort(key=itemgetter(0), reverse=self.descending)
            update = [level for _, level in order]
        return _Diff(levels, lines, keys, gone, fresh, update)

    def _by_value(self, levels: tuple[Level, ...]) -> list[list[str]]:
        """The update as the values say: a level is changed when its quantity is another
        number (written as the new book writes it), removed when its price is gone (written
        as the old book wrote it, at quantity 0)."""
        old, new = dict(self.levels), dict(levels)
        changed = {price: qty for price, qty in new.items() if old.get(price) != qty}
        changed.update({price: _ZERO for price in old.keys() - new.keys()})
        ordered = sorted(changed.items(), reverse=self.descending)
        return [[format(price, "f"), format(qty, "f")] for price, qty in ordered]

    def publish(self, diff: _Diff) -> list[list[str]]:
        """The diff's book becomes the published one; its levels in text, best first."""
        lists = self.lists
        for line in diff.gone:
            del lists[line]
        lists.update(diff.fresh)
        self.levels, self.lines = diff.levels, diff.keys
        return list(map(lists.__getitem__, diff.lines))


class _Diff:
    """A side's next book (its levels, its lines in order and as a set), the lines gone from
    the last one and those added (as level lists), and the update."""

    __slots__ = ("fresh", "gone", "keys", "levels", "lines", "update")

    def __init__(
        self,
        levels: tuple[Level, ...],
        lines: list[str],
        keys: set[str],
        gone: set[str],
        fresh: dict[str, list[str]],
        update: list[list[str]],
    ) -> None:
        self.levels, self.lines, self.keys = levels, lines, keys
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
        crc = signed_crc32(_interleaved(bids.lines, asks.lines).encode())
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
