"""What each symbol's recent books read as, and the fast way of reading a book line by it.

A book is kept as the JSON texts of its levels (``["64000.1","1.5"]``, the canonical spelling
of each number, as the encoder writes it): the depth book diffs, joins and checksums these
texts and never needs a number, so a level becomes ``Decimal`` only when something asks for
it (the mark price, once a second, a few top levels: ``TextLevels``). Prices are put in
order by their rank, an integer that compares as the price does (``rank``).

A matching engine's next book repeats most of the last one (5 to 20 of its 200 levels change)
and writes it the same way each time. So a book line written as JSON serialisers write it,
compact (``"bids":[["64000.1","1.5"],["64000","2"]]``) or with Python's default spaces
(``"bids": [["64000.1", "1.5"], ["64000", "2"]]``), is read by its level texts: each side is
cut out of the line and split between levels into pieces (``"64000.1","1.5"``), and a piece
read before is a dict lookup for its rank and one for its level's text. Only the pieces new
to the symbol are checked and respelled. What is left of the line, with the two sides cut to
``[]``, must be a JSON object of exactly the five keys of a book: written as the feed's
documentation writes it, a pattern says so; otherwise the JSON decoder does.

Anything else (an exponent, a sign, a number beyond the symbol's limits, other spaces, an
empty or a missing side, a sixth key, levels out of order) is left to the general path,
``events.parse_event`` reading the whole line as JSON, whose answer is the definition: this
path gives the same levels or gives up (``tests/test_market_spellings.py`` compares the two
on random lines).

Where the C module of ``level_scan`` is built, the two sides cut out of the line are read by
it instead, a walk over each side's text that checks, respells and orders every level at
tens of instructions a level, with nothing to remember; the frame is checked here all the
same, and the memory of pieces is the way of an install without it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from functools import cache
from itertools import islice
from operator import attrgetter, gt, itemgetter, lt
from typing import cast, overload

from exchange_stream.core.channels import SYMBOL_PATTERN
from exchange_stream.core.market import level_scan
from exchange_stream.core.market.decimals import NumberLimits, SymbolLimits

Level = tuple[Decimal, Decimal]

LONGEST_TEXT = 64  # a price or quantity text longer than this is refused unread


class TextLevels(Sequence[Level]):
    """A side's levels, best first, given by their JSON texts (``texts``): a level is read
    into Decimals when it is asked for, each time (whoever reads levels reads a few)."""

    __slots__ = ("texts",)

    def __init__(self, texts: tuple[str, ...]) -> None:
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> Level: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Level, ...]: ...

    def __getitem__(self, index: int | slice) -> Level | tuple[Level, ...]:
        if isinstance(index, slice):
            return tuple(map(_level, self.texts[index]))
        return _level(self.texts[index])

    def __iter__(self) -> Iterator[Level]:
        return map(_level, self.texts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"TextLevels({self.texts!r})"


def _level(text: str) -> Level:
    """The level of a JSON text ``["64000.1","1.5"]``."""
    price, _, qty = text[2:-2].partition('","')
    return Decimal(price), Decimal(qty)


def level_texts(prices: list[str], quantities: list[str]) -> list[str]:
    """Levels' JSON texts as the encoder writes them, from their numbers' canonical texts."""
    return [f'["{price}","{qty}"]' for price, qty in zip(prices, quantities, strict=True)]


def rank(price: str, limits: NumberLimits) -> int:
    """A canonical price as an integer that compares as the price does: the price in units
    of the symbol's finest place (``64000.1`` as ``64000.1 * 10**18`` by default), exact (a
    price has no more places than that)."""
    whole, _, fraction = price.partition(".")
    return int(whole + fraction.ljust(limits.places, "0"))


class BookMemory:
    """One symbol's texts read before: ``spelled``, number texts checked and respelled (by
    ``_learn``'s long way or the general path) and their canonical spelling; ``ranked``,
    canonical prices and their ranks; ``ranks`` and ``written``, level pieces
    (``"64000.1","1.5"``, of either side) and their price's rank and their level's JSON text;
    ``zeros``, the pieces whose quantity is zero (which are no level)."""

    __slots__ = ("ranked", "ranks", "spelled", "written", "zeros")

    def __init__(self) -> None:
        self.spelled: dict[str, str] = {}
        self.ranked: dict[str, int] = {}
        self.ranks: dict[str, int] = {}
        self.written: dict[str, str] = {}
        self.zeros: set[str] = set()


class Spellings:
    """What the numbers and the levels of each symbol's recent books read as, by their text
    (one feed's: what it remembers only makes reading faster, never different).

    Only what passed the checks of the symbol (whose limits never change) is kept: at most
    ``per_symbol`` number texts and prices, and level pieces up to ``pieces_per_symbol`` or
    two books' worth, after which that memory starts afresh (with the book just read, for
    the pieces).
    """

    per_symbol = 1024
    pieces_per_symbol = 512  # the last book's pieces and room for those of the next ones

    def __init__(self) -> None:
        self._by_symbol: dict[str, BookMemory] = {}

    def remembered(self, symbol: str) -> int:
        """How many level pieces of ``symbol`` are remembered now (each read at once when
        it comes again)."""
        memory = self._by_symbol.get(symbol)
        return len(memory.ranks) if memory is not None else 0

    def of(self, symbol: str) -> BookMemory:
        """What ``symbol``'s books read as."""
        memory = self._by_symbol.get(symbol)
        if memory is None:
            memory = self._by_symbol[symbol] = BookMemory()
        if len(memory.spelled) > self.per_symbol:
            memory.spelled = {}
        if len(memory.ranked) > self.per_symbol:
            memory.ranked = {}
        return memory


