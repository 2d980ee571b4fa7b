"""Where the market feeds listen, and who may write to them.

A feed carries trades, books and every user's balance and order events: anyone who can write
to it can forge them. So ``--feed tcp:7001`` and ``--feed-udp 7002``, written as the docs write
them, listen on the loopback interface only; another interface must be asked for explicitly
(``interface=`` / ``host:port``) and then needs ``--feed-secret``: a TCP connection's first
line must be ``AUTH <secret>``, a datagram must start with ``<secret>`` and a newline.
"""

from __future__ import annotations

import ipaddress

from exchange_stream.core.endpoints import (
    LOCAL_INTERFACES,
    LOOPBACK,
    LOOPBACK_OF,
    is_local_endpoint,
)


def feed_endpoint(description: str) -> str:
    """A Twisted endpoint string for ``--feed``: ``tcp:``, ``tcp6:`` and ``ssl:`` without an
    ``interface=`` option listen on the loopback interface (``tcp6:`` would take ``::``)."""
    kind, _, rest = description.partition(":")
    if kind in LOOPBACK_OF and "interface=" not in rest:
        return f"{description}:interface={LOOPBACK_OF[kind]}"
    return description


def feed_udp_address(value: str) -> tuple[str, int]:
    """``--feed-udp [interface:]port`` as (interface, port); no interface: the loopback one."""
    interface, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--feed-udp takes [interface:]port, not {value!r}")
    if interface == "localhost":
        interface = LOOPBACK
    if interface and not _is_ip_address(interface):
        raise ValueError(f"--feed-udp {value}: the interface must be an IP address")
    return (interface or LOOPBACK), int(port)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_feeds(feed: str | None, feed_udp: str | None, secret: str | None) -> None:
    """Refuse a feed reachable from other hosts without ``--feed-secret``."""
    reachable = []
    if feed is not None and not is_local_endpoint(feed_endpoint(feed)):
        reachable.append(f"--feed {feed}")
    if feed_udp is not None and feed_udp_address(feed_udp)[0] not in LOCAL_INTERFACES:
        reachable.append(f"--feed-udp {feed_udp}")
    if reachable and not secret:
        raise ValueError(
            f"{' and '.join(reachable)} listen beyond this host: give --feed-secret (the "
            "matching engine then sends it first), or listen on 127.0.0.1"
        )
    if secret is not None and (not secret or any(c.isspace() for c in secret)):
        raise ValueError("--feed-secret must be a non-empty string without spaces")
