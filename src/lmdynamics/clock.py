"""Durations as people read them in progress lines (training's and long offline work's), without lightning."""

from __future__ import annotations

import math


def clock(seconds: float) -> str:
    """``H:MM:SS`` of a non-negative number of seconds (rounded), ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    total = int(round(max(seconds, 0.0)))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"
