"""Head interventions as configuration: each builds the intended function, saves, loads and trains via the CLI."""

import json
import re

import numpy as np
import pytest
import torch
from transformers import GPTNeoXForCausalLM

from lmdynamics import store
from lmdynamics.models.heads import HeadSpec, build_causal_lm, head_matrices, load_causal_lm
from lmdynamics.models.zoo import ModelSpec
from lmdynamics.training.module import LMModule, OptimSpec
from tests.helpers.cli import tiny_config

V, D = 64, 8


def _model(head=HeadSpec(), tie=False, d=D):
    spec = ModelSpec(num_layers=1, hidden_size=d, num_heads=2, vocab_size=V, context_length=8, head=head,
                     tie_embeddings=tie).resolved()
    torch.manual_seed(0)
    return build_causal_lm(spec.to_hf_config(), spec.head).eval()


def _centred_rank(logp: torch.Tensor) -> int:
    m = logp.detach().double()
    m = m - m.mean(dim=1, keepdim=True)
    return int(np.linalg.matrix_rank(m.numpy(), tol=1e-9 * float(torch.linalg.matrix_norm(m, 2))))


def test_low_rank_head_is_a_b_and_caps_the_rank():
    model = _model(HeadSpec("low_rank", rank=3))
    head = model.get_output_embeddings()
    h = torch.randn(200, D, dtype=torch.float64)
    a, b = head.A.double(), head.B.double()
    assert torch.allclose(head.double()(h), h @ (a @ b).T, atol=1e-12)
    (_, w), = head_matrices(model)
    assert torch.allclose(w, a @ b) and np.linalg.matrix_rank(w.numpy()) == 3
    assert _centred_rank(torch.log_softmax(head.double()(h), dim=1)) <= 3


def test_mixture_of_softmaxes_is_the_gated_mixture_and_breaks_the_rank_limit():
    model = _model(HeadSpec("mos", components=3)).double()
    mos = model.get_output_embeddings()
    h = torch.randn(300, D, dtype=torch.float64)
    gate = torch.softmax(h @ mos.gate.weight.T, dim=1)
    ctx = torch.tanh(h @ mos.proj.weight.T + mos.proj.bias).reshape(300, 3, D)
    by_hand = sum(gate[:, k : k + 1] * torch.softmax(ctx[:, k] @ mos.heads[k].weight.T, dim=1) for k in range(3))
    out = mos(h)
    assert torch.allclose(out, by_hand.log(), atol=1e-10)
    assert torch.allclose(out.exp().sum(1), torch.ones(300, dtype=torch.float64), atol=1e-12)
    plain = _model().double().get_output_embeddings()
    assert _centred_rank(torch.log_softmax(plain(h), dim=1)) <= D  # a linear head: rank <= d
    assert _centred_rank(out) > D + 1  # the mixture is not bounded by d + 1
    assert [name for name, _ in head_matrices(model)] == ["head_c00", "head_c01", "head_c02"]


def test_mixture_of_rank_r_components_is_the_gated_mixture_of_rank_r_softmaxes():
    """MoS with ``rank: r``: each component W_k = A_k B_k has rank exactly r, the output is the gated mixture
    computed by hand in float64; one component alone is bounded by r, the mixture of three is not."""
    r, n = 2, 300
    model = _model(HeadSpec("mos", components=3, rank=r)).double()
    mos = model.get_output_embeddings()
    h = torch.randn(n, D, dtype=torch.float64)
    gate = torch.softmax(h @ mos.gate.weight.T, dim=1)
    ctx = torch.tanh(h @ mos.proj.weight.T + mos.proj.bias).reshape(n, 3, D)
    w = [mos.heads[k].A @ mos.heads[k].B for k in range(3)]
    by_hand = sum(gate[:, k : k + 1] * torch.softmax(ctx[:, k] @ w[k].T, dim=1) for k in range(3))
    out = mos(h)
    assert torch.allclose(out, by_hand.log(), atol=1e-10)
    assert torch.allclose(out.exp().sum(1), torch.ones(n, dtype=torch.float64), atol=1e-12)
    matrices = head_matrices(model)
    assert [name for name, _ in matrices] == ["head_c00", "head_c01", "head_c02"]
    for (_, m), wk in zip(matrices, w):
        assert m.shape == (V, D) and torch.allclose(m, wk, atol=1e-12)
        assert np.linalg.matrix_rank(m.numpy()) == r
    one = _model(HeadSpec("mos", components=1, rank=r)).double().get_output_embeddings()
    assert _centred_rank(one(h)) == r  # a single rank-r softmax: the rank-r bound
    assert _centred_rank(out) > 3 * r + 1  # the mixture of rank-r softmaxes escapes it
    assert sum(p.numel() for p in mos.heads.parameters()) == 3 * r * (V + D)


