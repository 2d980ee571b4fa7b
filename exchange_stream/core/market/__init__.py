"""The market computations: the matching engine's events and what is published from them.

Pure and exact (``Decimal`` in, decimal strings out): depth diffs with OKX's checksum, trade
batches, the rolling 24 h ticker, klines and the mark price. ``services.market_engine``
schedules them and publishes their output.
"""
