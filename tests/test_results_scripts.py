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


def _head_run(root: Path, name: str, head: dict, val: float, true_loss: float = 2.0) -> Path:
    """A finished section-1 run (saturation_organism.py heads): its head, final validation loss and head ER."""
    run = _run(root, name, 10, {10: val})
    (run / "run.json").write_text(json.dumps({
        "run": name, "max_steps": 10, "tokens_per_step": 4, "hidden_size": 64, "context_length": 8,
        "architecture": {"head": {"kind": head["kind"], "rank": head.get("rank"), "components": head.get("components")}},
        "synthetic": {"entropy_floor": 1.9, "val_true_loss": true_loss}}))
    store.append(store.table_path(run), [{"run": name, "model": "m", "step": 10, "tokens": 40, "layer": -1,
                                          "component": "head", "metric": "er", "value": 3.0}])
    return run


def test_heads_compares_each_sweep_with_its_own_low_rank_and_full_heads(tmp_path, monkeypatch):
    """saturation_organism.py heads over two run roots that both hold a rank-16 and a plain head (e.g. with and
    without weight decay on the head): the mixture's share is taken against the rank-r head of its own root, and
    the full-rank excess each row subtracts is its own root's plain head (the old code stopped on the repeated r)."""
    module = _script("saturation_organism")
    monkeypatch.setattr(module, "rank_optimum", lambda spec, r, ctx: 0.5 if r == 16 else 0.1)
    a, b = tmp_path / "a", tmp_path / "b"
    _head_run(a, "a-r16", {"kind": "low_rank", "rank": 16}, 2.5)
    _head_run(a, "a-mos4r16", {"kind": "mos", "rank": 16, "components": 4}, 2.1)
    _head_run(a, "a-plain", {"kind": "plain"}, 2.05)
    _head_run(b, "b-r16", {"kind": "low_rank", "rank": 16}, 2.4)
    _head_run(b, "b-plain", {"kind": "plain"}, 2.02)
    table = module.heads([a, b], optimum=True).set_index("group")
    assert table.loc["a-mos4r16", "share of low_rank r's excess removed"] == pytest.approx(1 - 0.1 / 0.5)
    full = table["(excess - full-rank excess) / optimum"]
    assert full["a-r16"] == pytest.approx((0.5 - 0.05) / 0.5) and full["b-r16"] == pytest.approx((0.4 - 0.02) / 0.5)
    assert full["a-plain"] == pytest.approx(0.0) and full["b-plain"] == pytest.approx(0.0)


