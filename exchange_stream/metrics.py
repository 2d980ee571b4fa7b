"""Prometheus metrics for one gateway, in a registry of its own.

Per-message figures (deliveries) are plain integers kept by the hub and read at scrape time,
so the hot path never takes a metrics lock; rare events (auth, publish) use client objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from exchange_stream.gateway import Gateway


class _NodeCollector(Collector):
    """Reads the gateway's counters at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator:
        yield GaugeMetricFamily(
            "exchange_stream_connections",
            "Open client WebSocket connections.",
            value=len(self._gateway.sessions),
        )
        yield GaugeMetricFamily(
            "exchange_stream_subscriptions",
            "Client subscriptions on this node.",
            value=self._gateway.hub.subscription_count,
        )
        yield GaugeMetricFamily(
            "exchange_stream_channels",
            "Channels with at least one local subscriber.",
            value=self._gateway.hub.channel_count,
        )
        yield CounterMetricFamily(
            "exchange_stream_messages_delivered",
            "Messages written to client connections.",
            value=self._gateway.hub.messages_delivered,
        )
        yield CounterMetricFamily(
            "exchange_stream_slow_consumers",
            "Clients closed with 4100 for leaving too much unsent.",
            value=self._gateway.slow_consumers,
        )
        yield GaugeMetricFamily(
            "exchange_stream_mesh_up",
            "1 while the mesh can publish and this node receives its channels.",
            value=int(bool(self._gateway.mesh.available and self._gateway.mesh.receiving)),
        )
        self_check = getattr(self._gateway.mesh, "self_check", None)
        if self_check is not None:
            yield CounterMetricFamily(
                "exchange_stream_mesh_deaf",
                "Times the node did not hear its own heartbeat back and resubscribed.",
                value=self_check.deaf_events,
            )
        yield CounterMetricFamily(
            "exchange_stream_mesh_reconnects",
            "Times the mesh had to reconnect.",
            value=self._gateway.mesh.reconnects,
        )


class _MarketCollector(Collector):
    """The market engine running in this process (``--demo``, ``--feed...``)."""

    def __init__(self, market) -> None:
        self._engine = market.engine
        self._input = market.input

    def collect(self) -> Iterator:
        for name, text, value in (
            ("market_events", "Events read from the matching engine.", self._input.received),
            ("market_malformed_events", "Malformed events skipped.", self._input.malformed),
            ("market_published", "Messages the market engine published.", self._engine.published),
            (
                "market_publish_failures",
                "Market engine publishes the mesh refused.",
                self._engine.publish_failures,
            ),
        ):
            yield CounterMetricFamily(f"exchange_stream_{name}", text, value=value)


class GatewayMetrics:
    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_NodeCollector(gateway))
        self.published = Counter(
            "exchange_stream_messages_published",
            "Publications accepted by the mesh through this node's API.",
            registry=self.registry,
        )
        self.publish_errors = Counter(
            "exchange_stream_publish_errors",
            "Publish API requests refused, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.auth_results = Counter(
            "exchange_stream_auth",
            "Auth attempts by outcome (ok, failed, unavailable).",
            ["outcome"],
            registry=self.registry,
        )
        self.auth_latency = Histogram(
            "exchange_stream_auth_latency_seconds",
            "Time the auth back end took to answer.",
            registry=self.registry,
        )

    def watch_market(self, market) -> None:
        self.registry.register(_MarketCollector(market))

    def record_auth(self, outcome: str, seconds: float) -> None:
        self.auth_results.labels(outcome).inc()
        self.auth_latency.observe(seconds)
