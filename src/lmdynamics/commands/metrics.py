"""``lmdynamics metrics``: every measurement of the catalogue, one line each: its name, what it reads, its figure
family (whether the run report draws that family's figures for it, how ``compare`` draws it), its label and
definition. The list is the catalogue itself (``lmdynamics.catalogue``), so no list of metrics is kept by hand."""

from __future__ import annotations

from ..arguments import UsageError, command_parser, run_command


def build_parser():
    parser = command_parser("lmdynamics metrics", "every measurement of the catalogue, one line each")
    parser.add_argument("--family", type=str, default=None,
                        help="only the measurements of this figure family (rank, cka, cka_reference, head, anisotropy, loss)")
    return parser


def lines(family: str | None = None) -> list[str]:
    """One line per catalogue measurement (of ``family`` if given), columns aligned."""
    from ..catalogue import CATALOGUE

    rows = [(m.name, m.reads if m.applies_to == "all" else f"{m.reads} ({m.applies_to})",
             f"family {m.family or '-'}" + (" (report figures)" if m.figures else "") + (f", compare {m.compare}" if m.compare else ""),
             m.axis_label() + (f": {m.description}" if m.description else ""))
            for m in CATALOGUE.values() if family is None or m.family == family]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    return ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[3] for row in rows]


def _metrics(args, argv) -> int:
    from ..catalogue import CATALOGUE

    families = sorted({m.family for m in CATALOGUE.values() if m.family})
    if args.family is not None and args.family not in families:
        raise UsageError(f"--family {args.family}: no such figure family; the catalogue's families: {', '.join(families)}")
    print("\n".join(lines(args.family)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _metrics)
