"""Listening endpoint strings, completed with what the gateway needs of them, and whether
they are reachable from other hosts.

Twisted's ``tcp:`` endpoints listen with a backlog of 50: after a drain or a node restart,
thousands of clients reconnect within a second, and past 50 pending connections the kernel
drops SYNs, which clients retry only after a second or more (500 back-to-back connects took
5 to 6 s instead of a few tens of milliseconds). So ``tcp:``, ``tcp6:`` and ``ssl:`` endpoints get
``--backlog`` unless their string sets one (the kernel caps it at ``net.core.somaxconn``).
"""

from __future__ import annotations

_WITH_BACKLOG = ("tcp", "tcp6", "ssl")


def with_backlog(description: str, backlog: int) -> str:
    """``description`` with ``backlog=<backlog>`` added when it is a TCP or TLS endpoint
    that does not say its own."""
    kind, _, rest = description.partition(":")
    if kind in _WITH_BACKLOG and "backlog=" not in rest:
        return f"{description}:backlog={backlog}"
    return description


LOOPBACK = "127.0.0.1"
LOCAL_INTERFACES = {"127.0.0.1", "::1", "localhost"}
LOOPBACK_OF = {"tcp": LOOPBACK, "ssl": LOOPBACK, "tcp6": "\\:\\:1"}  # endpoint-escaped ::1


def is_local_endpoint(description: str) -> bool:
    """Whether a listening endpoint is reachable from this host
    only: a UNIX socket, or TCP/TLS on a loopback interface. Any other kind (``systemd:``,
    ...) may be reachable from elsewhere."""
    kind, _, rest = description.partition(":")
    if kind == "unix":
        return True
    if kind not in LOOPBACK_OF:
        return False
    unescaped = rest.replace("\\:", "\0")
    options = dict(part.split("=", 1) for part in unescaped.split(":") if "=" in part)
    return options.get("interface", "").replace("\0", ":") in LOCAL_INTERFACES
