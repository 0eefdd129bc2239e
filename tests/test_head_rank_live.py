"""The live head monitor (``callbacks.head_rank.HeadRank``) driven through its hooks on tiny GPT-NeoX models: the
numbers it logs against a float64 recomputation of each kind of head, the steps it measures, the spectrum's
steps, the rows and events it writes, its settings reaching its rule, and what other ranks, a sanity check or a
disabled monitor do. Fast (no training run, no subprocess): ``make mutate``'s selection for the module."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig

from lmdynamics import store
from lmdynamics.callbacks.head_rank import HeadRank, SaturationRule
from lmdynamics.measure import tag_rows
from lmdynamics.models.heads import HeadSpec, build_causal_lm

from tests.helpers.callbacks import drive

TOKENS_PER_STEP = 10


def tiny_model(kind: str = "plain", rank: int | None = None, components: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    config = GPTNeoXConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                           vocab_size=32)
    return build_causal_lm(config, HeadSpec(kind=kind, rank=rank, components=components))


def head_matrices_64(model) -> dict[str, np.ndarray]:
    """The V x d matrix each head computes with, read from the head module's own parameters in float64."""
    head = model.get_output_embeddings()
    f64 = lambda p: p.detach().double().numpy()  # noqa: E731
    low_rank = lambda h: f64(h.A) @ f64(h.B)  # noqa: E731
    if hasattr(head, "heads"):  # a mixture of softmaxes: each component's matrix
        return {f"head_c{k:02d}": low_rank(h) if hasattr(h, "A") else f64(h.weight) for k, h in enumerate(head.heads)}
    return {"head": low_rank(head) if hasattr(head, "A") else f64(head.weight)}


def spectrum_values_64(w: np.ndarray) -> dict[str, float]:
    """Effective rank exp(H(p)), p = s / sum(s) (Roy & Vetterli 2007), PER = ER / min(V, d), KL(p || uniform) =
    ln n - H(p), stable rank sum(s^2) / s_max^2, from numpy's float64 singular values."""
    s = np.linalg.svd(w, compute_uv=False)
    p = s / s.sum()
    nz = p[p > 0]
    entropy = -(nz * np.log(nz)).sum()
    return {"er": math.exp(entropy), "per": math.exp(entropy) / len(s), "kl_uniform": math.log(len(s)) - entropy,
            "stable_rank": (s**2).sum() / s.max() ** 2}


def set_spectra(model, step: int) -> None:
    """Give every head matrix a different, step-dependent spectrum (random factors, scaled columns), so that a
    value taken from the wrong matrix, the wrong step or the wrong component differs."""
    g = torch.Generator().manual_seed(100 + step)
    head = model.get_output_embeddings()
    with torch.no_grad():
        for p in head.parameters():
            if p.ndim == 2:
                scale = torch.linspace(1.0, 0.05 + 0.1 * step, p.shape[1]) ** (1 + step % 3)
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def trainer_for(run, max_steps: int = 4, **over):
    return SimpleNamespace(**{"is_global_zero": True, "global_step": 0, "accumulate_grad_batches": 1,
                              "max_steps": max_steps, "default_root_dir": str(run), "loggers": [], "world_size": 1,
                              "global_rank": 0, "sanity_checking": False, "callback_metrics": {}, **over})


def module_for(model=None):
    return SimpleNamespace(model=model, spec=SimpleNamespace(name="m"), tokens_per_step=TOKENS_PER_STEP)


def wired(cb: HeadRank, acts=None) -> HeadRank:
    cb.probe = lambda trainer=None: SimpleNamespace(activations=lambda trainer, module, step: acts or {})
    return cb


HEADS = [("plain", None), ("low_rank", 3), ("mos", None), ("mos", 2)]


