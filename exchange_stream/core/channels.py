"""Channel names: what a client may name, and the internal name the mesh carries.

A client names a public channel ``<symbol>@<type>`` or one of its own private channels
``@<type>``; it never names a uid. The gateway turns either into the internal name
``<prefix><symbol>@<type>`` / ``<prefix><uid>@<type>`` that back ends publish to. The uid
comes only from the auth back end and is checked here, so neither a client nor a lying auth
back end can smuggle an ``@`` or another prefix into an internal name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

KLINE_INTERVALS = ("1m", "5m", "15m", "30m", "1h", "4h", "1d")
PUBLIC_TYPES = frozenset(
    {"depth", "trades", "markprice", "ticker", "kline"}
    | {f"kline_{interval}" for interval in KLINE_INTERVALS}
)
PRIVATE_TYPES = frozenset({"balance", "order", "position", "account"})

# Exchange symbols: BTCUSDT (Binance), BTC-USDT-SWAP (OKX), 1000PEPEUSDT, ETH_USDT. Upper
# case only: one market has one channel name. Binance's clients write streams in lower case
# (btcusdt@depth); answered "Invalid channel" with a hint rather than silence for ever.
SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9_.-]{0,63}")
_UID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidChannel(ValueError):
    """The name is neither ``<symbol>@<public type>`` nor ``@<private type>``; ``hint`` says
    what was probably meant, when that is clear."""

    def __init__(self, name: object, hint: str | None = None) -> None:
        super().__init__(name)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class ChannelName:
    """A validated client-side channel name."""

    name: str
    symbol: str  # empty for private channels
    type: str

    @property
    def private(self) -> bool:
        return not self.symbol

    def internal(self, prefix: str, uid: str | None) -> str:
        """The name back ends publish to; ``uid`` is required for private channels."""
        if not self.private:
            return f"{prefix}{self.name}"
        if uid is None:
            raise ValueError("a private channel needs the uid of an authenticated user")
        return f"{prefix}{uid}@{self.type}"


def parse_channel(name: object) -> ChannelName:
    """Validate a channel name as a client sent it.

    ``1002@balance`` is invalid: a private type takes no owner, the owner is the session's uid.
    """
    if not isinstance(name, str):
        raise InvalidChannel(name)
    symbol, at, kind = name.partition("@")
    if not at:
        raise InvalidChannel(name)
    if symbol == "" and kind in PRIVATE_TYPES:
        return ChannelName(name, "", kind)
    if kind in PUBLIC_TYPES and SYMBOL_PATTERN.fullmatch(symbol):
        return ChannelName(name, symbol, kind)
    if kind in PUBLIC_TYPES and SYMBOL_PATTERN.fullmatch(symbol.upper()):
        raise InvalidChannel(name, f"symbols are upper case: {symbol.upper()}@{kind}")
    raise InvalidChannel(name)


def normalize_uid(raw: object) -> str | None:
    """The uid an auth back end returned, as text, or None when it is not acceptable.

    Accepted: a positive integer (JSON number, not a boolean) or ``[A-Za-z0-9_-]{1,64}``;
    a string that spells an integer must spell it as the number would be (``"1002"``, not
    ``"-1002"`` or ``"01002"``), so that one user has one channel name.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw) if raw > 0 else None
    if isinstance(raw, str) and _UID.fullmatch(raw):
        if raw.lstrip("-").isdigit() and (raw.startswith(("-", "0"))):
            return None
        return raw
    return None


@lru_cache(maxsize=4096)  # asked per publish nobody heard: a balance for every offline user
def subscribable(internal: str, prefix: str) -> bool:
    """Whether a client could ever be subscribed to the internal channel ``internal``: it has
    the prefix and names a public channel or a uid's private one. A publish to any other
    (``1001@balance`` without ``ex:``, ``ex:btcusdt@depth``) can reach nobody."""
    if not internal.startswith(prefix):
        return False
    owner, at, kind = internal[len(prefix) :].partition("@")
    if not at:
        return False
    if kind in PRIVATE_TYPES:
        return normalize_uid(owner) == owner
    return kind in PUBLIC_TYPES and SYMBOL_PATTERN.fullmatch(owner) is not None
