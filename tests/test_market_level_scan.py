"""The compiled loops of a book (``_level_scan.c``) against their Python definitions, on
random input: the levels of a line as the general path reads them (or None), a side's update
as ``depth._Side`` writes it, the checksum text as ``depth.checksum_text`` writes it; and
input that is not what they take gets an exception or None, never a crash."""

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_stream.core.market import level_scan
from exchange_stream.core.market.decimals import NumberLimits, SymbolLimits, plain
from exchange_stream.core.market.depth import _Side, checksum_text
from exchange_stream.core.market.events import MalformedEvent, level_texts_of, parse_event
from exchange_stream.core.market.spellings import LONGEST_TEXT, Spellings, read_compact_book
from tests.compiled import BUILD_FAILURE


@pytest.fixture(scope="module")
def scan():
    """The compiled module, which a machine with a C compiler always builds."""
    if level_scan.compiled is None:
        pytest.fail(f"the C module of level_scan is not built:\n{BUILD_FAILURE}")
    return level_scan.compiled


def general(text: str, limits: SymbolLimits):
    """The general path's levels of a book line (their texts), or None when it refuses it."""
    try:
        book = parse_event(text, limits)
    except MalformedEvent:
        return None
    return level_texts_of(book.bids), level_texts_of(book.asks)


def sides_of(text: str, scan, limits: NumberLimits):
    """``read_sides`` on a compact line's two sides."""
    bids = text.index('"bids":[[') + len('"bids":[[')
    asks = text.index('"asks":[[') + len('"asks":[[')
    return scan.read_sides(
        text,
        bids,
        text.index("]]", bids),
        asks,
        text.index("]]", asks),
        limits.integer_digits,
        limits.places,
    )


def compact(bids, asks, symbol="BTCUSDT") -> str:
    return json.dumps(
        {"type": "book", "symbol": symbol, "bids": bids, "asks": asks, "ts": 1},
        separators=(",", ":"),
    )


TIGHT = NumberLimits(integer_digits=3, places=2)


@pytest.mark.parametrize(
    ("number", "read"),
    [
        ("999.99", "999.99"),
        ("000999.990", "999.99"),  # respelled
        (".5", "0.5"),
        ("5.", "5"),
        ("0.10", "0.1"),
        ("1000", None),  # 4 digits before the point
        ("0.001", None),  # 3 places
        ("1.2.3", None),
        ("", None),
        (".", None),
        ("-1", None),
        ("1e2", None),
        ("1 ", None),
        ("\\u0031", None),  # an escape: the general path's
    ],
)
def test_numbers_are_read_and_respelled_as_canonical_text_does(scan, number, read):
    asks = f'[["{number}","2"]]'  # as written: json.dumps would escape the escape
    line = f'{{"type":"book","symbol":"BTCUSDT","bids":[["0.01","1"]],"asks":{asks},"ts":1}}'
    sides = sides_of(line, scan, TIGHT)
    if read is None:
        assert sides is None
    else:
        assert sides == (('["0.01","1"]',), (f'["{read}","2"]',))
        assert sides == general(line, SymbolLimits(default=TIGHT))


def test_a_number_longer_than_any_text_taken_is_refused_within_wide_limits(scan):
    taken = "0" * (LONGEST_TEXT - 3) + "1.5"  # 64 characters
    line = compact([[taken, "1"]], [["2", "1"]])
    assert sides_of(line, scan, NumberLimits(40, 24)) == (('["1.5","1"]',), ('["2","1"]',))
    line = compact([["0" + taken, "1"]], [["2", "1"]])
    assert sides_of(line, scan, NumberLimits(40, 24)) is None