@pytest.mark.parametrize("kind, rank", HEADS, ids=["plain", "low_rank3", "mos3", "mos3_rank2"])
def test_logged_head_values_are_the_float64_spectrum_of_the_matrix_each_head_computes_with(tmp_path, kind, rank):
    """At every measured step, each head component's ER, PER, KL-to-uniform and stable rank are those of its own
    V x d matrix (a low-rank head's A B, each mixture component's W_k or A_k B_k), its ``sv_norm`` rows are s / s_max
    in order, and the monitor's KL is the head's (a mixture's: the mean over its components)."""
    model = tiny_model(kind, rank)
    cb = HeadRank(every=1)
    expected, monitor = {}, {}

    def measure(trainer, pl_module, step):  # the head changes between measurements, as in training
        set_spectra(model, step)
        mats = head_matrices_64(model)
        expected[step] = {c: (spectrum_values_64(w), np.linalg.svd(w, compute_uv=False)) for c, w in mats.items()}
        monitor[step] = float(np.mean([v["kl_uniform"] for v, _ in expected[step].values()]))
        return HeadRank.measure(cb, trainer, pl_module, step)

    cb.measure = measure
    table = drive(cb, tmp_path / "run", lambda step: {}, model=model, stop=3, tokens_per_step=TOKENS_PER_STEP)
    heads = table[table.layer == -1]
    components = {"head"} if kind != "mos" else {"head_c00", "head_c01", "head_c02"}
    assert set(heads[heads.metric == "kl_uniform"].component) == components
    for step, per_component in expected.items():
        at = heads[heads.step == step]
        assert set(at.tokens) == {step * TOKENS_PER_STEP}
        for component, (values, s) in per_component.items():
            rows = at[at.component == component]
            scalars = rows[rows["index"] == store.NO_INDEX].set_index("metric")["value"]
            for metric, value in values.items():
                assert scalars[metric] == pytest.approx(value, rel=1e-5), (step, component, metric)
            spectrum = rows[rows.metric == "sv_norm"].sort_values("index")
            assert spectrum["index"].tolist() == list(range(len(s)))
            assert spectrum["value"].to_numpy() == pytest.approx(s / s.max(), rel=1e-5, abs=1e-6)
    assert dict(cb.rule.kls) == pytest.approx(monitor, rel=1e-5)


def test_logged_anisotropy_is_the_mean_pairwise_cosine_of_every_probe_activation(tmp_path):
    """Every (layer, component) the probe captures gets an ``anisotropy`` row: the mean cosine similarity over
    distinct pairs of its vectors, recomputed in float64."""
    g = torch.Generator().manual_seed(1)
    acts = {(0, "resid"): torch.randn(5, 8, generator=g), (0, "mlp"): torch.randn(6, 8, generator=g) + 2.0,
            (-1, "final"): torch.randn(4, 8, generator=g) - 1.0}

    def mean_cosine(x):
        x = x.double().numpy()
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        c = u @ u.T
        n = len(x)
        return (c.sum() - np.trace(c)) / (n * (n - 1))

    table = drive(HeadRank(every=1), tmp_path / "run", lambda step: acts, model=tiny_model(), stop=1)
    aniso = table[(table.metric == "anisotropy") & (table.step == 1)].set_index(["layer", "component"])["value"]
    assert set(aniso.index) == set(acts)
    for key, x in acts.items():
        assert aniso[key] == pytest.approx(mean_cosine(x), rel=1e-5), key


def test_live_anisotropy_through_the_run_probe_is_that_of_the_model_activations_captured_offline(tmp_path):
    """With the run's own ``Probe`` callback (its probe set of validation blocks), the logged anisotropy of each
    captured (layer, component) is that of the activations ``probes.capture`` gives offline for the same model
    and probe (float64 mean pairwise cosine), and the probe's forward pass runs once per step."""
    from lmdynamics.callbacks.probe import Probe
    from lmdynamics.probes import ProbeSet, capture

    model = tiny_model().eval()
    g = torch.Generator().manual_seed(2)
    probe = Probe(num_sequences=6, positions=2, batch_size=4, components=["resid", "final"])
    probe.probe = ProbeSet.from_sequences(torch.randint(0, 32, (10, 12), generator=g), num_sequences=6, positions=2)
    cb = HeadRank(every=1)
    cb.attach(probe)
    rows = cb.measure(trainer_for(tmp_path), module_for(model), 1)
    offline = capture(model, probe.probe, batch_size=4, components=("resid", "final"))
    aniso = {(r["layer"], r["component"]): r["value"] for r in rows if r["metric"] == "anisotropy"}
    assert set(aniso) == set(offline) and len(aniso) == 2  # the last layer's residual stream and the final state

    def mean_cosine(x):
        u = x.double().numpy()
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        return ((u @ u.T).sum() - len(u)) / (len(u) * (len(u) - 1))

    for key, x in offline.items():
        assert x.shape[0] == 12 and aniso[key] == pytest.approx(mean_cosine(x), rel=1e-5), key
    assert probe.activations(None, None, 1) is probe._cache[1]  # captured once for the step