BookParts = tuple[str, TextLevels, TextLevels, int]  # symbol, bids, asks, ts


def read_compact_book(
    line: bytes | str, limits: SymbolLimits, spellings: Spellings
) -> BookParts | None:
    """The book on ``line`` read by its level texts (levels best first), or None when the
    general path must read it (not a book, not written this way, or not valid: the general
    path says why)."""
    try:
        text = line.decode() if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        return None
    bids_cut = _cut(text, _BIDS)
    asks_cut = _cut(text, _ASKS) if bids_cut is not None else None
    if bids_cut is None or asks_cut is None:
        return None  # not a book, an empty side, or one written otherwise
    first, second = sorted((bids_cut, asks_cut), key=attrgetter("key"))
    # Each side ends at the first "]]" after its start. Levels taken hold no bracket, so when
    # the line is taken that is the last "]]" before the next key (or the line's end),
    # which a search from there finds at once.
    first.end = text.rfind("]]", first.start, second.key)
    second.end = text.rfind("]]", second.start)
    if first.end < 0 or second.end < 0:
        return None
    frame: list[str] = []
    start = 0
    for cut in (first, second):
        frame += (text[start : cut.start - 1], "]")  # the side's "[[...]]" becomes "[]"
        start = cut.end + 2
    frame.append(text[start:])
    fields = _book_fields("".join(frame))
    if fields is None:
        return None
    symbol, ts = fields
    scan = level_scan.compiled
    if scan is not None:
        number_limits = limits.of(symbol)
        sides = scan.read_sides(
            text,
            bids_cut.start,
            bids_cut.end,
            asks_cut.start,
            asks_cut.end,
            number_limits.integer_digits,
            number_limits.places,
        )
        return None if sides is None else (symbol, TextLevels(sides[0]), TextLevels(sides[1]), ts)
    memory = spellings.of(symbol)
    bid_pieces = text[bids_cut.start : bids_cut.end].split(bids_cut.between)
    ask_pieces = text[asks_cut.start : asks_cut.end].split(asks_cut.between)
    ranks = _piece_ranks((bid_pieces, ask_pieces), memory, limits.of(symbol))
    if ranks is None:
        return None
    bid_ranks, ask_ranks = ranks
    bids = _known_side(bid_pieces, bid_ranks, memory, gt)
    asks = _known_side(ask_pieces, ask_ranks, memory, lt)
    pieces = len(bid_pieces) + len(ask_pieces)
    if len(memory.ranks) > max(spellings.pieces_per_symbol, 2 * pieces):
        _start_afresh(memory, bid_pieces + ask_pieces)
    if bids is None or asks is None or bid_ranks[0] >= ask_ranks[0]:
        return None  # not best first (the general path sorts it), or crossed
    return symbol, bids, asks, ts


class _Cut:
    """Where a side's levels are: ``"bids":[[`` at ``key``, the text between ``[[`` and
    ``]]`` from ``start`` to ``end``, levels parted by ``between``."""

    __slots__ = ("between", "end", "key", "start")

    def __init__(self, key: int, start: int, end: int, between: str) -> None:
        self.key, self.start, self.end, self.between = key, start, end, between


def _cut(text: str, openings: tuple[tuple[str, str], ...]) -> _Cut | None:
    """Where the side opened by one of ``openings`` (its ``"bids":[[`` and the text between
    its levels, compact or spaced) is, its end not yet known (-1)."""
    for opening, between in openings:
        key = text.find(opening)
        if key >= 0:
            return _Cut(key, key + len(opening), -1, between)
    return None


_BIDS = (('"bids":[[', "],["), ('"bids": [[', "], ["))
_ASKS = (('"asks":[[', "],["), ('"asks": [[', "], ["))


