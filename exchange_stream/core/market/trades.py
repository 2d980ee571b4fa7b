"""Trades merged per window: everything since the last flush, once each, in id order."""

from __future__ import annotations

from collections import deque

from exchange_stream.core.market.decimals import text
from exchange_stream.core.market.events import Trade


def trade_message(trade: Trade) -> dict:
    return {
        "id": trade.id,
        "price": text(trade.price),
        "qty": text(trade.qty),
        "side": trade.side,
        "ts": trade.ts,
    }


class TradeBatcher:
    """One symbol's trades waiting for the next window.

    A trade id seen recently (the last ``remember`` ids) is a duplicate and dropped, so a
    matching engine that resends after a reconnect does not double a trade. A late trade is
    not dropped: it goes out in the next window, which is then still in id order.
    """

    def __init__(self, symbol: str, remember: int = 10_000) -> None:
        self.symbol = symbol
        self._pending: dict[int, Trade] = {}
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._remember = remember
        self.duplicates = 0

    def add(self, trade: Trade) -> None:
        if trade.id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(trade.id)
        self._seen_order.append(trade.id)
        if len(self._seen_order) > self._remember:
            self._seen.discard(self._seen_order.popleft())
        self._pending[trade.id] = trade

    def flush(self) -> list[dict] | None:
        if not self._pending:
            return None
        batch = [trade_message(self._pending[i]) for i in sorted(self._pending)]
        self._pending.clear()
        return batch
