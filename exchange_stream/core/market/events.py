"""The matching engine's events (docs/market.md, "Input"), parsed and checked.

One JSON object per line or datagram. Prices and quantities are decimal strings and become
``Decimal`` (a book's levels stay their canonical JSON texts, ``spellings.TextLevels``, and
become ``Decimal`` when read); a number given as a JSON float is refused rather than
rounded. Anything that does not parse raises :class:`MalformedEvent`, which the feed counts
and skips.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import chain

from exchange_stream.core.channels import PRIVATE_TYPES, SYMBOL_PATTERN, normalize_uid
from exchange_stream.core.market.decimals import (
    NumberLimits,
    SymbolLimits,
    canonical,
    plain,
    spelled_right,
)
from exchange_stream.core.market.spellings import (
    LONGEST_TEXT,
    BookMemory,
    Level,
    Spellings,
    TextLevels,
    best_first,
    level_texts,
    plain_texts,
    read_compact_book,
)


class MalformedEvent(ValueError):
    """An input line or datagram that is not a valid event; ``reason`` names the rule it broke
    for the refusal counters ("malformed", or "number": a price or quantity out of bounds)."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


DEFAULT_LIMITS = SymbolLimits()


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    id: int
    price: Decimal
    qty: Decimal
    side: str  # the taker's side: "buy" or "sell"
    ts: int  # milliseconds since the epoch


@dataclass(frozen=True, slots=True)
class Book:
    """A full book snapshot: bids best (highest) first, asks best (lowest) first, one level
    a price. Read from a line, each side is a ``TextLevels`` (the JSON texts of its levels,
    which the depth book uses as they are); made in code, a tuple of levels."""

    symbol: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    ts: int


def level_texts_of(levels: Sequence[Level]) -> tuple[str, ...]:
    """The JSON texts of a side's levels, each number in its canonical spelling
    (``decimals.plain``): a book made in code, as the simulator's, is written as one read
    from a line (``0.3``, never ``0.30``)."""
    if isinstance(levels, TextLevels):
        return levels.texts
    numbers = list(map(plain, chain.from_iterable(levels)))
    return tuple(level_texts(numbers[0::2], numbers[1::2]))


@dataclass(frozen=True, slots=True)
class IndexPrice:
    symbol: str
    source: str
    price: Decimal
    ts: int


@dataclass(frozen=True, slots=True)
class PrivateEvent:
    type: str  # balance, order, position, account
    uid: str
    data: object  # passed through as JSON


Event = Trade | Book | IndexPrice | PrivateEvent