def test_mos_of_rank_r_components_saves_its_rank_and_loads(tmp_path):
    model = _model(HeadSpec("mos", components=2, rank=3))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["lmdynamics_head"] == {"kind": "mos", "components": 2, "rank": 3}
    assert "each component has rank 3" in (tmp_path / "README.md").read_text()
    loaded = load_causal_lm(tmp_path).eval()
    assert loaded.get_output_embeddings().rank == 3
    x = torch.randint(1, V, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)


def test_runs_of_mos_heads_with_and_without_component_rank_are_told_apart():
    """The run grouping of reports (``lmdynamics.compare.grouping``) labels a mixture's component rank as it labels a
    low-rank head's rank, and ignores rank for a plain head."""
    from lmdynamics.compare import grouping

    heads = [("mos", 4, 8), ("mos", 4, None), ("low_rank", 4, 8), ("plain", 4, None)]
    configs = [{"model": {"model": {"head": {"kind": k, "components": c, "rank": r}}}} for k, c, r in heads]
    keys = grouping.with_kind_parameters(grouping.differing_keys(configs))
    labels = [grouping.group_of(c, {}, keys).label for c in configs]
    assert labels == ["head=mos K=4 r=8", "head=mos K=4", "head=low_rank r=8", "head=plain"]


def test_tied_head_shares_the_input_embedding():
    model = _model(tie=True)
    assert model.get_output_embeddings().weight is model.gpt_neox.embed_in.weight
    (_, w), = head_matrices(model)
    assert torch.equal(w, model.gpt_neox.embed_in.weight.detach())


def test_head_learning_rate_and_weight_decay_apply_to_the_head_only():
    module = LMModule(ModelSpec(num_layers=1, hidden_size=D, num_heads=2, vocab_size=V, context_length=8,
                                head=HeadSpec("mos", components=2)),
                      OptimSpec(lr=1e-3, weight_decay=0.1, head_lr_multiplier=4.0, head_weight_decay=0.0))
    module.model = build_causal_lm(module.spec.resolved().to_hf_config(), module.spec.resolved().head)
    module.trainer = type("T", (), {"max_steps": 10, "state": type("S", (), {"fn": "validate"})(), "global_rank": 0})()
    opt = module.configure_optimizers()["optimizer"]
    head = {id(p) for p in module.model.get_output_embeddings().parameters()}
    for g in opt.param_groups:
        in_head = {id(p) in head for p in g["params"]}
        assert len(in_head) == 1
        is_head = in_head.pop()
        assert g["lr"] == pytest.approx(4e-3 if is_head else 1e-3)
        matrices = all(p.ndim >= 2 for p in g["params"])
        assert g["weight_decay"] == (0.0 if is_head or not matrices else 0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(module.model.parameters()))


@pytest.mark.parametrize("head, tie", [(HeadSpec(), False), (HeadSpec(), True), (HeadSpec("low_rank", rank=4), False)])
def test_gpt_neox_form_checkpoints_load_with_from_pretrained(tmp_path, head, tie):
    model = _model(head, tie)
    model.save_pretrained(tmp_path)
    loaded = GPTNeoXForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(1, V, (2, 8))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=x).logits, model(input_ids=x).logits, atol=1e-5)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["GPTNeoXForCausalLM"]


def test_mos_checkpoint_says_so_and_loads_through_our_class(tmp_path):
    model = _model(HeadSpec("mos", components=2))
    model.save_pretrained(tmp_path)
    assert "NOT the GPT-NeoX linear head" in (tmp_path / "README.md").read_text()
    loaded = load_causal_lm(tmp_path).eval()
    x = torch.randint(1, V, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)