def test_head_spectrum_reads_the_head_through_the_final_layer_norm_gain(tmp_path):
    """saturation_organism.py spectrum: a weight decay on the head can be undone by the final LayerNorm's gain
    (a vector, not decayed), since logits = (g * normalised h) W^T. Halving W and doubling g leaves the effective
    head W diag(g) (and so every prediction) unchanged: its singular values must not move while W's halve."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, max_position_embeddings=8))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"max_steps": 10}))
    model.save_pretrained(run / "checkpoints" / "step00000000")
    with torch.no_grad():
        model.gpt_neox.final_layer_norm.weight.uniform_(0.5, 1.5)
        model.save_pretrained(run / "checkpoints" / "step00000010")  # as trained: some gain g
        model.get_output_embeddings().weight.mul_(0.5)
        model.gpt_neox.final_layer_norm.weight.mul_(2.0)
    before = _script("saturation_organism").head_spectrum(run, R=8)
    model.save_pretrained(run / "checkpoints" / "step00000010")  # W / 2, g x 2: the same predictions
    after = _script("saturation_organism").head_spectrum(run, R=8)
    assert after["sigma_1..8 final (mean)"] == pytest.approx(before["sigma_1..8 final (mean)"] / 2)
    assert after["mean |final LayerNorm gain| (final)"] == pytest.approx(2 * before["mean |final LayerNorm gain| (final)"])
    assert after["sigma_1..8 of W diag(g) final (mean)"] == pytest.approx(before["sigma_1..8 of W diag(g) final (mean)"])
    assert after["sigma_1..8 of W diag(g) final (mean)"] != pytest.approx(after["sigma_1..8 final (mean)"])


def _monitored_run(root: Path, name: str, val: dict[int, float], kl: dict[int, float], live_steps=()) -> Path:
    """A finished run with the head's KL-to-uniform and ER logged and the live monitor's events written."""
    run = _run(root, name, max(val), val)
    store.append(store.table_path(run), [{"run": name, "model": "m", "step": s, "tokens": s, "layer": -1, "component": "head",
                                          "metric": metric, "value": v} for s, k in kl.items() for metric, v in (("kl_uniform", k), ("er", 8.0))])
    (run / "events.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in live_steps))
    return run


def test_alarm_counts_per_run_set_and_the_recorded_copy(tmp_path):
    """saturation_organism.py alarms: per run set (run root), the runs each rule fired in and its events; a planted
    climb with a head-KL jump fires the current rule, a plateau with noise 1e-3 fires nothing; the recorded
    runs.csv's final loss and event count sit next to the rerun's, matched by run name."""
    module = _script("saturation_organism")
    steps = range(100, 1500, 100)
    plateau = {s: 2.0 + 0.001 * (i % 2) for i, s in enumerate(steps)}
    climb = {**{s: v for s, v in plateau.items() if s <= 1000}, 1100: 2.05, 1200: 2.10, 1300: 2.15, 1400: 2.20}
    _monitored_run(tmp_path / "a", "collapse", climb, {s: 0.5 if s <= 1000 else 1.0 for s in steps}, live_steps=[1300])
    _monitored_run(tmp_path / "b", "quiet", plateau, {s: 0.5 for s in steps})
    import pandas as pd
    pd.DataFrame({"run": ["quiet"], "final_val_loss": [2.0011], "saturation_events": [0]}).to_csv(tmp_path / "runs.csv", index=False)
    table = module.alarms([tmp_path / "a", tmp_path / "b"], recorded=tmp_path / "runs.csv")
    counts = module.alarm_counts(table).set_index("run set")
    a, b = counts.loc[str(tmp_path / "a")], counts.loc[str(tmp_path / "b")]
    assert (a["runs"], a["live: runs with events"], a["live: events"], a["current rule: runs with events"]) == (1, 1, 1, 1)
    assert a["current rule: events"] >= 1 and a["first rule: runs with events"] == 1
    assert b["runs"] == 1 and all(b[f"{rule}: events"] == 0 for rule in module.ALARM_COUNTS)
    quiet = table.set_index("run").loc["quiet"]
    assert (quiet["recorded final"], quiet["recorded events"]) == (pytest.approx(2.0011), 0)
    assert math.isnan(table.set_index("run").loc["collapse", "recorded final"])


@pytest.mark.slow  # a subprocess per case
@pytest.mark.parametrize("argv", [["--help"], ["heads", "--help"], [], ["nosuchcommand"]])
def test_saturation_organism_script_answers_help_and_unknown_commands_with_its_usage(argv):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "results" / "saturation_organism.py"), *argv],
                         capture_output=True, text=True, timeout=120)
    helped = "--help" in argv
    assert out.returncode == (0 if helped else 2), out.stderr
    assert "Traceback" not in out.stderr
    if helped:
        assert "saturation_organism.py heads" in out.stdout
    else:
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "heads" in lines[0], out.stderr


@pytest.mark.slow  # a subprocess
def test_saturation_organism_script_names_a_missing_run_directory_in_one_line(tmp_path):
    import subprocess
    import sys
    missing = tmp_path / "no-such-root"
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "results" / "saturation_organism.py"), "heads", str(missing)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(missing) in lines[0], out.stderr


def _synthetic_run(root: Path, head_seed: int) -> Path:
    """A finished run of a tiny GPT-NeoX on a tiny synthetic language: run.json as training writes the fields the
    head-optimiser comparison reads, a step-0 checkpoint (initial head drawn with ``head_seed``) and a final one."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    synthetic = {"vocab_size": 24, "rank": 4, "classes": 3, "lags": [1], "logit_scale": 2.5, "seed": 0, "zipf": 0.0}
    info = {"max_steps": 20, "context_length": 8, "seed": 1234, "tokens_per_step": 32, "synthetic": synthetic,
            "optimizer": {"betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "head_weight_decay": None},
            "schedule": {"max_steps": 20, "warmup_steps": 1, "min_lr_ratio": 0.1, "peak_lr": 0.01}}
    run = root / f"run{head_seed}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(info))
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=24, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16, max_position_embeddings=8))
    with torch.no_grad():  # a trained final LayerNorm has a bias: the features span all d directions
        model.gpt_neox.final_layer_norm.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    model.save_pretrained(run / "checkpoints" / "step00000020")  # the "trained" model
    with torch.no_grad():
        model.get_output_embeddings().weight.copy_(torch.randn(24, 8, generator=torch.Generator().manual_seed(head_seed)) * 0.02)
    model.save_pretrained(run / "checkpoints" / "step00000000")
    return run


