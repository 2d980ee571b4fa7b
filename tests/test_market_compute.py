"""The market computations against hand-worked cases (no network, no clock)."""

from decimal import Decimal as D

import pytest

from exchange_stream.core.market.depth import DepthBook, checksum, checksum_text, signed_crc32
from exchange_stream.core.market.events import Book, MalformedEvent, Trade, parse_event
from exchange_stream.core.market.kline import KlineSeries
from exchange_stream.core.market.ticker import DAY_MS, RollingTicker
from exchange_stream.core.market.trades import TradeBatcher
from tests.support import flushed

T0 = 1_732_540_800_000  # 2024-11-25T13:20:00Z, a minute boundary


def book(bids, asks, ts=T0):
    return Book(
        "BTCUSDT",
        tuple((D(p), D(q)) for p, q in bids),
        tuple((D(p), D(q)) for p, q in asks),
        ts,
    )


def trade(id_, price, qty, ts, side="buy"):
    return Trade("BTCUSDT", id_, D(price), D(qty), side, ts)


# -- depth -------------------------------------------------------------------------------


def test_checksum_text_interleaves_bids_and_asks_and_continues_the_longer_side():
    bids = [["3366.1", "7"], ["3366", "6"], ["3365.9", "1"]]
    asks = [["3366.8", "9"]]
    assert checksum_text(bids, asks) == "3366.1:7:3366.8:9:3366:6:3365.9:1"


def test_checksum_uses_25_levels_only():
    bids = [[str(100 - i), "1"] for i in range(30)]
    assert checksum_text(bids, []).count(":") == 2 * 25 - 1


def test_signed_crc32_matches_the_crc32_check_value():
    # 0xCBF43926 is CRC-32's published check value for "123456789"; as signed 32 bits:
    assert signed_crc32(b"123456789") == 0xCBF43926 - (1 << 32) == -873187034
    assert signed_crc32(b"") == 0


@pytest.mark.usefixtures("level_loops")
def test_first_flush_sends_the_whole_book_then_only_changes():
    depth = DepthBook("BTCUSDT")
    depth.offer(book([("100.0", "1"), ("99.5", "2")], [("100.5", "3")]))  # 100.0 goes out as 100
    update, snapshot = flushed(depth)
    assert update == {
        "type": "update",
        "seq": 1,
        "prevSeq": 0,
        "bids": [["100", "1"], ["99.5", "2"]],
        "asks": [["100.5", "3"]],
        "checksum": signed_crc32(b"100:1:100.5:3:99.5:2"),
        "ts": T0,
    }
    assert snapshot == {**update, "type": "snapshot"}
    assert depth.flush() is None  # nothing offered
    depth.offer(book([("100.0", "1"), ("99.5", "2")], [("100.5", "3")]))
    assert depth.flush() is None  # offered, but nothing changed

    depth.offer(book([("100.0", "1.5")], [("100.5", "3"), ("101", "4")], T0 + 100))
    update, snapshot = flushed(depth)
    assert (update["seq"], update["prevSeq"]) == (2, 1)
    assert update["bids"] == [["100", "1.5"], ["99.5", "0"]]  # changed, removed
    assert update["asks"] == [["101", "4"]]  # added
    assert snapshot["bids"] == [["100", "1.5"]]
    assert snapshot["asks"] == [["100.5", "3"], ["101", "4"]]
    assert (
        update["checksum"] == snapshot["checksum"] == checksum(snapshot["bids"], snapshot["asks"])
    )


@pytest.mark.usefixtures("level_loops")
def test_snapshots_within_one_interval_coalesce_and_a_level_can_come_back():
    depth = DepthBook("BTCUSDT")
    depth.offer(book([("10", "1"), ("9", "1")], [("11", "1")]))
    flushed(depth)
    depth.offer(book([("10", "1")], [("11", "1")]))  # 9 removed ...
    depth.offer(book([("10", "1"), ("9", "1")], [("11", "1")]))  # ... and back: no change
    assert depth.flush() is None
    depth.offer(book([("10", "1")], [("11", "1")]))
    assert flushed(depth)[0]["bids"] == [["9", "0"]]
    depth.offer(book([("10", "1"), ("9", "2")], [("11", "1")]))
    assert flushed(depth)[0]["bids"] == [["9", "2"]]


