"""The market engine's ingestion stage and time rules (docs/market.md, "What the engine
accepts, and when"): number bounds, time bounds, duplicate and conflicting trade ids, stale
books and index prices; the ticker's window and open, amended bars and a never-null mark
price, on a fake clock."""

import json
from collections import Counter
from decimal import Decimal as D

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from exchange_stream.adapters.feed import FeedInput
from exchange_stream.core.market.decimals import NumberLimits, SymbolLimits, limits_table
from exchange_stream.core.market.events import (
    Book,
    IndexPrice,
    MalformedEvent,
    Trade,
    parse_event,
)
from exchange_stream.core.market.ingest import Admission, TimeBounds
from exchange_stream.core.market.markprice import MarkPrice
from exchange_stream.core.market.spellings import Spellings
from exchange_stream.core.market.ticker import DAY_MS, RollingTicker
from exchange_stream.services.market_engine import MarketEngine, MarketSettings

T0 = 1_732_540_800_000  # a minute boundary


def trade(id_, price="100", qty="1", ts=T0, side="buy", symbol="BTCUSDT"):
    return Trade(symbol, id_, D(price), D(qty), side, ts)


def trade_line(id_, price="100", qty="1", ts=T0):
    return json.dumps(
        {
            "type": "trade",
            "symbol": "BTCUSDT",
            "id": id_,
            "price": price,
            "qty": qty,
            "side": "buy",
            "ts": ts,
        }
    ).encode()


# -- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "qty",
    ["9E+999999", "1E+15", "1234567890123456", "0.0000000000000000001", "1E-19", "-0"],
)
def test_numbers_out_of_bounds_are_refused_without_being_expanded(qty):
    with pytest.raises(MalformedEvent) as refused:
        parse_event(trade_line(1, qty=qty), SymbolLimits())
    assert refused.value.reason == ("malformed" if qty == "-0" else "number")


@pytest.mark.parametrize(
    "qty", ["123456789012345", "0.000000000000000001", "1.5000000000000000000000"]
)
def test_numbers_at_the_bounds_are_taken(qty):
    assert isinstance(parse_event(trade_line(1, qty=qty), SymbolLimits()), Trade)


def test_book_levels_are_bounded_per_symbol():
    limits = SymbolLimits(NumberLimits(), limits_table("BTCUSDT=6:2"))
    line = b'{"type":"book","symbol":"BTCUSDT","bids":[["64000.10","1.5"]],"asks":[],"ts":1}'
    assert parse_event(line, limits).bids == ((D("64000.1"), D("1.5")),)
    fine = b'{"type":"book","symbol":"BTCUSDT","bids":[["64000.1","1.505"]],"asks":[],"ts":1}'
    with pytest.raises(MalformedEvent, match="out of bounds"):
        parse_event(fine, limits)
    other = fine.replace(b"BTCUSDT", b"ETHUSDT")
    assert parse_event(other, limits).bids == ((D("64000.1"), D("1.505")),)
    with pytest.raises(ValueError, match="SYMBOL=INTEGER_DIGITS:PLACES"):
        limits_table("BTCUSDT=6")


# -- admission ---------------------------------------------------------------------------


