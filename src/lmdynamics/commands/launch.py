"""``lmdynamics launch {slurm,torchrun} [options] -- fit --config ...``: print a SLURM batch script or a torchrun
command for multi-GPU training, checked against the training config (``lmdynamics.training.launch``;
``lmdynamics launch``). Nothing is started; the printed command runs ``<venv>/bin/lmdynamics fit`` from here."""

from __future__ import annotations

import sys

from ..arguments import UsageError, canonical_flags, command_parser, parse


def build_parser():
    parser = command_parser("lmdynamics launch", "Print a SLURM script or a torchrun command for `lmdynamics fit`; "
                            "the training arguments follow `--`.")
    parser.add_argument("launcher", type=str, choices=["slurm", "torchrun"])
    parser.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--gpus_per_node", type=int, default=8, help="GPUs per node, one process each (default 8)")
    parser.add_argument("--job_name", type=str, default="lmdynamics", help="SLURM job name (default lmdynamics)")
    parser.add_argument("--time", type=str, default="48:00:00", help="SLURM wall-time limit")
    parser.add_argument("--partition", type=str, help="SLURM partition")
    parser.add_argument("--cpus_per_task", type=int, default=8, help="SLURM CPUs per GPU process")
    parser.add_argument("--rdzv_endpoint", type=str, help="torchrun over several nodes: HOST:PORT of the first node")
    parser.add_argument("--python", type=str, default=None,
                        help="the virtualenv's interpreter on the cluster (default: this one); its lmdynamics runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..training.launch import check_training_args, slurm_script, torchrun_command, training_command
    from .fit import main as fit_main

    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    try:
        args = parse(build_parser(), canonical_flags(own))
        if args.nodes < 1 or args.gpus_per_node < 1:
            raise UsageError(f"--nodes and --gpus_per_node must be positive, got {args.nodes} and {args.gpus_per_node}")
        train = training_command(train_args, args.nodes, args.gpus_per_node, args.python)
        check_training_args(train, fit_main)
        if args.launcher == "slurm":
            print(slurm_script(train, args.nodes, args.gpus_per_node, args.job_name, args.time, args.partition,
                               args.cpus_per_task), end="")
        else:
            print(torchrun_command(train, args.nodes, args.gpus_per_node, args.rdzv_endpoint))
    except ValueError as err:  # UsageError is one
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