@pytest.mark.parametrize("extra, words", [
    (["--model.model.head.kind", "softmax9"], "head.kind 'softmax9' is unknown"),
    (["--model.model.head.kind", "low_rank", "--model.model.head.rank", "33"], "between 1 and the hidden size 32"),
    (["--model.model.head.kind", "mos", "--model.model.tie_embeddings", "true"], "tie_embeddings needs the plain head"),
    (["--model.model.head.kind", "mos", "--model.model.head.rank", "0"], "each component's rank"),
    (["--model.optim.head_lr_multiplier", "0"], "head_lr_multiplier must be positive"),
])
def test_bad_intervention_is_one_line_and_writes_nothing(tmp_path, capsys, extra, words):
    from lmdynamics.commands.fit import main

    assert main(["fit", "--config", str(tiny_config(tmp_path)), *extra]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("extra, label, loader", [
    (["--model.model.head.kind", "low_rank", "--model.model.head.rank", "4"], "low_rank4", GPTNeoXForCausalLM.from_pretrained),
    (["--model.model.head.kind", "mos", "--model.model.head.components", "2"], "mos2", load_causal_lm),
    (["--model.model.tie_embeddings", "true", "--model.optim.head_lr_multiplier", "2", "--model.optim.head_weight_decay", "0"],
     "tied", GPTNeoXForCausalLM.from_pretrained),
])
def test_interventions_train_through_the_cli(tmp_path, extra, label, loader):
    cfg = tiny_config(tmp_path, **{"data.source": "synthetic", "data.synthetic": {"vocab_size": 64, "rank": 8, "classes": 4},
                                   "trainer.max_steps": 4, "run.name": "iv"})
    from lmdynamics.commands.fit import main  # in-process: the real CLI without a second interpreter's start-up

    assert main(["fit", "--config", str(cfg), "--convergence.enabled", "false", "--weight_rank.enabled", "false", *extra]) == 0
    run = tmp_path / "runs" / "iv"
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == f"neox-L2-d32-h4+{label}"
    table = store.read_table(store.table_path(run))
    loss = table[table.metric == "train_loss"].sort_values("step")["value"].to_numpy()
    assert len(loss) == 4 and np.isfinite(loss).all()
    heads = set(table[(table.metric == "er") & table.component.str.startswith("head")].component)
    assert heads == ({"head_c00", "head_c01"} if label == "mos2" else {"head"})
    model = loader(run / "checkpoints" / "step00000004")
    assert model.config.hidden_size == 32
    if label == "tied":
        assert info["architecture"]["tie_embeddings"] and info["optimizer"]["head_lr_multiplier"] == 2.0
        assert model.get_output_embeddings().weight.data_ptr() == model.gpt_neox.embed_in.weight.data_ptr()
    else:
        assert info["architecture"]["head"]["kind"] == label.rstrip("0123456789")


@pytest.mark.parametrize("head, tie", [(HeadSpec("mos", components=2), False), (HeadSpec(), True),
                                       (HeadSpec("low_rank", rank=3), False)])
def test_offline_head_rows_of_a_saved_intervention_equal_the_live_ones(tmp_path, head, tie):
    """The live head rows (HeadRank: ``head_matrices``) and the offline ones (the analysis streams the saved
    checkpoint by tensor name) are the same rows: a mixture's component heads, a tied head stored once as the
    input embedding, a low-rank head saved merged."""
    from lmdynamics.catalogue import is_output_head
    from lmdynamics.checkpoints import iter_tensors
    from lmdynamics.measure import head_metric_rows, weight_metric_rows

    model = _model(head, tie=tie)
    live = {(r["component"], r["metric"], r.get("index", -1)): r["value"]
            for r in head_metric_rows(head_matrices(model), spectrum=True)}
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    offline = {(r["component"], r["metric"], r.get("index", -1)): r["value"]
               for r in weight_metric_rows(iter_tensors(tmp_path), 2, spectrum=True,
                                           tied_head=bool(config.get("tie_word_embeddings")))
               if is_output_head(r["component"])}
    assert set(live) == set(offline) and len(live) > 0
    for key, value in live.items():
        if head.kind == "low_rank" and key[1] == "condition_number":
            continue  # s_min of a rank-3 matrix is rounding noise: float64 A B live, the saved float32 product offline
        assert offline[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_every_command_that_loads_a_checkpoint_gets_the_mixture_head(tmp_path):
    """Trajectories, the cheap corpus loss of the saturation study and the offline analysis all load through
    ``load_causal_lm``: a mixture-of-softmaxes checkpoint gives the trained model's losses, not a random head's."""
    from types import SimpleNamespace

    from lmdynamics.saturation.evaluate import corpus_loss
    from lmdynamics.trajectories.offline import load_model
    from lmdynamics.trajectories.record import token_losses

    model = _model(HeadSpec("mos", components=2))
    model.save_pretrained(tmp_path)
    blocks = torch.randint(1, V, (3, 8), generator=torch.Generator().manual_seed(1))
    loaded = load_model(SimpleNamespace(path=tmp_path))
    torch.testing.assert_close(token_losses(loaded, blocks), token_losses(model, blocks))
    assert corpus_loss(loaded, blocks) == pytest.approx(float(token_losses(model, blocks).double().mean()), rel=1e-12)


@pytest.mark.parametrize("head, tie", [(HeadSpec(), False), (HeadSpec(), True), (HeadSpec("low_rank", rank=4), False)])
def test_load_causal_lm_gives_gpt_neox_form_checkpoints_back_as_plain_gpt_neox(tmp_path, head, tie):
    from lmdynamics.models.heads import MoSHeadLM
    model = _model(head, tie)
    model.save_pretrained(tmp_path)
    loaded = load_causal_lm(tmp_path).eval()
    assert type(loaded) is GPTNeoXForCausalLM and not isinstance(loaded, MoSHeadLM)
    x = torch.randint(1, V, (2, 8))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=x).logits, model(input_ids=x).logits, atol=1e-5)


