"""Adapters: where the gateway meets the network and the libraries that carry it.

Autobahn's WebSocket protocol and factory, the twisted.web resources, the ``/ws/v1`` publish
API, the fast write path, the Redis mesh, the market feed's listeners and the worker pool.
Every reach into a library's private members is in :mod:`exchange_stream.adapters.upstream`.
"""
