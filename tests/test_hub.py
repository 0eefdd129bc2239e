"""An unreachable hub is one clear line, at once, with nothing written: the real commands with their defaults
(`make analyze` runs analysis/run.py with configs/analysis/pythia-paper.yaml; a Pythia training config streams
the Pile and takes the hub tokenizer)."""

import os
import socket
import subprocess
import sys

import pytest

from lmdynamics import hub
from lmdynamics.commands.analyze import parse
from lmdynamics.offline.fabric_run import hub_needs

from conftest import ROOT


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _without_hub(port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"  # nothing listens there: connection refused
    return env


def _run(args, cwd, env, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_make_analyze_default_config_without_the_hub_says_so_in_one_line_and_writes_nothing(tmp_path):
    result = _run([str(ROOT / "analysis" / "run.py"), "--config", str(ROOT / "configs" / "analysis" / "pythia-paper.yaml")],
                  cwd=tmp_path, env=_without_hub(_closed_port()))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert "Hugging Face hub" in line and "cannot be reached" in line
    for needed in ("EleutherAI/pythia-70m-deduped", "EleutherAI/pythia-2.8b-deduped", "NeelNanda/pile-10k"):
        assert needed in line
    assert "configs/analysis/demo-run.yaml" in line and "HF_HUB_OFFLINE=1" in line
    assert "Retrying" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # no analysis_out/pythia-paper/config.yaml left behind


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--run.dry_run", "true"]], ids=["fit", "dry_run"])
def test_training_a_pythia_config_without_the_hub_says_so_in_one_line_and_writes_nothing(tmp_path, extra):
    result = _run([str(ROOT / "train" / "run.py"), "fit", "--config", str(ROOT / "configs" / "train" / "pythia-14m.yaml"),
                   "--trainer.max_steps", "1", "--run.root", str(tmp_path / "runs"), *extra],
                  cwd=tmp_path, env=_without_hub(_closed_port()))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "cannot be reached" in errors[0]
    assert "dataset monology/pile-uncopyrighted" in errors[0] and "tokenizer EleutherAI/pythia-14m" in errors[0]
    assert "configs/train/demo.yaml" in errors[0]
    assert "Retrying" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_listening_endpoint_passes_and_offline_mode_never_connects(monkeypatch, tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        assert hub.unreachable_reason(timeout=2) is None
        hub.require_hub(["model A/b"], "alt")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert hub.unreachable_reason(timeout=2) is not None
    with pytest.raises(hub.HubUnreachable, match="model A/b.*alt"):
        hub.require_hub(["model A/b"], "alt")
    hub.require_hub([], "alt")  # nothing needed: nothing asked

    def refuse(timeout=5.0):
        raise AssertionError("offline mode must not connect")

    monkeypatch.setattr(hub, "unreachable_reason", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    snapshot = tmp_path / "hub" / "models--A--b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "datasets" / "Org___data").mkdir(parents=True)
    hub.require_hub(["model A/b", "probe dataset Org/data"], "alt")  # in the local cache: nothing asked
    with pytest.raises(hub.HubUnreachable, match="HF_HUB_OFFLINE.*model C/d, dataset E/f; alt"):
        hub.require_hub(["model A/b", "model C/d", "dataset E/f"], "alt")


def _offline_empty_cache(tmp_path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "hf-home" / "datasets")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


@pytest.mark.slow
def test_offline_with_hub_models_not_cached_names_them_and_writes_nothing(tmp_path):
    """`make analyze` (the Pythia config) and a Pythia training config with HF_HUB_OFFLINE=1 and an empty cache."""
    work = tmp_path / "work"
    work.mkdir()
    env = _offline_empty_cache(tmp_path)
    result = _run([str(ROOT / "analysis" / "run.py"), "--config", str(ROOT / "configs" / "analysis" / "pythia-paper.yaml")],
                  cwd=work, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "HF_HUB_OFFLINE" in lines[0] and "local Hugging Face cache" in lines[0]
    for needed in ("EleutherAI/pythia-70m-deduped", "EleutherAI/pythia-2.8b-deduped", "NeelNanda/pile-10k"):
        assert needed in lines[0]
    assert "configs/analysis/demo-run.yaml" in lines[0]
    assert list(work.iterdir()) == []  # no analysis_out/pythia-paper/config.yaml
    result = _run([str(ROOT / "train" / "run.py"), "fit", "--config", str(ROOT / "configs" / "train" / "pythia-14m.yaml"),
                   "--trainer.max_steps", "1", "--run.root", str(work / "runs")], cwd=work, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HF_HUB_OFFLINE" in errors[0], result.stderr[-3000:]
    assert "dataset monology/pile-uncopyrighted" in errors[0] and "configs/train/demo.yaml" in errors[0]
    assert list(work.iterdir()) == []


def test_local_specs_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "probe.txt").write_text("x")
    assert hub.is_hub_id("EleutherAI/pythia-160m") and hub.is_hub_id("gpt2")
    for local in ("runs", "runs/missing-run", "./x", "/abs/dir", "~/x", "a/b/c", "probe.txt", "tok.json", None, ""):
        assert not hub.is_hub_id(local), local
    config = parse(["--models", "runs/demo,EleutherAI/pythia-70m", "--steps", "0", "--probe.source", "probe.txt",
                    "--out", str(tmp_path / "out")])
    assert hub_needs(config) == ["model EleutherAI/pythia-70m"]
    weights_only = parse(["--models", "runs/demo", "--steps", "0", "--analyses", "weights",
                          "--probe.source", "NeelNanda/pile-10k", "--out", str(tmp_path / "out")])
    assert hub_needs(weights_only) == []  # the probe is not read when only weights are analysed