@pytest.mark.parametrize("rank", [4, 16, 64])
def test_low_rank_head_starts_at_the_plain_heads_scale(rank):
    """Entries of W = A B have standard deviation ``std`` at initialisation whatever the rank (A, B entries
    N(0, std / sqrt(r)): var(W_ij) = r (std / sqrt(r))^2 = std^2); the model passes its initializer_range."""
    from lmdynamics.models.heads import LowRankHead, LowRankHeadLM
    torch.manual_seed(1)
    w = LowRankHead(256, 1024, rank, std=0.05).merged().detach()
    assert w.std().item() == pytest.approx(0.05, rel=0.05)
    assert LowRankHead(256, 1024, rank).merged().detach().std().item() == pytest.approx(0.02, rel=0.05)  # default
    config = _model().config
    config.initializer_range = 0.1
    lm = LowRankHeadLM(config, rank)
    assert lm.lm_head.merged().detach().std().item() == pytest.approx(0.1, rel=0.2)


def test_load_causal_lm_passes_options_on_and_names_a_truncated_file(tmp_path):
    from lmdynamics.checkpoints.streaming import CorruptCheckpointError
    _model().save_pretrained(tmp_path)
    assert next(load_causal_lm(tmp_path, torch_dtype=torch.float64).parameters()).dtype == torch.float64
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match=rf"^{re.escape(str(weights))} is a truncated or corrupt safetensors"):
        load_causal_lm(tmp_path)


