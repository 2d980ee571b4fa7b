"""Mesh URLs: which ``--mesh`` values name a mesh, and where a Redis server is.

Parsing only: the Redis mesh (``adapters.redis_mesh``) turns a :class:`RedisAddress` into a
Twisted endpoint. Kept pure so that settings are checked before anything starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

MEMORY_URLS = ("memory:", "memory")


def check_mesh_url(url: str) -> None:
    """Raise ValueError unless ``url`` names a mesh the gateway can build."""
    if url in MEMORY_URLS:
        return
    if url.startswith(("redis://", "rediss://", "unix:")):
        RedisAddress.from_url(url)
        return
    raise ValueError(f"unsupported mesh URL {url!r} (memory:, redis://, rediss://, unix://)")


def redacted(url: str) -> str:
    """``url`` with its password (in the user part or ``?password=``) shown as ``***``, for
    logs."""
    password = urlsplit(url).password
    if password is not None:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&])password=[^&]*", r"\1password=***", url)


@dataclass(frozen=True)
class RedisAddress:
    """Where the Redis server is, from a ``--mesh`` URL.

    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS, verified against
    the system's CAs or ``?ca=/path/to/ca.pem``) or ``unix:///path/to/redis.sock?db=N``.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = None
    ca: str | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {url!r}")
        db_text = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0]
        try:
            db = int(db_text or 0)
        except ValueError:
            raise ValueError(f"bad Redis db in {url!r}") from None
        password = query.get("password", [None])[0]
        if parts.password is not None:
            password = unquote(parts.password)
        username = unquote(parts.username) if parts.username else None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"no socket path in {url!r}")
            return cls(path=parts.path, db=db, username=username, password=password)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            tls=parts.scheme == "rediss",
            db=db,
            username=username,
            password=password,
            ca=query.get("ca", [None])[0],
        )

    def __repr__(self) -> str:  # never show the password
        where = f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"RedisAddress({'rediss' if self.tls else 'redis'} {where} db={self.db})"
