"""The gateway's settings and their defaults (docs/running.md lists them).

One frozen object: ``options.py`` builds it from the command line and a TOML file, an
embedding application builds it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from exchange_stream.core.endpoints import is_local_endpoint
from exchange_stream.core.feeds import check_feeds
from exchange_stream.core.market.decimals import NumberLimits, SymbolLimits, limits_table
from exchange_stream.core.meshurl import check_mesh_url
from exchange_stream.core.streams import STREAM_TYPES, StreamPolicy


@dataclass(frozen=True)
class GatewayConfig:
    ws: str = "tcp:6790"
    path: str = "/exchange-stream"
    api: str = "tcp:6789:interface=127.0.0.1"
    api_token: str | None = None
    auth_url: str = "http://127.0.0.1:8000/websocket_auth"
    auth_timeout: float = 3.0
    mesh: str = "memory:"
    prefix: str = "ex:"
    max_subscriptions: int = 1024
    max_message_size: int = 64 * 1024
    max_publish_size: int = 1024 * 1024
    op_rate: float = 10.0
    op_burst: int = 20
    max_connections: int = 50_000
    max_connections_per_ip: int = 1_000
    real_ip_header: str | None = None
    handshake_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    allowed_origins: str = "*"
    max_backlog: int = 2 * 1024 * 1024
    slow_client_grace: float = 10.0  # a client closed with 4100 has this long to read why
    backlog: int = 4096  # pending connections the listening sockets queue (reconnect storms)
    drain_seconds: float = 5.0
    no_compression: bool = False  # permessage-deflate is accepted from clients that offer it
    workers: int | None = None  # None: one per core with a shared mesh, else 1 (processes)
    demo: bool = False
    feed: str | None = None
    feed_udp: str | None = None
    feed_secret: str | None = None
    book_url: str | None = None
    book_interval: float = 0.2
    max_integer_digits: int = 15
    max_places: int = 18
    symbol_limits: str = ""
    max_ahead_ms: int = 10_000
    max_late_ms: int = 60_000
    history_types: str = ",".join(sorted(STREAM_TYPES))
    history_size: int = 10_000
    history_ttl: float = 600.0
    idempotency_ttl: float = 600.0
    stall_after: float = 2.0  # a Redis heartbeat unanswered this long: /healthz 503

    def __post_init__(self) -> None:
        for name, value in vars(self).items():  # nan and inf pass every comparison below
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/': {self.path!r}")
        check_mesh_url(self.mesh)
        check_feeds(self.feed, self.feed_udp, self.feed_secret)
        if not is_local_endpoint(self.api) and not self.api_token:
            # The API publishes to any user's channels and kicks any user.
            raise ValueError(
                f"--api {self.api} listens beyond this host: give --api-token (back ends then "
                "send Authorization: Bearer <token>), or listen on 127.0.0.1"
            )
        for name in (
            "book_interval",
            "auth_timeout",
            "max_subscriptions",
            "max_message_size",
            "max_publish_size",
            "op_rate",
            "op_burst",
            "max_connections",
            "max_connections_per_ip",
            "handshake_timeout",
            "max_backlog",
            "slow_client_grace",
            "history_size",
            "history_ttl",
            "idempotency_ttl",
            "stall_after",
            "max_integer_digits",
            "max_ahead_ms",
            "max_late_ms",
            "backlog",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        self.market_limits  # noqa: B018 (raises on a malformed --symbol-limits)
        for name in ("ping_interval", "ping_timeout", "drain_seconds", "max_places"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or positive")
        if self.workers is not None and self.workers <= 0:
            raise ValueError("workers must be positive")
        if (self.workers or 1) > 1 and not self.shares_mesh:
            raise ValueError("workers > 1 need a mesh they share: --mesh redis://...")
        if (self.workers or 1) > 1 and not self.plain_tcp:
            # Workers adopt the listening socket as plain TCP: TLS or a UNIX socket would break.
            raise ValueError("workers > 1 share a plain tcp: WebSocket endpoint (TLS: in front)")
        if self.auth_timeout >= self.handshake_timeout:
            raise ValueError("auth_timeout must be shorter than handshake_timeout")

    @property
    def origins(self) -> list[str]:
        """Origin patterns for Autobahn, which matches ``scheme://host:port`` (the port
        always written): a pattern without a port gets ``:*``, so ``https://app.example.com``
        means what an operator expects."""
        patterns = []
        for origin in (part.strip() for part in self.allowed_origins.split(",")):
            if origin and "://" in origin and ":" not in origin.split("://", 1)[1]:
                origin += ":*"
            if origin:
                patterns.append(origin)
        return patterns

    @cached_property
    def market_limits(self) -> SymbolLimits:
        """How big and fine the market engine's input numbers may be, per symbol."""
        default = NumberLimits(self.max_integer_digits, self.max_places)
        return SymbolLimits(default, limits_table(self.symbol_limits))

    @cached_property
    def streams(self) -> StreamPolicy:
        """Which channel types keep a history in the mesh, and how much of it."""
        return StreamPolicy.from_options(self.history_types, self.history_size, self.history_ttl)

    @property
    def shares_mesh(self) -> bool:
        """Several processes or nodes can share this mesh (not ``memory:``)."""
        return not self.mesh.startswith("memory")

    @property
    def plain_tcp(self) -> bool:
        """The WebSocket endpoint is plain TCP, a socket worker processes can adopt."""
        return self.ws.startswith("tcp:")

    @property
    def runs_market(self) -> bool:
        """The market engine runs in this process (demo, or a feed given)."""
        return bool(self.demo or self.feed or self.feed_udp or self.book_url)
