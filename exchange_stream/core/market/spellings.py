"""What each symbol's recent books read as, and the fast way of reading a book line by it.

A matching engine's next book repeats most of the last one (5 to 20 of its 200 levels change)
and writes it the same way each time. So a book line written as JSON serialisers write it,
compact (``"bids":[["64000.1","1.5"],["64000","2"]]``) or with Python's default spaces
(``"bids": [["64000.1", "1.5"], ["64000", "2"]]``), is read by its level texts: each side is
cut out of the line and split between levels into pieces (``"64000.1","1.5"``), and a piece
read before is one dict lookup for its level. Only the pieces new to the symbol are checked
and converted, in a few C-level passes over them. What is left of the line, with the two
sides cut to ``[]``, goes to the JSON decoder, which says whether the line is what this path
takes: a JSON object of exactly the five keys of a book.

Anything else (an exponent, a sign, a number beyond the symbol's limits, other spaces, an
empty or a missing side, a sixth key) is left to the general path, ``events.parse_event``
reading the whole line as JSON, whose answer is the definition: this path gives the same
levels or gives up (``tests/test_market_spellings.py`` compares the two on random lines).
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from itertools import chain, filterfalse, islice
from operator import attrgetter, gt, itemgetter, lt, methodcaller

from exchange_stream.core.channels import SYMBOL_PATTERN
from exchange_stream.core.market.decimals import EXACT, NumberLimits, SymbolLimits

Level = tuple[Decimal, Decimal]

LONGEST_TEXT = 64  # a price or quantity text longer than this is refused unread


def places(text: str) -> int:
    """Digits after the point of a plain decimal text, its trailing zeros aside (only the
    texts new to a symbol are asked: a few a book)."""
    point = text.find(".")
    return 0 if point < 0 else len(text.rstrip("0")) - point - 1


class BookMemory:
    """One symbol's texts read before: ``texts``, number texts and their values; ``levels``,
    level pieces (``"64000.1","1.5"``, of either side) and their levels, zero quantities
    included; ``zeros``, the pieces whose quantity is zero (which are no level)."""

    __slots__ = ("levels", "texts", "zeros")

    def __init__(self) -> None:
        self.texts: dict[str, Decimal] = {}
        self.levels: dict[str, Level] = {}
        self.zeros: set[str] = set()


class Spellings:
    """What the numbers and the levels of each symbol's recent books read as, by their text
    (one feed's: what it remembers only makes reading faster, never different).

    Only what passed the checks of the symbol (whose limits never change) is kept: at most
    ``per_symbol`` number texts, and level pieces up to ``pieces_per_symbol`` or two books' worth,
    after which that memory starts afresh (with the book just read, for the pieces).
    """

    per_symbol = 1024
    pieces_per_symbol = 512  # the last book's pieces and room for those of the next ones

    def __init__(self) -> None:
        self._by_symbol: dict[str, BookMemory] = {}

    def remembered(self, symbol: str) -> int:
        """How many number texts of ``symbol`` are remembered now."""
        memory = self._by_symbol.get(symbol)
        return len(memory.texts) if memory is not None else 0

    def of(self, symbol: str) -> BookMemory:
        """What ``symbol``'s books read as."""
        memory = self._by_symbol.get(symbol)
        if memory is None:
            memory = self._by_symbol[symbol] = BookMemory()
        if len(memory.texts) > self.per_symbol:
            memory.texts = {}
        return memory


BookParts = tuple[str, tuple[Level, ...], tuple[Level, ...], int]  # symbol, bids, asks, ts


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
    bids_cut = _cut(text, "bids")
    asks_cut = _cut(text, "asks") if bids_cut is not None else None
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
    try:
        pairs = _FRAME.decode("".join(frame))
    except (ValueError, RecursionError):
        return None
    if type(pairs) is not list or len(pairs) != 5:
        return None
    fields = dict(pairs)
    if fields.keys() != _BOOK_KEYS or fields["type"] != "book" or fields["bids"] != []:
        return None
    symbol, ts = fields["symbol"], fields["ts"]
    if fields["asks"] != [] or type(ts) is not int or ts < 0:
        return None
    if type(symbol) is not str or not SYMBOL_PATTERN.fullmatch(symbol):
        return None
    memory = spellings.of(symbol)
    bid_pieces = text[bids_cut.start : bids_cut.end].split(bids_cut.between)
    ask_pieces = text[asks_cut.start : asks_cut.end].split(asks_cut.between)
    known = memory.levels
    new = set(filterfalse(known.__contains__, chain(bid_pieces, ask_pieces)))
    if new and not _learn(new, memory, limits.of(symbol)):
        return None
    bids = _known_levels(bid_pieces, memory, True)
    asks = _known_levels(ask_pieces, memory, False)
    if len(known) > max(spellings.pieces_per_symbol, 2 * (len(bid_pieces) + len(ask_pieces))):
        _start_afresh(memory, bid_pieces + ask_pieces)
    return symbol, bids, asks, ts


class _Cut:
    """Where a side's levels are: ``"bids":[[`` at ``key``, the text between ``[[`` and
    ``]]`` from ``start`` to ``end``, levels parted by ``between``."""

    __slots__ = ("between", "end", "key", "start")

    def __init__(self, key: int, start: int, end: int, between: str) -> None:
        self.key, self.start, self.end, self.between = key, start, end, between


def _cut(text: str, name: str) -> _Cut | None:
    """Where the side ``name`` is, its end not yet known (-1)."""
    for opening, between in ((f'"{name}":[[', "],["), (f'"{name}": [[', "], [")):
        key = text.find(opening)
        if key >= 0:
            return _Cut(key, key + len(opening), -1, between)
    return None


def _not_a_float(text: str) -> object:
    raise ValueError(f"number {text} must be a decimal string")


_FRAME = json.JSONDecoder(object_pairs_hook=list, parse_float=_not_a_float)
_BOOK_KEYS = {"type", "symbol", "bids", "asks", "ts"}


def _known_levels(pieces: list[str], memory: BookMemory, descending: bool) -> tuple[Level, ...]:
    """One side's levels, all its pieces known now, best first."""
    zeros = bool(memory.zeros) and not memory.zeros.isdisjoint(pieces)
    return best_first(list(map(memory.levels.__getitem__, pieces)), descending, zeros)


def best_first(levels: list[Level], descending: bool, zeros: bool) -> tuple[Level, ...]:
    """A side's levels best first, those of quantity zero left out (``zeros``: there may be
    some). Levels already strictly best first, as matching engines write them, are taken as
    they are, in one C-level pass; otherwise they are sorted as a dict (a repeated price: its
    last quantity). The rule of both paths of ``parse_event``."""
    prices = list(map(itemgetter(0), levels))
    if all(map(gt if descending else lt, prices, islice(prices, 1, None))):
        return tuple(level for level in levels if level[1]) if zeros else tuple(levels)
    book = dict(levels)
    if zeros:
        book = {price: qty for price, qty in book.items() if qty}
    return tuple(sorted(book.items(), reverse=descending))


def plain_values(
    numbers: list[str], known: dict[str, Decimal], limits: NumberLimits
) -> list[Decimal] | None:
    """The values of a side's ``numbers`` (price, qty, price, ...): those not ``known``
    checked (a plain decimal, at most ``LONGEST_TEXT`` long and ``limits.places`` places) and
    remembered; None when one is not such a number, a price is not positive or a value not
    below the symbol's ceiling (the careful path says which). A few C-level passes over the
    new texts, no Python code per number. Raises TypeError for a number that is no string."""
    fresh = set(numbers).difference(known)
    if fresh:
        if "".join(fresh).encode().translate(None, _PLAIN):
            return None  # a sign, an exponent, a space, a letter, a quote, a comma
        longest = max(map(len, fresh))
        if longest > LONGEST_TEXT or (
            longest > limits.places + 1 and max(map(places, fresh)) > limits.places
        ):
            return None  # (a text no longer than places + 1 has no more places)
        try:  # normalize() respells canonically ("1.50" as 1.5); EXACT: no digit is rounded
            known.update(zip(fresh, map(EXACT.normalize, map(Decimal, fresh)), strict=True))
        except InvalidOperation:  # "", ".", "1.2.3"
            return None
    values = list(map(known.__getitem__, numbers))
    if not values or min(values[0::2]) <= 0 or max(values) >= limits.ceiling:
        return None
    return values


_PLAIN = b"0123456789."  # deleted by translate(): what is left is not a plain decimal
_QUOTES = methodcaller("count", '"')
_FOUR = {4}
_ZERO = Decimal(0)


def _learn(new: set[str], memory: BookMemory, limits: NumberLimits) -> bool:
    """Check and remember the pieces new to this book; False when one of them is not a level
    this path takes (the general path says what is wrong with it). A few C-level passes over
    the new pieces, no Python code per piece: each piece has four quotes, and splitting them
    all at ``","`` gives two numbers a piece, each a plain decimal (``plain_values``, which
    holds no quote or comma)."""
    pieces = list(new)
    if set(map(_QUOTES, pieces)) != _FOUR:
        return False
    numbers = ",".join(pieces).replace('", "', '","')[1:-1].split('","')  # price, qty, ...
    if len(numbers) != 2 * len(pieces):
        return False
    values = plain_values(numbers, memory.texts, limits)
    if values is None:
        return False
    quantities = values[1::2]
    memory.levels.update(zip(pieces, zip(values[0::2], quantities, strict=True), strict=True))
    if _ZERO in quantities:
        read = zip(pieces, quantities, strict=True)
        memory.zeros.update(piece for piece, quantity in read if not quantity)
    return True


def _start_afresh(memory: BookMemory, pieces: list[str]) -> None:
    """Keep only the pieces of the book just read (all of them known now)."""
    memory.levels = {piece: memory.levels[piece] for piece in pieces}
    memory.zeros = memory.zeros.intersection(pieces)
