"""End to end: `python analysis/run.py` over an offline Hugging Face cache and local runs, in 2 processes.

The world: a local training run (4 checkpoints), a hub repo in an offline HF cache whose step1 is a
truncated safetensors file and whose step2 does not exist, a hub repo whose tokenizer does not match the
probe (another vocabulary at step0/step4, a smaller vocabulary at step1), and a run directory without
checkpoints. Every bad checkpoint must be reported in one line and recorded, the rest analysed, the exit
code non-zero; a second run must recompute nothing.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from lmdynamics import store
from lmdynamics.checkpoints import add_to_hf_cache, iter_tensors
from lmdynamics.checkpoints.synthetic import tiny_config, write_synthetic_run

ROOT = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(100)]
STEPS = [0, 1, 2, 4]


def word_tokenizer(path, shuffle_seed=None):
    from tokenizers import Tokenizer, models, pre_tokenizers

    order = list(WORDS)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    tok = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(order)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def cache_revisions(run_dir, repo, steps, cache):
    for step in steps:
        add_to_hf_cache(run_dir / "checkpoints" / f"step{step:08d}", repo, f"step{step}", cache)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    tok_a = word_tokenizer(w / "tok_a.json")
    tok_b = word_tokenizer(w / "tok_b.json", shuffle_seed=1)
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 30))) for _ in range(20)]
    (w / "probe.txt").write_text("\n\n".join(docs))
    run = write_synthetic_run(w / "runs" / "tiny", STEPS, tokenizer_file=tok_a, run="tinyrun", model_name="tiny", tokens_per_step=1024)
    cache = w / "hub"
    # Org/tiny-neox: step0, step1 (truncated below), step4; no step2
    src = write_synthetic_run(w / "src_neox", [0, 1, 4], tokenizer_file=tok_a, seed=5)
    cache_revisions(src, "Org/tiny-neox", [0, 1, 4], cache)
    snap1 = Path(cache / "models--Org--tiny-neox" / "snapshots")
    for snap in snap1.iterdir():
        f = snap / "model.safetensors"
        if (cache / "models--Org--tiny-neox" / "refs" / "step1").read_text() == snap.name:
            data = f.read_bytes()
            f.unlink()
            f.write_bytes(data[: len(data) // 3])
    # Org/badtok: another tokenizer at step0/step4, a 64-token vocabulary at step1; no step2
    other = write_synthetic_run(w / "src_bad", [0, 4], tokenizer_file=tok_b, seed=7)
    cache_revisions(other, "Org/badtok", [0, 4], cache)
    small = write_synthetic_run(w / "src_small", [1], config=tiny_config(vocab_size=64), tokenizer_file=None, seed=9)
    cache_revisions(small, "Org/badtok", [1], cache)
    empty = w / "runs" / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "run.json").write_text(json.dumps({"run": "empty", "model": "m", "max_steps": 1, "tokens_per_step": 1, "seed": 0}))
    config = {
        "models": [str(run), "Org/tiny-neox", "Org/badtok", str(empty)],
        "steps": STEPS,
        "final_step": 4,
        "probe": {"source": str(w / "probe.txt"), "num_sequences": 4, "context_length": 12},
        "batch_size": 4,
        "debiased": True,
        "report": False,
        "accelerator": "cpu",
    }
    (w / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return {"dir": w, "run": run, "empty": empty, "config": w / "config.yaml", "env": env, "out": w / "out"}


def cli(world, *args):
    cmd = [sys.executable, str(ROOT / "analysis" / "run.py"), "--config", str(world["config"]), "--out", str(world["out"]), *args]
    return subprocess.run(cmd, env=world["env"], cwd=world["dir"], capture_output=True, text=True, timeout=600)


def cache_state(out):
    return {p.relative_to(out): p.stat().st_mtime_ns for p in (out / "activations").rglob("*.safetensors")}


EXPECTED_FAILURES = {
    ("Org/tiny-neox", 1, "checkpoint"), ("Org/tiny-neox", 2, "checkpoint"),
    ("Org/badtok", 0, "activations"), ("Org/badtok", 1, "activations"), ("Org/badtok", 2, "checkpoint"),
    ("Org/badtok", 4, "activations"), ("Org/badtok", 4, "cka_final"),  # its final step is unusable: no CKA-to-final
}


@pytest.fixture(scope="module")
def first_run(world):
    proc = cli(world, "--devices", "2")
    return proc


@pytest.mark.slow
def test_two_process_analysis_of_hub_cache_and_runs_with_bad_checkpoints(world, first_run):
    proc, out = first_run, world["out"]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    failed = {(f["run"], f["step"], f["kind"]) for f in summary["failed"]}
    assert failed == EXPECTED_FAILURES | {(str(world["empty"]), -1, "source")}
    text = proc.stdout
    assert "8 failure(s)" in text
    for needle in ("revision step2", "truncated or corrupt safetensors", "differs from the probe's tokenizer",
                   "vocabulary size 64", "has no checkpoints"):
        assert needle in text, needle
    # one line per failure, naming model and step
    assert sum(1 for line in text.splitlines() if line.strip().startswith("FAILED tiny-neox step 1 ")) >= 1
    assert (out / "config.yaml").is_file() and (out / "probe.safetensors").is_file()

    table = store.read_table(store.table_path(out), latest=False)
    key = ["run", "step", "layer", "component", "metric", "index"]
    assert not table.duplicated(key).any()  # nothing computed twice
    writers = {pq.read_metadata(p).num_rows and p.name.split("-")[2] for p in store.parts(store.table_path(out))}
    assert len(writers) == 2  # both ranks (processes) appended to the one table
    runs = dict(tuple(g) for g in table.groupby("run"))
    tiny, neox, bad = runs["tinyrun"], runs["Org/tiny-neox"], runs["Org/badtok"]
    assert set(runs) == {"tinyrun", "Org/tiny-neox", "Org/badtok"}

    def steps_with(frame, metric):
        return sorted(frame.loc[frame["metric"] == metric, "step"].unique().tolist())

    assert steps_with(tiny, "er") == STEPS and steps_with(tiny, "anisotropy") == STEPS
    assert steps_with(tiny, "cka_final") == STEPS and steps_with(tiny, "cka_prev") == [1, 2, 4]
    assert steps_with(tiny, "cka_final_debiased") == STEPS and steps_with(tiny, "probe_loss") == STEPS
    assert steps_with(neox, "er") == [0, 4] and steps_with(neox, "cka_final") == [0, 4]
    assert steps_with(neox, "cka_prev") == []  # step4's previous step (2) does not exist
    assert steps_with(bad, "er") == [0, 1, 4] and steps_with(bad, "anisotropy") == []
    # tokens: Pythia's 2,097,152 per step on the hub, run.json's tokens_per_step for a run
    assert set(neox.loc[neox["step"] == 4, "tokens"]) == {4 * 2_097_152}
    assert set(tiny.loc[tiny["step"] == 2, "tokens"]) == {2 * 1024}
    # CKA of the final checkpoint with itself is 1 for every layer and component, and lower before
    final = tiny[(tiny["metric"] == "cka_final") & (tiny["step"] == 4)]
    assert len(final) == 2 * (4 + 4) + 1 and (final["value"] - 1).abs().max() < 1e-5
    start = tiny[(tiny["metric"] == "cka_final") & (tiny["step"] == 0)]
    assert start["value"].min() < 0.99
    # the head spectrum is stored, normalised to 1 at index 0
    spec = tiny[(tiny["metric"] == "sv_norm") & (tiny["step"] == 4)].sort_values("index")
    assert set(spec["component"]) == {"head"} and set(spec["layer"]) == {-1}
    assert len(spec) == 32 and spec["value"].iloc[0] == pytest.approx(1.0) and spec["value"].is_monotonic_decreasing
    # one forward pass per checkpoint (4 probe sequences, batch size 4)
    for path in (out / "activations").rglob("*.safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            assert f.metadata()["forward_passes"] == "1", path
    assert len(cache_state(out)) == 4 + 2
    # the offline numbers are those of the shared adapter on the checkpoint's own tensors
    from lmdynamics.measure import weight_metric_rows

    ckpt = world["run"] / "checkpoints" / "step00000002"
    mine = {(r["layer"], r["component"], r["metric"], r.get("index", -1)): r["value"]
            for r in weight_metric_rows(iter_tensors(ckpt), 4, spectrum=True)}
    got = tiny[tiny["step"] == 2].set_index(["layer", "component", "metric", "index"])["value"]
    for k, v in mine.items():
        assert got[k] == v or (pd.isna(v) and pd.isna(got[k])) or (v == got[k] == float("inf"))


@pytest.mark.slow
def test_second_run_recomputes_nothing(world, first_run):
    out = world["out"]
    parts_before = {p.name for p in store.parts(store.table_path(out))}
    cache_before = cache_state(out)
    proc = cli(world)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {p.name for p in store.parts(store.table_path(out))} == parts_before
    assert cache_state(out) == cache_before
    failed = {(f["run"], f["step"], f["kind"]) for f in json.loads((out / "summary.json").read_text())["failed"]}
    assert failed == EXPECTED_FAILURES | {(str(world["empty"]), -1, "source")}


@pytest.mark.slow
def test_cka_to_a_new_reference_needs_no_forward_pass(world, first_run):
    from lmdynamics.commands.analyze import main

    out = world["out"]
    cache_before = cache_state(out)
    rc = main(["--config", str(world["config"]), "--out", str(out), "--models", str(world["run"]),
               "--analyses", "cka_ref", "--reference", "2"])
    assert rc == 0
    assert cache_state(out) == cache_before
    table = store.read_table(store.table_path(out))
    ref = table[(table["metric"] == "cka_ref") & (table["run"] == "tinyrun")]
    assert sorted(ref["step"].unique()) == STEPS
    assert (ref.loc[ref["step"] == 2, "value"] - 1).abs().max() < 1e-5
    assert ref.loc[ref["step"] != 2, "value"].min() < 0.999


def test_demo_config_analyses_the_default_run_offline(tmp_path, monkeypatch):
    from lmdynamics.commands.analyze import main
    from lmdynamics.probes import ProbeSet

    run = write_synthetic_run(tmp_path / "runs" / "demo", [0, 3, 6], run="demo", model_name="demo", tokens_per_step=256)
    ProbeSet.from_sequences(torch.randint(0, 128, (6, 10), generator=torch.Generator().manual_seed(0)), num_sequences=6).save(run / "probe.safetensors")
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(ROOT / "configs" / "analysis" / "demo-run.yaml")]) == 0
    out = tmp_path / "analysis_out" / "demo"
    table = store.read_table(store.table_path(out))
    assert {"per", "kl_uniform", "anisotropy", "cka_final", "cka_prev", "probe_loss", "sv_norm"} <= set(table["metric"])
    assert sorted(table["step"].unique()) == [0, 3, 6]
    assert yaml.safe_load((out / "config.yaml").read_text())["models"] == ["runs/demo"]
    try:
        import lmdynamics.report.run_report  # noqa: F401
    except ImportError:
        return
    assert (out / "report").is_dir()


def test_demo_config_before_make_train_says_train_first_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """`make analyze CONFIG=configs/analysis/demo-run.yaml` before `make train`: runs/demo is a missing run, not a
    hub repo; one line, exit 2, no analysis_out left behind."""
    from lmdynamics.commands.analyze import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the hub check must not be what answers
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert main(["--config", str(ROOT / "configs" / "analysis" / "demo-run.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "runs/demo does not exist" in err and "make train" in err and "hub" not in err.split(";")[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    from lmdynamics.commands.analyze import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("models: [Org/x]\nstepz: paper\n")
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown key(s) ['stepz']") and "\n" not in err
    assert main(["--config", str(cfg.with_name("missing.yaml"))]) == 2
    cfg.write_text("models: [Org/x]\nsteps: sometimes\n")
    assert main(["--config", str(cfg)]) == 2
    assert "preset" in capsys.readouterr().err


@pytest.mark.slow
def test_unusable_final_checkpoint_is_one_line_with_the_fix_for_runs_and_hub_revisions(world, tmp_path):
    """CKA-to-final needs the final checkpoint: when it is corrupt, say so once (not one silent skip per step)
    and exit non-zero; a run's checkpoint cannot be downloaded again, a hub revision can."""
    run = write_synthetic_run(tmp_path / "runs" / "r", [0, 1, 2], tokenizer_file=world["dir"] / "tok_a.json",
                              run="r", model_name="tiny", tokens_per_step=16)
    weights = run / "checkpoints" / "step00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    for models, final, fix in (([str(run)], None, "cannot be downloaded again"),
                               (["Org/tiny-neox"], 1, "delete revision step1 of Org/tiny-neox from the Hugging Face cache")):
        config = {**yaml.safe_load(world["config"].read_text()), "models": models, "steps": [0, 1, 2],
                  "final_step": final, "analyses": ["activations", "cka_final"]}
        path = tmp_path / f"final-{len(fix)}.yaml"
        path.write_text(yaml.safe_dump(config))
        out = tmp_path / f"out-{len(fix)}"
        proc = subprocess.run([sys.executable, str(ROOT / "analysis" / "run.py"), "--config", str(path), "--out", str(out)],
                              env=world["env"], cwd=world["dir"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = [ln for ln in proc.stdout.splitlines() if "no CKA-to-final" in ln]
        assert len(lines) == 2, proc.stdout  # reported once, and listed once in the closing summary
        assert "final checkpoint (step" in lines[0] and fix in lines[0] and "download again" not in lines[0].replace(fix, "")
        table = store.read_table(store.table_path(out))
        assert "cka_final" not in set(table.metric) and "anisotropy" in set(table.metric)
