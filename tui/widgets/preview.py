"""A low-rate video preview drawn with half blocks: two pixels per terminal cell."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

__all__ = ["MAX_SIDE", "Frame", "VideoPreview", "decode_frame", "frame_lines"]

#: The node sends at most 160×120; anything larger is refused.
MAX_SIDE = 320

Frame = tuple[int, int, bytes]

log = logging.getLogger(__name__)


def decode_frame(obj: Mapping[str, Any] | None) -> Frame | None:
    """``call_preview``'s result as (width, height, rgb); None for no frame or bad data
    (bad data is logged: it means a node answering out of shape)."""
    if not obj:
        return None
    frame = _checked(obj)
    if frame is None:
        log.warning("ignored a malformed video preview from the node")
    return frame


def _checked(obj: Mapping[str, Any]) -> Frame | None:
    width, height, data = obj.get("width"), obj.get("height"), obj.get("rgb")
    if not (isinstance(width, int) and isinstance(height, int) and isinstance(data, str)):
        return None
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        return None
    try:
        rgb = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return (width, height, rgb) if len(rgb) == width * height * 3 else None


def frame_lines(frame: Frame, cols: int, rows: int) -> list[Strip]:
    """Scale ``frame`` (nearest pixel) to ``cols``×``2*rows`` pixels, drawn as ▀ cells."""
    width, height, rgb = frame
    strips = []
    for row in range(rows):
        segments = []
        for col in range(cols):
            x = min(width - 1, col * width // max(1, cols))
            colors = []
            for half in (0, 1):
                y = min(height - 1, (2 * row + half) * height // max(1, 2 * rows))
                i = (y * width + x) * 3
                colors.append(Color.from_rgb(rgb[i], rgb[i + 1], rgb[i + 2]))
            segments.append(Segment("▀", Style(color=colors[0], bgcolor=colors[1])))
        strips.append(Strip(segments, cols))
    return strips


class VideoPreview(Widget):
    """Shows the latest frame; blank with a caption when there is none."""

    DEFAULT_CSS = """
    VideoPreview { width: 34; height: 13; border: round $secondary; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.frame: Frame | None = None
        self._lines: list[Strip] = []

    def show(self, frame: Frame | None) -> None:
        self.frame = frame
        self._lines = []
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size.width, self.content_size.height
        if self.frame is None:
            return Strip.blank(width)
        if len(self._lines) != height or (self._lines and self._lines[0].cell_length != width):
            self._lines = frame_lines(self.frame, width, height)
        return self._lines[y] if y < len(self._lines) else Strip.blank(width)
