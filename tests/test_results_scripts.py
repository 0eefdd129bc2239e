"""The scripts under docs/results/ that print the numbers of the result reports, on small runs built here."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

from lmdynamics import store

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "results" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root: Path, name: str, max_steps: int, val: dict[int, float], floor: float = 2.0) -> Path:
    """A finished run as the training CLI leaves it, as far as the scripts read it."""
    run = root / name
    (run / "checkpoints" / f"step{max_steps:08d}").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run": name, "max_steps": max_steps, "synthetic": {"entropy_floor": floor}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"seed_everything": 1}))
    store.append(store.table_path(run), [{"run": name, "model": "m", "step": s, "tokens": s, "layer": -1,
                                          "component": "model", "metric": "val_loss", "value": v} for s, v in val.items()])
    return run


@pytest.mark.parametrize("val, at_40", [({2: 3.0, 4: 2.5}, math.nan), ({1: 3.2, 2: 3.0, 4: 2.5}, 0.7)])
def test_late_rise_of_a_run_without_a_validation_before_40_percent(tmp_path, val, at_40):
    """saturation_organism.py late: best, final, rise and excess per run; "val@40% - final" is NaN when no
    validation falls in the first 40% of training (a short run), not an IndexError."""
    _run(tmp_path, "short", 4, val)
    per_run, _ = _script("saturation_organism").late([tmp_path])
    row = per_run.iloc[0]
    assert (row["best"], row["final"], row["rise"], row["final excess"]) == pytest.approx((2.5, 2.5, 0.0, 0.5))
    assert row["val@40% - final"] == pytest.approx(at_40, nan_ok=True)
