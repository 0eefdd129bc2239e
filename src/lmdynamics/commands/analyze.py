"""``lmdynamics analyze``: offline analysis of checkpoints (hub revisions or local runs) into
``<out>/metrics.parquet`` (``lmdynamics analyze``, ``make analyze``).

Any field of :class:`~lmdynamics.offline.config.AnalysisConfig` is an option (``--steps 0,1000``,
``--probe.source runs/demo``); ``--probe X`` is ``--probe.source X``. Exit codes: 0 done, 1 some checkpoint
failed (the rest analysed), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys

from ..arguments import UsageError, canonical_flags, command_parser, traceback_requested
from ..arguments import parse as parse_arguments

_LEGACY = {"--probe": "--probe.source"}


def build_parser():
    from ..offline.config import AnalysisConfig

    parser = command_parser("lmdynamics analyze", __doc__.split("\n\n")[0], "analysis YAML (configs/analysis/*.yaml)")
    parser.add_class_arguments(AnalysisConfig, fail_untyped=False, sub_configs=True)
    return parser


def _legacy(argv: list[str]) -> list[str]:
    """``--probe X`` is ``--probe.source X``."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(_LEGACY[name] + eq + value if name in _LEGACY else arg)
    return out


def parse(argv: list[str] | None = None):
    """The validated :class:`AnalysisConfig` of a command line; :class:`UsageError` (one line) for bad input."""
    from ..offline.config import AnalysisConfig, ProbeConfig, validate

    argv = _legacy(canonical_flags(list(sys.argv[1:] if argv is None else argv)))
    values = parse_arguments(build_parser(), argv, "analysis config").as_dict()
    values.pop("config", None)
    probe = values.pop("probe", None) or {}
    return validate(AnalysisConfig(**values, probe=ProbeConfig(**probe)))


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 ok, 1 some checkpoint failed, 2 bad input."""
    try:
        config = parse(argv)
        from ..offline.fabric_run import OFFLINE_ALTERNATIVE, hub_needs, run_analysis
        from ..hub import require_hub

        require_hub(hub_needs(config), OFFLINE_ALTERNATIVE)  # before anything is written to config.out
    except (UsageError, ValueError, FileNotFoundError) as err:
        if traceback_requested():
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ..report.run_report import write_report

    return run_analysis(config, write_report)
