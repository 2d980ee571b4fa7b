"""The one JSON encoder for everything the gateway writes: replies, notices, publish answers,
market messages and worker reports.

Compact (no spaces) and UTF-8 as is (``ensure_ascii=False``): a frame is as short as JSON
allows, and every answer of the same value has the same bytes wherever it is made.
"""

from __future__ import annotations

import json

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(value: object) -> bytes:
    """``value`` as compact JSON, UTF-8 encoded."""
    return encode_text(value).encode()


def encode_text(value: object) -> str:
    """``value`` as compact JSON text (for a message written partly by hand, such as a depth
    message joined from the texts of its levels)."""
    return _encoder.encode(value)
