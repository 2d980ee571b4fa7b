"""Where the market feeds listen, and who may write to them.

A feed carries trades, books and every user's balance and order events: anyone who can write
to it can forge them. So ``--feed tcp:7001`` and ``--feed-udp 7002``, written as the docs write
them, listen on the loopback interface only; another interface must be asked for explicitly
(``interface=`` / ``host:port``) and then needs ``--feed-secret``: a TCP connection's first
line must be ``AUTH <secret>``, a datagram must start with ``<secret>`` and a newline.
"""

from __future__ import annotations

LOOPBACK = "127.0.0.1"
_LOCAL = {"127.0.0.1", "::1", "localhost"}
_LOOPBACK_OF = {"tcp": LOOPBACK, "ssl": LOOPBACK, "tcp6": "\\:\\:1"}  # endpoint-escaped ::1


def feed_endpoint(description: str) -> str:
    """A Twisted endpoint string for ``--feed``: ``tcp:``, ``tcp6:`` and ``ssl:`` without an
    ``interface=`` option listen on the loopback interface (``tcp6:`` would take ``::``)."""
    kind, _, rest = description.partition(":")
    if kind in _LOOPBACK_OF and "interface=" not in rest:
        return f"{description}:interface={_LOOPBACK_OF[kind]}"
    return description


def feed_udp_address(value: str) -> tuple[str, int]:
    """``--feed-udp [interface:]port`` as (interface, port); no interface: the loopback one."""
    interface, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--feed-udp takes [interface:]port, not {value!r}")
    return (interface or LOOPBACK), int(port)


def _endpoint_is_local(description: str) -> bool:
    """Whether an endpoint (as ``feed_endpoint`` completes it) is reachable from this host
    only: a UNIX socket, or TCP/TLS on a loopback interface. Any other kind (``systemd:``,
    ...) may be reachable from elsewhere."""
    kind, _, rest = description.partition(":")
    if kind == "unix":
        return True
    if kind not in _LOOPBACK_OF:
        return False
    unescaped = rest.replace("\\:", "\0")
    options = dict(part.split("=", 1) for part in unescaped.split(":") if "=" in part)
    return options.get("interface", "").replace("\0", ":") in _LOCAL


def check_feeds(feed: str | None, feed_udp: str | None, secret: str | None) -> None:
    """Refuse a feed reachable from other hosts without ``--feed-secret``."""
    reachable = []
    if feed is not None and not _endpoint_is_local(feed_endpoint(feed)):
        reachable.append(f"--feed {feed}")
    if feed_udp is not None and feed_udp_address(feed_udp)[0] not in _LOCAL:
        reachable.append(f"--feed-udp {feed_udp}")
    if reachable and not secret:
        raise ValueError(
            f"{' and '.join(reachable)} listen beyond this host: give --feed-secret (the "
            "matching engine then sends it first), or listen on 127.0.0.1"
        )
    if secret is not None and (not secret or any(c.isspace() for c in secret)):
        raise ValueError("--feed-secret must be a non-empty string without spaces")
