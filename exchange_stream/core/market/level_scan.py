"""A book's per-level loops compiled (``_level_scan.c``), when the install could build them.

In CPython, reading a book and diffing it against the last one cost a few C-level passes
over its levels (split, look up, compare, hash, join) of hundreds of instructions a level:
940 thousand instructions from the line to the publication of a book of 100 levels a side,
and 73 to 97 % of a core for 300 symbols at 10 books/s each. The C module does those passes
in one walk each, at tens of instructions a level (418 thousand a book in all; 28 % of a
core for the 300 symbols; docs/market.md, "Throughput"). It is built when a C compiler is
at hand (``setup.py``; without one the install goes on without it) and is used whenever it
is there.

Each of its functions has a definition in Python, which runs when it is not built and which
``tests/test_market_level_scan.py`` compares it with on random input:

- ``read_sides``: the levels the general path (``events.parse_event``) reads off the line,
  or None (where it would sort them or refuse the line, and where the line is written in a
  way this module does not read);
- ``side_update``: ``depth._Side.take``;
- ``checksum_text``: ``depth.checksum_text``.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

Sides = tuple[tuple[str, ...], tuple[str, ...]]


class LevelScan(Protocol):
    """What ``_level_scan.c`` holds (its docstrings say more)."""

    def read_sides(
        self,
        line: str,
        bids_start: int,
        bids_end: int,
        asks_start: int,
        asks_end: int,
        integer_digits: int,
        places: int,
    ) -> Sides | None:
        """The level texts of the sides ``line[bids_start:bids_end]`` and
        ``line[asks_start:asks_end]`` (each between its ``[[`` and ``]]``), best first,
        quantity zero left out; None unless each level is two quoted plain decimals within
        the limits, the price not zero, each side strictly best first, the book not crossed."""
        ...

    def side_update(
        self, old: tuple[str, ...], new: tuple[str, ...], descending: bool
    ) -> list[str]:
        """The update between two published sides (canonical level texts, strictly best
        first): the new texts of the levels added or changed and ``["price","0"]`` for each
        gone. Prices compare by value, so two spellings of one price would be one level."""
        ...

    def checksum_text(self, bids: tuple[str, ...], asks: tuple[str, ...]) -> str:
        """OKX's checksum text of the top 25 levels of these level texts."""
        ...


def _built() -> LevelScan | None:
    try:
        module = importlib.import_module("exchange_stream.core.market._level_scan")
    except ImportError:  # installed without a C compiler: the Python definitions run
        return None
    return cast(LevelScan, module)


compiled: LevelScan | None = _built()
"""The compiled loops, or None; read where they are used (set to None, the Python runs)."""
