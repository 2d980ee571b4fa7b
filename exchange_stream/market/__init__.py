"""The market engine: the seed's "public push computations" and private event routing.

The computations (``depth``, ``trades``, ``ticker``, ``kline``, ``markprice``) are pure and
exact (``Decimal`` in, decimal strings out); ``engine`` schedules them and publishes, ``feed``
reads the matching engine's events, ``simulator`` plays a matching engine for ``--demo``.
"""
