"""permessage-deflate (RFC 7692) at O(1) per publication, with no zlib state per connection.

Autobahn's own permessage-deflate compresses each message once per connection, with a
compressor the connection keeps (about 256 KiB with zlib's defaults), and keeps a
decompressor once the client sent one compressed frame. A fan-out to 1,000 subscribers
would compress the same bytes 1,000 times, and 10,000 idle browsers would hold gigabytes.

Here the gateway answers every offer with ``server_no_context_takeover``: each message it
sends is compressed on its own, so one compressed frame is right for every connection whose
window is at least as large, and a publication is compressed once per window size in use
(:meth:`SharedFrame.deflated`; in practice once, since clients seldom limit the server's
window), and only when a connection that compresses is written to. It also asks for
``client_no_context_takeover``: a client's compressed frame is decompressed on its own and
nothing is kept between frames (:class:`StatelessDeflate`). Replies (``{"result":true}``)
are not compressed: they are too short to gain.

A message whose compressed form is not shorter goes out uncompressed (RFC 7692 leaves that
to the sender, per message).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from autobahn.websocket.compress import (
    PERMESSAGE_COMPRESSION_EXTENSION,
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol

from exchange_stream.adapters.upstream import (
    forget_compressor,
    forget_decompressor,
    negotiated_compression,
    replace_negotiated_compression,
)

LEVEL = 6  # zlib's default: on short JSON the levels differ by 1-2 % in size, not in time
MEMORY_LEVEL = 4  # 8 KiB of hash and buffer instead of 384 KiB: as small, twice as fast
SMALLEST_WINDOW = 9  # zlib's smallest raw-deflate window (it widens 8 to 9 by itself)
LARGEST_WINDOW = 15
RSV1 = 0x40  # the first frame byte's bit that says "compressed" (RFC 7692, 6)


def fitting_window(length: int) -> int:
    """The smallest window that loses nothing on a message of ``length`` bytes: zlib reaches
    back at most its window less 262 bytes of lookahead. A smaller window is cheaper to set
    up (a 250-byte depth diff: 7 µs instead of 18 µs), and a frame compressed with it is
    read by every client whose window is at least as large."""
    return max(SMALLEST_WINDOW, min(LARGEST_WINDOW, (length + 262 - 1).bit_length()))


def deflate(payload: bytes, window: int) -> bytes:
    """``payload`` compressed on its own, as a permessage-deflate message body: raw deflate,
    flushed with Z_SYNC_FLUSH, without the flush's final 00 00 FF FF (RFC 7692, 7.2.1)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -window, MEMORY_LEVEL)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


class SharedFrame(PreparedMessage):
    """A server-to-client message framed once for every connection it is written to:
    ``payloadHybi`` is the plain frame (Autobahn's ``PreparedMessage``), ``deflated(window)``
    the compressed one, made the first time a connection with that window asks."""

    _deflated: dict[int, bytes] | None = None

    def __init__(self, payload: bytes, binary: bool = False) -> None:
        super().__init__(payload, binary, applyMask=False, doNotCompress=False)

    def deflated(self, window: int) -> bytes:
        """The frame for a connection that compresses with at most ``window`` bits: one
        dict lookup per delivery once made. It is kept under the connection's window and
        under the one actually used (the smaller that fits the message), so connections
        whose limits fit it alike share one compression."""
        frames = self._deflated
        if frames is None:
            frames = self._deflated = {}
        frame = frames.get(window)
        if frame is None:
            used = min(window, fitting_window(len(self.payload)))
            frame = frames.get(used)
            if frame is None:
                frame = frames[used] = self._compressed_frame(used)
            frames[window] = frame
        return frame

    def _compressed_frame(self, window: int) -> bytes:
        body = deflate(self.payload, window)
        if len(body) >= len(self.payload):
            return self.payloadHybi
        framed = PreparedMessage(body, self.binary, applyMask=False, doNotCompress=True)
        plain = framed.payloadHybi  # Autobahn's framing of the body; only RSV1 differs
        return bytes((plain[0] | RSV1,)) + plain[1:]


class StatelessDeflate(PerMessageDeflate):
    """Autobahn's permessage-deflate with nothing kept between messages: both directions
    were negotiated without context takeover, so each message gets a fresh (de)compressor,
    which is let go at the message's end instead of held until the next."""

    def end_compress_message(self) -> bytes:
        body = super().end_compress_message()
        forget_compressor(self)
        return body

    def end_decompress_message(self) -> None:
        super().end_decompress_message()
        forget_decompressor(self)


class SharedDeflateAccept(PerMessageDeflateOfferAccept):
    """Accepts an offer with ``server_no_context_takeover`` said (Autobahn says it only when
    the client asked) and ``client_no_context_takeover`` requested."""

    def __init__(self, offer: PerMessageDeflateOffer) -> None:
        super().__init__(offer, request_no_context_takeover=True, no_context_takeover=True)

    def get_extension_string(self) -> str:
        answer = super().get_extension_string()
        if self.offer.request_no_context_takeover:  # Autobahn has said it
            return answer
        name = self.EXTENSION_NAME
        return name + "; server_no_context_takeover" + answer[len(name) :]


def parseable_offers(extensions: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The client's extension offers (Autobahn's ``websocket_extensions``) without the
    compression offers Autobahn cannot parse: it would refuse the whole handshake with a 400
    for one (``server_max_window_bits=8``, which zlib's raw deflate cannot honour, an unknown
    parameter), where RFC 7692 has the server decline it, and take the next offer or none."""
    kept = []
    for name, parameters in extensions:
        kinds: dict[str, Any] | None = PERMESSAGE_COMPRESSION_EXTENSION.get(name)
        if kinds is not None:
            try:
                kinds["Offer"].parse(parameters)
            except Exception:  # Autobahn raises a bare Exception for each kind of mistake
                continue
        kept.append((name, parameters))
    return kept


def accept_shared_deflate(offers: Sequence[object]) -> SharedDeflateAccept | None:
    """Autobahn's ``perMessageCompressionAccept``: the first permessage-deflate offer."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return SharedDeflateAccept(offer)
    return None


def release_deflate(protocol: WebSocketProtocol) -> None:
    """The connection is closing: let go of a decompressor a message left unfinished (a
    client's frame refused for inflating past the limit, 1009, leaves ~100 KiB of zlib
    state, which would wait for the garbage collector with the connection otherwise)."""
    negotiated = negotiated_compression(protocol)
    if negotiated is not None:
        forget_compressor(negotiated)
        forget_decompressor(negotiated)


def adopt_shared_deflate(protocol: WebSocketProtocol) -> int | None:
    """After the handshake: the server-to-client window the client allows, with Autobahn's
    negotiated compression replaced by :class:`StatelessDeflate`; None when the connection
    does not compress."""
    negotiated = negotiated_compression(protocol)
    if negotiated is None:
        return None
    # Negotiated by SharedDeflateAccept, the only accept function given to Autobahn: no
    # context takeover either way, which StatelessDeflate and the shared frames rely on.
    replace_negotiated_compression(
        protocol,
        StatelessDeflate(
            is_server=True,
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=negotiated.server_max_window_bits,
            client_max_window_bits=negotiated.client_max_window_bits,
            mem_level=MEMORY_LEVEL,
            max_message_size=negotiated.max_message_size,
        ),
    )
    return int(negotiated.server_max_window_bits)
