"""``--loops compiled|interpreted`` of the market benches: a book's per-level loops in C
(``core/market/_level_scan.c``) or as their Python definitions, as on an install that had no
C compiler. Apart from ``common.py``, so that the other benches do not import the engine."""

from __future__ import annotations

import argparse

from exchange_stream.core.market import level_scan


def add_loops_option(parser: argparse.ArgumentParser) -> None:
    """``--loops compiled|interpreted``: a book's per-level loops in C or in Python."""
    parser.add_argument(
        "--loops",
        choices=("compiled", "interpreted"),
        default="compiled",
        help="a book's per-level loops: the C module (when built) or their Python definitions",
    )


def use_loops(parser: argparse.ArgumentParser, loops: str) -> None:
    """Run a book's loops as ``--loops`` asks: interpreted, as on an install that had no C
    compiler; compiled is refused where the module is not built, so that no figure says
    "compiled" of the Python."""
    if loops == "interpreted":
        level_scan.compiled = None
    elif level_scan.compiled is None:
        parser.error("the C module of level_scan is not built here: --loops interpreted")
