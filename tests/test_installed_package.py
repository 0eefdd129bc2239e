"""The package installed as a wheel into a fresh virtualenv (not the editable checkout) works from an empty
directory: the console command starts, the bundled configs are found as package data, a printed config path is
one a verb accepts, and every command the package prints (resume hint, sweep --print_commands, launch torchrun)
runs as printed in a fresh shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _fresh_venv(tmp: Path) -> Path:
    """A new venv without pip whose only extra path is this interpreter's site-packages (the dependencies);
    .pth files of that directory are not read there, so the editable install of the checkout is not visible."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(the fresh venv with the package installed from a wheel of this checkout, the environment to run it in)."""
    tmp_path = tmp_path_factory.mktemp("installed")
    source = tmp_path / "source"  # a copy, so that building writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "configs", source / "configs")
    shutil.copytree(ROOT / "src", source / "src", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = _fresh_venv(tmp_path)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", str(source)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return venv, env


def test_wheel_in_a_fresh_venv_runs_from_an_empty_directory(installed, tmp_path):
    venv, env = installed
    python = venv / "bin" / "python"
    empty = tmp_path / "empty"
    empty.mkdir()

    where = subprocess.run([str(python), "-c", "import lmdynamics; print(lmdynamics.__file__)"], cwd=empty,
                           capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout

    listing = subprocess.run([str(venv / "bin" / "lmdynamics"), "configs"], cwd=empty, capture_output=True,
                             text=True, env=env)
    assert listing.returncode == 0, listing.stderr
    paths = [Path(line.split()[0]) for line in listing.stdout.splitlines()]
    demo = next(p for p in paths if p.name == "demo.yaml" and p.parent.name == "train")
    assert demo.is_file() and demo.is_relative_to(venv)  # package data, shown as a path usable from here
    assert len(paths) == len(list((ROOT / "configs").rglob("*.yaml")))

    helped = subprocess.run([str(venv / "bin" / "lmdynamics"), "compare", "--help"], cwd=empty,
                            capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "--group_by" in helped.stdout
    assert not any(empty.iterdir())  # nothing written where the user stood


def _fresh_shell(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """``line`` as a user pastes it into a new terminal: no environment at all (no PYTHONPATH, no VIRTUAL_ENV, no
    activated venv), from another directory."""
    return subprocess.run(["env", "-i", "/bin/sh", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=600)


def _plan(stdout: str) -> dict:
    """The JSON a dry run prints (after any log lines)."""
    return json.loads(stdout[stdout.index("{"):stdout.rindex("}") + 1])


def test_printed_commands_work_as_printed_in_a_fresh_shell(installed, tmp_path):
    """The resume hint, ``sweep --print_commands`` and ``launch torchrun`` print commands that run in a new shell
    from any directory: each is run so (as a dry run: nothing trains) and resolves the run where it was planned."""
    from tests.helpers.cli import tiny_config

    venv, env = installed
    lmdynamics = venv / "bin" / "lmdynamics"
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    config = tiny_config(work, **{"run.root": "runs", "data.cache_dir": str(tmp_path / "cache")})  # relative root
    config = config.rename(work / "tiny.yaml").relative_to(work)

    # the resume hint of an interrupted run, as the run prints it (its config.yaml names run.root relative to work)
    (work / "runs" / "tiny").mkdir(parents=True)
    (work / "runs" / "tiny" / "config.yaml").write_text((work / config).read_text())
    hint = subprocess.run([str(venv / "bin" / "python"), "-c", "from pathlib import Path; "
                           "from lmdynamics.training.resume import resume_command; print(resume_command(Path('runs/tiny')))"],
                          cwd=work, capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert f"{lmdynamics} fit" in hint and "train/run.py" not in hint
    res = _fresh_shell(f"{hint} --run.dry_run true", elsewhere)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _plan(res.stdout)["run_directory"] == str(work / "runs" / "tiny")

    # sweep --print_commands
    (work / "sweep.yaml").write_text(yaml.safe_dump({"name": "sw", "root": "sweeps", "configs": [str(config)],
                                                     "grid": {"seed_everything": [1]}}))
    printed = subprocess.run([str(lmdynamics), "sweep", "--config", "sweep.yaml", "--print_commands"], cwd=work,
                             capture_output=True, text=True, env=env)
    assert printed.returncode == 0, printed.stderr[-2000:]
    [line] = printed.stdout.strip().splitlines()
    res = _fresh_shell(f"{line} --run.dry_run true", elsewhere)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _plan(res.stdout)["run_directory"] == str(work / "sweeps" / "sw-seed_everything1")

    # launch's torchrun line, run by torchrun itself on one CPU process (the dry form: accelerator cpu, dry run)
    printed = subprocess.run([str(lmdynamics), "launch", "torchrun", "--gpus_per_node", "1", "--", "fit",
                              "--config", str(config)], cwd=work, capture_output=True, text=True, env=env)
    assert printed.returncode == 0, printed.stderr[-2000:]
    line = printed.stdout.strip()
    assert f"--standalone {lmdynamics} fit" in line
    res = _fresh_shell(f"{line} --trainer.accelerator cpu --run.dry_run true", elsewhere)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _plan(res.stdout)["run_directory"] == str(work / "runs" / "tiny")
    assert not (work / "runs" / "tiny" / "lightning").exists() and not (work / "sweeps").exists()  # dry runs wrote nothing
