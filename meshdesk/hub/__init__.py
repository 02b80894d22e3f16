"""The prefecture hub (issue 17): what a city HQ feeds it, how, and its projection.

- :mod:`.feed`: what leaves a city (open metadata; sealed personal blocks only with
  consent to the prefecture; erasures; announcements) and the record codec.
"""

from __future__ import annotations

from meshdesk.hub.feed import (
    PREFECTURE,
    FeedRecord,
    RecordKind,
    decode_message,
    encode_message,
    records_of,
)

__all__ = [
    "PREFECTURE",
    "FeedRecord",
    "RecordKind",
    "decode_message",
    "encode_message",
    "records_of",
]
