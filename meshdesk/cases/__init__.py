"""Consultation cases: events, their deterministic fold, signed chains, sealing."""

from __future__ import annotations

__all__: list[str] = []