def test_true_log_probs_align_with_the_language_own_true_loss():
    """saturation_organism.true_log_probs[:, t - 1] is log p(x_t | x_<t): at the sampled symbols its mean is the
    sample's true loss computed by the language itself (SyntheticLanguage.true_loss, a separate code path)."""
    import torch

    from lmdynamics.data.synthetic import SyntheticLanguage, SyntheticSpec

    lang = SyntheticLanguage(SyntheticSpec(vocab_size=24, rank=4, classes=3, lags=(1, 2)))
    blocks = lang.blocks(range(40), 9, 7, "val")
    logp, states = _script("saturation_organism").true_log_probs(lang, blocks)
    at_symbols = torch.from_numpy(logp).gather(-1, blocks[:, 1:, None]).squeeze(-1)
    assert states.shape == (40, 8)
    assert float(-at_symbols.mean()) == pytest.approx(lang.true_loss(blocks), rel=1e-12)


def test_head_optimisers_trained_row_and_a_minimiser_that_does_not_depend_on_the_start(tmp_path):
    """saturation_organism.py optimisers: the run's own head, read through the cached features, has the exact KL
    the full model's forward pass gives (context_kl, another code path); the float64 minimiser of the expected loss
    is unique up to the vocabulary-mean direction, so two different initial heads give the same minimiser (KL and
    the ER of its centred matrix), with a vanishing gradient; every retrained row is a finite KL."""
    module = _script("saturation_organism")
    a, b = _synthetic_run(tmp_path, head_seed=1), _synthetic_run(tmp_path, head_seed=2)
    rows_a = module.head_optimisers(a, n_exact=48, n_val=32, sgd_lrs=(0.5,), R=4, rounds=10, tolerance=5e-7).set_index("head")
    rows_b = module.head_optimisers(b, n_exact=48, n_val=32, sgd_lrs=(0.5,), R=4, rounds=10, tolerance=5e-7).set_index("head")
    trained = "trained (the run's own head)"
    assert rows_a.loc[trained, "exact KL"] == pytest.approx(module.context_kl(a, n_blocks=32)["KL (exact, mean)"], rel=1e-4)
    full = "float64 minimiser of the expected loss (L-BFGS)"
    assert rows_a.loc[full, "gradient norm"] < 1e-6
    for column in ("exact KL", "ER (vocabulary mean removed)"):
        assert rows_a.loc[full, column] == pytest.approx(rows_b.loc[full, column], rel=1e-4)
    assert rows_a.loc[full, "ER"] != pytest.approx(rows_b.loc[full, "ER"], rel=1e-4)  # the start's mean direction stays
    assert rows_a["exact KL"].between(0, 10).all() and len(rows_a) == 7
    assert rows_a.loc["the true distribution (rank 4)", "ER of the logits"] <= 4 + 1e-9  # ER <= rank
