"""Live measurement: the callbacks' record, live == offline, no effect on training, distributed, bad input."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lmdynamics import store
from lmdynamics.callbacks.head_rank import HeadRank
from lmdynamics.measure import activation_metric_rows, weight_metric_rows
from lmdynamics.probes import ProbeSet, capture, load_activations
from lmdynamics.training.cli import main

from tests.helpers.callbacks import drive
from tests.helpers.cli import losses, run_cli, tiny_config

REC = "tests.helpers.callbacks.LossRecorder"


def measured_config(tmp_path, **over):
    return tiny_config(tmp_path, **{"probe": {"num_sequences": 16, "positions": 2, "batch_size": 8},
                                    "weight_rank": {"gradients": True}, **over})


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("measured")
    res = run_cli("fit", "--config", str(measured_config(tmp)), "--run.report", "true", "--trainer.callbacks+=" + REC,
                  "--trainer.callbacks.path", str(tmp / "loss.jsonl"))
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp, tmp / "runs" / "tiny"


@pytest.mark.slow
def test_the_record_holds_every_measurement(measured_run):
    _, run = measured_run
    table = store.read_table(store.table_path(run))
    steps = [0, 1, 2, 3, 6]  # the checkpoint schedule of the tiny config
    by_metric = table.groupby("metric")["step"].apply(lambda s: sorted(set(s)))
    assert by_metric["cka_prev"] == steps[1:]
    assert by_metric["cka_final"] == steps and by_metric["per"] == steps
    assert by_metric["grad_per"] == steps[:-1]  # the gradient at the weights of a step: none after the last
    final = table[(table.metric == "cka_final") & (table.step == 6)]
    assert (final.value - 1.0).abs().max() < 1e-6  # CKA of the final activations with themselves
    layer_comps = set(map(tuple, table[table.metric == "cka_final"][["layer", "component"]].values))
    for layer in (0, 1):
        for comp in ("ov", "ov_head00", "ov_head03", "attn", "mlp", "resid"):
            assert (layer, comp) in layer_comps
    per = table[table.metric == "per"]
    assert set(per.component) >= {"qkv", "dense", "mlp_in", "mlp_out", "ov_head00", "ov_head03", "embed_in", "head"}
    assert per.value.between(0, 1).all() and (per.value > 0).all()
    spectrum = table[(table.component == "head") & (table.metric == "sv_norm")]
    assert sorted(set(spectrum.step)) == steps and set(spectrum.layer) == {-1}
    one = spectrum[spectrum.step == 6].sort_values("index")
    assert one.value.iloc[0] == pytest.approx(1.0) and one.value.is_monotonic_decreasing
    assert {"kl_uniform"} <= set(table[table.component == "head"].metric)
    # anisotropy of every (layer, component) captured, as the offline analysis measures it
    aniso = table[table.metric == "anisotropy"]
    assert set(zip(aniso.layer, aniso.component)) == layer_comps | {(-1, "final")}
    model_rows = table[table.component == "model"]
    assert {"train_loss", "val_loss", "lr", "grad_norm"} <= set(model_rows.metric)
    assert table[table.metric == "converged_fraction"].step.unique().tolist() == [6]
    assert (table.tokens == table.step * 4 * 32).all()
    csv = pd.read_csv(run / "csv" / "metrics.csv")
    assert "cka_prev/layer01/mlp" in csv and "per/layer00/qkv" in csv and "kl_uniform/head" in csv
    report = run / "report" / "report.md"
    assert report.is_file() and list((run / "report" / "figures").glob("*.png"))


@pytest.mark.slow
def test_live_equals_offline(measured_run):
    """Weights, probe activations and CKA recomputed offline from a saved checkpoint equal the live record."""
    from lmdynamics.checkpoints import iter_tensors

    _, run = measured_run
    table = store.read_table(store.table_path(run))
    probe = ProbeSet.load(run / "probe.safetensors")
    model = GPTNeoXForCausalLM.from_pretrained(run / "checkpoints" / "step00000003")
    acts = capture(model, probe, batch_size=8)
    stored = load_activations(run / "activations" / "step00000003.safetensors")
    assert set(acts) == set(stored)
    for key in acts:  # stored in fp16
        assert torch.allclose(acts[key].half().float(), stored[key].float(), atol=1e-3, rtol=1e-3), key
    final = load_activations(run / "activations" / "step00000006.safetensors")
    offline = pd.DataFrame(activation_metric_rows(stored, final, metric="cka_final"))
    live = table[(table.step == 3) & (table.metric == "cka_final")]
    merged = live.merge(offline, on=["layer", "component", "metric"])
    assert len(merged) == len(offline) and (merged.value_x - merged.value_y).abs().max() < 1e-9
    # cka_prev too: the live value is computed from the activations as stored, as the offline one
    previous = load_activations(run / "activations" / "step00000002.safetensors")
    offline_prev = pd.DataFrame(activation_metric_rows(stored, previous, metric="cka_prev"))
    live_prev = table[(table.step == 3) & (table.metric == "cka_prev")]
    merged = live_prev.merge(offline_prev, on=["layer", "component", "metric"])
    assert len(merged) == len(offline_prev) and (merged.value_x - merged.value_y).abs().max() < 1e-9
    offline_w = pd.DataFrame(weight_metric_rows(iter_tensors(run / "checkpoints" / "step00000003"),
                                                model.config.num_attention_heads, spectrum=True))
    offline_w["index"] = offline_w["index"].fillna(-1).astype(int)  # rows of the head's spectrum carry an index
    live_w = table[(table.step == 3) & table.metric.isin(offline_w.metric.unique()) & ~table.metric.str.startswith("grad_")]
    merged = live_w.merge(offline_w, on=["layer", "component", "metric", "index"])
    assert len(merged) == len(offline_w)
    assert np.allclose(merged.value_x, merged.value_y, rtol=1e-6, atol=1e-9, equal_nan=True)  # inf == inf too


@pytest.mark.slow
def test_measurement_does_not_change_training(measured_run, tmp_path):
    tmp, _ = measured_run
    off = ["--probe.num_sequences", "16", "--convergence.enabled", "false", "--weight_rank.enabled", "false",
           "--head_rank.enabled", "false"]
    res = run_cli("fit", "--config", str(tiny_config(tmp_path)), *off, "--trainer.callbacks+=" + REC,
                  "--trainer.callbacks.path", str(tmp_path / "loss.jsonl"))
    assert res.returncode == 0, res.stderr[-3000:]
    on, plain = losses(tmp / "loss.jsonl"), losses(tmp_path / "loss.jsonl")
    assert sorted(on) == [1, 2, 3, 4, 5, 6] and on == plain


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--probe.num_sequences", "100000"], "exceeds the"),
        (["--convergence.every", "0"], "every must be a positive"),
        (["--weight_rank.every", "0"], "every must be a positive"),
    ],
)
def test_bad_measurement_config(tmp_path, capsys, extra, words):
    assert main(["fit", "--config", str(measured_config(tmp_path)), *extra]) == 2
    assert words in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "runs" / "tiny").exists()


def test_reference_of_another_size_is_refused(tmp_path, capsys):
    ref = tmp_path / "ref"
    GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=256, vocab_size=512)).save_pretrained(ref)
    assert main(["fit", "--config", str(measured_config(tmp_path)), "--convergence.reference", str(ref)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "3 layers of width 64" in line and "2 of width 32" in line
    assert not (tmp_path / "runs" / "tiny").exists()


def test_saturation_monitor_needs_both_signals(tmp_path):
    recorded = []

    def fake(val_losses, kls):
        cb = HeadRank(loss_margin=0.05, kl_jump=0.1)
        cb.record = lambda trainer, module, step, rows: recorded.append((step, rows))
        trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, default_root_dir=str(tmp_path),
                                  callback_metrics={}, global_step=0)
        events = []
        for step, (val, kl) in enumerate(zip(val_losses, kls)):
            cb.kl_history.append(kl)
            trainer.global_step, trainer.callback_metrics = step, {"val_loss": torch.tensor(val)}
            before = len(cb.events)
            cb.on_validation_end(trainer, None)
            if len(cb.events) > before:
                events.append(step)
        return events

    # loss falls then rises by 0.1 at step 4; KL falls then jumps 30% at step 4
    assert fake([3.0, 2.5, 2.2, 2.2, 2.3, 2.4], [1.0, 0.8, 0.7, 0.7, 0.91, 0.95]) == [4]
    assert fake([3.0, 2.5, 2.2, 2.2, 2.3, 2.4], [1.0, 0.8, 0.7, 0.7, 0.72, 0.71]) == []  # no KL jump
    assert fake([3.0, 2.5, 2.2, 2.2, 2.2, 2.1], [1.0, 0.8, 0.7, 0.7, 0.91, 0.95]) == []  # no loss rise
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["step"] == 4


def test_head_rank_values_on_a_designed_head_and_probe(tmp_path):
    """Head W = U diag(4, 2, 1, 1) V^T: p = (1/2, 1/4, 1/8, 1/8), H = 1.75 ln 2, so ER = 2^1.75, PER = ER / 4,
    KL-to-uniform = ln 4 - H = 0.25 ln 2, stable rank 22/16, condition number 4, spectrum (1, 1/2, 1/4, 1/4).
    Last-layer residual rows e1, e2, e1, e2: anisotropy 4 / 12; final hidden rows on one ray: anisotropy 1."""
    model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=4, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=8, vocab_size=10))
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(10, 4, generator=g)).Q
    v = torch.linalg.qr(torch.randn(4, 4, generator=g)).Q
    with torch.no_grad():
        model.get_output_embeddings().weight.copy_(u @ torch.diag(torch.tensor([4.0, 2.0, 1.0, 1.0])) @ v.T)
    e = torch.eye(4)
    acts = {(1, "resid"): torch.stack([e[0], e[1], e[0], e[1]]), (-1, "final"): torch.tensor([[1.0, 2, 0, 0]]) * torch.tensor([[1.0], [2], [0.5], [3]]),
            (0, "resid"): torch.randn(4, 4, generator=g)}
    table = drive(HeadRank(every=1), tmp_path / "run", lambda step: acts, model=model, stop=2)
    head = table[(table.component == "head") & (table.step == 2)].set_index("metric")["value"]
    er = 2**1.75
    assert head["er"] == pytest.approx(er, rel=1e-6) and head["per"] == pytest.approx(er / 4, rel=1e-6)
    assert head["kl_uniform"] == pytest.approx(0.25 * np.log(2), rel=1e-5)
    assert head["stable_rank"] == pytest.approx(22 / 16, rel=1e-6) and head["condition_number"] == pytest.approx(4, rel=1e-6)
    spectrum = table[(table.metric == "sv_norm") & (table.step == 2)].sort_values("index")
    assert spectrum["index"].tolist() == [0, 1, 2, 3] and set(spectrum["layer"]) == {-1} and set(spectrum["component"]) == {"head"}
    assert spectrum["value"].tolist() == pytest.approx([1, 0.5, 0.25, 0.25], rel=1e-6)
    aniso = table[(table.metric == "anisotropy") & (table.step == 2)].set_index(["layer", "component"])["value"]
    assert set(aniso.index) == set(acts)  # every (layer, component) of the probe
    assert aniso[(1, "resid")] == pytest.approx(1 / 3) and aniso[(-1, "final")] == pytest.approx(1.0)
    assert sorted(set(table[table.metric == "kl_uniform"].step)) == [0, 1, 2]


def test_saturation_thresholds_are_strict(tmp_path):
    """An event needs validation loss strictly above its minimum + loss_margin and KL-to-uniform strictly
    above (1 + kl_jump) x its earlier minimum; values exactly on a threshold do not count."""
    def events(val_losses, kls):
        cb = HeadRank(loss_margin=0.5, kl_jump=0.25)
        cb.record = lambda *args, **kwargs: None
        trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, default_root_dir=str(tmp_path),
                                  callback_metrics={}, global_step=0)
        for step, (val, kl) in enumerate(zip(val_losses, kls)):
            cb.kl_history.append(kl)
            trainer.global_step, trainer.callback_metrics = step, {"val_loss": torch.tensor(val, dtype=torch.float64)}
            cb.on_validation_end(trainer, None)
        return [e["step"] for e in cb.events]

    assert events([2.0, 2.5], [1.0, 2.0]) == []  # loss exactly margin above its minimum
    assert events([2.0, 2.5001], [1.0, 2.0]) == [1]
    assert events([2.0, 3.0], [1.0, 1.25]) == []  # KL exactly 25% above its minimum
    assert events([2.0, 3.0], [1.0, 1.2501]) == [1]
    assert events([2.0, 1.5, 2.25, 2.0], [1.0, 0.8, 1.01, 1.1]) == [2]  # against the running minimum 1.5 and 0.8
    assert events([2.0, 3.0, 3.1, 1.0, 3.0], [1.0, 2.0, 2.1, 2.2, 2.3]) == [1, 4]  # re-armed after a fall
