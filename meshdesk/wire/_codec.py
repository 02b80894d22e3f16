"""The versioned msgpack envelope and the registry of frame classes.

An encoded frame is ``[WIRE_VERSION, kind, [field values in declared order]]``. This
module knows nothing of particular frames: classes register themselves with
:func:`frame`, and their schemas are compiled once at registration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

import msgpack

from meshdesk.errors import WireError
from meshdesk.wire._limits import WireLimits
from meshdesk.wire._schema import Record, compile_record

__all__ = ["WIRE_VERSION", "decode_envelope", "encode_envelope", "frame", "registered"]

#: Bumped only for an incompatible change of the envelope or of existing frames;
#: new frame kinds do not need a new version.
WIRE_VERSION = 1

_T = TypeVar("_T")

_BY_KIND: dict[int, Record[Any]] = {}
_BY_TYPE: dict[type, tuple[int, Record[Any]]] = {}
_TYPES: dict[int, type] = {}


def frame(kind: int) -> Callable[[type[_T]], type[_T]]:
    """Class decorator registering a frozen dataclass as the frame of ``kind``.

    The schema is compiled here, so a bad field hint fails at import, not on the
    first frame from a peer.

    Raises:
        TypeError: The class is not a frozen dataclass or has an unsupported hint.
        ValueError: ``kind`` or the class is registered already.
    """

    def register(cls: type[_T]) -> type[_T]:
        if kind in _BY_KIND:
            raise ValueError(f"frame kind {kind} is taken by {_TYPES[kind].__qualname__}")
        if cls in _BY_TYPE:
            raise ValueError(f"{cls.__qualname__} is registered already")
        record = compile_record(cls)
        _BY_KIND[kind] = record
        _BY_TYPE[cls] = (kind, record)
        _TYPES[kind] = cls
        return cls

    return register


def registered() -> Mapping[int, type]:
    """Read-only view of kind -> frame class, in registration order."""
    return MappingProxyType(_TYPES)


def encode_envelope(obj: object, limits: WireLimits) -> bytes:
    """Encode a registered frame instance into its envelope.

    Raises:
        WireError: A field breaks its schema or ``limits``, or the result is too large.
        TypeError: ``obj`` is not an instance of a registered frame class.
    """
    entry = _BY_TYPE.get(type(obj))
    if entry is None:
        raise TypeError(f"{type(obj).__qualname__} is not a registered frame type")
    kind, record = entry
    fields = record.encode(obj, limits)
    try:
        data = msgpack.packb([WIRE_VERSION, kind, fields], use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:  # schema checks should prevent this
        raise WireError(f"{type(obj).__name__}: cannot encode ({exc})") from exc
    if len(data) > limits.max_frame:
        raise WireError(
            f"{type(obj).__name__}: frame of {len(data)} bytes exceeds "
            f"the {limits.max_frame}-byte limit"
        )
    return data


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise WireError(f"msgpack ext type {code} is not allowed")


def decode_envelope(data: bytes | bytearray | memoryview, limits: WireLimits) -> object:
    """Decode one envelope into an instance of its registered frame class.

    Raises:
        WireError: For any input that is not exactly one valid envelope.
    """
    size = len(data)
    if size > limits.max_frame:
        raise WireError(f"frame of {size} bytes exceeds the {limits.max_frame}-byte limit")
    if size == 0:
        raise WireError("empty frame")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_array,
            max_map_len=limits.max_map,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except msgpack.ExtraData as exc:
        raise WireError("trailing data after the envelope") from exc
    except msgpack.StackError as exc:
        raise WireError("malformed msgpack: nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise WireError(f"malformed msgpack: string is not valid UTF-8 ({exc.reason})") from exc
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        detail = str(exc) or type(exc).__name__
        raise WireError(f"malformed msgpack: {detail}") from exc

    if type(obj) is not list or not obj:
        raise WireError(f"envelope: expected a non-empty array, got {_name(obj)}")
    version = obj[0]
    if type(version) is not int:
        raise WireError(f"envelope: wire version must be an int, got {_name(version)}")
    if version != WIRE_VERSION:
        raise WireError(f"unsupported wire version {version}")
    if len(obj) != 3:
        raise WireError(f"envelope: expected 3 items, got {len(obj)}")
    kind = obj[1]
    if type(kind) is not int:
        raise WireError(f"envelope: frame kind must be an int, got {_name(kind)}")
    record = _BY_KIND.get(kind)
    if record is None:
        raise WireError(f"unknown frame kind {kind}")
    return record.decode(obj[2])


def _name(value: object) -> str:
    return "None" if value is None else type(value).__name__
