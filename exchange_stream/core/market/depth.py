"""Order book depth: diffs between consecutive book snapshots, with sequence and checksum.

Several snapshots arriving within one push interval are coalesced: the engine offers every
snapshot and flushes once per interval, so a diff spans everything that changed since the
last one. Each diff carries ``seq``/``prevSeq`` (a client applies a diff only when its
``prevSeq`` is the seq it holds) and OKX's checksum of the top 25 levels of the book after it.
"""

from __future__ import annotations

import zlib
from decimal import Decimal

from exchange_stream.core.market.decimals import text
from exchange_stream.core.market.events import Book, Level

CHECKSUM_LEVELS = 25


def checksum_text(bids: list[list[str]], asks: list[list[str]]) -> str:
    """The top 25 levels, bid and ask interleaved: ``bid1p:bid1q:ask1p:ask1q:bid2p:...``
    (when one side is shorter, the other just goes on)."""
    parts: list[str] = []
    for index in range(CHECKSUM_LEVELS):
        for side in (bids, asks):
            if index < len(side):
                parts.extend(side[index])
    return ":".join(parts)


def signed_crc32(data: bytes) -> int:
    crc = zlib.crc32(data)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's book checksum: CRC32 of :func:`checksum_text`, as a signed 32-bit integer."""
    return signed_crc32(checksum_text(bids, asks).encode())


def _side_text(levels: dict[Decimal, Decimal], best_first_descending: bool) -> list[list[str]]:
    ordered = sorted(levels.items(), reverse=best_first_descending)
    return [[text(price), text(qty)] for price, qty in ordered]


def _changes(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> dict[Decimal, Decimal]:
    changed = {price: qty for price, qty in new.items() if old.get(price) != qty}
    changed.update({price: Decimal(0) for price in old.keys() - new.keys()})
    return changed


class DepthBook:
    """One symbol's published book and the latest snapshot not yet published."""

    def __init__(self, symbol: str, levels: int = 200) -> None:
        self.symbol = symbol
        self.levels = levels
        self.seq = 0
        self._bids: dict[Decimal, Decimal] = {}
        self._asks: dict[Decimal, Decimal] = {}
        self._pending: Book | None = None

    def offer(self, book: Book) -> None:
        """Take a new snapshot; only the latest one before a flush counts."""
        self._pending = book

    def flush(self) -> tuple[dict, dict] | None:
        """The diff since the last flush and the full book, or None when nothing changed."""
        book, self._pending = self._pending, None
        if book is None:
            return None
        bids = dict(_top(book.bids, self.levels))
        asks = dict(_top(book.asks, self.levels))
        changed_bids, changed_asks = _changes(self._bids, bids), _changes(self._asks, asks)
        if self.seq and not changed_bids and not changed_asks:
            return None
        previous, self.seq = self.seq, self.seq + 1
        self._bids, self._asks = bids, asks
        full_bids, full_asks = _side_text(bids, True), _side_text(asks, False)
        common = {"seq": self.seq, "prevSeq": previous}
        tail = {"checksum": checksum(full_bids, full_asks), "ts": book.ts}
        update = {
            "type": "update",
            **common,
            "bids": _side_text(changed_bids, True),
            "asks": _side_text(changed_asks, False),
            **tail,
        }
        snapshot = {"type": "snapshot", **common, "bids": full_bids, "asks": full_asks, **tail}
        return update, snapshot

    @property
    def best_bid(self) -> Decimal | None:
        return max(self._bids) if self._bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return min(self._asks) if self._asks else None


def _top(levels: tuple[Level, ...], count: int) -> tuple[Level, ...]:
    return levels[:count]
