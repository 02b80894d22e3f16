"""Length-prefixed frames on a byte stream (TLS, TCP, a pipe), sans I/O.

On a stream each frame is a 4-byte big-endian unsigned length followed by that
many bytes of envelope. :class:`FrameDecoder` only turns bytes into frames; the
caller owns the socket, so the same code runs under asyncio, in tests and in
simulated meshes.
"""

from __future__ import annotations

import struct
from typing import cast

from meshdesk.errors import WireError
from meshdesk.wire._codec import decode_envelope
from meshdesk.wire._limits import DEFAULT_LIMITS, WireLimits
from meshdesk.wire.frames import Frame, encode

__all__ = ["FrameDecoder", "pack_frame"]

_PREFIX = struct.Struct(">I")


def pack_frame(frame: Frame, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
    """Encode ``frame`` with its length prefix, ready to write to a stream.

    Raises:
        WireError: The frame breaks its schema or ``limits`` (see :func:`encode`).
    """
    body = encode(frame, limits)
    return _PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Reassembles frames from stream chunks of any size.

    Holds at most one partial frame between calls. An announced length above
    ``limits.max_frame`` fails as soon as its prefix is read, before any of the body is
    buffered. Any error leaves the decoder closed, since the stream can no longer be
    trusted to be in step: drop the connection.
    """

    __slots__ = ("_buf", "_failed", "_limits")

    def __init__(self, limits: WireLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return every frame it completes, in stream order.

        Raises:
            WireError: A malformed prefix or frame; frames completed by the same call
                are discarded with the connection. Every later call raises too.
        """
        if self._failed:
            raise WireError("decoder closed after an earlier error")
        try:
            return self._drain(data)
        except BaseException:
            self._failed = True
            self._buf = bytearray()  # not cleared in place: a view may still be alive
            raise

    def _drain(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        end = len(buf)
        if end < _PREFIX.size:
            return []
        max_frame = self._limits.max_frame
        frames: list[Frame] = []
        pos = 0
        with memoryview(buf) as view:
            while end - pos >= _PREFIX.size:
                (size,) = _PREFIX.unpack_from(buf, pos)
                if size == 0:
                    raise WireError("zero-length frame")
                if size > max_frame:
                    raise WireError(
                        f"announced frame of {size} bytes exceeds the {max_frame}-byte limit"
                    )
                start = pos + _PREFIX.size
                if end - start < size:
                    break
                body = view[start : start + size]  # no copy; msgpack reads the view
                frames.append(cast("Frame", decode_envelope(body, self._limits)))
                del body
                pos = start + size
        del buf[:pos]  # one compaction per call, not per frame
        return frames
