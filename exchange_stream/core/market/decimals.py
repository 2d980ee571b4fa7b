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

from decimal import Decimal


def text(value: Decimal) -> str:
    """A decimal as the wire shows it: fixed-point, never an exponent."""
    return format(value, "f")


def canonical(spelled: str) -> Decimal:
    """The Decimal of a decimal string in its one spelling: ``"101.00"``, ``"1.01E+2"`` and
    ``"101"`` all read as ``Decimal("101")``. Raises ``decimal.InvalidOperation`` when it is
    not a decimal string."""
    value = Decimal(spelled)
    respelled = (spelled[-1:] == "0" and "." in spelled) or "e" in spelled or "E" in spelled
    if not respelled or not value.is_finite():
        return value
    fixed = format(value, "f")
    return Decimal(fixed.rstrip("0").rstrip(".") if "." in fixed else fixed)
