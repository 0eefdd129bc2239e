"""Shared helpers for the end-to-end tests: a tiny training config and the real CLI in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(tmp_path: Path, **over) -> Path:
    cfg = {
        "seed_everything": 7,
        "run": {"name": "tiny", "root": str(tmp_path / "runs"), "loggers": ["csv"], "resume_every": 3,
                "report": False},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 6, "val_check_interval": 3,
                    "check_val_every_n_epoch": None, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"model": {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "context_length": 32},
                  "optim": {"lr": 0.003}},
        "data": {"source": "python-docs", "tokenizer": "bpe:512", "context_length": 32, "batch_size": 4,
                 "max_documents": 300, "val_blocks": 8, "cache_dir": str(tmp_path.parent / "lmd-cache")},
        "checkpoints": {"every": 3, "log_cap": 2},
        "probe": {"num_sequences": 16},
    }
    for key, value in over.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli_env(env_extra=None) -> dict:
    """The environment of a CLI subprocess: this checkout's sources first (not whatever the venv has installed)."""
    # The suite itself runs under make (make test ARGS=...): make exports its command-line variables and passes
    # them in MAKEFLAGS, so they would reach a `make` a test starts (make test's ARGS in make saturation's command).
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL", "ARGS", "CONFIG", "RUN_DIR")}
    env |= {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "HF_HUB_OFFLINE": "1"}
    env.update(env_extra or {})
    return env


def run_cli(*args, env_extra=None):
    return subprocess.run([sys.executable, str(ROOT / "train" / "run.py"), *args], capture_output=True, text=True,
                          env=cli_env(env_extra), cwd=ROOT, timeout=600)


def start_cli(*args, stdout, stderr, env_extra=None) -> subprocess.Popen:
    """The CLI started in its own process group (so a signal reaches every DDP rank, as Ctrl-C in a terminal does)."""
    return subprocess.Popen([sys.executable, str(ROOT / "train" / "run.py"), *args], stdout=stdout, stderr=stderr,
                            env=cli_env(env_extra), cwd=ROOT, start_new_session=True)


def losses(path: Path) -> dict[int, float]:
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out[row["step"]] = row["loss"]
    return out


def train_tiny(tmp_path: Path, *args) -> Path:
    """Train the tiny config through the real CLI in ``tmp_path``; returns its run directory."""
    res = run_cli("fit", "--config", str(tiny_config(tmp_path)), *args)
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp_path / "runs" / "tiny"