def parse_event(
    line: bytes | str, limits: SymbolLimits = DEFAULT_LIMITS, spellings: Spellings | None = None
) -> Event:
    """The event on one line, its prices and quantities within the symbol's ``limits``;
    ``spellings`` remembers what the book levels of each symbol read as (a feed's), and
    lets a book line be read by its level texts (``spellings.read_compact_book``)."""
    if spellings is not None:
        parts = read_compact_book(line, limits, spellings)
        if parts is not None:
            return Book(*parts)  # best first and not crossed: read so
    try:
        if isinstance(line, bytes):  # as json.loads reads bytes
            line = line.decode(json.detect_encoding(line), "surrogatepass")
        raw = _DECODER.decode(line)
    except (ValueError, RecursionError) as error:
        raise MalformedEvent(f"not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise MalformedEvent("not a JSON object")
    kind = raw.get("type")
    if kind == "trade":
        side = raw.get("side")
        if side not in ("buy", "sell"):
            raise MalformedEvent('"side" must be "buy" or "sell"')
        symbol = _symbol(raw)
        bounds = limits.of(symbol)
        return Trade(
            symbol,
            _integer(raw, "id", SAFE_INTEGER),
            _positive(raw, "price", bounds),
            _positive(raw, "qty", bounds),
            side,
            _integer(raw, "ts"),
        )
    if kind == "book":
        symbol = _symbol(raw)
        bounds = limits.of(symbol)
        memory = spellings.of(symbol) if spellings is not None else BookMemory()
        bids = _levels(raw, "bids", True, bounds, memory)
        asks = _levels(raw, "asks", False, bounds, memory)
        return _book(symbol, bids, asks, _integer(raw, "ts"))
    if kind == "index":
        source = raw.get("source")
        if not isinstance(source, str) or not source:
            raise MalformedEvent('"source" must be a non-empty string')
        symbol = _symbol(raw)
        price = _positive(raw, "price", limits.of(symbol))
        return IndexPrice(symbol, source, price, _integer(raw, "ts"))
    if kind in PRIVATE_TYPES:
        uid = normalize_uid(raw.get("uid"))
        if uid is None:
            raise MalformedEvent('"uid" must be a positive integer or [A-Za-z0-9_-]{1,64}')
        if "data" not in raw:
            raise MalformedEvent('"data" is missing')
        return PrivateEvent(kind, uid, raw["data"])
    raise MalformedEvent(f"unknown event type {kind!r}")


def _refuse_float(text: str):
    raise MalformedEvent(f"number {text} must be a decimal string")


_DECODER = json.JSONDecoder(parse_float=_refuse_float)  # made once: json.loads makes one a call


def _book(symbol: str, bids: Sequence[Level], asks: Sequence[Level], ts: int) -> Book:
    if bids and asks and bids[0][0] >= asks[0][0]:
        raise MalformedEvent("crossed book: best bid >= best ask")
    return Book(symbol, bids, asks, ts)


def _symbol(raw: dict) -> str:
    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
        raise MalformedEvent('"symbol" must be a symbol like BTCUSDT')
    return symbol


SAFE_INTEGER = 2**53 - 1  # the largest integer a JavaScript client holds exactly


def _integer(raw: dict, key: str, largest: int | None = None) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedEvent(f'"{key}" must be a non-negative integer')
    if largest is not None and value > largest:
        raise MalformedEvent(f'"{key}" must be at most {largest} (a JavaScript number)')
    return value


def decimal(text: object, what: str) -> Decimal:
    """A finite Decimal from a decimal string (digits, a point, an exponent; at most 64
    characters)."""
    if not isinstance(text, str) or len(text) > 64 or not spelled_right(text):
        raise MalformedEvent(f"{what} must be a decimal string")
    try:
        value = canonical(text)
    except InvalidOperation:
        raise MalformedEvent(f"{what} is not a decimal: {text!r}") from None
    if not value.is_finite():
        raise MalformedEvent(f"{what} must be finite")
    return value


def _positive(raw: dict, key: str, limits: NumberLimits) -> Decimal:
    value = decimal(raw.get(key), f'"{key}"')
    if value <= 0:
        raise MalformedEvent(f'"{key}" must be positive')
    if not limits.admits(value):
        raise MalformedEvent(_beyond(f'"{key}"', limits), "number")
    return value


def _beyond(what: str, limits: NumberLimits) -> str:
    return (
        f"{what} out of bounds: more than {limits.integer_digits} digits before the point "
        f"or {limits.places} after it"
    )


def _levels(
    raw: dict, key: str, reverse: bool, limits: NumberLimits, memory: BookMemory
) -> Sequence[Level]:
    """Book levels: the hot part of parsing (a book is hundreds of decimals). The common
    case, plain decimals within the bounds, is respelled canonically with a few C-level
    passes over the texts not known from the symbol's earlier books (``memory``,
    ``spellings.plain_texts``) and put best first by the rule the fast path shares
    (``spellings.best_first``); anything else takes the careful path, which says what is
    wrong."""
    levels = raw.get(key)
    if type(levels) is not list or (
        levels and (set(map(type, levels)) != _LIST or set(map(len, levels)) != _PAIR)
    ):
        raise MalformedEvent(f'"{key}" must be a list of [price, qty]')
    texts = list(chain.from_iterable(levels))
    try:
        spelled = plain_texts(texts, memory.spelled, limits)
    except TypeError:  # a level holds a list or a number
        raise MalformedEvent(f'"{key}" must be a list of [price, qty] strings') from None
    if spelled is not None:
        return best_first(spelled[0::2], spelled[1::2], reverse, memory.ranked, limits)
    return _levels_carefully(key, levels, "|".join(texts), reverse, limits)


_LIST = {list}
_PAIR = {2}
_ODD = re.compile(r"[^0-9.|eE]")  # a sign, a space, a letter: the grammar says


def _levels_carefully(
    key: str, levels: list, texts: str, reverse: bool, limits: NumberLimits
) -> tuple[Level, ...]:
    """Each level checked and respelled on its own: exponents, odd spellings, bounds."""
    if _ODD.search(texts) and not all(map(spelled_right, texts.split("|"))):
        raise MalformedEvent(f'"{key}" must hold decimal strings (digits, a point, an exponent)')
    book: dict[Decimal, Decimal] = {}
    try:
        for price_text, qty_text in levels:
            if len(price_text) > LONGEST_TEXT or len(qty_text) > LONGEST_TEXT:
                raise ValueError
            price, qty = canonical(price_text), canonical(qty_text)
            if not (price > 0 and qty >= 0 and price.is_finite() and qty.is_finite()):
                raise ValueError
            if qty:
                book[price] = qty
            else:  # a repeated price: its last quantity, as on the fast path
                book.pop(price, None)
    except (ValueError, InvalidOperation):
        raise MalformedEvent(
            f'"{key}" must be a list of [price, qty], decimal strings, price > 0, qty >= 0'
        ) from None
    if not all(limits.admits(price) and limits.admits(qty) for price, qty in book.items()):
        raise MalformedEvent(_beyond(f'"{key}"', limits), "number")
    return tuple(sorted(book.items(), reverse=reverse))
