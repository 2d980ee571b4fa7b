"""Prometheus metrics for one gateway, in a registry of its own.

Per-message figures (deliveries) are plain integers kept by the hub and read at scrape time,
so the hot path never takes a metrics lock; rare events (auth, publish) use client objects.
With ``--workers`` the node-wide figures add up every process's (each worker reports its
figures to the first process every second, see ``figures``), and ``exchange_stream_process_*``
give each process's own, labelled ``process`` (0 is the first).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from exchange_stream.interfaces import IMesh
from exchange_stream.services.figures import NodeFigures


class _NodeCollector(Collector):
    """Reads the node's figures (and its workers' last reports) at scrape time."""

    def __init__(self, figures: NodeFigures, mesh: IMesh) -> None:
        self._figures = figures
        self._mesh = mesh

    def collect(self) -> Iterator:
        processes = self._figures.processes()
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
            value=self._figures.counter("messages_delivered"),
        )
        yield CounterMetricFamily(
            "exchange_stream_slow_consumers",
            "Clients closed with 4100 for leaving too much unsent.",
            value=self._figures.counter("slow_consumers"),
        )
        mesh = self._mesh
        yield GaugeMetricFamily(
            "exchange_stream_mesh_up",
            "1 while the mesh can publish and every process receives its channels.",
            value=int(bool(mesh.available) and self._figures.receiving(processes)),
        )
        if len(processes) > 1:
            yield from _per_process(processes)
        yield CounterMetricFamily(
            "exchange_stream_mesh_deaf",
            "Times the node did not hear its own heartbeat back and resubscribed.",
            value=mesh.deaf_events,
        )
        yield CounterMetricFamily(
            "exchange_stream_mesh_lost_publications",
            "Stream publications gone from the history before this node could read them back.",
            value=mesh.lost_publications,
        )
        yield CounterMetricFamily(
            "exchange_stream_mesh_reconnects",
            "Times the mesh had to reconnect.",
            value=mesh.reconnects,
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

    def __init__(self, engine, source) -> None:
        self._engine = engine
        self._input = source

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
        refused = CounterMetricFamily(
            "exchange_stream_market_refused",
            "Market events refused, by reason (docs/market.md, what the engine accepts).",
            labels=["reason"],
        )
        for reason, count in sorted(self._engine.refused.items()):
            refused.add_metric([reason], count)
        yield refused


class GatewayMetrics:
    """The node's registry: its figures, read at scrape time, and the counters of rare
    events (publishes, auth), kept here."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.published = Counter(
            "exchange_stream_messages_published",
            "Publications accepted by the mesh through this node's API.",
            registry=self.registry,
        )
        self.unheard = Counter(
            "exchange_stream_publishes_unheard",
            "Publications accepted that no node listened to (s: 0): a channel nobody watches "
            "now, or a misspelt one.",
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

    def watch_node(self, figures: NodeFigures, mesh: IMesh) -> None:
        """Read the node's figures and its mesh's state at every scrape."""
        self.registry.register(_NodeCollector(figures, mesh))

    def watch_market(self, engine, source) -> None:
        """Count the market engine running in this process and the input that feeds it."""
        self.registry.register(_MarketCollector(engine, source))

    def record_auth(self, outcome: str, seconds: float) -> None:
        self.auth_results.labels(outcome).inc()
        self.auth_latency.observe(seconds)