def test_time_bounds_duplicates_and_conflicts():
    refused = Counter()
    gate = Admission(TimeBounds(ahead_ms=10_000, late_ms=60_000), refused)
    assert gate.admit(trade(1), T0)
    assert not gate.admit(trade(1), T0 + 5)  # resent as it was
    assert not gate.admit(trade(1, price="101"), T0 + 5)  # another trade under its id
    assert not gate.admit(trade(2, ts=T0 + 10_001), T0)
    assert gate.admit(trade(3, ts=T0 + 10_000), T0)
    assert not gate.admit(trade(4, ts=T0 - 60_001), T0)
    assert gate.admit(trade(5, ts=T0 - 60_000), T0)
    assert not gate.admit(trade(10**15 // 1, ts=10**15), T0)  # microseconds as milliseconds
    # A resend is refused for as long as its trade could still be accepted: late after that.
    assert not gate.admit(trade(1), T0 + 60_000)
    assert not gate.admit(trade(1), T0 + 60_001)
    assert refused == Counter(duplicate=2, conflict=1, future=2, late=2)


def test_stale_books_and_index_prices_are_refused():
    refused = Counter()
    gate = Admission(TimeBounds(), refused)
    book = Book("BTCUSDT", ((D(1), D(1)),), (), T0)
    assert gate.admit(book, T0)
    assert not gate.admit(Book("BTCUSDT", (), (), T0 - 241), T0)  # a resent older book
    assert gate.admit(Book("BTCUSDT", (), (), T0), T0)  # the same time: the newer one
    assert gate.admit(IndexPrice("BTCUSDT", "okx", D(1), T0), T0)
    assert not gate.admit(IndexPrice("BTCUSDT", "okx", D(1), T0 - 1), T0)
    assert gate.admit(IndexPrice("BTCUSDT", "binance", D(1), T0 - 1), T0)
    assert refused == Counter(stale_book=1, stale_index=1)


# -- ticker ------------------------------------------------------------------------------


def test_the_ticker_opens_at_the_first_trade_by_time_not_by_arrival():
    ticker = RollingTicker("ETHUSDT")
    ticker.add(trade(2, "3400.29", ts=T0 + 9_300))
    ticker.add(trade(1, "3400.32", ts=T0))  # 9.3 s late, but first
    message = ticker.message(T0 + 10_000)
    assert (message["open"], message["last"]) == ("3400.32", "3400.29")


def test_the_ticker_window_edges():
    ticker = RollingTicker("BTCUSDT")
    ticker.add(trade(1, "100", "2", ts=T0 + 59_999))  # the last ms of a minute
    ticker.add(trade(2, "90", "1", ts=T0 + 60_000))
    at = T0 + 60_000 + DAY_MS  # the first trade is 24 h 0.001 s old: still in its minute
    assert ticker.message(at - 1)["count"] == 2
    assert ticker.message(at)["count"] == 1  # its minute left: exactly a minute after 24 h
    message = ticker.message(at)
    assert (message["open"], message["high"], message["volume"]) == ("90", "90", "1")


def test_ticker_sums_are_spelled_canonically():
    ticker = RollingTicker("BTCUSDT")
    ticker.add(trade(1, "2", "0.25", ts=T0))
    ticker.add(trade(2, "2", "0.75", ts=T0 + 1))
    message = ticker.message(T0 + 2)
    assert (message["volume"], message["quoteVolume"], message["change"]) == ("1", "2", "0")


# -- mark price --------------------------------------------------------------------------


def test_the_mark_price_is_never_null_once_known():
    mark = MarkPrice("BTCUSDT", stale_ms=30_000)
    assert mark.message(T0, None) is None  # nothing before the first index
    mark.add_index(IndexPrice("BTCUSDT", "okx", D("64000"), T0))
    fresh = mark.message(T0, None)
    assert fresh["stale"] is False
    stale = mark.message(T0 + 30_001, None)
    assert stale == {**fresh, "stale": True, "ts": T0 + 30_001}


def test_averages_are_over_time_not_over_samples():
    mark = MarkPrice("BTCUSDT", stale_ms=10**9)
    book = Book("BTCUSDT", ((D("101"), D(1000)),), ((D("103"), D(1000)),), T0)
    mark.add_index(IndexPrice("BTCUSDT", "okx", D("100"), T0))
    mark.sample(T0, book)  # basis 2
    mark.add_index(IndexPrice("BTCUSDT", "okx", D("102"), T0 + 200_000))
    mark.sample(T0 + 200_000, book)  # basis 0
    # 400 s later the first sample is older than 5 minutes: the basis is 0 alone, so the
    # mark price is the median of (index + funding ~ 102.0x, 102 + 0, last 102)
    message = mark.message(T0 + 400_000, D("102"))
    assert message["markPrice"] == "102.00000000"
    assert message["estimatedSettlePrice"] == "101.00000000"  # both within the hour
    later = mark.message(T0 + 3_600_000 + 100_000, D("102"))
    assert later["estimatedSettlePrice"] == "102.00000000"  # the first left the hour


# -- the engine --------------------------------------------------------------------------


def engine_on_clock():
    published = []

    def publish(channel, publication, snapshot=None):
        published.append((channel, json.loads(publication.payload), snapshot is not None))
        return succeed(1)

    clock = Clock()
    clock.advance(T0 / 1000)
    engine = MarketEngine(publish, MarketSettings(), clock)
    feed = FeedInput(engine.handle, engine.limits, engine.refused)
    engine.startService()
    return clock, engine, feed, published


def test_a_resent_trade_counts_once_everywhere():
    clock, engine, feed, published = engine_on_clock()
    feed.raw(trade_line(1, "100", "2", T0), "test")
    feed.raw(trade_line(1, "100", "2", T0), "test")
    feed.raw(trade_line(1, "100", "3", T0), "test")
    clock.advance(1.0)
    tickers = [data["data"] for channel, data, _ in published if channel.endswith("@ticker")]
    assert (tickers[-1]["volume"], tickers[-1]["count"]) == ("2", 1)
    bars = [data["data"] for channel, data, _ in published if channel.endswith("@kline_1m")]
    assert (bars[-1]["v"], bars[-1]["n"]) == ("2", 1)
    trades = [data["data"] for channel, data, _ in published if channel.endswith("@trades")]
    assert [t["id"] for batch in trades for t in batch] == [1]
    assert engine.refused == Counter(duplicate=1, conflict=1)


def test_a_late_trade_amends_its_closed_bar_which_is_not_retained():
    clock, _engine, feed, published = engine_on_clock()
    clock.advance(59.0)
    feed.raw(trade_line(1, "100", "1", T0 + 59_000), "test")
    clock.advance(2.0)  # the bar closed at T0 + 60 s
    del published[:]
    feed.raw(trade_line(2, "90", "1", T0 + 59_500), "test")  # 1.5 s late
    clock.advance(0.5)
    kline = [
        (data["data"], kept) for channel, data, kept in published if channel.endswith("@kline_1m")
    ]
    (amended, kept), (open_bar, open_kept) = kline
    assert (amended["t"], amended["c"], amended["n"], amended["closed"]) == (T0, "90", 2, True)
    assert not kept, "the amended bar is not the channel's snapshot"
    assert (open_bar["t"], open_bar["o"], open_bar["closed"], open_kept) == (
        T0 + 60_000,
        "90",
        False,
        True,
    )
    history = [data for channel, data, _ in published if channel == "ex:BTCUSDT@bars_1m"]
    assert history == [amended]


def test_absurd_events_leave_the_engine_working():
    clock, engine, feed, published = engine_on_clock()
    for line in (
        trade_line(1, ts=10**15),
        trade_line(2, qty="9E+999999"),
        trade_line(3, price="1E+30"),
        b'{"type":"book","symbol":"BTCUSDT","bids":[["1E+999999","1"]],"asks":[],"ts":1}',
    ):
        feed.raw(line, "test")
    feed.raw(trade_line(4, "100", "1", T0), "test")
    clock.advance(1.0)
    ticker = [data["data"] for channel, data, _ in published if channel.endswith("@ticker")][-1]
    assert (ticker["last"], ticker["count"]) == ("100", 1)
    assert engine.refused == Counter(future=1, number=3)


def test_an_engine_failure_on_one_event_is_logged_and_the_feed_goes_on():
    taken = []

    def handle(event):
        if event.id == 2:
            raise RuntimeError("a bug")
        taken.append(event.id)

    feed = FeedInput(handle)
    for id_ in (1, 2, 3):
        feed.raw(trade_line(id_), "test")
    assert taken == [1, 3]
    assert feed.refused == Counter(failed=1)


def test_a_parser_failure_on_one_line_is_logged_and_the_feed_goes_on(monkeypatch):
    """A bug in the parser (not a malformed event) costs that line only, counted as failed;
    the connection's next lines are read."""
    import exchange_stream.adapters.feed as feed_module

    real = feed_module.parse_event

    def parse(line, *args):
        if b'"id": 2,' in line:
            raise RuntimeError("a bug")
        return real(line, *args)

    monkeypatch.setattr(feed_module, "parse_event", parse)
    taken = []
    feed = FeedInput(lambda event: taken.append(event.id))
    for id_ in (1, 2, 3):
        feed.raw(trade_line(id_), "test")
    assert taken == [1, 3]
    assert feed.refused == Counter(failed=1) and feed.received == 3


def test_a_zero_with_a_huge_exponent_is_not_expanded():
    """'0E-999999' would be a million digits if respelled by formatting: it is zero."""
    from exchange_stream.core.market.decimals import canonical

    assert canonical("0E-999999") == 0 and canonical("0.000E+999999") == 0
    bids = b'[["1","0E-999999"],["0.5","1"]]'
    line = b'{"type":"book","symbol":"BTCUSDT","bids":' + bids + b',"asks":[],"ts":1}'
    assert parse_event(line, SymbolLimits()).bids == ((D("0.5"), D(1)),)  # the zero: no level


# -- spellings remembered between books ---------------------------------------------------


def book_line(bids, asks, symbol="BTCUSDT"):
    return json.dumps({"type": "book", "symbol": symbol, "bids": bids, "asks": asks, "ts": 1})


@pytest.mark.usefixtures("level_loops")
def test_remembered_spellings_read_as_the_same_values_as_a_fresh_parse():
    """The feed's memory of each symbol's texts changes nothing that is read: the same
    levels, canonical, as without it, book after book (texts repeated, new and respelled)."""
    spellings = Spellings()
    books = [
        book_line([["100.50", "1.0"], ["99", "2"]], [["101", "0.50"]]),
        book_line([["100.50", "1.0"], ["99.0", "2"]], [["101", "0.5"], ["102", "0"]]),
        book_line([["100.5", "3"], ["99", "2"]], [["101.00", "0.50"]]),
    ]
    for line in books:
        assert parse_event(line, SymbolLimits(), spellings) == parse_event(line)


@pytest.mark.usefixtures("level_loops")
def test_a_bad_text_is_refused_even_after_good_books():
    spellings = Spellings()
    parse_event(book_line([["100", "1"]], [["101", "1"]]), SymbolLimits(), spellings)
    for bad in ([["100", 1]], [["-100", "1"]], [["100", "1e999"]], [["100", ["1"]]]):
        with pytest.raises(MalformedEvent):
            parse_event(book_line(bad, [["101", "1"]]), SymbolLimits(), spellings)


@pytest.mark.usefixtures("level_loops")
def test_each_symbol_is_read_within_its_own_limits_whatever_another_remembered():
    limits = SymbolLimits(table={"TINY": NumberLimits(integer_digits=2, places=2)})
    spellings = Spellings()
    parse_event(book_line([["100.125", "1"]], [["101", "1"]]), limits, spellings)  # default
    with pytest.raises(MalformedEvent) as refused:
        parse_event(book_line([["100.125", "1"]], [["101", "1"]], "TINY"), limits, spellings)
    assert refused.value.reason == "number"


@pytest.mark.usefixtures("interpreted")
def test_the_memory_of_one_symbol_is_bounded():
    spellings = Spellings()
    for book in range(50):
        bids = [[f"{1000 + book}.{level:03d}", "1"] for level in range(100)][::-1]
        parse_event(book_line(bids, [["2000", "1"]]), SymbolLimits(), spellings)
        assert spellings.remembered("BTCUSDT") <= Spellings.pieces_per_symbol  # of 5,000 read


@pytest.mark.usefixtures("interpreted")
def test_the_number_texts_remembered_of_one_symbol_are_bounded():
    """Texts respelled (a trailing zero each) and prices ranked, 100 new ones a book: what is
    remembered of them starts afresh past ``per_symbol``."""
    spellings = Spellings()
    for book in range(50):
        bids = [[f"{1000 + book}.{level:02d}0", "1.50"] for level in range(99, -1, -1)]
        parse_event(book_line(bids, [["2000", "1"]]), SymbolLimits(), spellings)
        memory = spellings.of("BTCUSDT")
        assert len(memory.spelled) <= Spellings.per_symbol + 101
        assert len(memory.ranked) <= Spellings.per_symbol + 101


@pytest.mark.usefixtures("interpreted")
def test_a_symbols_own_tight_limits_still_take_the_remembered_path():
    """BTCUSDT=9:8 with 8-place prices: within bounds, so read the fast way and remembered
    (the old length rule sent every such book the careful way, 7.6 times slower)."""
    limits = SymbolLimits(table={"BTCUSDT": NumberLimits(integer_digits=9, places=8)})
    spellings = Spellings()
    line = book_line([["65000.12345678", "1.5"]], [["65000.12345679", "0.00000001"]])
    assert parse_event(line, limits, spellings) == parse_event(line, limits)
    assert spellings.remembered("BTCUSDT") == 2  # its two levels
    with pytest.raises(MalformedEvent):  # 9 places: still refused
        parse_event(book_line([["65000.123456789", "1"]], [["65001", "1"]]), limits, spellings)


def test_a_repeated_price_reads_alike_however_its_numbers_are_spelled():
    plain = book_line([["1", "5"], ["2", "1"], ["1", "0"]], [["3", "1"]])
    exponent = book_line([["1", "5"], ["2", "1"], ["1e0", "0"]], [["3", "1"]])
    assert parse_event(plain).bids == parse_event(exponent).bids == ((D(2), D(1)),)
