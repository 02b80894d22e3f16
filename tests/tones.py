"""What a recording holds: a tone's pitch, its level, and the gaps in it (numpy).

Shared by the unit tests of playback and the sound lab tests, which record a sound
server's sink with ``parec`` (raw signed 16-bit mono) and check what an operator
would hear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Heard", "analyse", "samples_of"]

#: A 10 ms window quieter than this (dBFS) is a gap; the synthetic tone is ≈ -15 dBFS.
GAP_DBFS = -45.0


def samples_of(raw: bytes) -> npt.NDArray[np.float64]:
    """Raw s16le mono PCM as floats in [-1, 1)."""
    return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0


@dataclass(frozen=True)
class Heard:
    """A recording's tone (strongest frequency), level and longest silence."""

    seconds: float
    hz: float
    dbfs: float
    longest_gap_ms: float


def analyse(samples: npt.NDArray[np.float64], rate: int = 48000) -> Heard:
    """Pitch by FFT (Hann window), RMS level, and the longest run of quiet 10 ms windows."""
    if len(samples) < rate // 10:
        return Heard(len(samples) / rate, 0.0, -120.0, len(samples) / rate * 1000)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    hz = float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])
    rms = float(np.sqrt(np.mean(samples**2)))
    window = rate // 100
    count = len(samples) // window
    levels = np.sqrt(np.mean(samples[: count * window].reshape(count, window) ** 2, axis=1))
    quiet = 20 * np.log10(levels + 1e-12) < GAP_DBFS
    longest = run = 0
    for is_quiet in quiet:
        run = run + 1 if is_quiet else 0
        longest = max(longest, run)
    return Heard(len(samples) / rate, hz, 20 * np.log10(rms + 1e-12), longest * 10.0)