def test_mixture_of_softmaxes_is_the_documented_mixture_at_every_position():
    """log sum_k softmax(G h)_k softmax(W_k tanh(P_k h)) (Yang et al. 2018, eq. 4), recomputed here in float64
    component by component on [batch, time, d] states (time != d), is the head's output at every position."""
    from lmdynamics.models.heads import MixtureOfSoftmaxes
    torch.manual_seed(3)
    d, vocab, k = 6, 11, 3
    head = MixtureOfSoftmaxes(d, vocab, k, std=0.5).double()
    with torch.no_grad():
        head.proj.bias.normal_()
    h = torch.randn(2, 5, d, dtype=torch.float64)
    with torch.no_grad():
        out = head(h)
        gate = torch.softmax(h @ head.gate.weight.T, dim=-1)  # [2, 5, K]
        ctx = torch.tanh(h @ head.proj.weight.T + head.proj.bias)  # [2, 5, K * d]
        probs = sum(gate[..., j:j + 1] * torch.softmax(ctx[..., j * d:(j + 1) * d] @ head.heads[j].weight.T, dim=-1)
                    for j in range(k))
    assert out.shape == (2, 5, vocab)
    torch.testing.assert_close(out, probs.log(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 5, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_head_specs_from_any_form_and_their_bounds():
    from types import SimpleNamespace

    from lmdynamics.models.heads import as_head_spec
    assert as_head_spec(None) == HeadSpec()
    spec = HeadSpec("low_rank", rank=8)
    assert as_head_spec(spec) is spec
    assert as_head_spec({"kind": "mos", "components": 3}) == HeadSpec("mos", components=3)
    assert as_head_spec(SimpleNamespace(kind="low_rank", rank=5, _private="x")) == HeadSpec("low_rank", rank=5)
    for ok in (HeadSpec("low_rank", rank=1), HeadSpec("low_rank", rank=16), HeadSpec("mos", components=1),
               HeadSpec("plain", components=0)):
        ok.check(16, False)  # the edges are allowed; components matter only to a mixture
    for bad, words in ((HeadSpec("low_rank", rank=0), "rank must be between 1"), (HeadSpec("low_rank", rank=17), "rank"),
                       (HeadSpec("mos", components=0), "components must be at least 1")):
        with pytest.raises(ValueError, match=words):
            bad.check(16, False)


def test_mixture_heads_start_at_the_configured_scale_and_compute_in_fp32_under_bf16():
    from lmdynamics.models.heads import MixtureOfSoftmaxes, MoSHeadLM
    torch.manual_seed(4)
    head = MixtureOfSoftmaxes(64, 512, 2, std=0.05)
    for lin in (head.gate, head.proj, *head.heads):
        assert lin.weight.std().item() == pytest.approx(0.05, rel=0.15)
    assert MixtureOfSoftmaxes(64, 512, 2).heads[0].weight.std().item() == pytest.approx(0.02, rel=0.1)  # default
    config = _model().config
    config.initializer_range = 0.1
    assert MoSHeadLM(config, 2).lm_head.heads[0].weight.std().item() == pytest.approx(0.1, rel=0.2)
    out = head.to(torch.bfloat16)(torch.randn(3, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.float32  # softmax arithmetic promoted to fp32 under bf16


@pytest.mark.parametrize("head", [HeadSpec("low_rank", rank=4), HeadSpec("mos", components=2)])
def test_save_pretrained_passes_options_and_a_given_state_dict(tmp_path, head):
    model = _model(head)
    model.save_pretrained(tmp_path / "shards", max_shard_size="1KB")  # an option of from/save_pretrained
    assert (tmp_path / "shards" / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "shards" / "model.safetensors").exists()
    if head.kind == "low_rank":
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["lm_head.A"] = state["lm_head.A"] * 2
        model.save_pretrained(tmp_path / "given", state_dict=state)
        saved = GPTNeoXForCausalLM.from_pretrained(tmp_path / "given").lm_head.weight
        torch.testing.assert_close(saved, (state["lm_head.A"] @ state["lm_head.B"]).float())
        assert saved.dtype == torch.float32


def _hub_repo(tmp_path):
    """Org/tiny-heads in a local hub cache laid out as the hub writes it (blobs, snapshots/<commit>,
    refs/<revision>): step1 and main plain GPT-NeoX, step2 a mixture of softmaxes, each with its own weights."""
    import huggingface_hub.constants as hc

    from lmdynamics.checkpoints import add_to_hf_cache

    assert hc.HF_HUB_OFFLINE  # conftest: nothing here may touch the network
    cache = tmp_path / "hub"
    models = {"step1": _model(), "step2": _model(HeadSpec("mos", components=2)), "main": _model()}
    for i, (revision, model) in enumerate(models.items()):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
        model.save_pretrained(tmp_path / revision)
        add_to_hf_cache(tmp_path / revision, "Org/tiny-heads", revision, cache)
    return cache, models


def test_load_causal_lm_reads_a_hub_repo_at_the_given_revision(tmp_path, monkeypatch):
    """A hub repo id loads at ``revision``: its config (which decides the class: a mixture-of-softmaxes
    checkpoint needs MoSHeadLM) and its weights, not those of ``main`` or of another revision."""
    import huggingface_hub.constants as hc

    from lmdynamics.models.heads import MoSHeadLM

    cache, models = _hub_repo(tmp_path)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    x = torch.randint(1, V, (2, 8), generator=torch.Generator().manual_seed(9))
    for revision, model in models.items():
        loaded = load_causal_lm("Org/tiny-heads", revision=revision).eval()
        assert type(loaded) is (MoSHeadLM if revision == "step2" else GPTNeoXForCausalLM), revision
        with torch.no_grad():
            assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits), revision


def test_load_causal_lm_reads_a_hub_repo_from_the_given_cache_dir(tmp_path, monkeypatch):
    """``cache_dir`` (an option of from_pretrained) is where the whole checkpoint comes from, its config too."""
    import huggingface_hub.constants as hc

    from lmdynamics.models.heads import MoSHeadLM

    cache, models = _hub_repo(tmp_path)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-default-cache"))
    loaded = load_causal_lm("Org/tiny-heads", revision="step2", cache_dir=str(cache)).eval()
    assert type(loaded) is MoSHeadLM
    x = torch.randint(1, V, (2, 8), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, models["step2"](input_ids=x).logits)


def test_mos_component_rank_may_be_one_to_the_hidden_size():
    for rank in (1, 16, None):
        HeadSpec("mos", components=2, rank=rank).check(16, False)
    for rank in (0, 17, -1):
        with pytest.raises(ValueError, match=r"each component's rank.*between 1 and the hidden size 16") as err:
            HeadSpec("mos", components=2, rank=rank).check(16, False)
        assert "\n" not in str(err.value)


def test_low_rank_checkpoint_holds_the_merged_head_in_the_models_dtype(tmp_path):
    """The merged W = A B is computed in float64 but stored in the model's float32, like every other tensor of
    the checkpoint (a float64 head would double its size and load as another dtype where the dtype is kept)."""
    from safetensors import safe_open

    model = _model(HeadSpec("low_rank", rank=3))
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    assert {"lm_head.weight", "embed_out.weight"} & set(dtypes) and set(dtypes.values()) == {"F32"}, dtypes
    head = model.get_output_embeddings()
    loaded = GPTNeoXForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.lm_head.weight, (head.A.double() @ head.B.double()).float(), rtol=0, atol=0)
    x = torch.randint(1, V, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits, rtol=1e-5, atol=1e-5)


def test_mixture_of_low_rank_components_starts_at_the_configured_scale():
    """Each low-rank component W_k = A_k B_k starts with entries of standard deviation the model's
    initializer_range, as a full-rank component does."""
    from lmdynamics.models.heads import MoSHeadLM
    spec = ModelSpec(num_layers=1, hidden_size=64, num_heads=2, vocab_size=512, context_length=8).resolved()
    config = spec.to_hf_config()
    for std in (0.1, 0.004):
        config.initializer_range = std
        torch.manual_seed(5)
        head = MoSHeadLM(config, 2, 16).lm_head
        for component in head.heads:
            assert component.merged().detach().std().item() == pytest.approx(std, rel=0.25)


@pytest.mark.parametrize("rank, matrix", [
    (None, "`lm_head.heads.k.weight` (V x d)"),
    (3, "`lm_head.heads.k.A @ lm_head.heads.k.B` (V x 3 times 3 x d: each component has rank 3)"),
])
def test_mos_model_card_names_the_component_head_matrix(tmp_path, rank, matrix):
    model = _model(HeadSpec("mos", components=2, rank=rank))
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert f"Component k's head matrix is {matrix}.\n" in card
    assert "a mixture of 2 softmaxes" in card and "load_causal_lm" in card


def test_mos_save_pretrained_passes_positional_arguments_on(tmp_path):
    """transformers' ``save_pretrained(save_directory, is_main_process, state_dict, ...)``: a process that is not the
    main one (given positionally) writes neither the config nor the weights; a state dict given positionally is saved."""
    model = _model(HeadSpec("mos", components=2))
    model.save_pretrained(tmp_path / "rank1", False)
    assert not (tmp_path / "rank1" / "config.json").exists()
    assert not list((tmp_path / "rank1").glob("*.safetensors"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gate = state["lm_head.gate.weight"] = state["lm_head.gate.weight"] * 3
    model.save_pretrained(tmp_path / "given", True, state)
    assert torch.equal(load_causal_lm(tmp_path / "given").lm_head.gate.weight, gate)
