"""Book lines read by their level texts (``spellings.read_compact_book``) against the general
path (the whole line as JSON): the same book, or the same refusal, for every line; and the
lines the fast path must leave to the general one. Each test runs with the sides read by the
compiled loops (``level_scan``) and by the memory of level pieces."""

import json
import random
from decimal import Context, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_stream.core.encoding import encode_text
from exchange_stream.core.market.decimals import NumberLimits, SymbolLimits
from exchange_stream.core.market.events import MalformedEvent, level_texts_of, parse_event
from exchange_stream.core.market.spellings import (
    LONGEST_TEXT,
    Spellings,
    TextLevels,
    _canonical_piece,
    canonical_text,
    read_compact_book,
)

WIDE = Context(prec=200)  # no digit of a bounded number rounded
LIMITS = SymbolLimits(table={"TINY": NumberLimits(integer_digits=3, places=2)})

pytestmark = pytest.mark.usefixtures("level_loops")  # compiled and interpreted alike


def outcome(line: str | bytes, spellings: Spellings | None) -> object:
    """The book on the line, with the JSON texts of its levels, or the refusal."""
    try:
        book = parse_event(line, LIMITS, spellings)
    except MalformedEvent as refused:
        return ("refused", str(refused), refused.reason)
    return book, level_texts_of(book.bids), level_texts_of(book.asks)


def written_by_decimals(line: str | bytes) -> tuple[list[str], list[str]]:
    """The JSON texts of a book line's levels worked out here with Decimal alone: each number
    respelled as ``format(normalized value, "f")``, one level a price (its last quantity),
    zero quantities dropped, best first; the texts the encoder writes for those values."""
    raw = json.loads(line)
    sides = []
    for key, descending in (("bids", True), ("asks", False)):
        book = {Decimal(price): Decimal(qty) for price, qty in raw[key]}
        levels = sorted(((p, q) for p, q in book.items() if q), reverse=descending)
        sides.append(
            [encode_text([format(WIDE.normalize(n), "f") for n in level]) for level in levels]
        )
    return sides[0], sides[1]


def assert_same(text: str | bytes, spellings: Spellings) -> None:
    """The line read through the memory as alone, and a book's levels written as the
    encoder writes the values Decimal reads."""
    read = outcome(text, spellings)
    assert read == outcome(text, None), text
    if not isinstance(read[0], str):
        assert (list(read[1]), list(read[2])) == written_by_decimals(text)


def line(bids, asks, symbol="BTCUSDT", ts=1, spaced=False, **extra) -> str:
    event = {"type": "book", "symbol": symbol, "bids": bids, "asks": asks, "ts": ts, **extra}
    return json.dumps(event) if spaced else json.dumps(event, separators=(",", ":"))


# -- what the fast path takes, and what it leaves ----------------------------------------


@pytest.mark.parametrize("spaced", [False, True])
def test_compact_and_spaced_lines_are_read_by_their_level_texts(spaced):
    text = line([["100.50", "1.0"], ["99", "2"]], [["101", "0.50"]], spaced=spaced)
    spellings = Spellings()
    parts = read_compact_book(text.encode(), LIMITS, spellings)
    assert parts is not None
    assert_same(text, spellings)
    assert [str(price) for price, _ in parts[1]] == ["100.5", "99"]


