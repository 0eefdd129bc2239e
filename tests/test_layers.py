"""The layers of the package, read from its imports (every `import` in every module, top level or inside a
function): no import runs back up a layer, and no two top-level units import each other.

Layers, bottom up (docs/architecture.md): metrics -> atomic/store/catalogue/summaries/measure -> models, data,
probes, checkpoints, cka_to_final -> callbacks -> training and the studies (saturation, trajectories) -> the
offline pipeline (offline) and the comparison (compare) -> the report (report: every figure and report writer)
-> the commands (cli, sweep, runs, generate, launch and each package's command modules).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lmdynamics"

COMMANDS = {"cli", "commands", "sweep", "runs", "generate", "launch"}
ABOVE_STUDIES = {"offline", "compare", "report"}
STUDIES = {"saturation", "trajectories"}
LOW = {"training", "callbacks", "models", "data", "probes", "checkpoints", "cka_to_final"}
#: unit -> the units it must never import (the layers above it).
FORBIDDEN = {
    "metrics": COMMANDS | ABOVE_STUDIES | STUDIES | LOW | {"store", "catalogue", "summaries", "measure", "layout"},
    "store": COMMANDS | ABOVE_STUDIES | STUDIES | LOW | {"measure", "summaries"},
    "catalogue": COMMANDS | ABOVE_STUDIES | STUDIES | LOW | {"measure", "summaries"},
    "summaries": COMMANDS | ABOVE_STUDIES | STUDIES | LOW | {"measure"},
    "models": COMMANDS | ABOVE_STUDIES | STUDIES | {"training", "callbacks", "cka_to_final"},
    "data": COMMANDS | ABOVE_STUDIES | STUDIES | {"training", "callbacks", "cka_to_final"},
    "probes": COMMANDS | ABOVE_STUDIES | STUDIES | {"training", "callbacks", "cka_to_final"},
    "checkpoints": COMMANDS | ABOVE_STUDIES | STUDIES | {"training", "callbacks", "cka_to_final"},
    "cka_to_final": COMMANDS | ABOVE_STUDIES | STUDIES | {"training", "callbacks"},
    "callbacks": COMMANDS | ABOVE_STUDIES | {"training", "saturation"},
    "training": COMMANDS | ABOVE_STUDIES | STUDIES,
    "saturation": COMMANDS | ABOVE_STUDIES | {"training"},
    "trajectories": COMMANDS | ABOVE_STUDIES | {"training"},
    "offline": COMMANDS | {"training", "compare", "report"},
    "compare": COMMANDS | {"training", "offline", "report"},
    "report": COMMANDS | {"training", "offline"},
}
#: Known imports that still run up a layer, each to be removed (the list may only shrink).
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()
#: Known pairs of units that import each other, to be removed (the list may only shrink).
KNOWN_CYCLES: set[tuple[str, str]] = set()
#: Command modules: a verb's parser and main, which may import any layer.
COMMAND_MODULES: set[str] = set()  # every verb's module lives in commands/ (a unit of the top layer)


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imports(path: Path) -> set[str]:
    """The top-level lmdynamics units a module imports (absolute and relative imports)."""
    module = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(module[:-1]) if path.name != "__init__.py" else list(module[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name.split(".")[1:] for a in node.names if a.name.startswith("lmdynamics.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("lmdynamics."):
                    targets = [node.module.split(".")[1:]]
                elif node.module == "lmdynamics":
                    targets = [[a.name] for a in node.names]
            else:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    targets = [base + node.module.split(".")]
                else:
                    targets = [base + [a.name] for a in node.names]
        found |= {t[0] for t in targets if t}
    return found


def _graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        if "configs" in path.relative_to(PACKAGE).parts:
            continue
        rel = path.relative_to(PACKAGE).as_posix()
        for target in _imports(path) - {_unit(path)}:
            graph[rel].add(target)
    return graph


def test_the_import_reader_sees_relative_and_absolute_imports(tmp_path):
    assert "cka_to_final" in _graph()["callbacks/convergence.py"]  # a function-level relative import
    assert "store" in _graph()["compare/runs.py"]


def test_no_import_runs_back_up_a_layer():
    wrong = sorted((module, target) for module, targets in _graph().items() for target in targets
                   if module not in COMMAND_MODULES and target in FORBIDDEN.get(module.split("/")[0].removesuffix(".py"), ())
                   and (module, target) not in KNOWN_EXCEPTIONS)
    assert not wrong, f"imports that run up a layer (see docs/architecture.md): {wrong}"


def test_known_exceptions_are_still_real():
    """An exception that was fixed leaves the list (so the list only shrinks)."""
    graph = _graph()
    stale = [(m, t) for m, t in KNOWN_EXCEPTIONS if t not in graph.get(m, set())]
    assert not stale, f"fixed, remove from KNOWN_EXCEPTIONS: {stale}"


def test_no_two_top_level_units_import_each_other():
    units = defaultdict(set)
    for module, targets in _graph().items():
        if module in COMMAND_MODULES:
            continue
        units[module.split("/")[0].removesuffix(".py")] |= targets
    cycles = {tuple(sorted((a, b))) for a in units for b in units[a] if a in units.get(b, set())}
    assert cycles >= KNOWN_CYCLES, f"fixed, remove from KNOWN_CYCLES: {sorted(KNOWN_CYCLES - cycles)}"
    cycles = sorted(cycles - KNOWN_CYCLES)
    assert not cycles, f"units that import each other: {cycles}"