@pytest.mark.parametrize(
    ("bids", "asks"),
    [
        ([["2", "1"], ["3", "1"]], [["4", "1"]]),  # bids not best first
        ([["3", "1"], ["3", "2"]], [["4", "1"]]),  # one price twice
        ([["3", "1"]], [["5", "1"], ["4", "1"]]),  # asks not best first
        ([["4", "1"]], [["4", "1"]]),  # crossed
        ([["0", "1"]], [["4", "1"]]),  # a price zero
        ([["3", "1", "1"]], [["4", "1"]]),  # three numbers
        ([["3"]], [["4", "1"]]),  # one
        ([["3", 1]], [["4", "1"]]),  # not a string
    ],
)
def test_sides_the_general_path_must_sort_or_refuse_are_not_read(scan, bids, asks):
    assert sides_of(compact(bids, asks), scan, NumberLimits()) is None


def test_quantity_zero_is_no_level_but_keeps_its_place_in_the_order(scan):
    line = compact([["3", "0"], ["2", "1"]], [["4", "0.000"], ["5", "1"]])
    assert sides_of(line, scan, NumberLimits()) == (('["2","1"]',), ('["5","1"]',))
    assert general(line, SymbolLimits()) == (('["2","1"]',), ('["5","1"]',))


def test_limits_beyond_a_machine_word_are_no_limit_as_in_python(scan):
    """A configured limit of 2**63 digits or more once made every book line an OverflowError."""
    line = compact([["3.25", "1"]], [["4", "1"]])
    huge = NumberLimits(integer_digits=10**20, places=18)
    assert sides_of(line, scan, huge) == (('["3.25","1"]',), ('["4","1"]',))
    assert sides_of(line, scan, huge) == general(line, SymbolLimits(default=huge))
    assert read_compact_book(line, SymbolLimits(default=huge), Spellings()) is not None


def test_a_line_not_in_ascii_is_left_to_the_general_path(scan):
    line = compact([["3", "1"]], [["4", "1"]], symbol="BTCUSDT") + " é"
    assert scan.read_sides(line, 10, 17, 20, 27, 15, 18) is None


@pytest.mark.parametrize(
    "arguments",
    [
        ("x", -1, 0, 0, 0, 15, 18),
        ("x", 0, 2, 0, 0, 15, 18),  # beyond the line
        ("x", 1, 0, 0, 0, 15, 18),  # start after end
        ("x", 0, 0, 0, 5, 15, 18),
    ],
)
def test_bounds_outside_the_line_are_a_value_error(scan, arguments):
    with pytest.raises(ValueError):
        scan.read_sides(*arguments)


def test_wrong_arguments_are_type_errors(scan):
    with pytest.raises(TypeError):
        scan.read_sides(b"x", 0, 0, 0, 0, 15, 18)
    with pytest.raises(TypeError):
        scan.read_sides("x", 0, 0, 0, 0)
    with pytest.raises(TypeError):
        scan.read_sides("x", "0", 0, 0, 0, 15, 18)
    with pytest.raises(TypeError):
        scan.side_update([], (), True)
    with pytest.raises(TypeError):
        scan.checksum_text((), [])


@pytest.mark.parametrize(
    "level", ['["1","2"', '"1","2"]', '["1"]', '["","2"]', '["1";"2"]', "[]", "é", 1, b'["1","2"]']
)
def test_a_level_text_not_written_as_one_is_a_value_error(scan, level):
    with pytest.raises(ValueError):
        scan.side_update((level,), ('["1","2"]',), True)
    with pytest.raises(ValueError):
        scan.side_update(('["1","2"]',), (level,), True)
    with pytest.raises(ValueError):
        scan.checksum_text((level,), ())


# -- random input: compiled and Python alike ----------------------------------------------

numbers = st.one_of(
    st.integers(0, 10**6).map(str),
    st.builds(
        lambda whole, fraction, zeros: f"{whole}.{fraction}{'0' * zeros}",
        st.integers(0, 999),
        st.integers(0, 999),
        st.integers(0, 3),
    ),
    st.text(alphabet="0123456789.-eE ", max_size=8),
)