@pytest.mark.usefixtures("level_loops")
def test_empty_book():
    depth = DepthBook("BTCUSDT")
    depth.offer(book([], []))
    update, _snapshot = flushed(depth)
    assert update["bids"] == update["asks"] == [] and update["checksum"] == 0
    depth.offer(book([("1", "1")], []))
    flushed(depth)
    depth.offer(book([], []))
    assert flushed(depth)[0]["bids"] == [["1", "0"]]


@pytest.mark.usefixtures("level_loops")
def test_depth_is_cut_to_the_configured_levels():
    depth = DepthBook("BTCUSDT", levels=2)
    depth.offer(book([("10", "1"), ("9", "1"), ("8", "1")], []))
    assert flushed(depth)[1]["bids"] == [["10", "1"], ["9", "1"]]


@pytest.mark.usefixtures("level_loops")
def test_decimals_made_in_code_go_out_canonically_and_never_use_exponents():
    """A book made in code (the simulator's) is written as one read from a line: one
    spelling for one value (docs/market.md), whatever digits its Decimals carry."""
    depth = DepthBook("BTCUSDT")
    depth.offer(book([("0.00000100", "1E+3")], [("64000.10", "0.50")]))
    update, _ = flushed(depth)
    assert update["bids"] == [["0.000001", "1000"]]
    assert update["asks"] == [["64000.1", "0.5"]]


# -- trades ------------------------------------------------------------------------------


def test_many_trades_in_one_window_go_out_once_in_id_order():
    batcher = TradeBatcher("BTCUSDT")
    for id_ in (5, 3, 4, 1, 2):
        batcher.add(trade(id_, "100", "1", T0 + id_))
    batch = batcher.flush()
    assert [t["id"] for t in batch] == [1, 2, 3, 4, 5]
    assert batch[0] == {"id": 1, "price": "100", "qty": "1", "side": "buy", "ts": T0 + 1}
    assert batcher.flush() is None
    batcher.add(trade(0, "99", "1", T0))  # late but new: goes out in the next window
    assert [t["id"] for t in batcher.flush()] == [0]


# -- ticker ------------------------------------------------------------------------------


def test_ticker_rolls_24_hours_in_minute_buckets():
    ticker = RollingTicker("BTCUSDT")
    assert ticker.message(T0) is None
    ticker.add(trade(1, "100", "2", T0))
    ticker.add(trade(2, "110", "1", T0 + 30_000))
    ticker.add(trade(3, "95", "1", T0 + 60_000))
    ticker.add(trade(4, "105", "0.5", T0 + DAY_MS - 1))
    message = ticker.message(T0 + DAY_MS - 1)
    assert message == {
        "symbol": "BTCUSDT",
        "open": "100",
        "high": "110",
        "low": "95",
        "last": "105",
        "volume": "4.5",
        "quoteVolume": "457.5",  # 200 + 110 + 95 + 52.5
        "change": "5",
        "changePercent": "5.00",
        "count": 4,
        "ts": T0 + DAY_MS - 1,
    }
    # still there a minute after it is 24 h old: the window starts at a whole minute
    assert ticker.message(T0 + DAY_MS + 59_999)["count"] == 4
    # 24 h after the first minute ended, its bucket leaves the window
    message = ticker.message(T0 + DAY_MS + 60_000)
    assert (message["open"], message["high"], message["low"]) == ("95", "105", "95")
    assert (message["volume"], message["count"], message["change"]) == ("1.5", 2, "10")
    assert message["changePercent"] == "10.53"  # 10 / 95 = 10.526..%
    # a day with no trade: the last price stays, nothing else
    message = ticker.message(T0 + 3 * DAY_MS)
    assert (message["open"], message["last"], message["volume"], message["count"]) == (
        "105",
        "105",
        "0",
        0,
    )
    assert message["changePercent"] == "0.00"


