"""Read lm-evaluation-harness result files (one JSON per checkpoint) into tidy-table rows.

Both layouts the harness has written are read:
- 0.3: ``results.<task>.<metric>`` (e.g. ``results.lambada_openai.ppl``, ``...ppl_stderr``);
- 0.4: ``results.<task>."<metric>,<filter>"`` (e.g. ``"perplexity,none"``), with a ``higher_is_better`` map.
A metric keeps its own name (with ``,<filter>`` appended when the filter is not ``none``); a standard error
(``ppl_stderr``, ``"perplexity_stderr,none"``) is a metric of its own. Entries that are not numbers
(``alias``, ``"N/A"`` standard errors) and, in the 0.4 layout, keys without a filter (``sample_len``) are
bookkeeping, not metrics, and are left out.

Where the rows come from in a directory searched recursively (the Pythia repository's
``evals/pythia-v1/<model>/zero-shot/*.json`` layout): the model is the first folder level under the
directory (a file directly in it belongs to a model named after the directory itself); the step is parsed
from the file name (``...step<N>...``), else from the file's ``model_args`` (``revision=step<N>``, or a
``pretrained`` checkpoint path containing ``step<N>``, as when the harness evaluated one of our run
directories). Rows: metric ``<task>/<metric>``, layer -1, component ``eval``, tokens = step x
``tokens_per_step`` (-1 when unknown).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lmdynamics.layout import tokens_at
from lmdynamics.store import to_frame

COMPONENT = "eval"
LAYER = -1
_STEP = re.compile(r"step[_-]?0*(\d+)", re.IGNORECASE)
# Direction of metrics the harness's 0.3 files do not record (0.4 files carry their own map, which wins).
LOWER_IS_BETTER = {"ppl", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "loss",
                   "val_loss", "train_loss", "likelihood_difference", "bleu_diff_negative", "ter"}


class HarnessError(ValueError):
    """A result file or directory the reader cannot use; the message names it and the fix."""


@dataclass
class EvalFile:
    """The metrics of one result file: ``values[(task, metric)]`` and, where known, their direction."""

    path: Path
    model: str
    step: int
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    higher_is_better: dict[tuple[str, str], bool] = field(default_factory=dict)


def metric_name(task: str, metric: str) -> str:
    """The tidy-table metric of a harness metric: ``<task>/<metric>``."""
    return f"{task}/{metric}"


def higher_is_better(metric: str, known: Mapping[str, bool] | None = None) -> bool:
    """Whether larger values of ``metric`` (``ppl``, ``lambada_openai/acc`` ...) are better.

    ``known`` (from result files, or the user) wins; else perplexities, losses and their kin are lower-is-better
    and everything else (accuracies, F1, ...) higher-is-better. A standard error has no direction: it is treated
    as lower-is-better, but is never a series one detects saturation in.
    """
    if known and metric in known:
        return bool(known[metric])
    base = metric.rsplit("/", 1)[-1].split(",", 1)[0]
    if base.endswith("_stderr"):
        return False
    return base not in LOWER_IS_BETTER and not base.endswith(("ppl", "perplexity", "loss"))


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_results(data: Mapping, where: str) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], bool]]:
    """The (task, metric) -> value map and the direction map of one decoded result file (either layout)."""
    results = data.get("results") if isinstance(data, Mapping) else None
    if not isinstance(results, Mapping) or not results:
        raise HarnessError(f"{where}: not an lm-eval result file (no 'results' object with tasks); "
                           "remove it from the directory or fix it")
    values: dict[tuple[str, str], float] = {}
    for task, metrics in results.items():
        if not isinstance(metrics, Mapping):
            raise HarnessError(f"{where}: results.{task} is not an object of metrics")
        new_layout = any("," in str(k) for k in metrics)
        for key, raw in metrics.items():
            value = _number(raw)
            if value is None:
                continue
            if new_layout:
                if "," not in key:
                    continue  # sample_len and other bookkeeping of the 0.4 layout
                name, filt = key.split(",", 1)
                key = name if filt in ("none", "") else f"{name},{filt}"
            values[(task, key)] = value
    hib: dict[tuple[str, str], bool] = {}
    for task, directions in (data.get("higher_is_better") or {}).items():
        for name, up in (directions or {}).items():
            if isinstance(up, bool):
                hib[(task, name)] = up
    return values, hib


def _model_args(data: Mapping) -> str:
    config = data.get("config") or {}
    args = config.get("model_args", "") if isinstance(config, Mapping) else ""
    if isinstance(args, Mapping):
        return ",".join(f"{k}={v}" for k, v in args.items())
    return str(args or "")


def parse_step(path: Path, data: Mapping) -> int:
    """The checkpoint step of a result file: from its name, else from ``model_args`` (revision, then path)."""
    found = _STEP.findall(path.stem)
    if found:
        return int(found[-1])
    args = _model_args(data)
    revision = re.search(r"(?:^|,)\s*revision\s*=\s*step[_-]?0*(\d+)", args)
    if revision:
        return int(revision.group(1))
    pretrained = re.search(r"(?:^|,)\s*pretrained\s*=\s*([^,]+)", args)
    if pretrained:
        found = _STEP.findall(pretrained.group(1))
        if found:
            return int(found[-1])
    raise HarnessError(f"{path}: cannot tell the checkpoint step: neither the file name nor its model_args "
                       f"({args or 'none'}) contain step<N>; rename the file to include step<N>")


def read_file(path: Path, model: str) -> EvalFile:
    """One result file; a malformed or empty file raises ``HarnessError`` naming it."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise HarnessError(f"{path}: empty file; re-run the evaluation of this checkpoint or delete the file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HarnessError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); "
                           "re-run the evaluation of this checkpoint or delete the file") from None
    values, hib = parse_results(data, str(path))
    return EvalFile(path, model, parse_step(path, data), values, hib)


