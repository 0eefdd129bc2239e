"""The package installed as a wheel into a fresh virtualenv (not the editable checkout) works from an empty
directory: the console command starts, the bundled configs are found as package data, and a printed config path
is one a verb accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

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


def test_wheel_in_a_fresh_venv_runs_from_an_empty_directory(tmp_path):
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
    assert helped.returncode == 0 and "--group-by" in helped.stdout
    assert not any(empty.iterdir())  # nothing written where the user stood
