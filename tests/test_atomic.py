"""Atomic writes: complete files only, with the mode the umask gives (not the writer's own 0600)."""

import os
import stat

import pytest
import torch

from lmdynamics.atomic import atomic_path, write_text_atomic
from lmdynamics.probes import Activations, save_activations


@pytest.fixture(params=[0o022, 0o027])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_umask_mode_whatever_wrote_them(tmp_path, mask):
    save_activations(tmp_path / "acts.safetensors", Activations({(0, "mlp"): torch.ones(2, 3)}))
    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.bin") as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # a writer that insists on 0600
        os.close(fd)
    for name in ("acts.safetensors", "a.txt", "b.bin"):
        assert mode(tmp_path / name) == 0o666 & ~mask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "acts.safetensors", "b.bin"]


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
