"""Bars for charts: ``GET /v1/market/klines``, its query and its answer.

The market engine publishes each closed bar into ``<prefix><symbol>@bars_<interval>``
(``core.streams.bars_channel``), the bar object of the kline channel, byte for byte. A
history request reads the channel's last bars and the kline channel's snapshot (the open bar)
and answers a JSON array of those bytes, joined: prices stay the strings the engine wrote.

The query takes Binance's parameters (``symbol``, ``interval``, ``startTime``, ``endTime``,
``limit``) and refuses bad ones with Binance's error codes, as ``{"code":..,"msg":..}``, so
that a client written for Binance's ``/api/v3/klines`` reads our refusals too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exchange_stream.core.channels import SYMBOL_PATTERN
from exchange_stream.core.encoding import encode
from exchange_stream.core.market.kline import INTERVAL_MS
from exchange_stream.core.streams import BARS_KEPT

PATH = "/v1/market/klines"
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_NUMBER = "^[0-9]{1,20}$"


class BarsError(ValueError):
    """A refused history request: the HTTP status and Binance's error code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg

    def answer(self) -> dict:
        return {"code": self.code, "msg": self.msg}


UNAVAILABLE = BarsError(503, -1001, "Bars history unavailable: the mesh cannot answer now.")


@dataclass(frozen=True)
class BarsQuery:
    """One history request: bars of ``symbol`` and ``interval`` whose open time ``t`` is
    within ``[start, end]`` (either bound may be None), at most ``limit`` of them."""

    symbol: str
    interval: str
    start: int | None = None
    end: int | None = None
    limit: int = DEFAULT_LIMIT

    def count(self) -> int:
        """How many closed bars to read: the last ``limit`` ones, or all that are kept when
        a time bound may pick older ones."""
        return self.limit if self.start is None and self.end is None else BARS_KEPT


def parse_query(args: Mapping[bytes, Sequence[bytes]]) -> BarsQuery:
    """A request's query arguments (twisted.web's ``request.args``) as a :class:`BarsQuery`;
    raises :class:`BarsError` (400) for a missing, repeated or malformed parameter. Other
    parameters are ignored."""
    symbol = _text(args, "symbol")
    if symbol is None or symbol == "":
        raise _mandatory("symbol")
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise BarsError(400, -1121, "Invalid symbol.")
    interval = _text(args, "interval")
    if interval is None or interval == "":
        raise _mandatory("interval")
    if interval not in INTERVAL_MS:
        raise BarsError(400, -1120, "Invalid interval.")
    start, end = _number(args, "startTime"), _number(args, "endTime")
    if start is not None and end is not None and start > end:
        raise BarsError(400, -1023, "Start time is greater than end time.")
    limit = _number(args, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif not 1 <= limit <= MAX_LIMIT:
        raise BarsError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return BarsQuery(symbol, interval, start, end, limit)


def _text(args: Mapping[bytes, Sequence[bytes]], name: str) -> str | None:
    values = args.get(name.encode())
    if not values:
        return None
    if len(values) > 1:
        raise BarsError(400, -1101, "Duplicate values for a parameter detected.")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise _illegal(name, ".*") from None


def _number(args: Mapping[bytes, Sequence[bytes]], name: str) -> int | None:
    value = _text(args, name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 20):
        raise _illegal(name, _NUMBER)
    return int(value)


def _mandatory(name: str) -> BarsError:
    return BarsError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _illegal(name: str, legal: str) -> BarsError:
    return BarsError(
        400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    )


# -- the answer -------------------------------------------------------------------------


def kline_channel(prefix: str, symbol: str, interval: str) -> str:
    """The retained channel whose snapshot is the open bar."""
    return f"{prefix}{symbol}@kline_{interval}"


def _refuse_float(text: str) -> object:
    raise ValueError(f"a JSON number with a fraction in a bar: {text}")


def _object(payload: bytes) -> dict | None:
    try:
        value = json.loads(payload, parse_float=_refuse_float)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        return None
    return value if isinstance(value, dict) else None


def bar_time(payload: bytes) -> int | None:
    """The open time ``t`` of a stored bar, or None when the payload is no bar object."""
    bar = _object(payload)
    t = bar.get("t") if bar is not None else None
    return t if isinstance(t, int) and not isinstance(t, bool) else None


def open_bar(snapshot: bytes | None) -> bytes | None:
    """The bar object (its bytes as the engine encodes them) inside a kline channel's
    snapshot ``{"event":"..","data":{bar}}``, or None."""
    if snapshot is None:
        return None
    envelope = _object(snapshot)
    data = envelope.get("data") if envelope is not None else None
    if not isinstance(data, dict):
        return None
    return encode(data)  # the engine's one encoder: the same bytes it wrote


def answer(closed: Iterable[bytes], current: bytes | None, query: BarsQuery) -> bytes:
    """The JSON array answering ``query``: the closed bars (oldest first, as the mesh keeps
    them; of two with the same ``t`` the later one) and the open bar ``current`` unless a
    closed bar has its ``t``, in time order, within the query's bounds. With ``startTime``
    the first ``limit`` of them, else the last ``limit`` (as Binance)."""
    bars: dict[int, bytes] = {}
    for payload in closed:
        t = bar_time(payload)
        if t is not None:
            bars[t] = payload
    t = bar_time(current) if current is not None else None
    if current is not None and t is not None and t not in bars:
        bars[t] = current
    times = sorted(
        t
        for t in bars
        if (query.start is None or t >= query.start) and (query.end is None or t <= query.end)
    )
    times = times[: query.limit] if query.start is not None else times[-query.limit :]
    return b"[" + b",".join(bars[t] for t in times) + b"]"
