"""Live trajectories under DeepSpeed ZeRO-3: two CPU ranks (gloo) each call the recorder, every rank runs the
forward passes that gather the shards, rank 0 alone writes, and the stored losses equal the unsharded model's.
(Lightning's DeepSpeed strategy needs CUDA; tests/test_distributed.py runs it on a GPU.)"""

import os
import subprocess
import sys

import pytest

from tests.helpers.cli import ROOT
from tests.test_distributed import free_port


@pytest.mark.slow
def test_zero3_sharded_model_is_recorded_live_by_every_rank_and_written_once(tmp_path):
    pytest.importorskip("deepspeed")
    port, run = str(free_port()), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "tests" / "helpers" / "zero3_trajectories.py")
    procs = [subprocess.Popen([sys.executable, script, str(rank), "2", port, str(run)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env) for rank in (0, 1)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {rank}:\n{out[-3000:]}"
    assert "rank 0 ok" in outs[0] and "rank 1 ok" in outs[1]
    assert [p.name for p in (run / "trajectories").iterdir()] == ["run"]  # one store, written by rank 0