@pytest.mark.parametrize(
    "text",
    [
        line([], [["101", "1"]]),  # an empty side
        line([["100", "1"]], [["101", "1e0"]]),  # an exponent
        line([["100", "1"]], [["101", "-1"]]),  # a sign
        line([["100", "1"]], [["101", 1]]),  # a number
        line([["100", "1"]], [["101", "1"]], note="x"),  # a sixth key
        line([["100", "1"]], [["101", "1"]], ts=1.5),  # a float
        line([["100", "1"]], [["101", "1"]], ts=True),
        line([["100", "1"]], [["101", "1"]], symbol="btc"),
        line([["100", "1"]], [["101", "1"]], symbol="TINY") + "x",  # not JSON
        line([["100", "1"]], [["1000", "1"]], symbol="TINY"),  # beyond TINY's 3 digits
        line([["100", "1"]], [["101", "1.125"]], symbol="TINY"),  # beyond its 2 places
        line([["0", "1"]], [["101", "1"]]),  # a zero price
        '{"type":"book","symbol":"X","bids":[["1","1"] ,["0.5","1"]],"asks":[["2","1"]],"ts":1}',
        # "bids" twice: JSON takes the last one, which is empty
        '{"type":"book","symbol":"X","bids":[["1","1"]],"asks":[["2","1"]],"ts":1,"bi\\u0064s":[]}',
        # a "bids" inside another key's value
        '{"type":"book","symbol":"X","m":{"bids":[["1","1"]]},"bids":[],"asks":[["2","1"]],"ts":1}',
        '{"type":"trade","symbol":"X","bids":[["1","1"]],"asks":[["2","1"]],"ts":1}',
        line([["100", "1"]], [["101", "1"]]).encode("utf-16"),
        b'{"type":"book","symbol":"X","bids":[["1","1"]],"asks":[["2","\xff"]],"ts":1}',
    ],
)
def test_lines_the_fast_path_leaves_to_the_general_one(text):
    assert read_compact_book(text, LIMITS, Spellings()) is None
    assert outcome(text, Spellings()) == outcome(text, None)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"book","symbol":"X","bids":%s,"asks":%s,"ts":12}',  # the pattern's
        '{"type": "book", "symbol": "X", "bids":%s, "asks":%s, "ts": 0}',
        '{"symbol":"X","type":"book","bids":%s,"asks":%s,"ts":12}',  # the decoder's
        '{"type":"book","symbol":"\\u0058","bids":%s,"asks":%s,"ts":12}',
        '{"type":"book","symbol":"X","bids":%s,"asks":%s,"ts":12} ',
        '{"type":"book","symbol":"X","bids":%s,"asks":%s,"ts":' + "9" * 25 + "}",
    ],
)
def test_a_frame_matched_or_decoded_reads_alike(frame):
    """The usual frame is matched by a pattern, any other decoded as JSON: the same book."""
    text = frame % ('[["1","1"],["0.5","2"]]', '[["2","1"]]')
    spellings = Spellings()
    assert read_compact_book(text, LIMITS, spellings) is not None
    assert_same(text, spellings)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"book","symbol":"X","bids":%s,"asks":%s,"ts":012}',  # not JSON
        '{"type":"book","symbol":"x","bids":%s,"asks":%s,"ts":12}',  # not a symbol
        '{"type":"book","symbol":"X\x01","bids":%s,"asks":%s,"ts":12}',
        '{"type":"book","symbol":"X","bids":%s,"asks":%s,"ts":-1}',
        '{"type":"book","symbol":"X","bids":%s,"asks":%s,"ts":' + "9" * 5000 + "}",
    ],
)
def test_a_frame_neither_pattern_nor_decoder_takes_is_the_general_paths(frame):
    text = frame % ('[["1","1"]]', '[["2","1"]]')
    assert read_compact_book(text, LIMITS, Spellings()) is None
    assert outcome(text, Spellings()) == outcome(text, None)


def test_sides_in_either_order_and_a_line_end():
    text = '{"ts":7,"asks":[["2","1"],["3","1"]],"symbol":"X","type":"book","bids":[["1","1"]]}'
    spellings = Spellings()
    assert read_compact_book(text + "\r\n", LIMITS, spellings) is not None
    assert outcome(text + "\r\n", spellings) == outcome(text, None)


def test_a_piece_that_is_not_one_level_is_never_taken_for_levels():
    """Four quotes to a piece: a level of three texts beside one of one is not two levels,
    although joined they read as two."""
    text = '{"type":"book","symbol":"X","bids":[["3","1","2"],["1"]],"asks":[["4","1"]],"ts":1}'
    assert read_compact_book(text, LIMITS, Spellings()) is None
    assert outcome(text, Spellings())[0] == "refused"


def test_the_memory_of_a_side_starts_afresh_with_the_book_just_read():
    spellings = Spellings()
    for book in range(40):
        bids = [[f"{1000 + book}.{level:02d}", "1"] for level in range(99, -1, -1)]
        text = line(bids, [["2000", "1"]])
        assert_same(text, spellings)
        assert len(spellings.of("BTCUSDT").ranks) <= Spellings.pieces_per_symbol + 101


# -- random lines: the two paths agree ----------------------------------------------------

good_numbers = st.one_of(
    st.integers(0, 10**6).map(str),
    st.builds(
        lambda whole, fraction, zeros: f"{whole}.{fraction}{'0' * zeros}",
        st.integers(0, 999),
        st.integers(0, 999),
        st.integers(0, 3),
    ),
)
odd_numbers = st.sampled_from(
    ["0", "0.0", "00.5", "1e2", "-1", "1.", ".5", "", " 1", "1" * 70, "9" * 20, "1.123"]
)
# Mostly numbers the fast path takes, so that most lines exercise it; one in twenty odd.
numbers = st.integers(0, 19).flatmap(lambda pick: odd_numbers if pick == 0 else good_numbers)
levels = st.lists(st.lists(numbers, min_size=2, max_size=2), min_size=1, max_size=6)


def rarely(strategy, usual):
    """``usual`` nine times in ten, else something drawn from ``strategy``."""
    return st.integers(0, 9).flatmap(lambda pick: strategy if pick == 0 else st.just(usual))


