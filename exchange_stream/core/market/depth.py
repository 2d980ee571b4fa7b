"""Order book depth: diffs between consecutive book snapshots, with sequence and checksum.

Several snapshots arriving within one push interval are coalesced: the engine offers every
snapshot and flushes once per interval, so a diff spans everything that changed since the
last one. Each diff carries ``seq``/``prevSeq`` (a client applies a diff only when its
``prevSeq`` is the seq it holds) and OKX's checksum of the top 25 levels of the book after it.

A flush is a few C-level passes over each side, not Python code per level. A level is
compared by its JSON text (``["64000.1","1.5"]``), the one the encoder writes for it: two
levels are equal exactly when their texts are, since the text is the canonical spelling of
the value. The feed's reader hands these texts over with the book, the same string objects
book after book (``spellings.Spellings``), whose hashes Python keeps; so the diff is set
arithmetic on strings hashed once, the snapshot is one ``join`` of them, and Python code
runs only for the few levels that changed (whose prices are read to put the update in order).
Where the C module of ``level_scan`` is built, the diff is instead one walk down the last
published and the new level texts side by side, both best first (``_CompiledSides``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from decimal import Decimal
from itertools import chain

from exchange_stream.core.market import level_scan
from exchange_stream.core.market.events import Book, level_texts_of
from exchange_stream.core.market.level_scan import LevelScan

CHECKSUM_LEVELS = 25


def checksum_text(bids: list[list[str]], asks: list[list[str]]) -> str:
    """The top 25 levels, bid and ask interleaved: ``bid1p:bid1q:ask1p:ask1q:bid2p:...``
    (when one side is shorter, the other just goes on)."""
    top = CHECKSUM_LEVELS
    return _interleaved(list(map(":".join, bids[:top])), list(map(":".join, asks[:top])))


def _interleaved(bids: list[str], asks: list[str]) -> str:
    """:func:`checksum_text` of levels written as ``price:qty`` texts."""
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


def _message(kind: str, head: str, bids: Sequence[str], asks: Sequence[str], tail: str) -> str:
    """What ``encode`` writes for the depth message of these level texts."""
    return f'{{"type":"{kind}",{head}{",".join(bids)}],"asks":[{",".join(asks)}{tail}'


class _Side:
    """One side of the published book: the JSON texts of its levels (``["64000.1","1.5"]``),
    as a set, and the checksum text of each (``64000.1:1.5``). The set holds the keys of
    ``checks`` again so that the next diff is one in-place operation on it: made from the
    dict's keys, it costs 36 thousand instructions a flush more (of 311). A checksum text is
    written once, when its level comes: written for the top 25 at each flush instead (as
    C-level passes over them, measured), they cost 48 thousand a side."""

    __slots__ = ("checks", "descending", "keys")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.keys: set[str] = set()
        self.checks: dict[str, str] = {}

    def take(self, texts: tuple[str, ...]) -> list[str]:
        """Publish this side of a book (one text a level); the update: the texts of the
        levels changed, best first (a price gone at quantity 0, as the old book wrote it)."""
        keys = set(texts)
        changed = self.keys
        changed ^= keys  # the set of the last book, made into the texts added and gone
        self.keys = keys
        checks = self.checks
        update: dict[str, str] = {}  # price: the level's text
        gone: list[str] = []
        for text in changed:
            if text in keys:
                check = checks[text] = text[2:-2].replace('","', ":")
                update[check.partition(":")[0]] = text
            else:
                gone.append(checks.pop(text).partition(":")[0])
        for price in gone:
            if price not in update:  # gone, not at a new quantity
                update[price] = f'["{price}","0"]'
        return list(map(update.__getitem__, sorted(update, key=Decimal, reverse=self.descending)))

    def checks_of(self, texts: tuple[str, ...]) -> list[str]:
        """The checksum texts of the top 25 of a side's published levels."""
        return list(map(self.checks.__getitem__, texts[:CHECKSUM_LEVELS]))


class _InterpretedSides:
    """Both sides of the published book, each diffed by set arithmetic (``_Side``)."""

    def __init__(self) -> None:
        self._bids = _Side(True)
        self._asks = _Side(False)

    def take(self, bids: tuple[str, ...], asks: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Publish a book's sides (level texts, best first); each side's update."""
        return self._bids.take(bids), self._asks.take(asks)

    def checksum_text(self, bids: tuple[str, ...], asks: tuple[str, ...]) -> str:
        """The checksum text of the sides just published."""
        return _interleaved(self._bids.checks_of(bids), self._asks.checks_of(asks))


class _CompiledSides:
    """Both sides of the published book, diffed and checksummed by the compiled loops
    (``level_scan``), which walk the last published level texts beside the new ones."""

    def __init__(self, scan: LevelScan) -> None:
        self._scan = scan
        self._bids: tuple[str, ...] = ()
        self._asks: tuple[str, ...] = ()

    def take(self, bids: tuple[str, ...], asks: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """As ``_InterpretedSides.take``."""
        scan = self._scan
        update = scan.side_update(self._bids, bids, True), scan.side_update(self._asks, asks, False)
        self._bids, self._asks = bids, asks
        return update

    def checksum_text(self, bids: tuple[str, ...], asks: tuple[str, ...]) -> str:
        """As ``_InterpretedSides.checksum_text``."""
        return self._scan.checksum_text(bids, asks)


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
        scan = level_scan.compiled
        self._sides = _InterpretedSides() if scan is None else _CompiledSides(scan)
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
        depth = self.levels
        bid_texts = level_texts_of(book.bids)[:depth]
        ask_texts = level_texts_of(book.asks)[:depth]
        bids, asks = self._sides.take(bid_texts, ask_texts)
        if self.seq and not bids and not asks:
            return None
        previous, self.seq = self.seq, self.seq + 1
        head = f'"seq":{self.seq},"prevSeq":{previous},"bids":['
        crc = signed_crc32(self._sides.checksum_text(bid_texts, ask_texts).encode())
        tail = f'],"checksum":{crc},"ts":{book.ts}}}'
        update = _message("update", head, bids, asks, tail)
        return update, _message("snapshot", head, bid_texts, ask_texts, tail)
