"""Scale-out recipes on CPU: DeepSpeed configs, multi-GPU overlays, launcher commands, and refused FSDP."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.test_config_parity import CONFIGS, dry_run

ROOT = Path(__file__).resolve().parents[1]
DEEPSPEED = sorted((ROOT / "configs" / "deepspeed").glob("*.json"))
LIGHTNING_SETS = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                  "gradient_clipping", "fp16", "bf16"}  # filled by DeepSpeedStrategy from the training config
OVERLAYS = {  # overlay -> the Pythia size it is written for, (devices, nodes, micro-batch)
    "1gpu-bf16": ("160m", (1, 1, 32)),
    "8gpu-zero2": ("1.4b", (8, 1, 8)),
    "nodes-zero3": ("6.9b", (8, 4, 4)),
}


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.stem)
def test_deepspeed_configs_are_valid_and_leave_lightnings_keys_alone(path):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from lightning.pytorch.strategies import DeepSpeedStrategy

    cfg = json.loads(path.read_text())
    assert not LIGHTNING_SETS & set(cfg), path.name
    zero = DeepSpeedZeroConfig(**cfg["zero_optimization"])  # DeepSpeed's own schema: unknown keys fail
    assert int(zero.stage) == int(path.stem[4])  # zero1 / zero2 / zero3
    offload = "offload" in path.stem
    assert (zero.offload_optimizer is not None) == offload
    if offload:
        assert cfg["zero_force_ds_cpu_optimizer"] is False  # the project's AdamW runs on the offloaded state
    assert DeepSpeedStrategy(config=str(path)).config["zero_optimization"]["stage"] == zero.stage


def printed_config(*args) -> dict:
    from lmdynamics.commands.fit import main as fit_main
    from lmdynamics.training.launch import check_training_args

    return check_training_args(["lmdynamics", "fit", *args], fit_main)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_overlays_resolve_over_their_pythia_config(overlay):
    size, (devices, nodes, batch) = OVERLAYS[overlay]
    cfg = printed_config("--config", str(CONFIGS / f"pythia-{size}.yaml"),
                         "--config", str(CONFIGS / "scale" / f"{overlay}.yaml"))
    t = cfg["trainer"]
    assert (int(t["devices"]), int(t["num_nodes"]), cfg["data"]["batch_size"]) == (devices, nodes, batch)
    assert 1024 % (devices * nodes * batch) == 0 and t["precision"] == "bf16-mixed"
    assert cfg["model"]["model"]["size"] == size and cfg["model"]["speed"]["attn_implementation"] == "sdpa"
    if "zero" in overlay:
        assert t["strategy"]["class_path"].endswith("DeepSpeedStrategy")
        ds = Path(t["strategy"]["init_args"]["config"])
        assert (ROOT / ds).is_file() and ds.stem == overlay.split("-")[-1]


def test_zero3_overlay_instantiates_through_the_cli(local_text, pythia_tokenizer_file):
    """The whole CLI with the DeepSpeed ZeRO-3 overlay, down to the model (on the meta device) and optimiser."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    cli = dry_run(["--config", str(CONFIGS / "pythia-6.9b.yaml"), "--config", str(CONFIGS / "scale" / "nodes-zero3.yaml")],
                  local_text, pythia_tokenizer_file, "--trainer.num_nodes", "1", "--data.batch_size", "4")
    assert isinstance(cli.trainer.strategy, DeepSpeedStrategy) and cli.trainer.strategy.zero_stage_3
    assert cli.model.model.config.num_hidden_layers == 32 and cli.model.model.is_gradient_checkpointing
    assert cli.trainer.accumulate_grad_batches == 1024 // 4


@pytest.mark.slow
def test_slurm_script_is_well_formed_and_matches_the_training_config(capsys):
    from lmdynamics.commands.launch import main

    assert main(["slurm", "--nodes", "4", "--gpus-per-node", "8", "--partition", "gpu", "--", "fit",
                 "--config", str(CONFIGS / "pythia-6.9b.yaml"), "--config", str(CONFIGS / "scale" / "nodes-zero3.yaml")]) == 0
    script = capsys.readouterr().out
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # shell syntax
    sbatch = dict(line[len("#SBATCH --"):].split("=", 1) for line in script.splitlines() if line.startswith("#SBATCH"))
    assert (sbatch["nodes"], sbatch["ntasks-per-node"], sbatch["gpus-per-node"], sbatch["partition"]) == ("4", "8", "8", "gpu")
    srun = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1
    cmd = shlex.split(srun[0])[1:]
    assert Path(cmd[0]).name == "lmdynamics" and Path(cmd[0]).is_absolute() and cmd[1] == "fit"  # the console script
    assert cmd[cmd.index("--trainer.num_nodes") + 1] == "4" and cmd[cmd.index("--trainer.devices") + 1] == "8"
    cfg = printed_config(*cmd[2:])  # the command as SLURM will run it parses with the real CLI
    assert (int(cfg["trainer"]["num_nodes"]), int(cfg["trainer"]["devices"])) == (4, 8)


@pytest.mark.parametrize("nodes, endpoint", [(1, None), (2, "node1:29500")])
def test_torchrun_command_parses_with_torchruns_own_parser(nodes, endpoint, capsys):
    from torch.distributed.run import get_args_parser

    from lmdynamics.commands.launch import main

    extra = ["--rdzv-endpoint", endpoint] if endpoint else []
    assert main(["torchrun", "--nodes", str(nodes), *extra, "--", "fit", "--config", str(CONFIGS / "pythia-1.4b.yaml"),
                 "--config", str(CONFIGS / "scale" / "8gpu-zero2.yaml")]) == 0
    cd, line = capsys.readouterr().out.strip().split(" && ", 1)
    assert cd == f"cd {shlex.quote(os.getcwd())}"
    cmd = shlex.split(line)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(cmd[3:])
    assert int(args.nproc_per_node) == 8 and str(args.nnodes).split(":")[0] == str(nodes) and Path(args.training_script).name == "lmdynamics"
    assert args.training_script_args[0] == "fit"
    if endpoint:
        assert args.rdzv_endpoint == endpoint and args.rdzv_backend == "c10d"
    train = args.training_script_args
    assert train[train.index("--trainer.num_nodes") + 1] == str(nodes)


@pytest.mark.parametrize("argv, words", [
    (["torchrun", "--nodes", "3", "--rdzv-endpoint", "n:1", "--", "fit", "--config", "CFG1.4"], "not a multiple of"),
    (["torchrun", "--nodes", "2", "--", "fit", "--config", "CFG1.4"], "--rdzv_endpoint"),
    (["slurm", "--", "--config", "CFG1.4"], "starting with `fit`"),
])
def test_launcher_refuses_bad_input_in_one_line(argv, words, capsys):
    from lmdynamics.commands.launch import main

    argv = [str(CONFIGS / "pythia-1.4b.yaml") if a == "CFG1.4" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and words in err[-1]


def test_fsdp_is_refused_with_the_deepspeed_alternative(tmp_path, capsys):
    from lmdynamics.commands.fit import main
    from tests.helpers.cli import tiny_config

    assert main(["fit", "--config", str(tiny_config(tmp_path)), "--trainer.strategy", "fsdp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "FSDP is not supported" in err and "zero3" in err
    assert not (tmp_path / "runs").exists()