@pytest.mark.parametrize("every, log_cap, schedule, expected", [
    (3, None, None, {0, 1, 2, 3, 6, 9, 12}),  # 0, powers of two up to every, multiples of every, the last step
    (3, 8, None, {0, 1, 2, 3, 4, 6, 8, 9, 12}),  # powers of two up to log_cap
    (5, None, None, {0, 1, 2, 4, 5, 10, 12}),  # the last step though no multiple
    (None, None, (4, None), {0, 1, 2, 4, 8, 12}),  # empty: the checkpoint schedule's steps
    (None, None, None, set(range(13))),  # empty, no checkpoints: every max_steps // 10 = 1 steps
])
def test_the_head_is_measured_at_the_steps_of_its_schedule(tmp_path, every, log_cap, schedule, expected):
    """Steps 0, 1, 2, 4, ... (powers of two up to ``log_cap``, default ``every``), then every ``every`` steps, plus
    the last; the head's rows, the monitor's KLs and nothing else, once each."""
    cb = HeadRank(every=every, log_cap=log_cap)
    run = tmp_path / "run"
    original = cb.attach
    cb.attach = lambda probe=None, checkpoint_schedule=None: original(probe, schedule)
    table = drive(cb, run, lambda step: {}, model=tiny_model(), stop=12)
    kl = table[table.metric == "kl_uniform"]
    assert sorted(kl.step) == sorted(expected)
    assert [s for s, _ in cb.rule.kls] == sorted(expected)


@pytest.mark.parametrize("spectrum", ["checkpoints", "all", "none"])
def test_the_whole_spectrum_is_logged_at_checkpoint_steps_at_every_measurement_or_never(tmp_path, spectrum):
    """Measured every 3 steps of 12, checkpoints every 4: ``sv_norm`` rows at the measured steps that are also
    checkpoint steps (0, 1, 2, 12), at every measured step, or at none; the scalar measurements at every one."""
    cb = HeadRank(every=3, spectrum=spectrum)
    original = cb.attach
    cb.attach = lambda probe=None, checkpoint_schedule=None: original(probe, (4, None))
    table = drive(cb, tmp_path / "run", lambda step: {}, model=tiny_model(), stop=12)
    measured = {0, 1, 2, 3, 6, 9, 12}
    sv = table[table.metric == "sv_norm"]
    assert set(sv.step) == {"checkpoints": {0, 1, 2, 12}, "all": measured, "none": set()}[spectrum]
    assert sv.groupby("step").size().eq(8).all()  # min(V, d) values each
    assert set(table[table.metric == "er"].step) == measured


def test_without_checkpoints_the_spectrum_follows_every_measurement(tmp_path):
    """A run that saves no HF checkpoints (no checkpoint schedule): ``spectrum: checkpoints`` logs the spectrum at
    each measurement, so that the run still has one."""
    table = drive(HeadRank(every=2), tmp_path / "run", lambda step: {}, model=tiny_model(), stop=4)
    assert set(table[table.metric == "sv_norm"].step) == {0, 1, 2, 4}


def test_a_disabled_monitor_measures_and_writes_nothing(tmp_path):
    model = tiny_model()
    cb = wired(HeadRank(every=1, enabled=False))
    run = tmp_path / "run"
    table = drive(cb, run, lambda step: {}, model=model, stop=3)
    assert table.empty and cb.rule.kls == []
    trainer = trainer_for(run, global_step=3, callback_metrics={"val_loss": torch.tensor(9.0)})
    cb.on_validation_end(trainer, module_for(model))
    assert cb.rule.vals == []


def test_other_ranks_measure_with_rank_zero_but_record_and_monitor_nothing(tmp_path):
    """Rank 1 takes part in the probe's forward pass (its activations are asked for) but returns no rows, feeds no
    KL and no validation to the monitor and writes no event."""
    model = tiny_model()
    asked = []
    cb = HeadRank(every=1)
    cb.probe = lambda trainer=None: SimpleNamespace(activations=lambda trainer, module, step: asked.append(step))
    trainer = trainer_for(tmp_path, is_global_zero=False, global_rank=1, global_step=2,
                          callback_metrics={"val_loss": torch.tensor(5.0)})
    assert cb.measure(trainer, module_for(model), 2) is None and asked == [2]
    cb.on_validation_end(trainer, module_for(model))
    assert cb.rule.kls == [] and cb.rule.vals == [] and not list(tmp_path.iterdir())


