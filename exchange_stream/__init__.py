"""exchange-stream: a WebSocket push gateway for digital-asset exchanges.

The public entry points for embedding are :class:`exchange_stream.gateway.Gateway`
(everything but the listeners) and :func:`exchange_stream.service.makeService`
(the gateway plus its listening endpoints, as ``twistd exchange-stream`` runs it).
"""

__version__ = "0.2.0"
