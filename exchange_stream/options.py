"""Command-line and TOML options (docs/running.md); the command line wins over the file."""

from __future__ import annotations

import platform
import tomllib
from typing import Any

import autobahn
from twisted.copyright import version as twisted_version
from twisted.python import usage

from exchange_stream import __version__
from exchange_stream.core.config import GatewayConfig

_DEFAULTS = GatewayConfig()

# (long option, type, help); the default shown is GatewayConfig's.
_OPTIONS: list[tuple[str, type, str]] = [
    ("ws", str, "WebSocket listening endpoint (any Twisted endpoint string)"),
    ("path", str, "WebSocket URL path"),
    ("api", str, "internal API endpoint (publish, health, metrics)"),
    ("api-token", str, "bearer token the internal API requires for publishing"),
    ("auth-url", str, 'auth back end: POST {"token":...} -> {"uid":...}'),
    ("auth-timeout", float, "seconds to wait for the auth back end"),
    ("mesh", str, "memory: (one node) or redis://[:password@]host:port/db, rediss://, unix://"),
    ("prefix", str, "internal channel prefix"),
    ("max-subscriptions", int, "subscriptions per connection"),
    ("max-message-size", int, "largest client frame in bytes (larger: close 1009)"),
    ("max-publish-size", int, "largest publish request body in bytes (larger: 413)"),
    ("op-rate", float, "ops a connection may send per second (over: code 8)"),
    ("op-burst", int, "ops a connection may send in one burst (the bucket's size)"),
    ("max-connections", int, "client connections on this node (over: HTTP 503)"),
    ("max-connections-per-ip", int, "client connections from one address (over: HTTP 429)"),
    ("real-ip-header", str, "take the client address from this header (behind a proxy)"),
    ("handshake-timeout", float, "seconds for a client to complete the WebSocket handshake"),
    ("ping-interval", float, "seconds between server ping frames (0: off)"),
    ("ping-timeout", float, "seconds to wait for a pong before dropping the peer"),
    ("allowed-origins", str, "comma-separated Origin patterns browsers may connect from"),
    ("max-backlog", int, "bytes a slow client may have waiting before it is closed (4100)"),
    ("slow-client-grace", float, "seconds a client closed with 4100 has to read the close frame"),
    ("backlog", int, "pending connections a listening tcp:/ssl: port queues (reconnect storms)"),
    ("drain-seconds", float, "on shutdown, spread client closes over this many seconds"),
    ("workers", int, "processes accepting on the WebSocket port (more than 1: redis://, tcp:)"),
    ("feed", str, "run the market engine on JSON lines from this listening endpoint"),
    ("feed-udp", str, "run the market engine on JSON datagrams at [interface:]port"),
    ("feed-secret", str, "what a feed's writers must send first (needed off 127.0.0.1)"),
    ("book-url", str, "run the market engine on book snapshots polled from this URL"),
    ("book-interval", float, "seconds between --book-url polls"),
    ("max-integer-digits", int, "market input: digits before the point in a price or quantity"),
    ("max-places", int, "market input: digits after the point in a price or quantity"),
    ("symbol-limits", str, "market input: per symbol, SYMBOL=INTEGER_DIGITS:PLACES,..."),
    ("max-ahead-ms", int, "market input: how far an event's ts may be ahead of the clock"),
    ("max-late-ms", int, "market input: how far behind (a closed bar is amendable as long)"),
    ("history-types", str, "channel types whose publications keep a history (offsets, recovery)"),
    ("history-size", int, "publications a stream channel's history keeps"),
    ("history-ttl", float, "seconds a publication stays in its channel's history"),
    ("idempotency-ttl", float, 'seconds a publish\'s "k" is remembered (a retry cannot duplicate)'),
    ("stall-after", float, "seconds Redis may leave a heartbeat unanswered before /healthz is 503"),
]
_FLAGS: list[tuple[str, str]] = [
    ("demo", "simulated market, demo users demo-1001..demo-1005, demo page at /"),
    ("no-compression", "refuse permessage-deflate (accepted by default from clients offering it)"),
]


def _attribute(option: str) -> str:
    return option.replace("-", "_")


# Defaults that depend on other options.
_DERIVED_DEFAULTS = {"workers": "one per core with a redis:// mesh and a tcp: --ws, else 1"}


def _help(option: str, text: str) -> str:
    default = _DERIVED_DEFAULTS.get(option, getattr(_DEFAULTS, _attribute(option)))
    return f"{text} [default: {default if default is not None else 'none'}]"


class ShortUsageOnError(usage.Options):
    """twistd answers an option error with the whole usage text (60 to 90 lines) before the
    one line that says what is wrong. After a failed parse the usage is one line pointing to
    ``--help`` instead, so the error is what the operator sees."""

    _failed = False

    def opt_version(self) -> None:
        """Print the version of exchange-stream and of what it runs on, and exit."""
        print(version_line())
        raise SystemExit(0)

    def parseOptions(self, options=None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError:
            self._failed = True
            raise

    def getUsage(self, width: int | None = None) -> str:
        if self._failed:
            return "(--help lists every option)\n"
        return super().getUsage(width)


class Options(ShortUsageOnError):
    """``twistd exchange-stream`` options; ``self.config`` holds the result."""

    optParameters = [
        ["config", None, None, "TOML file whose keys are the long option names"],
        *[[option, None, None, _help(option, text), kind] for option, kind, text in _OPTIONS],
    ]
    optFlags = [[flag, None, text] for flag, text in _FLAGS]

    config: GatewayConfig

    def postOptions(self) -> None:
        values: dict[str, Any] = {}
        if self["config"]:
            values.update(_read_toml(self["config"]))
        for option, _kind, _text in _OPTIONS:
            if self[option] is not None:
                values[_attribute(option)] = self[option]
        for flag, _text in _FLAGS:
            if self[flag]:
                values[_attribute(flag)] = True
        try:
            self.config = GatewayConfig(**values)
        except (TypeError, ValueError) as error:
            raise usage.UsageError(str(error)) from None


def version_line() -> str:
    """``exchange-stream 0.2.0 (Twisted 26.10.0, Autobahn 26.11.1, Python 3.11.7)``."""
    return (
        f"exchange-stream {__version__} (Twisted {twisted_version}, "
        f"Autobahn {autobahn.__version__}, Python {platform.python_version()})"
    )


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise usage.UsageError(f"cannot read config file {path}: {error}") from None
    kinds = {_attribute(option): kind for option, kind, _text in _OPTIONS}
    kinds.update({_attribute(flag): bool for flag, _text in _FLAGS})
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = _attribute(key)
        if name not in kinds:
            raise usage.UsageError(f"unknown key {key!r} in {path}")
        kind = kinds[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise usage.UsageError(f"{key} in {path} must be a {kind.__name__}")
        values[name] = value
    return values