def test_sanity_check_validations_and_missing_losses_are_not_fed_to_the_monitor(tmp_path):
    cb = HeadRank(every=1)
    trainer = trainer_for(tmp_path, sanity_checking=True, callback_metrics={"val_loss": torch.tensor(5.0)})
    cb.on_validation_end(trainer, module_for())
    trainer.sanity_checking, trainer.callback_metrics = False, {}
    cb.on_validation_end(trainer, module_for())
    assert cb.rule.vals == []
    trainer.global_step, trainer.callback_metrics = 7, {"val_loss": torch.tensor(4.5)}
    cb.on_validation_end(trainer, module_for())
    assert cb.rule.vals == [4.5] and cb.rule.best_step == 7  # the validation of the trainer's global step


def _fire_twice(run, **rule):
    """Two excursions of the loss, each with a jump of the head's KL: the monitor's events, the trainer, the warnings."""
    cb = wired(HeadRank(every=1, **rule))
    run.mkdir(parents=True, exist_ok=True)
    trainer = trainer_for(run, max_steps=10)
    vals = [3.0, 2.5, 2.2, 2.6, 2.7, 2.0, 1.9, 2.3, 2.4, 2.5]
    kls = [1.0, 0.8, 0.7, 1.0, 1.1, 0.9, 0.8, 1.2, 1.3, 1.4]
    with pytest.warns(UserWarning) as warned:
        for step, (val, kl) in enumerate(zip(vals, kls)):
            cb.rule.add_kl(step, kl)
            trainer.global_step, trainer.callback_metrics = step, {"val_loss": torch.tensor(val, dtype=torch.float64)}
            cb.on_validation_end(trainer, module_for())
    return cb, [str(w.message) for w in warned if "saturation" in str(w.message)]


def test_each_event_is_a_table_row_a_line_of_events_jsonl_and_a_warning_naming_its_numbers(tmp_path):
    """Patience 2, margin 0.1, no noise term, KL reference = the running minimum: events at steps 4 and 8. Each is
    a ``saturation_event`` row (layer -1, head, value 1, the step's tokens), a line of ``events.jsonl`` (appended,
    the event itself) and a warning with the step, the loss, its minimum and step, the patience and both KLs."""
    run = tmp_path / "run"
    cb, warnings = _fire_twice(run, patience=2, loss_margin=0.1, noise_factor=0.0, kl_reference="min")
    assert [e["step"] for e in cb.events] == [4, 8]
    assert [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()] == cb.events
    documented = ["event", "step", "val_loss", "best_val_loss", "best_step", "margin", "kl_uniform", "kl_uniform_reference"]
    for line in (run / "events.jsonl").read_text().splitlines():  # docs/outputs.md's format
        event = json.loads(line)
        assert list(event) == documented and event["event"] == "saturation" and event["margin"] == pytest.approx(0.1)
    first = cb.events[0]
    assert first["val_loss"] == pytest.approx(2.7) and first["best_val_loss"] == pytest.approx(2.2)
    assert first["best_step"] == 2 and first["kl_uniform"] == pytest.approx(1.1) and first["kl_uniform_reference"] == 0.7
    table = store.read_table(store.table_path(run))
    assert table[["step", "tokens", "layer", "component", "metric", "value"]].to_dict("records") == [
        {"step": s, "tokens": s * TOKENS_PER_STEP, "layer": -1, "component": "head", "metric": "saturation_event",
         "value": 1.0} for s in (4, 8)]
    assert len(warnings) == 2
    assert warnings[0] == ("[lmdynamics] saturation at step 4: validation loss 2.7000 has stayed above its minimum "
                           "2.2000 (step 2) for 2 validations while the head's KL-to-uniform jumped to 1.1000 "
                           "(from 0.7000)")
    assert warnings[1].startswith("[lmdynamics] saturation at step 8: validation loss 2.4000 has stayed above its minimum "
                                  "1.9000 (step 6)") and warnings[1].endswith("jumped to 1.3000 (from 0.7000)")