# -- kline -------------------------------------------------------------------------------


def test_kline_bars_align_to_utc_and_close_across_the_minute():
    series = KlineSeries("BTCUSDT", "1m")
    assert series.add(trade(1, "100", "1", T0 + 59_999), T0 + 59_999) == []
    assert series.take_change() == {
        "interval": "1m",
        "t": T0,
        "o": "100",
        "h": "100",
        "l": "100",
        "c": "100",
        "v": "1",
        "q": "100",
        "n": 1,
        "closed": False,
    }
    assert series.take_change() is None  # throttled: only when changed
    series.add(trade(2, "102", "2", T0 + 59_999), T0 + 59_999)
    closed = series.advance(T0 + 60_000)
    assert closed == [
        {
            "interval": "1m",
            "t": T0,
            "o": "100",
            "h": "102",
            "l": "100",
            "c": "102",
            "v": "3",
            "q": "304",
            "n": 2,
            "closed": True,
        }
    ]
    opened = series.take_change()
    assert (opened["t"], opened["o"], opened["c"], opened["v"], opened["n"]) == (
        T0 + 60_000,
        "102",
        "102",
        "0",
        0,
    )
    series.add(trade(3, "101", "1", T0 + 60_001), T0 + 60_001)
    bar = series.take_change()  # the first trade sets all four prices
    assert (bar["o"], bar["h"], bar["l"], bar["c"]) == ("101", "101", "101", "101")
    amended = series.add(trade(4, "90", "1", T0 + 1), T0 + 60_001)  # late: amends the closed bar
    assert amended == [{**closed[0], "o": "90", "l": "90", "v": "4", "q": "394", "n": 3}]
    assert series.take_change() is None  # the open bar did not change
    series.advance(T0 + 120_001)  # the first bar ended over a minute ago: past amending
    assert series.add(trade(5, "80", "1", T0 + 2), T0 + 120_001) == [] and series.late_trades == 1


def test_the_clock_in_a_later_minute_closes_the_bar_and_fills_the_gap():
    series = KlineSeries("BTCUSDT", "1m")
    series.add(trade(1, "100", "1", T0), T0)
    closed = series.add(trade(2, "105", "1", T0 + 3 * 60_000 + 5), T0 + 3 * 60_000 + 5)
    # the bar, and the two minutes nobody traded in, carrying its close: no hole
    assert [bar["t"] for bar in closed] == [T0, T0 + 60_000, T0 + 120_000]
    assert all(bar["closed"] and bar["c"] == "100" for bar in closed)
    assert [bar["n"] for bar in closed] == [1, 0, 0]
    bar = series.take_change()
    assert (bar["t"], bar["o"], bar["c"], bar["n"]) == (T0 + 180_000, "105", "105", 1)


@pytest.mark.parametrize(
    ("interval", "start"),
    [("5m", 1_732_540_800_000), ("4h", 1_732_536_000_000), ("1d", 1_732_492_800_000)],
)
def test_longer_intervals_start_on_utc_boundaries(interval, start):
    series = KlineSeries("BTCUSDT", interval)
    series.add(trade(1, "1", "1", T0 + 1234), T0 + 1234)
    assert series.take_change()["t"] == start  # 13:20, 12:00, 00:00 UTC


# -- input events ------------------------------------------------------------------------