def result_files(directory: str | os.PathLike) -> list[Path]:
    """Every ``*.json`` under ``directory`` (recursively), sorted; raises if there is none."""
    root = Path(directory)
    if not root.is_dir():
        raise HarnessError(f"--evals {directory}: not a directory; pass the folder holding the result JSONs")
    files = sorted(p for p in root.rglob("*.json") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise HarnessError(f"--evals {directory}: no lm-eval result files (*.json) anywhere under it")
    return files


def model_of(path: Path, root: Path) -> str:
    """The first folder level under ``root`` (a file directly in ``root``: the name of ``root``)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else root.resolve().name


def read_directory(directory: str | os.PathLike) -> list[EvalFile]:
    """Every result file under ``directory``; two files of one (model, step) merge, unless they disagree."""
    root = Path(directory)
    merged: dict[tuple[str, int], EvalFile] = {}
    for path in result_files(root):
        item = read_file(path, model_of(path, root))
        seen = merged.get((item.model, item.step))
        if seen is None:
            merged[(item.model, item.step)] = item
            continue
        for key, value in item.values.items():
            old = seen.values.get(key)
            if old is not None and not math.isclose(old, value, rel_tol=1e-12, abs_tol=0.0):
                raise HarnessError(f"{path} and {seen.path} both give {metric_name(*key)} of {item.model} at step "
                                   f"{item.step}, with different values; keep one of them")
        seen.values.update(item.values)
        seen.higher_is_better.update(item.higher_is_better)
    return sorted(merged.values(), key=lambda f: (f.model, f.step))


def to_rows(files: Iterable[EvalFile], tokens_per_step: int | None = None, run: str | None = None) -> pd.DataFrame:
    """Tidy-table rows (metric ``<task>/<metric>``, layer -1, component ``eval``) of result files."""
    rows = [
        {"run": run or f.model, "model": f.model, "step": f.step,
         "tokens": tokens_at(f.step, tokens_per_step) if tokens_per_step else -1, "layer": LAYER, "component": COMPONENT,
         "metric": metric_name(task, metric), "value": value}
        for f in files for (task, metric), value in sorted(f.values.items())
    ]
    return to_frame(rows)


def directions(files: Iterable[EvalFile]) -> dict[str, bool]:
    """``<task>/<metric>`` -> higher is better, from the files' own ``higher_is_better`` maps (0.4 layout);
    a metric's ``_stderr`` twin is not given one."""
    out: dict[str, bool] = {}
    for f in files:
        for (task, metric), up in f.higher_is_better.items():
            out[metric_name(task, metric)] = up
    return out


def read_evals(directory: str | os.PathLike, tokens_per_step: int | None = None) -> tuple[pd.DataFrame, dict[str, bool]]:
    """Rows and known directions of every result file under ``directory``."""
    files = read_directory(directory)
    return to_rows(files, tokens_per_step), directions(files)