def test_the_monitor_settings_are_the_rule_it_applies(tmp_path):
    """Every setting reaches the rule under its own name (``noise_window`` is the rule's ``window``), and the
    monitor's defaults are the rule's (a replay without settings applies the live monitor's rule)."""
    settings = {"loss_margin": 0.07, "kl_jump": 0.3, "patience": 2, "noise_factor": 1.5, "kl_reference": "min"}
    cb = HeadRank(noise_window=3, **settings)
    assert vars(cb.rule) == vars(SaturationRule(window=3, **settings))
    assert cb.settings == {**settings, "window": 3}
    assert vars(HeadRank().rule) == vars(SaturationRule())
    from pathlib import Path

    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/train/demo.yaml").read_text())
    h = HeadRank()  # what a config that leaves a setting out gets: the demo config shows it
    rule = {k: v for k, v in h.settings.items() if k != "window"} | {"noise_window": h.settings["window"]}
    assert demo["head_rank"] == {"enabled": h.enabled, "every": h.every, "log_cap": h.log_cap, "spectrum": h.spectrum, **rule}
    # the same losses and KLs: patience 2 fires at the second risen validation, patience 3 at the third
    later, _ = _fire_twice(tmp_path / "p3", patience=3, loss_margin=0.1, noise_factor=0.0, kl_reference="min")
    assert [e["step"] for e in later.events] == [9]


@pytest.mark.parametrize("spectrum", ["checkpoint", "", None])
def test_an_unknown_spectrum_setting_is_refused(spectrum):
    with pytest.raises(ValueError, match="head_rank.spectrum"):
        HeadRank(spectrum=spectrum)


def _table_of(run, vals: dict[int, float], kls: dict[int, float]) -> None:
    rows = [{"layer": -1, "component": "model", "metric": "val_loss", "value": v, "_step": s} for s, v in vals.items()]
    rows += [{"layer": -1, "component": "head", "metric": "kl_uniform", "value": k, "_step": s} for s, k in kls.items()]
    for row in rows:
        step = row.pop("_step")
        store.append(store.table_path(run), tag_rows([row], run.name, "m", step, step * TOKENS_PER_STEP))


@pytest.mark.parametrize("checkpoint, stale", [(1, True), (1, False), (2, True), (5, True), (5, False)])
def test_a_resumed_monitor_replays_the_table_up_to_and_including_its_checkpoint_step(tmp_path, checkpoint, stale):
    """Resumed at Lightning's global step k (the checkpoint's step, from step 1 on): the monitor's rule is the one
    replayed over the table's validations and KLs at steps <= k with the monitor's settings; later rows (left by
    the killed process) are not seen, nor later events of its ``events.jsonl`` (``stale``); a run that never
    wrote one resumes too."""
    run = tmp_path / "run"
    run.mkdir()
    vals = dict(enumerate([3.0, 2.5, 2.9, 2.4, 2.9, 2.3, 2.35, 2.8]))  # risen at 2, 4 and 7
    kls = {s: 0.5 + 0.03 * s for s in range(8)}
    _table_of(run, vals, kls)
    settings = {"loss_margin": 0.01, "patience": 1, "noise_factor": 0.5, "kl_reference": "min"}
    cb = wired(HeadRank(every=1, noise_window=2, **settings))
    if stale:  # the killed process's event after the checkpoint
        (run / "events.jsonl").write_text(json.dumps({"event": "saturation", "step": 7}) + "\n")
    trainer = trainer_for(run, max_steps=8, global_step=checkpoint)
    cb.setup(trainer, module_for(tiny_model()), "fit")
    cb.on_train_start(trainer, module_for(tiny_model()))
    replayed, events = SaturationRule.replayed({s: v for s, v in vals.items() if s <= checkpoint},
                                               {s: k for s, k in kls.items() if s <= checkpoint},
                                               window=2, **settings)
    assert vars(cb.rule) == vars(replayed) and cb.events == events
    assert len(cb.rule.vals) == checkpoint + 1
    assert len(events) == {1: 0, 2: 1, 5: 2}[checkpoint]  # at 2 and 4 (then 7)
    if events:  # events.jsonl cut back to the replayed events, each once
        assert [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()] == events
    else:
        assert not (run / "events.jsonl").exists()


