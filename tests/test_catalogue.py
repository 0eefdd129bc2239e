"""The catalogue at the middle: old tables still read and render, resume asks the catalogue what a step
lacks, every name the code records is declared once, and the one `lmdynamics` command dispatches."""

import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmdynamics import catalogue, store
from lmdynamics.offline.plan import done_units
from lmdynamics.report.run_report import write_report

OLD_SCHEMA = pa.schema([("run", pa.string()), ("model", pa.string()), ("step", pa.int64()), ("tokens", pa.int64()),
                        ("layer", pa.int64()), ("component", pa.string()), ("metric", pa.string()),
                        ("value", pa.float64())])


def old_part(path, rows):
    """A table part as written before the index column existed (head spectrum index in `layer`)."""
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows), schema=OLD_SCHEMA, preserve_index=False),
                   path / "part-00000000000000000001-1-old.parquet")


def test_a_table_written_before_the_index_column_reads_and_renders(tmp_path):
    rows = []
    for step in (0, 10, 20):
        base = dict(run="r", model="m", step=step, tokens=step * 8)
        rows += [dict(base, layer=i, component="head_spectrum", metric="sv_norm", value=1 / (i + 1)) for i in range(6)]
        rows += [dict(base, layer=-1, component="head", metric="kl_uniform", value=0.1 + step / 100),
                 dict(base, layer=-1, component="model", metric="val_loss", value=5 - step / 10)]
        rows += [dict(base, layer=layer, component="qkv", metric="per", value=0.5 + layer / 10) for layer in (0, 1)]
    table = tmp_path / "metrics.parquet"
    old_part(table, rows)
    frame = store.read_table(table)
    spec = frame[frame.metric == "sv_norm"]
    assert set(spec.component) == {"head"} and set(spec.layer) == {-1} and sorted(set(spec["index"])) == list(range(6))
    assert set(frame.loc[frame.metric != "sv_norm", "index"]) == {-1}
    assert frame.loc[frame.layer >= 0, "layer"].max() == 1  # `layer` means layer again
    write_report(table, tmp_path / "report")
    for name in ("head_spectrum__m.png", "per_layers.png", "loss.png"):
        assert (tmp_path / "report" / "figures" / name).is_file(), name


def test_resume_asks_the_catalogue_what_a_step_lacks():
    weights = catalogue.produced_by("weights")
    assert {"er", "per", "stable_rank", "condition_number"} <= set(weights)
    rows = [dict(run="r", model="m", step=5, tokens=0, layer=0, component="qkv", metric=m, value=1.0) for m in weights]
    rows.append(dict(run="r", model="m", step=5, tokens=0, layer=0, component="mlp", metric="anisotropy", value=0.3))
    full = store.to_frame(rows)
    assert {("r", 5, "weights"), ("r", 5, "activations")} <= done_units(full)
    lacking = store.to_frame(rows[1:])  # a metric added to the catalogue later: the step is not done
    assert ("r", 5, "weights") not in done_units(lacking) and ("r", 5, "activations") in done_units(lacking)


def test_every_recorded_metric_name_is_declared():
    for name in ("er", "per", "gini", "kl_uniform", "sv_norm", "anisotropy", "cka_final", "cka_prev_debiased",
                 "probe_loss", "val_loss", "converged_fraction", "grad_per"):
        assert catalogue.get(name).label
    with pytest.raises(KeyError, match="unknown metric"):
        catalogue.get("no_such_metric")
    assert catalogue.get("grad_per").label.endswith("of the gradient")


def run(*args):
    return subprocess.run([sys.executable, "-m", "lmdynamics.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_one_command_lists_subcommands_and_configs_and_refuses_unknown_ones():
    res = run()
    assert res.returncode == 0 and all(s in res.stdout for s in ("fit", "validate", "analyze", "report", "convergence"))
    res = run("configs")
    assert res.returncode == 0 and "configs/train/demo.yaml" in res.stdout and "configs/analysis/demo-run.yaml" in res.stdout
    res = run("frobnicate")
    assert res.returncode == 2 and res.stderr.strip().startswith("error: unknown subcommand 'frobnicate'")
    res = run("analyze", "--config", "configs/analysis/no-such.yaml")
    assert res.returncode == 2 and "does not exist" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("report", "--table", "/no/such/run")
    assert res.returncode == 2 and "no tidy table" in res.stderr
