"""The Pythia-style checkpoint schedule (one definition, used by training and analysis), the step presets
(docs/science.md sec. 1 and 2) and the step-selection grammar of the analysis CLI."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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


PYTHIA_TOKENS_PER_STEP = 1024 * 2048  # 2,097,152 tokens a step (Pythia's batch of 1024 x 2048)
PYTHIA_FINAL_STEP = 143_000

#: The 154 released Pythia checkpoints: step0, the log-spaced step1..step512, then every 1000 to 143000.
PYTHIA_STEPS: tuple[int, ...] = tuple(pythia_schedule(PYTHIA_FINAL_STEP, every=1000, log_cap=512))

#: The steps of "Tending Towards Stability" (2024): 0, 1, 2, 4, ..., 512, 1000, then 3000 + 10000 i to 143000.
PAPER_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), 1000, *range(3000, PYTHIA_FINAL_STEP + 1, 10_000))

#: Every 10k steps, plus the final checkpoint (the CKA reference).
EVERY_10K_STEPS: tuple[int, ...] = (*range(0, PYTHIA_FINAL_STEP, 10_000), PYTHIA_FINAL_STEP)

PRESETS: dict[str, tuple[int, ...]] = {"paper": PAPER_STEPS, "pythia-all": PYTHIA_STEPS, "every-10k": EVERY_10K_STEPS}


def parse_steps(spec: str | int | Sequence[int] | None) -> str | list[int]:
    """Normalise a step selection: a preset name (``paper``, ``pythia-all``, ``every-10k``, ``all``),
    a comma-separated string of steps, an int or a list of ints. Returns the preset name or sorted steps."""
    if spec is None:
        return "all"
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    if isinstance(spec, str):
        name = spec.strip()
        if name in PRESETS or name == "all":
            return name
        try:
            spec = [int(s.strip().removeprefix("step")) for s in name.split(",") if s.strip()]
        except ValueError:
            raise ValueError(
                f"steps {name!r} is neither a preset ({', '.join([*PRESETS, 'all'])}) nor a comma-separated list of steps"
            ) from None
    steps = sorted({int(s) for s in spec})
    if not steps:
        raise ValueError("steps selects no step; give a preset name or a list of steps")
    if steps[0] < 0:
        raise ValueError(f"steps must be >= 0, got {steps[0]}")
    return steps


def select_steps(spec: str | Sequence[int], available: Iterable[int] | None) -> list[int]:
    """The steps to analyse.

    For a source with a known list of ``available`` steps (a local run): ``all`` is every saved step, a
    preset keeps the saved steps it names, an explicit list is returned as is (steps that were not saved
    then fail one by one, reported). For a hub source (``available`` None): presets expand to their
    steps, ``all`` to every released Pythia step.
    """
    spec = parse_steps(spec) if isinstance(spec, (str, int)) else sorted(set(spec))
    if available is None:
        if isinstance(spec, str):
            return list(PYTHIA_STEPS if spec == "all" else PRESETS[spec])
        return list(spec)
    have = sorted(set(available))
    if spec == "all":
        return have
    if isinstance(spec, str):
        wanted = set(PRESETS[spec])
        return [s for s in have if s in wanted]
    return list(spec)
