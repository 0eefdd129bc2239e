"""Speed switches keep the loss; the MFU arithmetic matches a hand count (CPU; the GPU numbers are in docs/results)."""

import json
from types import SimpleNamespace

import pytest

from lmdynamics import store
from tests.helpers.cli import run_cli, tiny_config

STEPS = 4
QUIET = {"trainer.max_steps": STEPS, "checkpoints": {"every": STEPS, "log_cap": None},
         "convergence": {"enabled": False}, "weight_rank": {"enabled": False}, "head_rank": {"enabled": False}}


def step_values(tmp_path, name, *args) -> dict[str, dict[int, float]]:
    out = tmp_path / name
    out.mkdir()
    res = run_cli("fit", "--config", str(tiny_config(out, **QUIET)), "--run.report", "false", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    table = store.read_table(store.table_path(out / "runs" / "tiny"))
    return {m: dict(zip(g.step, g.value)) for m, g in table.groupby("metric")}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return step_values(tmp_path_factory.mktemp("plain"), "plain")


SWITCHES = {  # switch -> (arguments, relative tolerance on every step's train_loss)
    "eager-attention": (["--model.speed.attn_implementation", "eager"], 1e-5),
    "activation-checkpointing": (["--model.speed.activation_checkpointing", "true"], 1e-6),
    "fused-adamw": (["--model.speed.fused_adamw", "true"], 1e-5),
    "bf16-mixed": (["--trainer.precision", "bf16-mixed"], 2e-2),
    "compile": (["--model.speed.compile", "true"], 1e-4),
}


@pytest.mark.slow
@pytest.mark.parametrize("switch", list(SWITCHES))
def test_speed_switch_keeps_every_loss(tmp_path, plain, switch):
    args, rel = SWITCHES[switch]
    fast = step_values(tmp_path, switch, *args)
    assert sorted(fast["train_loss"]) == sorted(plain["train_loss"]) == list(range(1, STEPS + 1))
    for k, loss in plain["train_loss"].items():
        assert fast["train_loss"][k] == pytest.approx(loss, rel=rel), f"{switch}: train_loss at update {k}"
    assert fast["train_loss"][STEPS] < fast["train_loss"][1]  # it still learns


def test_flops_per_token_of_pythia_160m_is_the_hand_count():
    from lmdynamics.models.zoo import ModelSpec, pythia_parameter_count
    from lmdynamics.training.speed import model_flops_per_token

    # Hand count: N = 162,322,944 parameters - 50,304 x 768 input embedding = 123,689,472;
    # 6 N = 742,136,832; attention 12 L d T = 12 x 12 x 768 x 2048 = 226,492,416; sum 968,629,248.
    s = ModelSpec(size="160m").resolved()
    n = pythia_parameter_count(s.num_layers, s.hidden_size, s.vocab_size)
    assert model_flops_per_token(n, s.vocab_size, s.num_layers, s.hidden_size, 2048) == 968_629_248


@pytest.mark.slow
def test_mfu_is_logged_against_the_given_peak(tmp_path):
    values = step_values(tmp_path, "mfu", "--model.speed.peak_tflops", "0.5")
    info = json.loads((tmp_path / "mfu" / "runs" / "tiny" / "run.json").read_text())
    n, vocab, d, layers, context = info["parameters"], info["vocab_size"], 32, 2, 32
    fpt = 6 * (n - vocab * d) + 12 * layers * d * context
    for k in range(1, STEPS + 1):
        achieved = values["tokens_per_sec"][k] * fpt
        assert values["model_tflops"][k] == pytest.approx(achieved / 1e12, rel=1e-5)
        assert values["mfu"][k] == pytest.approx(achieved / 0.5e12, rel=1e-5)
        assert 0 <= values["measure_share"][k] < 1


def test_bad_attention_kernel_is_one_line(tmp_path, capsys):
    from lmdynamics.commands.fit import main

    assert main(["fit", "--config", str(tiny_config(tmp_path, **QUIET)), "--model.speed.attn_implementation", "flash"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "attn_implementation" in err and "sdpa" in err


def test_each_switch_reaches_the_objects_that_run(tmp_path):
    """Equal losses alone would also pass for a switch that is ignored: check that each one is applied."""
    from lmdynamics.training.cli import build_cli

    cli = build_cli(["fit", "--config", str(tiny_config(tmp_path, **QUIET)), "--run.dry_run", "true",
                     "--model.speed.attn_implementation", "eager", "--model.speed.activation_checkpointing", "true",
                     "--model.speed.compile", "true", "--model.speed.fused_adamw", "true"])
    module = cli.model
    assert module.model.config._attn_implementation == "eager" and module.model.is_gradient_checkpointing
    assert type(module._step_model).__name__ == "OptimizedModule" and module._step_model._orig_mod is module.model
    assert module.configure_optimizers()["optimizer"].defaults["fused"] is True
    assert not any(k.startswith("_step_model") for k in module.state_dict())  # no second copy of the weights
    (tmp_path / "p").mkdir()
    plain = build_cli(["fit", "--config", str(tiny_config(tmp_path / "p", **QUIET)), "--run.dry_run", "true"]).model
    assert plain.model.config._attn_implementation == "sdpa" and not plain.model.is_gradient_checkpointing
    assert plain._step_model is plain.model and not plain.configure_optimizers()["optimizer"].defaults["fused"]



@pytest.mark.parametrize("entry", ["activation_checkpointing_enable", "gradient_checkpointing_enable"])
def test_activation_checkpointing_gives_the_plain_gradients_and_no_deprecation_warning(tmp_path, monkeypatch, entry):
    """Activation checkpointing recomputes the layers in the backward pass: one training step's loss and every
    gradient are the plain model's (to float32 rounding). transformers >= 5.x enables it through
    ``activation_checkpointing_enable`` (its old name warns that it is deprecated: building warns about nothing
    here); older versions only have ``gradient_checkpointing_enable``, emulated by removing the new name."""
    import warnings

    import torch
    from transformers import PreTrainedModel

    from lmdynamics.training.cli import build_cli

    if entry == "gradient_checkpointing_enable":  # an older transformers: the one entry point, no deprecation
        monkeypatch.delattr(PreTrainedModel, "activation_checkpointing_enable")
        monkeypatch.setattr(PreTrainedModel, "gradient_checkpointing_enable",
                            lambda self, gradient_checkpointing_kwargs=None:
                            PreTrainedModel._activation_checkpointing_enable(self, gradient_checkpointing_kwargs))

    def one_step(name, *args):
        (tmp_path / name).mkdir()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            module = build_cli(["fit", "--config", str(tiny_config(tmp_path / name, **QUIET)), "--run.dry_run", "true",
                                *args]).model
            module.model = None  # the dry run's model has no weights (meta): build it again, on the CPU
            torch.manual_seed(0)
            module.configure_model()
        deprecations = [str(w.message) for w in seen if issubclass(w.category, (FutureWarning, DeprecationWarning))]
        assert not [message for message in deprecations if "checkpointing" in message], deprecations
        return module

    plain = one_step("plain")
    checkpointed = one_step("checkpointed", "--model.speed.activation_checkpointing", "true")
    assert checkpointed.model.is_activation_checkpointing and not plain.model.is_activation_checkpointing
    checkpointed.model.load_state_dict(plain.model.state_dict())
    batch = torch.randint(0, plain.spec.vocab_size, (2, plain.spec.context_length), generator=torch.Generator().manual_seed(0))
    losses = {}
    for name, module in (("plain", plain), ("checkpointed", checkpointed)):
        module.train()
        losses[name] = module.lm_loss(batch)
        losses[name].backward()
    assert float(losses["checkpointed"]) == pytest.approx(float(losses["plain"]), rel=1e-6)
    grads = dict(plain.model.named_parameters())
    for name, p in checkpointed.model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-7, msg=name)


def test_flops_per_token_counts_a_tied_head_as_a_product():
    """A tied head is stored once but used twice: the lookup (free) and the head's product (6 V d per token).
    The training's model_tflops and the trajectories' FLOPs axis count N alike."""
    from lmdynamics.models.heads import HeadSpec, build_causal_lm
    from lmdynamics.models.zoo import ModelSpec, count_parameters
    from lmdynamics.trajectories.offline import non_embedding_parameters
    from lmdynamics.training.speed import model_flops_per_token

    L, d, V, T = 2, 16, 96, 32
    for tie in (False, True):
        s = ModelSpec(num_layers=L, hidden_size=d, num_heads=2, vocab_size=V, context_length=T, tie_embeddings=tie).resolved()
        model = build_causal_lm(s.to_hf_config(), s.head)
        blocks = L * (12 * d * d + 13 * d) + 2 * d  # every matrix and vector of the layers and the final norm
        assert non_embedding_parameters(model) == blocks + V * d  # the head's V x d product, tied or not
        flops = model_flops_per_token(count_parameters(model), V, L, d, T, tied=tie)
        assert flops == 6 * (blocks + V * d) + 12 * L * d * T


def test_h200_peak_is_the_dense_rate_of_its_tensor_cores(monkeypatch):
    """The H200 has the H100 SXM's tensor cores (more memory, same compute): its dense peak per dtype is Lightning's
    H100 SXM entry, not Lightning's H200 entry (the sparse rate, 2x) nor nothing (the plain name "NVIDIA H200"
    matched no entry, and MFU went unlogged on an H200)."""
    import torch
    from lightning.fabric.utilities.throughput import _CUDA_FLOPS
    from lightning.pytorch.plugins.precision import MixedPrecision

    from lmdynamics.training.speed import SpeedSpec, dense_peak, peak_flops

    h100 = _CUDA_FLOPS["h100 sxm"]
    for dtype, key in (("bfloat16", torch.bfloat16), ("float16", torch.float16), ("float32", torch.float32),
                       ("tfloat32", "tfloat32")):
        assert dense_peak("NVIDIA H200", dtype) == pytest.approx(h100[key], rel=0.01), dtype
        assert dense_peak("NVIDIA H200 NVL", dtype) < dense_peak("NVIDIA H200", dtype)  # lower clocks, same chip
    assert dense_peak("NVIDIA A100-SXM4-80GB", "bfloat16") is None  # Lightning's table answers for the rest

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)),
                              precision_plugin=MixedPrecision("bf16-mixed", "cuda"))
    assert peak_flops(trainer, SpeedSpec()) == pytest.approx(h100[torch.bfloat16], rel=0.01)
    assert peak_flops(trainer, SpeedSpec(peak_tflops=500)) == 500e12  # the user's peak wins
