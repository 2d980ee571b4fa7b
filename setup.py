"""The one thing setup.cfg cannot declare: the optional C module of a book's per-level loops.

Built when a C compiler is at hand; without one the install goes on without it, and the
Python definitions run (exchange_stream/core/market/level_scan.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exchange_stream.core.market._level_scan",
            ["exchange_stream/core/market/_level_scan.c"],
            optional=True,
        )
    ]
)
