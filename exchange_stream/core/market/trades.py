"""Trades merged per window: everything since the last flush, once each, in id order."""

from __future__ import annotations

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
    """One symbol's trades waiting for the next window. The ingestion stage has dropped
    duplicates already; a late trade goes out in the next window, which is then still in id
    order."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._pending: dict[int, Trade] = {}

    def add(self, trade: Trade) -> None:
        self._pending[trade.id] = trade

    def flush(self) -> list[dict] | None:
        if not self._pending:
            return None
        batch = [trade_message(self._pending[i]) for i in sorted(self._pending)]
        self._pending.clear()
        return batch
