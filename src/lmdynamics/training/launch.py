"""Launch recipes for multi-GPU and multi-node training: a SLURM batch script or a torchrun command.

Nothing here starts processes: it writes the command that a cluster runs, so that the launcher's process
counts and the training config's ``trainer.num_nodes`` / ``trainer.devices`` always agree (Lightning needs
one process per device: SLURM ``--ntasks-per-node`` = devices; torchrun ``--nproc-per-node`` = devices).
"""

from __future__ import annotations

import os
import shlex

from ..console import in_this_directory, interpreter_of, lmdynamics_command

TRAINING_VERB = "fit"


def training_command(train_args: list[str], nodes: int, gpus: int, python: str | None = None) -> list[str]:
    """``<venv>/bin/lmdynamics fit <args>`` (the console script beside ``python``, default this interpreter) with
    the device counts the launcher provides appended (last one wins)."""
    if not train_args or train_args[0] != TRAINING_VERB:
        raise ValueError("give the training arguments after `--`, starting with `fit` (e.g. -- fit --config configs/train/pythia-1.4b.yaml)")
    return [*lmdynamics_command(TRAINING_VERB, python), *train_args[1:],
            "--trainer.accelerator", "gpu", "--trainer.num_nodes", str(nodes), "--trainer.devices", str(gpus)]


def _verb_at(train: list[str]) -> int:
    """The index of the verb in a training command (after the console script or ``<python> -m lmdynamics.cli``)."""
    return train.index(TRAINING_VERB)


def check_training_args(train: list[str], train_main) -> dict:
    """Parse the training command with the real CLI (``train_main``: ``lmdynamics.commands.fit.main``, run with
    ``--print_config``, nothing runs) and check that the global batch divides over the launcher's processes;
    returns the resolved config."""
    import contextlib
    import io

    import yaml

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train_main([*train[_verb_at(train):], "--print_config"])
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
    lines += ["set -euo pipefail", f"cd {shlex.quote(os.getcwd())}", "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK}",
              "srun " + shlex.join(train)]
    return "\n".join(lines) + "\n"


def torchrun_command(train: list[str], nodes: int, gpus: int, endpoint: str | None) -> str:
    """``cd <here> && <python> -m torch.distributed.run ... <venv>/bin/lmdynamics fit ...`` for one node
    (standalone) or for several (c10d rendezvous at ``endpoint``; run it on every node). torchrun runs the console
    script (a Python file) with the venv's interpreter; without one, ``-m lmdynamics.cli``."""
    verb = _verb_at(train)
    script = train[1:verb] if train[1:2] == ["-m"] else train[:verb]  # -m lmdynamics.cli, or the console script
    launcher = [interpreter_of(train), "-m", "torch.distributed.run", f"--nproc-per-node={gpus}"]
    if nodes == 1 and endpoint is None:
        launcher.append("--standalone")
    else:
        if not endpoint or ":" not in endpoint:
            raise ValueError("torchrun over several nodes needs --rdzv_endpoint HOST:PORT (the first node's address)")
        launcher += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv-id=lmdynamics"]
    return in_this_directory([*launcher, *script, *train[verb:]])