@st.composite
def book_lines(draw) -> str:
    bids = [] if draw(rarely(st.just(True), False)) else draw(levels)  # empty now and then
    asks = draw(levels)
    if draw(st.booleans()):  # best first, as matching engines write them, or any order
        bids = sorted(bids, key=lambda level: -float(level[0]) if _plain(level[0]) else 0)
        asks = sorted(asks, key=lambda level: float(level[0]) if _plain(level[0]) else 0)
    fields = {
        "type": draw(rarely(st.just("trade"), "book")),
        "symbol": draw(rarely(st.just("TINY"), "BTCUSDT")),
        "bids": bids,
        "asks": asks,
        "ts": draw(rarely(st.sampled_from([0, -1, 1.5, True, "1"]), 1)),
    }
    keys = draw(st.permutations(list(fields)))
    if draw(rarely(st.just(True), False)):
        keys = keys[:-1]  # one key missing
    event = {key: fields[key] for key in keys}
    extra = draw(rarely(st.sampled_from([1, {"bids": [["1", "1"]]}, "bids"]), None))
    if extra is not None:
        event["extra"] = extra
    spacing = draw(rarely(st.sampled_from([(",", ": "), (" ,", ":")]), None))
    spacing = spacing or draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return json.dumps(event, separators=spacing)


def _plain(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.lists(book_lines(), min_size=1, max_size=6))
def test_random_lines_read_alike_with_and_without_the_memory(lines):
    """Book after book through one memory (pieces remembered, repeated, respelled) and
    alone: every line is the same book or the same refusal."""
    spellings = Spellings()
    for text in lines:
        assert_same(text, spellings)


canonical_candidates = st.builds(
    lambda whole, fraction: whole if fraction is None else f"{whole}.{fraction}",
    st.text(alphabet="0123456789", max_size=7),
    st.none() | st.text(alphabet="0123456789", max_size=7),
) | st.text(alphabet="0123456789.", max_size=9)


@settings(max_examples=1000, deadline=None)
@given(
    st.integers(1, 6),  # small limits, so that numbers at and beyond them are common
    st.integers(0, 6),
    st.lists(canonical_candidates, min_size=2, max_size=2),
    st.sampled_from([",", ", ", ",  ", " ,", ""]),
)
def test_a_piece_matched_as_canonical_is_one_canonical_text_keeps(digits, places, pair, comma):
    """The pattern that takes a new piece at once takes exactly the pieces of two numbers
    that ``canonical_text`` spells as they are (the rest go the long way)."""
    limits = NumberLimits(digits, places)
    pattern = _canonical_piece(limits)
    assert pattern is not None
    match = pattern.fullmatch(f'"{pair[0]}"{comma}"{pair[1]}"')
    kept = comma in (",", ", ") and all(canonical_text(text, limits) == text for text in pair)
    assert (match is not None) == kept
    if match is not None:
        assert list(match.groups()) == pair


def test_numbers_that_may_be_longer_than_any_text_taken_have_no_pattern():
    assert _canonical_piece(NumberLimits(40, LONGEST_TEXT - 40)) is None
    spellings = Spellings()
    wide = SymbolLimits(default=NumberLimits(40, LONGEST_TEXT - 40))
    text = line([["64000.1", "1.5"]], [["64001", "2"]])
    book = read_compact_book(text, wide, spellings)
    assert book is not None and book[1].texts == ('["64000.1","1.5"]',)


def test_a_moving_book_reads_alike_through_the_memory():
    """Many books of one moving market, each a few levels changed, as a matching engine
    writes them: the fast path takes every one, and reads what the general path reads."""
    rng = random.Random(5)
    bids = {10_000 - i: rng.randint(1, 999) for i in range(1, 60)}
    asks = {10_000 + i: rng.randint(1, 999) for i in range(1, 60)}
    spellings = Spellings()
    for _ in range(300):
        side = rng.choice((bids, asks))
        price = rng.choice(list(side))
        if rng.random() < 0.3:
            del side[price]
        else:
            side[price] = rng.randint(0, 999)  # a zero now and then: no level
        text = line(
            [[f"{p / 100}", f"{q / 1000}"] for p, q in sorted(bids.items(), reverse=True)],
            [[f"{p / 100:.2f}", f"{q / 1000:.4f}"] for p, q in sorted(asks.items())],
        )
        assert read_compact_book(text, LIMITS, spellings) is not None
        assert_same(text, spellings)


def test_text_levels_read_as_the_levels_they_write():
    """A side kept as the JSON texts of its levels is the same sequence of levels as the
    tuple of Decimals: equal, hashed alike, indexed and sliced, and read one at a time."""
    levels = TextLevels(('["64000.1","1.5"]', '["64000","0.25"]'))
    as_tuple = ((Decimal("64000.1"), Decimal("1.5")), (Decimal("64000"), Decimal("0.25")))
    assert levels == as_tuple and as_tuple == levels and levels == list(as_tuple)
    assert levels != as_tuple[:1] and levels != "not levels"
    assert hash(levels) == hash(as_tuple)
    assert levels[0] == as_tuple[0] and levels[-1] == as_tuple[-1] and levels[1:] == as_tuple[1:]
    assert len(levels) == 2 and list(levels) == list(as_tuple)
    with pytest.raises(IndexError):
        levels[2]
    assert level_texts_of(levels) is levels.texts  # the depth book takes them as they are
    assert level_texts_of(as_tuple) == levels.texts  # and writes them for levels made in code
