"""Evaluate checkpoints over training: with the real lm-evaluation-harness, or (cheap path) the held-out loss
of a local corpus, at every checkpoint of a run directory or at hub revisions.

Harness path: lm-eval's Python API (``lm_eval.simple_evaluate``, HFLM backend ``hf``) on each checkpoint,
any task list (``include_path`` adds local task YAMLs, e.g. a ``dataset_path: json`` task over a JSONL
file), batch size and device. Each checkpoint's result is written as the harness's own JSON
(``<out>/<model>/step<NNNNNNNN>.json``, per-sample logs left out), so ``lmdynamics saturation --evals
<out>`` and any other harness tooling read it; its rows go to ``<out>/metrics.parquet`` (via
``harness``: metric ``<task>/<metric>``, component ``eval``). Resumable: a checkpoint whose result file
exists is skipped. Cheap path: ``corpus_loss`` (mean next-token cross-entropy over held-out blocks of a
local corpus, layer -1, component ``model``) at each checkpoint, without the harness.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lmdynamics import store
from lmdynamics.atomic import write_text_atomic
from lmdynamics.layout import tokens_at

from . import harness

CORPUS_LOSS = "corpus_loss"
_STEP_DIR = re.compile(r"^step(\d+)$")


@dataclass(frozen=True)
class Target:
    """One checkpoint to evaluate: its step and the harness's ``model_args`` that load it."""

    step: int
    model_args: dict


def run_targets(run_dir: str | os.PathLike, steps: Iterable[int] | None = None) -> tuple[str, str, int, list[Target]]:
    """(run name, model name, tokens per step, checkpoints) of a run directory (``checkpoints/stepNNNNNNNN``)."""
    run_dir = Path(run_dir)
    ckpts = run_dir / "checkpoints"
    found = sorted((int(m.group(1)), p) for p in ckpts.glob("step*") if (m := _STEP_DIR.match(p.name)) and p.is_dir())
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoints/stepNNNNNNNN directories; pass a run directory of lmdynamics fit")
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    wanted = None if steps is None else set(steps)
    targets = [Target(s, {"pretrained": str(p.resolve()), "dtype": "float32"}) for s, p in found
               if wanted is None or s in wanted]
    if wanted is not None and len(targets) < len(wanted):
        have = sorted(s for s, _ in found)
        raise ValueError(f"{run_dir}: no checkpoint at step(s) {sorted(wanted - {t.step for t in targets})}; have {have}")
    return info.get("name", run_dir.name), info.get("model", run_dir.name), int(info.get("tokens_per_step", 0)), targets


def hub_targets(repo: str, steps: Sequence[int], revision_format: str = "step{step}") -> list[Target]:
    """Hub revisions of ``repo`` (Pythia: ``step{step}``)."""
    return [Target(int(s), {"pretrained": repo, "revision": revision_format.format(step=int(s)), "dtype": "float32"})
            for s in steps]


def result_path(out: str | os.PathLike, model: str, step: int) -> Path:
    return Path(out) / harness_model_dir(model) / f"step{step:08d}.json"


def harness_model_dir(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model)


def evaluate_harness(targets: Sequence[Target], model: str, out: str | os.PathLike, tasks: Sequence[str],
                     include_path: str | None = None, batch_size: int | str = 8, device: str = "cpu",
                     limit: int | float | None = None, tokens_per_step: int = 0, run: str | None = None,
                     log=print) -> list[Path]:
    """Run the harness on every target not evaluated yet; returns the result files (new and existing)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in set(manager.all_tasks)]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {unknown}; pass --include_path for a local task YAML, "
                         "or see `lm-eval ls tasks`")
    paths = []
    for target in targets:
        path = result_path(out, model, target.step)
        paths.append(path)
        if path.is_file():
            log(f"step {target.step}: already evaluated ({path}), skipped")
            continue
        results = lm_eval.simple_evaluate(model="hf", model_args=target.model_args, tasks=list(tasks),
                                          batch_size=batch_size, device=device, limit=limit,
                                          task_manager=manager, log_samples=False)
        results.pop("samples", None)
        text = json.dumps(results, indent=2, default=handle_non_serializable)
        write_text_atomic(path, text)
        rows = harness.to_rows([harness.read_file(path, model)], tokens_per_step or None, run=run or model)
        store.append(store.table_path(out), rows)
        log(f"step {target.step}: " + ", ".join(f"{m}={v:.4g}" for m, v in zip(rows.metric, rows.value)
                                               if not m.endswith("_stderr")))
    return paths


def corpus_loss(model, blocks: torch.Tensor, batch: int = 8) -> float:
    """Mean next-token cross-entropy of a causal LM over token blocks (every position predicted once): the
    token-weighted mean of the per-token losses the trajectories record (``trajectories.record.token_losses``)."""
    from lmdynamics.trajectories.record import token_losses

    return float(token_losses(model, blocks, batch).double().mean())


def evaluate_corpus_loss(targets: Sequence[Target], model: str, out: str | os.PathLike, blocks: torch.Tensor,
                         tokens_per_step: int = 0, run: str | None = None, log=print) -> list[dict]:
    """``corpus_loss`` at every target not in ``<out>/metrics.parquet`` yet; the rows written."""
    from lmdynamics.models.heads import load_causal_lm

    table = store.table_path(out)
    done = store.read_table(table)
    done = set(done[(done.metric == CORPUS_LOSS) & (done.model == model)].step)
    written = []
    for target in targets:
        if target.step in done:
            log(f"step {target.step}: {CORPUS_LOSS} already in {table}, skipped")
            continue
        lm = load_causal_lm(target.model_args["pretrained"], revision=target.model_args.get("revision"),
                            dtype=torch.float32)
        value = corpus_loss(lm, blocks)
        row = {"run": run or model, "model": model, "step": target.step, "tokens": tokens_at(target.step, tokens_per_step),
               "layer": -1, "component": "model", "metric": CORPUS_LOSS, "value": value}
        store.append(table, [row])
        written.append(row)
        log(f"step {target.step}: {CORPUS_LOSS}={value:.4f}")
    return written


def corpus_blocks(source: str, target: Target, n: int):
    """Held-out blocks of ``source`` tokenised with the first checkpoint's tokenizer, at its context length."""
    from transformers import AutoConfig

    from lmdynamics.data.datamodule import TextDataModule

    pretrained = target.model_args["pretrained"]
    config = AutoConfig.from_pretrained(pretrained, revision=target.model_args.get("revision"))
    tokenizer = f"{pretrained}/tokenizer.json" if not target.model_args.get("revision") else pretrained
    dm = TextDataModule(source=source, tokenizer=tokenizer, val_blocks=n,
                        context_length=min(int(config.max_position_embeddings), 2048))
    dm.prepare()
    return dm.val_blocks_tensor
