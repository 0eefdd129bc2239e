"""The catalogue drives the figures: a measurement declared here, with its figure, is computed by the shared
measurement code, drawn in the run report and overlaid in ``lmdynamics compare`` with no other change
(docs/architecture.md, "Adding a measurement")."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml

from lmdynamics import catalogue, cli, store
from lmdynamics.catalogue import Measurement
from lmdynamics.measure import tag_rows, weight_metric_rows

NAME = "top_singular_value_test"
HIDDEN, HEADS, LAYERS = 16, 2, 2


def _largest(s: torch.Tensor) -> float:
    return float(s.max())


DECLARED = Measurement(NAME, "spectrum", "largest singular value", "", _largest, "matrices", "rank",
                       figures=True, compare="layers", description="s_max of the matrix")


def _model(seed: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                           intermediate_size=4 * HIDDEN, max_position_embeddings=32)
    return GPTNeoXForCausalLM(config).eval()


def _run(root, name: str, hidden: int, seed: int):
    """A run directory whose table holds the declared measurement's rows of a real GPT-NeoX model at three steps (its
    weights scaled a little more each step), a validation loss, run.json and config.yaml."""
    model = _model(seed)
    run = root / name
    for step in (10, 20, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.05)
        rows = [r for r in weight_metric_rows(model.named_parameters(), HEADS) if r["metric"] == NAME]  # figures: its own
        rows.append({"layer": -1, "component": "model", "metric": "val_loss", "value": 3.0 - step / 100})
        store.append(store.table_path(run), tag_rows(rows, name, f"neox-d{hidden}", step, step * 64))
    (run / "run.json").write_text(json.dumps({"run": name, "model": f"neox-d{hidden}", "max_steps": 30,
                                              "tokens_per_step": 64, "hidden_size": hidden}))
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"model": {"hidden_size": hidden}}}))
    return run, model


@pytest.mark.parametrize("declared", [True, False])
def test_a_declared_measurement_is_measured_reported_and_compared(tmp_path, monkeypatch, declared):
    from lmdynamics.report.run_report import write_report

    entry = DECLARED if declared else replace(DECLARED, figures=False, compare="")
    monkeypatch.setitem(catalogue.CATALOGUE, NAME, entry)
    root = tmp_path / "runs"
    run, model = _run(root, "a", 16, 0)
    _run(root, "b", 32, 1)

    # measured by the shared code, equal to a float64 reference on a real matrix
    table = store.read_table(store.table_path(run))
    ours = table[(table.metric == NAME) & (table.step == 30) & (table.layer == 1) & (table.component == "mlp_in")]
    weight = model.gpt_neox.layers[1].mlp.dense_h_to_4h.weight.detach().double()
    assert float(ours["value"].iloc[0]) == pytest.approx(float(torch.linalg.matrix_norm(weight, ord=2)), rel=1e-5)

    # the run report draws its family's figures for it
    report = write_report(run, tmp_path / "report")
    text = report.read_text()
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    own = {f"{NAME}_steps__neox-d16.png", f"{NAME}_layers.png", f"grad_{NAME}_layers.png"} & figures
    assert own == ({f"{NAME}_steps__neox-d16.png", f"{NAME}_layers.png"} if declared else set())
    assert ("largest singular value (s_max of the matrix)" in text) == declared

    # compare overlays it over tokens, one line per run, through the command a user runs
    assert cli.main(["compare", str(root), "--out", str(tmp_path / "cmp")]) == 0
    compared = (tmp_path / "cmp" / "figures" / f"layers_{NAME}.png").is_file()
    assert compared == declared
    title = "### largest singular value (mean over the layers' weight matrices)"
    assert (title in (tmp_path / "cmp" / "report.md").read_text()) == declared


def test_the_metrics_command_lists_a_declared_measurement(monkeypatch, capsys):
    monkeypatch.setitem(catalogue.CATALOGUE, NAME, DECLARED)
    assert cli.main(["metrics"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(NAME + " "))
    assert "spectrum (matrices)" in line and "family rank (report figures), compare layers" in line
    assert line.rstrip().endswith("largest singular value: s_max of the matrix")


def test_every_figure_the_catalogue_names_is_drawn_by_the_report():
    """A kind or combined figure named in ``catalogue.FAMILIES`` has its drawing function in the report, and the
    report draws nothing the catalogue does not name (its registries hold exactly the names the families use)."""
    from lmdynamics.report.run_report import COMBINED_FIGURES, FIGURE_KINDS

    kinds = {k for f in catalogue.FAMILIES.values() for k in f.kinds}
    combined = [c for f in catalogue.FAMILIES.values() for c in f.combined]
    assert kinds == set(FIGURE_KINDS) and sorted(combined) == sorted(COMBINED_FIGURES)
    assert {m.family for m in catalogue.CATALOGUE.values() if m.figures} <= set(catalogue.FAMILIES)
