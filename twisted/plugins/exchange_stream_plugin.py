"""The ``twistd exchange-stream`` / ``twist exchange-stream`` plugin."""

from twisted.application.service import ServiceMaker

exchange_stream = ServiceMaker(
    "exchange-stream",
    "exchange_stream.service",
    "WebSocket push gateway for digital-asset exchanges",
    "exchange-stream",
)

exchange_market = ServiceMaker(
    "exchange-market",
    "exchange_stream.market_service",
    "Market engine for exchange-stream: depth, trades, ticker, kline, mark price",
    "exchange-market",
)