def test_events_parse_exactly():
    event = parse_event(
        b'{"type":"trade","symbol":"BTCUSDT","id":17,"price":"64000.1","qty":"0.5",'
        b'"side":"buy","ts":1732540000123}'
    )
    assert event == Trade("BTCUSDT", 17, D("64000.1"), D("0.5"), "buy", 1732540000123)
    book_event = parse_event(
        '{"type":"book","symbol":"B","bids":[["1","2"],["3","0"],["2","1"]],"asks":[],"ts":1}'
    )
    assert book_event.bids == ((D(2), D(1)), (D(1), D(2)))  # sorted best first, zero dropped


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"{",
        b"[]",
        b'{"type":"nope"}',
        b'{"type":"trade","symbol":"BTCUSDT","id":1,"price":64000.1,"qty":"1","side":"buy","ts":1}',
        b'{"type":"trade","symbol":"BTCUSDT","id":1,"price":"NaN","qty":"1","side":"buy","ts":1}',
        b'{"type":"trade","symbol":"BTCUSDT","id":1,"price":"-1","qty":"1","side":"buy","ts":1}',
        b'{"type":"trade","symbol":"BTCUSDT","id":"1","price":"1","qty":"1","side":"buy","ts":1}',
        b'{"type":"trade","symbol":"BTC USDT","id":1,"price":"1","qty":"1","side":"buy","ts":1}',
        b'{"type":"trade","symbol":"BTCUSDT","id":1,"price":"1","qty":"1","side":"up","ts":1}',
        b'{"type":"book","symbol":"B","bids":[["2","1"]],"asks":[["1","1"]],"ts":1}',
        b'{"type":"book","symbol":"B","bids":[["x","1"]],"asks":[],"ts":1}',
        b'{"type":"book","symbol":"B","bids":[["1"]],"asks":[],"ts":1}',
        b'{"type":"book","symbol":"B","bids":{},"asks":[],"ts":1}',
        b'{"type":"index","symbol":"B","source":"","price":"1","ts":1}',
        b'{"type":"balance","uid":"1002@balance","data":{}}',
        b'{"type":"order","uid":true,"data":{}}',
        b'{"type":"order","uid":1001}',
    ],
)
def test_malformed_events_are_refused(line):
    with pytest.raises(MalformedEvent):
        parse_event(line)


def test_a_trade_ahead_of_the_clock_waits_for_its_interval():
    series = KlineSeries("BTCUSDT", "1m")
    series.add(trade(1, "100", "1", T0 + 55_000), T0 + 55_000)
    assert series.add(trade(2, "105", "1", T0 + 61_000), T0 + 56_000) == []  # 5 s ahead
    bar = series.take_change()
    assert (bar["t"], bar["c"], bar["n"], bar["closed"]) == (T0, "100", 1, False)
    (closed,) = series.advance(T0 + 60_000)  # the clock, not the trade, closes the bar
    assert (closed["t"], closed["c"], closed["n"]) == (T0, "100", 1)
    bar = series.take_change()
    assert (bar["t"], bar["o"], bar["n"]) == (T0 + 60_000, "105", 1)  # the waiting trade


def test_a_clock_that_stood_still_for_days_makes_up_the_last_day_only():
    series = KlineSeries("BTCUSDT", "1h")
    series.add(trade(1, "100", "1", T0), T0)
    closed = series.advance(T0 + 3 * DAY_MS)
    assert closed[0]["t"] == T0 - T0 % 3_600_000 and closed[0]["n"] == 1
    assert len(closed) == 1 + 24 and all(b["n"] == 0 for b in closed[1:])


def test_a_trade_waiting_for_an_interval_the_clock_jumped_over_is_counted_and_let_go():
    series = KlineSeries("BTCUSDT", "1m")
    series.add(trade(1, "100", "1", T0 + 55_000), T0 + 55_000)
    series.add(trade(2, "105", "1", T0 + 61_000), T0 + 56_000)  # waits for T0 + 60 s
    series.advance(T0 + 3 * DAY_MS)  # that minute is beyond what an advance makes up
    assert series.late_trades == 1 and series._ahead == []
    series.add(trade(3, "110", "1", T0 + 3 * DAY_MS + 1), T0 + 3 * DAY_MS + 1)
    bar = series.take_change()
    assert (bar["o"], bar["n"]) == ("110", 1)  # the new bar has the new trade only
