"""Bounds on a single frame, shared by the encoder, the decoder and the stream reader."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["DEFAULT_LIMITS", "WireLimits"]

_U32_MAX = 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class WireLimits:
    """What one frame may hold at most.

    The decoder hands every bound to msgpack, so a hostile peer cannot make us
    allocate more than this; the encoder checks the same bounds, so we never send a
    frame that a peer with the same limits would refuse.

    Attributes:
        max_frame: Bytes in one encoded envelope (the stream length prefix excluded).
        max_str: UTF-8 bytes in one string.
        max_bin: Bytes in one binary value.
        max_array: Items in one array (a tuple field, or a frame's field list).
        max_map: Entries in one map (no frame uses maps; bounded all the same).
    """

    max_frame: int = 1_048_576
    max_str: int = 65_536
    max_bin: int = 1_048_576
    max_array: int = 10_000
    max_map: int = 1_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WireLimits.{f.name} must be a positive int, got {value!r}")
        if self.max_frame > _U32_MAX:
            raise ValueError(
                f"WireLimits.max_frame must fit the 4-byte length prefix (<= {_U32_MAX})"
            )


DEFAULT_LIMITS = WireLimits()
