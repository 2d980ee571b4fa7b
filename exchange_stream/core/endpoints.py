"""Listening endpoint strings, completed with what the gateway needs of them.

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