def _book_fields(frame: str) -> tuple[str, int] | None:
    """The symbol and ts of a book line's frame (the line with its sides cut to ``[]``), or
    None unless it is a JSON object of exactly the five keys of a book, a valid symbol and a
    non-negative integer ts. A frame written as the feed's documentation writes it (its keys
    in that order, compact or with single spaces) is matched by a pattern; any other goes
    to the JSON decoder."""
    usual = _USUAL_FRAME.fullmatch(frame)
    if usual is not None:
        symbol, ts = usual[1], int(usual[2])
    else:
        try:
            pairs = _FRAME.decode(frame)
        except (ValueError, RecursionError):
            return None
        if type(pairs) is not list or len(pairs) != 5:
            return None
        fields = dict(pairs)
        if fields.keys() != _BOOK_KEYS or fields["type"] != "book" or fields["bids"] != []:
            return None
        symbol, ts = fields["symbol"], fields["ts"]
        if fields["asks"] != [] or type(ts) is not int or ts < 0 or type(symbol) is not str:
            return None
    if not SYMBOL_PATTERN.fullmatch(symbol):
        return None
    return symbol, ts


# A symbol without escapes and a ts of at most 19 digits: any other frame is the decoder's.
_USUAL_FRAME = re.compile(
    r'\{"type": ?"book", ?"symbol": ?"([^"\\]*)", ?"bids": ?\[\], ?"asks": ?\[\], ?'
    r'"ts": ?(0|[1-9][0-9]{0,18})\}'
)


def _not_a_float(text: str) -> object:
    raise ValueError(f"number {text} must be a decimal string")


_FRAME = json.JSONDecoder(object_pairs_hook=list, parse_float=_not_a_float)
_BOOK_KEYS = {"type", "symbol", "bids", "asks", "ts"}


def _known_side(
    pieces: list[str], ranks: list[int], memory: BookMemory, better: Callable[[int, int], bool]
) -> TextLevels | None:
    """One side's levels, its pieces and their ``ranks`` known; None unless each price is
    ``better`` than the next (best first, one level a price). A comparison of two integers
    a piece, and one lookup, each of them one C-level call for the side."""
    if not _strictly(better, ranks):
        return None
    texts = itemgetter(*pieces)(memory.written) if len(pieces) > 1 else (memory.written[pieces[0]],)
    if memory.zeros and not memory.zeros.isdisjoint(pieces):
        return TextLevels(tuple(text for text in texts if not text.endswith(',"0"]')))
    return TextLevels(texts)


def _strictly(better: Callable[[int, int], bool], ranks: list[int]) -> bool:
    """Whether each rank is ``better`` than the next: best first, one level a price (one
    C-level pass)."""
    return all(map(better, ranks, islice(ranks, 1, None)))


def best_first(
    prices: list[str],
    quantities: list[str],
    descending: bool,
    ranked: dict[str, int],
    limits: NumberLimits,
) -> TextLevels:
    """A side's levels best first, from the canonical texts of their numbers, those of
    quantity zero left out (``ranked``: the ranks of prices seen before). Levels already
    strictly best first, as matching engines write them, are taken as they are; otherwise
    they are sorted as a dict (a repeated price: its last quantity)."""
    ranks = _ranks(prices, ranked, limits)
    texts = level_texts(prices, quantities)
    if "0" not in quantities and _strictly(gt if descending else lt, ranks):
        return TextLevels(tuple(texts))
    book = dict(zip(ranks, zip(texts, quantities, strict=True), strict=True))
    ordered = sorted(book.items(), reverse=descending)
    return TextLevels(tuple(text for _, (text, qty) in ordered if qty != "0"))


def plain_texts(
    numbers: list[str], spelled: dict[str, str], limits: NumberLimits
) -> list[str] | None:
    """The canonical texts of a side's ``numbers`` (price, qty, price, ...): those not
    ``spelled`` before checked (a plain decimal, at most ``LONGEST_TEXT`` long, ``limits``'
    digits before the point and places after it) and remembered; None when one is not such a
    number or a price is zero (the careful path says which). Raises TypeError for a number
    that is no string."""
    fresh = set(numbers).difference(spelled)
    if fresh:
        if "".join(fresh).encode().translate(None, _PLAIN):  # (TypeError: not all strings)
            return None  # a sign, an exponent, a space, a letter, a quote, a comma
        learnt = [canonical_text(text, limits) for text in fresh]
        if None in learnt:
            return None
        spelled.update(zip(fresh, learnt, strict=True))  # type: ignore[arg-type]
    texts = list(map(spelled.__getitem__, numbers))
    if not texts or "0" in texts[0::2]:
        return None
    return texts


