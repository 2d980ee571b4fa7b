"""The gateway's own channels and the control messages nodes send each other.

The gateway's channels start with ``es:`` (``es:control``, the self-check's
``es:heartbeat:<node>``, snapshot keys ``es:snapshot:<channel>``); clients cannot name them
and the publish API refuses them. Every node listens to ``es:control`` all the time.
"""

from __future__ import annotations

import json

from exchange_stream.core.encoding import encode

RESERVED_PREFIX = "es:"
CONTROL_CHANNEL = "es:control"


def encode_kick(uid: str) -> bytes:
    """The control message that logs ``uid`` out on every node."""
    return encode({"kick": uid})


def decode_kick(payload: bytes) -> str | None:
    """The uid a control message kicks, or None when it is not a kick."""
    try:
        uid = json.loads(payload)["kick"]
    except (ValueError, KeyError, TypeError):
        return None
    return uid if isinstance(uid, str) else None
