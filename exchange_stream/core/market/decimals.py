"""One spelling per number: how decimals are read from the matching engine and written out.

The matching engine may spell one price ``"101"`` in one book and ``"101.00"`` in the next;
a client that keeps the book by the published strings (as docs/market.md says to, for the
checksum) must see one spelling for one value. So every price and quantity is read in its
canonical form (:func:`canonical`: no trailing fractional zeros, no exponent), once, and
everything computed from them is written with :func:`text`. Exact: nothing is rounded here,
whatever the number of digits; the computations that round (percentages, the mark price) say
to how many places, and keep them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, DivisionByZero, InvalidOperation
from functools import cached_property


def text(value: Decimal) -> str:
    """A decimal as the wire shows it: fixed-point, never an exponent."""
    return format(value, "f")


# What the matching engine may write: digits, a point, an exponent; no sign, no spaces, no
# underscores, no NaN or Infinity (which Decimal() would all take).
_DECIMAL_SPELLING = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def spelled_right(spelled: str) -> bool:
    """Whether a text is a decimal string as the input format defines it."""
    return _DECIMAL_SPELLING.fullmatch(spelled) is not None


def plain(value: Decimal) -> str:
    """A computed decimal (a sum, a difference) in the canonical spelling: ``0.25 + 0.75`` is
    ``"1"``, not ``"1.00"``, as a client comparing with its own sum would write it."""
    spelled = format(value, "f")
    if "." in spelled:
        spelled = spelled.rstrip("0").rstrip(".")
    return "0" if spelled in ("-0", "") else spelled


def canonical(spelled: str) -> Decimal:
    """The Decimal of a decimal string in its one spelling: ``"101.00"``, ``"1.01E+2"`` and
    ``"101"`` all read as ``Decimal("101")``. Raises ``decimal.InvalidOperation`` when it is
    not a decimal string."""
    value = Decimal(spelled)
    respelled = (spelled[-1:] == "0" and "." in spelled) or "e" in spelled or "E" in spelled
    if not respelled or not value.is_finite():
        return value
    if not value:
        return Decimal(0)  # not formatted: "0E-999999" would be a million digits
    if not -64 <= value.adjusted() <= 64:
        return value  # too big or too fine for any limit: not expanded (9E+999999)
    fixed = format(value, "f")
    return Decimal(fixed.rstrip("0").rstrip(".") if "." in fixed else fixed)


@dataclass(frozen=True)
class NumberLimits:
    """How big and how fine a symbol's prices and quantities may be: at most
    ``integer_digits`` digits before the point and ``places`` after it, in the canonical
    spelling. Bounded numbers keep every sum and product exact in :data:`EXACT` and every
    message a sane size (a ``9E+999999`` would be a million digits on the wire)."""

    integer_digits: int = 15
    places: int = 18

    def admits(self, value: Decimal) -> bool:
        """Whether a finite canonical Decimal is within the limits."""
        if value and value.adjusted() >= self.integer_digits:
            return False
        exponent = value.as_tuple().exponent
        return isinstance(exponent, int) and -exponent <= self.places

    @cached_property
    def ceiling(self) -> Decimal:
        """The smallest value with too many digits before the point."""
        return Decimal(10) ** self.integer_digits


@dataclass(frozen=True)
class SymbolLimits:
    """The limits of each symbol: ``table``'s own, else ``default``."""

    default: NumberLimits = NumberLimits()
    table: Mapping[str, NumberLimits] = field(default_factory=dict)

    def of(self, symbol: str) -> NumberLimits:
        return self.table.get(symbol, self.default)


def limits_table(spec: str) -> dict[str, NumberLimits]:
    """``SHIBUSDT=12:18,BTCUSDT=9:8`` (symbol=integer digits:places) as a table."""
    table: dict[str, NumberLimits] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        symbol, equals, numbers = item.partition("=")
        integer, colon, places = numbers.partition(":")
        if not (equals and colon and integer.isdigit() and places.isdigit()):
            raise ValueError(f"symbol limits must be SYMBOL=INTEGER_DIGITS:PLACES, not {item!r}")
        table[symbol.strip()] = NumberLimits(int(integer), int(places))
    return table


# Enough for sums of products of bounded numbers (15 + 18 digits each): exact, never rounded.
EXACT = Context(prec=120, Emax=999_999, Emin=-999_999, traps=[InvalidOperation, DivisionByZero])