def canonical_text(text: str, limits: NumberLimits) -> str | None:
    """A plain decimal text spelled as ``format(value, "f")`` writes its value: no leading
    zero but the one of ``0.5``, no trailing zero after a point; None when it is not one (at
    most ``LONGEST_TEXT`` ASCII digits and a point: not ``""``, ``"."``, ``"1.2.3"``, ``"-1"``,
    ``"1e2"``) or it is beyond ``limits``."""
    whole, _, fraction = text.partition(".")
    digits = whole + fraction
    if not (digits.isascii() and digits.isdigit()) or len(text) > LONGEST_TEXT:
        return None
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    if len(whole) > limits.integer_digits or len(fraction) > limits.places:
        return None
    return f"{whole}.{fraction}" if fraction else whole


_PLAIN = b"0123456789."  # deleted by translate(): what is left is not a plain decimal


def _piece_ranks(
    sides: tuple[list[str], list[str]], memory: BookMemory, limits: NumberLimits
) -> list[list[int]] | None:
    """The ranks of each side's pieces, those new to the symbol learnt first; None when one
    of them is not a level this path takes. A lookup a piece, one C-level call a side; the
    few pieces not known are found by ``list.index`` (a C-level scan), not by Python code
    that visits every piece."""
    known = memory.ranks
    found = [list(map(known.get, pieces)) for pieces in sides]
    missing: list[tuple[list[int | None], int, str]] = []
    for pieces, ranks in zip(sides, found, strict=True):
        at = -1
        try:
            while True:
                at = ranks.index(None, at + 1)
                missing.append((ranks, at, pieces[at]))
        except ValueError:
            pass  # no other piece of this side is new
    if missing:
        if not _learn({piece for _, _, piece in missing}, memory, limits):
            return None
        for ranks, at, piece in missing:
            ranks[at] = known[piece]
    return cast(list[list[int]], found)


def _learn(new: set[str], memory: BookMemory, limits: NumberLimits) -> bool:
    """Check and remember the pieces new to this book, one at a time (a book brings a few);
    False when one of them is not a level this path takes (the general path says what is
    wrong with it): each piece is two quoted numbers parted by ``","`` or ``", "``, plain
    decimals within ``limits`` (``canonical_text``), the price not zero. A piece whose
    numbers are spelled canonically already, as most are, is taken by one pattern match."""
    spelled, ranked, ranks, written = memory.spelled, memory.ranked, memory.ranks, memory.written
    canonical = _canonical_piece(limits)
    for piece in new:
        match = canonical.fullmatch(piece) if canonical is not None else None
        if match is not None:
            price, qty = match.groups()
        else:
            try:
                before, price_text, comma, qty_text, after = piece.split('"')
            except ValueError:
                return False  # not four quotes
            if before or after or (comma != "," and comma != ", "):
                return False
            price = spelled.get(price_text) or canonical_text(price_text, limits)
            qty = spelled.get(qty_text) or canonical_text(qty_text, limits)
            if price is None or qty is None:
                return False
            spelled[price_text], spelled[qty_text] = price, qty
        if price == "0":
            return False
        price_rank = ranked.get(price)
        if price_rank is None:
            price_rank = ranked[price] = rank(price, limits)
        ranks[piece], written[piece] = price_rank, f'["{price}","{qty}"]'
        if qty == "0":
            memory.zeros.add(piece)
    return True


@cache
def _canonical_piece(limits: NumberLimits) -> re.Pattern[str] | None:
    """A pattern of the pieces whose two numbers are spelled as ``canonical_text`` would
    spell them, within ``limits`` (groups: the price and the quantity); None when no number
    is within them (no digit before the point allowed) or a number within them may be longer
    than ``LONGEST_TEXT``, which the pattern does not count."""
    if limits.integer_digits < 1 or limits.integer_digits + 1 + limits.places > LONGEST_TEXT:
        return None
    whole = f"0|[1-9][0-9]{{0,{limits.integer_digits - 1}}}"
    fraction = f"(?:\\.[0-9]{{0,{limits.places - 1}}}[1-9])?" if limits.places else ""
    number = f"((?:{whole}){fraction})"
    return re.compile(f'"{number}", ?"{number}"')


def _ranks(prices: list[str], ranked: dict[str, int], limits: NumberLimits) -> list[int]:
    """The ranks of canonical ``prices``, those not ``ranked`` yet worked out and remembered."""
    fresh = set(prices).difference(ranked)
    ranked.update((price, rank(price, limits)) for price in fresh)
    return list(map(ranked.__getitem__, prices))


def _start_afresh(memory: BookMemory, pieces: list[str]) -> None:
    """Keep only the pieces of the book just read (all of them known now)."""
    memory.ranks = {piece: memory.ranks[piece] for piece in pieces}
    memory.written = {piece: memory.written[piece] for piece in pieces}
    memory.zeros = memory.zeros.intersection(pieces)