@pytest.mark.parametrize("over", [{"enabled": False}, {"rank": 1}, {"step": 0}])
def test_only_an_enabled_rank_zero_resumed_past_step_zero_replays_the_table(tmp_path, over):
    """A disabled monitor, another rank, or a run starting at step 0 leaves the table unread: the rule starts empty
    (rank 0 at step 0 measures the initial head, which is its only KL)."""
    run = tmp_path / "run"
    run.mkdir()
    _table_of(run, {0: 3.0, 1: 2.9, 2: 2.8}, {0: 0.5, 1: 0.6, 2: 0.7})
    cb = wired(HeadRank(every=1, enabled=over.get("enabled", True)))
    trainer = trainer_for(run, max_steps=4, global_step=over.get("step", 2), is_global_zero="rank" not in over)
    cb.setup(trainer, module_for(tiny_model()), "fit")
    cb.on_train_start(trainer, module_for(tiny_model()))
    assert cb.rule.vals == []
    assert [s for s, _ in cb.rule.kls] == ([0] if over == {"step": 0} else [])


def test_the_kl_reference_is_the_kl_measured_at_the_very_step_of_the_loss_minimum():
    """KL measured at every validation (``kl_reference: best``): the reference is the KL of the minimum's own step,
    not of the step before; once the loss has risen, the event names it."""
    val = {0: 3.0, 1: 2.6, 2: 2.5, 3: 2.7, 4: 2.8}  # minimum at step 2
    kl = {0: 0.40, 1: 0.45, 2: 0.50, 3: 0.60, 4: 0.65}
    events = SaturationRule.replay(val, kl, patience=2, noise_factor=0.0, loss_margin=0.1)
    assert [(e["step"], e["best_step"], e["kl_uniform_reference"]) for e in events] == [(4, 2, 0.50)]


def test_the_kl_reference_is_the_first_kl_when_the_head_was_first_measured_after_the_loss_minimum():
    """No KL at or before the loss minimum's step (the minimum is the first validation, the head is measured from
    step 1 on): the reference is the first KL measured, and a later jump above it fires."""
    val = {0: 2.0, 1: 2.5, 2: 2.6, 3: 2.7}
    kl = {1: 0.5, 2: 0.6, 3: 0.7}
    events = SaturationRule.replay(val, kl, patience=1, noise_factor=0.0)
    assert [(e["step"], e["kl_uniform_reference"], e["kl_uniform"]) for e in events] == [(2, 0.5, 0.6)]


def test_a_loss_equal_to_its_minimum_keeps_the_minimum_where_it_was_first_reached():
    """The loss minimum's step is where the running minimum was reached; a later validation only equal to it (the
    loss has not gone lower) does not move it, nor the KL reference taken there."""
    val = {0: 3.0, 1: 2.5, 2: 2.5, 3: 2.8, 4: 2.9}
    kl = {0: 0.4, 1: 0.5, 2: 0.7, 3: 0.74, 4: 0.76}
    events = SaturationRule.replay(val, kl, patience=2, noise_factor=0.0, loss_margin=0.1)
    assert [(e["step"], e["best_step"], e["kl_uniform_reference"]) for e in events] == [(4, 1, 0.5)]


def test_the_head_is_measured_as_gathered_where_its_weights_are_sharded(tmp_path, monkeypatch):
    """Under ZeRO-3 a rank holds a shard of the head: the monitor measures the whole matrix that
    ``distributed.gathered_weight`` returns, not the rank's own parameter (here a different matrix stands in for
    the gathered one)."""
    import lmdynamics.callbacks.head_rank as head_rank

    model = tiny_model()
    whole = (torch.randn(32, 8, generator=torch.Generator().manual_seed(5)) * torch.linspace(1, 0.01, 8)).double()
    asked = []
    monkeypatch.setattr(head_rank, "gathered_weight", lambda m, name: asked.append(name) or whole.clone())
    rows = wired(HeadRank(every=1)).measure(trainer_for(tmp_path), module_for(model), 1)
    values = {r["metric"]: r["value"] for r in rows if r["component"] == "head" and r.get("index", store.NO_INDEX) == store.NO_INDEX}
    assert asked and values["kl_uniform"] == pytest.approx(spectrum_values_64(whole.numpy())["kl_uniform"], rel=1e-9)
    own = spectrum_values_64(head_matrices_64(model)["head"])["kl_uniform"]
    assert abs(values["kl_uniform"] - own) > 0.01  # the rank's own matrix would give another value
