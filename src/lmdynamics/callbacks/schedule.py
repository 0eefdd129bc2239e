"""Pythia-style step schedules: log-spaced early steps, then every K steps, plus the last step."""

from __future__ import annotations


def pythia_schedule(max_steps: int, every: int, log_cap: int | None = None, include_last: bool = True) -> list[int]:
    """Steps 0, 1, 2, 4, ..., (powers of two up to ``log_cap``), then every ``every`` steps, plus ``max_steps``.

    Pythia's released checkpoints are this schedule with log_cap=512, every=1000, max_steps=143000.
    ``log_cap`` defaults to ``every`` (powers of two below the first regular step).
    """
    if every <= 0:
        raise ValueError(f"the schedule's interval must be a positive number of steps, got every={every}")
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    cap = every if log_cap is None else log_cap
    steps = {0}
    p = 1
    while p <= min(cap, max_steps):
        steps.add(p)
        p *= 2
    steps.update(range(every, max_steps + 1, every))
    if include_last:
        steps.add(max_steps)
    return sorted(s for s in steps if s <= max_steps)
