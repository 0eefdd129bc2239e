"""Launch recipes for multi-GPU and multi-node training: a SLURM batch script or a torchrun command.

Nothing here starts processes: it writes the command that a cluster runs, so that the launcher's process
counts and the training config's ``trainer.num_nodes`` / ``trainer.devices`` always agree (Lightning needs
one process per device: SLURM ``--ntasks-per-node`` = devices; torchrun ``--nproc-per-node`` = devices).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def training_command(python: str, train_args: list[str], nodes: int, gpus: int) -> list[str]:
    """``python train/run.py <args>`` with the device counts the launcher provides appended (last one wins)."""
    if not train_args or train_args[0] != "fit":
        raise ValueError("give the training arguments after `--`, starting with `fit` (e.g. -- fit --config configs/train/pythia-1.4b.yaml)")
    return [python, str(ROOT / "train" / "run.py"), *train_args,
            "--trainer.accelerator", "gpu", "--trainer.num_nodes", str(nodes), "--trainer.devices", str(gpus)]


def check_training_args(train: list[str]) -> dict:
    """Parse the training command with the real CLI (``--print_config``, nothing runs) and check that the global
    batch divides over the launcher's processes; returns the resolved config."""
    import contextlib
    import io

    import yaml

    from .cli import main as train_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train_main([*train[2:], "--print_config"])
        except SystemExit as done:
            code = done.code or 0
    if code:
        raise ValueError(f"the training arguments do not parse: {err.getvalue().strip().splitlines()[-1]}")
    printed = [ln for ln in out.getvalue().splitlines() if not ln.startswith("[")]  # DeepSpeed's import-time log lines
    cfg = yaml.safe_load("\n".join(printed))
    trainer, data = cfg["trainer"], cfg["data"]
    per_step = data["batch_size"] * int(trainer["devices"]) * int(trainer["num_nodes"])
    if data.get("global_batch_size") and data["global_batch_size"] % per_step:
        raise ValueError(f"data.global_batch_size {data['global_batch_size']} is not a multiple of batch_size x devices x "
                         f"nodes = {per_step}; change --data.batch_size or the GPU count")
    return cfg


def slurm_script(train: list[str], nodes: int, gpus: int, job_name: str, time: str, partition: str | None,
                 cpus_per_task: int) -> str:
    """An sbatch script: one task per GPU on every node, started by ``srun`` (Lightning reads SLURM's variables)."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={nodes}",
             f"#SBATCH --ntasks-per-node={gpus}", f"#SBATCH --gpus-per-node={gpus}",
             f"#SBATCH --cpus-per-task={cpus_per_task}", f"#SBATCH --time={time}", "#SBATCH --signal=SIGUSR1@90"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(ROOT))}", "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK}",
              "srun " + shlex.join(train)]
    return "\n".join(lines) + "\n"


def torchrun_command(train: list[str], nodes: int, gpus: int, endpoint: str | None) -> str:
    """``torchrun`` for one node (standalone) or for several (c10d rendezvous at ``endpoint``; run it on every node)."""
    python, script, *rest = train
    launcher = [python, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}"]
    if nodes == 1 and endpoint is None:
        launcher.append("--standalone")
    else:
        if not endpoint or ":" not in endpoint:
            raise ValueError("torchrun over several nodes needs --rdzv-endpoint HOST:PORT (the first node's address)")
        launcher += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=lmdynamics"]
    return shlex.join([*launcher, script, *rest])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="train/launch.py", allow_abbrev=False,
        description="Print a SLURM script or a torchrun command for `train/run.py`; the training arguments follow `--`.")
    ap.add_argument("launcher", choices=["slurm", "torchrun"])
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--job-name", default="lmdynamics")
    ap.add_argument("--time", default="48:00:00", help="SLURM wall-time limit")
    ap.add_argument("--partition", help="SLURM partition")
    ap.add_argument("--cpus-per-task", type=int, default=8, help="SLURM CPUs per GPU process")
    ap.add_argument("--rdzv-endpoint", help="torchrun over several nodes: HOST:PORT of the first node")
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the virtualenv's interpreter")
    argv = sys.argv[1:] if argv is None else argv
    own, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = ap.parse_args(own)
    try:
        if args.nodes < 1 or args.gpus_per_node < 1:
            raise ValueError(f"--nodes and --gpus-per-node must be positive, got {args.nodes} and {args.gpus_per_node}")
        train = training_command(args.python, train_args, args.nodes, args.gpus_per_node)
        check_training_args(train)
        if args.launcher == "slurm":
            print(slurm_script(train, args.nodes, args.gpus_per_node, args.job_name, args.time, args.partition,
                               args.cpus_per_task), end="")
        else:
            print(torchrun_command(train, args.nodes, args.gpus_per_node, args.rdzv_endpoint))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
