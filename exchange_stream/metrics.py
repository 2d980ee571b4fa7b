"""Prometheus metrics for one gateway, in a registry of its own.

Per-message figures (deliveries) are plain integers kept by the hub and read at scrape time,
so the hot path never takes a metrics lock; rare events (auth, publish) use client objects.
With ``--workers`` the node-wide figures add up every process's (each worker reports its
``process_figures`` to the first process every second), and ``exchange_stream_process_*``
give each process's own, labelled ``process`` (0 is the first).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from exchange_stream.gateway import Gateway


FIGURES = (
    "connections", "subscriptions", "channels", "messages_delivered", "slow_consumers", "mesh_up",
)  # fmt: skip
COUNTERS = ("messages_delivered", "slow_consumers")  # the others are gauges


def process_figures(gateway: Gateway) -> dict[str, int]:
    """What one process of a node counts; a worker sends these to the first process."""
    mesh = gateway.mesh
    return {
        "connections": len(gateway.sessions),
        "subscriptions": gateway.hub.subscription_count,
        "channels": gateway.hub.channel_count,
        "messages_delivered": gateway.hub.messages_delivered,
        "slow_consumers": gateway.slow_consumers,
        "mesh_up": int(bool(mesh.available and mesh.receiving)),
    }


def node_processes(gateway: Gateway) -> list[dict[str, int] | None]:
    """Every process's figures, the first process's first; None for a worker not reporting
    (exited and being restarted, or stuck)."""
    reports = gateway.workers.reports() if gateway.workers is not None else []
    return [process_figures(gateway), *reports]


def node_receiving(gateway: Gateway, processes: list[dict[str, int] | None]) -> bool:
    """This process receives its channels, so does every worker that reports, and no live
    worker is silent."""
    silent = gateway.workers.silent() if gateway.workers is not None else 0
    workers = all(figures["mesh_up"] for figures in processes[1:] if figures is not None)
    return bool(gateway.mesh.receiving) and workers and not silent


def node_counter(gateway: Gateway, name: str) -> int:
    """A counter over all of the node's processes, restarted workers' included."""
    own = process_figures(gateway)[name]
    return own + (gateway.workers.counted(name) if gateway.workers is not None else 0)


class _NodeCollector(Collector):
    """Reads the gateway's counters (and its workers' last reports) at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator:
        processes = node_processes(self._gateway)
        reporting = [figures for figures in processes if figures is not None]

        def total(name: str) -> int:
            return sum(figures[name] for figures in reporting)

        yield GaugeMetricFamily(
            "exchange_stream_connections",
            "Open client WebSocket connections.",
            value=total("connections"),
        )
        yield GaugeMetricFamily(
            "exchange_stream_subscriptions",
            "Client subscriptions on this node.",
            value=total("subscriptions"),
        )
        yield GaugeMetricFamily(
            "exchange_stream_channels",
            "Channels with at least one local subscriber (per process, added up).",
            value=total("channels"),
        )
        yield CounterMetricFamily(
            "exchange_stream_messages_delivered",
            "Messages written to client connections.",
            value=node_counter(self._gateway, "messages_delivered"),
        )
        yield CounterMetricFamily(
            "exchange_stream_slow_consumers",
            "Clients closed with 4100 for leaving too much unsent.",
            value=node_counter(self._gateway, "slow_consumers"),
        )
        mesh = self._gateway.mesh
        yield GaugeMetricFamily(
            "exchange_stream_mesh_up",
            "1 while the mesh can publish and every process receives its channels.",
            value=int(bool(mesh.available) and node_receiving(self._gateway, processes)),
        )
        if len(processes) > 1:
            yield from _per_process(processes)
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


def _per_process(processes: list[dict[str, int] | None]) -> Iterator:
    up = GaugeMetricFamily(
        "exchange_stream_process_up", "1 while the process reports.", labels=["process"]
    )
    connections = GaugeMetricFamily(
        "exchange_stream_process_connections", "Open connections.", labels=["process"]
    )
    mesh_up = GaugeMetricFamily(
        "exchange_stream_process_mesh_up", "1 while it receives its channels.", labels=["process"]
    )
    for number, figures in enumerate(processes):
        label = [str(number)]
        up.add_metric(label, int(figures is not None))
        if figures is not None:
            connections.add_metric(label, figures["connections"])
            mesh_up.add_metric(label, figures["mesh_up"])
    yield from (up, connections, mesh_up)


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
