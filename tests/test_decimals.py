"""One spelling per number: a price re-spelled by the matching engine stays one level."""

from decimal import Decimal

import pytest

from exchange_stream.core.market.decimals import canonical, text
from exchange_stream.core.market.depth import DepthBook, checksum
from exchange_stream.core.market.events import parse_event
from tests.support import flushed


@pytest.mark.parametrize(
    ("spelled", "expected"),
    [
        ("101.00", "101"),
        ("1.01E+2", "101"),
        ("1.010e2", "101"),
        ("100", "100"),  # not "1E+2"
        ("0.000100", "0.0001"),
        ("64000.10", "64000.1"),
        ("123456789012345678901234567890.1230", "123456789012345678901234567890.123"),
    ],
)
def test_a_decimal_is_read_in_its_one_spelling(spelled, expected):
    assert text(canonical(spelled)) == expected
    assert canonical(spelled) == Decimal(spelled)  # the value itself is never changed


def book(bids, asks):
    line = f'{{"type":"book","symbol":"X","bids":{bids},"asks":{asks},"ts":1}}'
    return parse_event(line.replace("'", '"'))


def test_a_re_spelled_book_keeps_the_clients_book_and_checksum():
    """A client that keeps the book by the published strings (docs/market.md) stays in sync
    when the matching engine re-spells a level: no phantom level, the checksum matches."""
    depth = DepthBook("X")
    depth.offer(book([["101", "1"]], [["102", "0.5"]]))
    _, snapshot = flushed(depth)
    client = {side: dict(snapshot[side]) for side in ("bids", "asks")}
    depth.offer(book([["101.00", "1.0"], ["100.50", "2"]], [["102.0", "0.50"]]))
    update, _ = flushed(depth)
    assert update["bids"] == [["100.5", "2"]] and update["asks"] == []
    for side in ("bids", "asks"):
        for price, qty in update[side]:
            client[side][price] = qty
    bids = sorted(client["bids"].items(), key=lambda level: -Decimal(level[0]))
    asks = sorted(client["asks"].items(), key=lambda level: Decimal(level[0]))
    assert checksum([list(b) for b in bids], [list(a) for a in asks]) == update["checksum"]