@st.composite
def sides_text(draw) -> str:
    """The text between a side's ``[[`` and ``]]``: mostly levels, now and then anything
    made of their characters."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(alphabet='0123456789.", []', max_size=40))
    levels = draw(st.lists(st.tuples(numbers, numbers), min_size=1, max_size=8))
    if draw(st.booleans()):
        levels.sort(key=lambda level: _value(level[0]), reverse=draw(st.booleans()))
    comma, between = draw(st.sampled_from([(",", "],["), (", ", "], ["), (",", "], [")]))
    return between.join(f'"{price}"{comma}"{qty}"' for price, qty in levels)


def _value(text: str) -> Decimal:
    try:
        return Decimal(text)
    except ArithmeticError:
        return Decimal(0)


@settings(max_examples=1500, deadline=None)
@given(sides_text(), sides_text(), st.sampled_from([NumberLimits(), TIGHT]))
def test_random_sides_read_as_the_general_path_reads_them(scan, bids, asks, limits):
    """Every pair of sides is read as the general path reads the line, or left to it."""
    line = f'{{"type":"book","symbol":"BTCUSDT","bids":[[{bids}]],"asks":[[{asks}]],"ts":1}}'
    start = len('{"type":"book","symbol":"BTCUSDT","bids":[[')
    asks_start = start + len(bids) + len(']],"asks":[[')
    read = scan.read_sides(
        line,
        start,
        start + len(bids),
        asks_start,
        asks_start + len(asks),
        limits.integer_digits,
        limits.places,
    )
    if read is not None:
        assert read == general(line, SymbolLimits(default=limits)), line


def test_most_random_books_are_read_by_the_compiled_loops(scan):
    """The comparison above would pass if nothing were read: a moving book is read every time."""
    spellings = Spellings()
    taken = 0
    for book in range(200):
        bids = [[f"{1000 - level}.{book % 7}", f"{level + book % 3}.50"] for level in range(50)]
        asks = [[f"{1001 + level}", f"{(level * book) % 5}"] for level in range(50)]
        line = compact(bids, asks)
        parts = read_compact_book(line, SymbolLimits(), spellings)
        assert parts is not None
        assert (parts[1].texts, parts[2].texts) == general(line, SymbolLimits())
        taken += 1
    assert taken == 200


prices = st.integers(1, 400)


# Books of a side, one after another: price in cents and quantity.
published_books = st.lists(
    st.dictionaries(prices, st.sampled_from(["1", "2", "0.5", "10"]), max_size=30),
    min_size=1,
    max_size=8,
)


def texts_of(book: dict[int, str], descending: bool) -> tuple[str, ...]:
    """Canonical level texts, best first (prices ``1.23``, ``4``, ``0.5``)."""
    ordered = sorted(book.items(), reverse=descending)
    return tuple(f'["{plain(Decimal(cents) / 100)}","{qty}"]' for cents, qty in ordered)


@settings(max_examples=500, deadline=None)
@given(published_books, st.booleans())
def test_a_side_update_is_the_one_set_arithmetic_writes(scan, books, descending):
    side, last = _Side(descending), ()
    for book in books:
        texts = texts_of(book, descending)
        assert scan.side_update(last, texts, descending) == side.take(texts), (last, texts)
        last = texts


def test_a_price_with_no_digit_before_its_point_ranks_as_a_zero_before_it(scan):
    """Level texts are canonical, but the order of ".5" and "0.4" was once wrong."""
    update = scan.side_update(('[".5","1"]',), ('["0.4","1"]',), False)
    assert update == ['["0.4","1"]', '[".5","0"]']


@settings(max_examples=500, deadline=None)
@given(published_books, published_books)
def test_the_checksum_text_is_the_one_of_the_definition(scan, bid_books, ask_books):
    bids, asks = texts_of(bid_books[0], True), texts_of(ask_books[0], False)
    levels = [[text[2:-2].split('","') for text in side] for side in (bids, asks)]
    assert scan.checksum_text(bids, asks) == checksum_text(*levels)
