"""The tests. Importing them builds the C module of a book's loops in place first
(``compiled.py``), before anything imports the package, which looks for that module once."""

import tests.compiled  # noqa: F401  (builds on import)
