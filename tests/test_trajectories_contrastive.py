"""Contrastive decoding: the limits w = (1, 0) and (0, 1) are each model's own greedy decoding, (1, -1) greedy
never picks a token the large model prefers; the CLI and the scoring of generations under every checkpoint."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPTNeoXForCausalLM

from lmdynamics.checkpoints.synthetic import tiny_config
from lmdynamics.commands.trajectories import main as trajectories_main
from lmdynamics.trajectories.contrastive import FLOOR, contrastive_generate, contrastive_next
from lmdynamics.commands.contrastive import main
from tests.helpers.trajectories import two_synthetic_runs


def _models():
    torch.manual_seed(0)
    small = GPTNeoXForCausalLM(tiny_config()).eval()
    large = GPTNeoXForCausalLM(tiny_config(hidden_size=64, num_hidden_layers=3)).eval()
    return small, large


@torch.no_grad()
def _greedy_without_cache(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@torch.no_grad()
def _probs_without_cache(model, ids):
    return torch.softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)


def test_one_zero_weights_reproduce_each_model_greedy_token_for_token():
    small, large = _models()
    prompt = [5, 17, 99, 3]
    got_s = contrastive_generate(small, large, prompt, 1.0, 0.0, 20, greedy=True)["ids"]
    got_l = contrastive_generate(small, large, prompt, 0.0, 1.0, 20, greedy=True)["ids"]
    assert got_s == _greedy_without_cache(small, prompt, 20)
    assert got_l == _greedy_without_cache(large, prompt, 20)
    assert got_s != got_l  # the two models differ, so the test tells them apart


def test_small_minus_large_greedy_never_picks_a_token_the_large_model_prefers():
    small, large = _models()
    prompt = [1, 2, 3]
    res = contrastive_generate(small, large, prompt, 1.0, -1.0, 25, greedy=True)
    ids = prompt + res["ids"]
    ps, pl = _probs_without_cache(small, ids), _probs_without_cache(large, ids)  # recomputed, no cache
    for k, tok in enumerate(res["ids"]):
        at = len(prompt) - 1 + k
        assert ps[at, tok] >= pl[at, tok]
        assert res["p_small"][k] == pytest.approx(float(ps[at, tok]), rel=1e-4)
        assert res["p_large"][k] == pytest.approx(float(pl[at, tok]), rel=1e-4)
        diff = (ps[at] - pl[at]).clamp(min=0)
        assert diff[tok] == diff.max()  # the argmax of the contrast


def test_mixture_closed_form_and_floor():
    p_s = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    p_l = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    q = contrastive_next(p_s, p_l, 1.0, -1.0)
    expected = torch.tensor([0.3 + FLOOR, FLOOR, FLOOR])
    torch.testing.assert_close(q, (expected / expected.sum()).double())
    q = contrastive_next(p_s, p_s, 1.0, -1.0)  # nothing positive: the floor makes it uniform
    torch.testing.assert_close(q, torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(contrastive_next(p_s, p_l, 0.5, 0.5), (p_s + p_l) / 2 + 0 * p_s, atol=1e-6, rtol=0)


def test_nucleus_sampling_is_seeded_and_tiny_top_p_is_greedy():
    small, large = _models()
    a = contrastive_generate(small, large, [4, 5], 1.0, -0.5, 10, top_p=0.9, generator=torch.Generator().manual_seed(3))
    b = contrastive_generate(small, large, [4, 5], 1.0, -0.5, 10, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert a["ids"] == b["ids"]
    g = contrastive_generate(small, large, [4, 5], 1.0, -0.5, 10, greedy=True)
    t = contrastive_generate(small, large, [4, 5], 1.0, -0.5, 10, top_p=1e-9, generator=torch.Generator().manual_seed(0))
    assert t["ids"] == g["ids"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, local_text):
    root = tmp_path_factory.mktemp("contrast")
    small, large = two_synthetic_runs(root, local_text)
    prompts = root / "prompts.txt"
    prompts.write_text("the of and to in is\n\nwas with be by on not he\n")
    return small, large, prompts, local_text


def test_cli_generates_then_every_checkpoint_scores_it(runs, tmp_path, capsys):
    small, large, prompts, text = runs
    out = tmp_path / "gen"
    assert main(["--small", f"{small}@400", "--large", str(large / "checkpoints" / "step00000400"), "--weights", "1,-1",
                 "--greedy", "--prompts", str(prompts), "--max-new-tokens", "12", "--out", str(out)]) == 0
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 2 and all(len(g["ids"]) == 12 for g in gens)
    assert all(s >= lg for g in gens for s, lg in zip(g["p_small"], g["p_large"]))
    store = tmp_path / "store"
    assert trajectories_main(["record", "--source", str(small), "--source", str(large), "--text", str(text),
                              "--blocks", "2", "--block-tokens", "17", "--steps", "0,100,200,300,400", "--out", str(store)]) == 0
    assert trajectories_main(["score", "--generations", str(out / "generations.jsonl"), "--store", str(store),
                              "--out", str(tmp_path / "score")]) == 0
    scores = pd.read_csv(tmp_path / "score" / "scores.csv")
    assert len(scores) == 10 and (scores["generated_tokens"] == 24).all()
    assert (tmp_path / "score" / "generated_ppl_vs_val_ppl.png").is_file()
    # token-weighted: exp of the mean loss over both generations, recomputed here for one checkpoint
    model = GPTNeoXForCausalLM.from_pretrained(small / "checkpoints" / "step00000400").eval()
    losses = []
    for g in gens:
        ids = g["prompt_ids"] + g["ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        losses += [-float(lp[len(g["prompt_ids"]) - 1 + k, t]) for k, t in enumerate(g["ids"])]
    got = scores[(scores.model == "small") & (scores.step == 400)]["generated_ppl"].item()
    assert got == pytest.approx(np.exp(np.mean(losses)), rel=1e-5)


@pytest.mark.parametrize("weights, words", [("1,-1.5", "outside [-1, 1]"), ("0,0", "both weights are 0"), ("1", "two numbers")])
def test_bad_weights_one_line_nothing_written(runs, tmp_path, capsys, weights, words):
    small, large, prompts, _ = runs
    out = tmp_path / "gen"
    assert main(["--small", f"{small}@400", "--large", f"{large}@400", "--weights", weights, "--prompts", str(prompts),
                 "--max-new-tokens", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and not out.exists()


def test_different_tokenizers_are_refused(runs, tmp_path, capsys, pythia_tokenizer_file):
    small, large, prompts, _ = runs
    other = tmp_path / "other"
    model = GPTNeoXForCausalLM.from_pretrained(large / "checkpoints" / "step00000400")
    model.save_pretrained(other)
    (other / "tokenizer.json").write_bytes(pythia_tokenizer_file.read_bytes())
    out = tmp_path / "gen"
    assert main(["--small", f"{small}@400", "--large", str(other), "--prompts", str(prompts), "--max-new-tokens", "4",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "different tokenizers" in err and len(err.splitlines()) == 1 and not out.exists()


def test_generation_stops_at_end_of_text_per_prompt():
    """With the end-of-text id set to a token the unconstrained greedy contrast emits at some position, the
    output is that greedy output cut right after the token's first occurrence; each prompt stops on its own."""
    small, large = _models()
    for prompt, cut in (([5, 17, 99, 3], 4), ([1, 2, 3], 9)):
        free = contrastive_generate(small, large, prompt, 1.0, -1.0, 20, greedy=True)
        assert free["finished"] == "length" and len(free["ids"]) == 20
        eos = free["ids"][cut]
        first = free["ids"].index(eos)
        res = contrastive_generate(small, large, prompt, 1.0, -1.0, 20, greedy=True, eos_id=eos)
        assert res["finished"] == "eos"
        assert res["ids"] == free["ids"][: first + 1] and len(res["p_small"]) == len(res["p_large"]) == first + 1
        assert res["p_small"] == free["p_small"][: first + 1]
    # sampling stops the same way: the seeded free run cut at its first end-of-text
    free = contrastive_generate(small, large, [4, 5], 1.0, -0.5, 30, generator=torch.Generator().manual_seed(1))
    eos = free["ids"][6]
    res = contrastive_generate(small, large, [4, 5], 1.0, -0.5, 30, generator=torch.Generator().manual_seed(1), eos_id=eos)
    assert res["ids"] == free["ids"][: free["ids"].index(eos) + 1] and res["finished"] == "eos"


def test_cli_stops_each_prompt_at_the_tokenizers_end_of_text(runs, tmp_path):
    """A small checkpoint whose head is zero gives uniform p_s; greedy on (1, 0) then picks id 0, the BPE's
    <|endoftext|>: every prompt's generation is that one token, not --max-new-tokens copies of it."""
    small, large, prompts, _ = runs
    planted = tmp_path / "zero-head"
    model = GPTNeoXForCausalLM.from_pretrained(small / "checkpoints" / "step00000400")
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    model.save_pretrained(planted)
    (planted / "tokenizer.json").write_bytes((small / "checkpoints" / "step00000400" / "tokenizer.json").read_bytes())
    out = tmp_path / "gen"
    assert main(["--small", str(planted), "--large", f"{large}@400", "--weights", "1,0", "--greedy",
                 "--prompts", str(prompts), "--max-new-tokens", "12", "--out", str(out)]) == 0
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 2
    assert all(g["ids"] == [0] and g["finished"] == "eos" and g["text"] == "" for g in gens)
    assert json.loads((out / "generation.json").read_text())["eos_id"] == 0


def test_weights_and_top_p_are_accepted_exactly_on_their_documented_ranges():
    """Weights in [-1, 1], not both 0; top_p in (0, 1] (ignored when greedy); a prompt of at least one token."""
    from lmdynamics.trajectories.contrastive import check_weights

    for ws in ((1.0, -1.0), (-1.0, 1.0), (0.0, 1.0), (1.0, 0.0)):
        check_weights(*ws)
    for ws, words in (((1.01, 0.0), "small model's weight 1.01"), ((0.0, -1.01), "large model's weight -1.01"),
                      ((0.0, 0.0), "both weights are 0")):
        with pytest.raises(ValueError, match=words):
            check_weights(*ws)
    small, large = _models()
    assert len(contrastive_generate(small, large, [4], 1.0, -1.0, 2, top_p=1.0, generator=torch.Generator().manual_seed(0))["ids"]) == 2
    for top_p in (0.0, 1.01):
        with pytest.raises(ValueError, match="top_p must be in"):
            contrastive_generate(small, large, [4], 1.0, -1.0, 2, top_p=top_p)
    assert len(contrastive_generate(small, large, [4], 1.0, -1.0, 2, greedy=True, top_p=0.0)["ids"]) == 2
    with pytest.raises(ValueError, match="empty prompt"):
        contrastive_generate(small, large, [], 1.0, -1.0, 2, greedy=True)


@pytest.mark.parametrize("top_p, kept", [(0.49, [0]), (0.79, [0, 1]), (0.81, [0, 1, 2]), (1.0, [0, 1, 2, 3])])
def test_nucleus_draws_from_the_smallest_set_that_reaches_top_p_renormalised(top_p, kept):
    from lmdynamics.trajectories.contrastive import _nucleus

    q = torch.tensor([0.15, 0.5, 0.05, 0.3], dtype=torch.float64)
    ids_by_mass = [1, 3, 0, 2]  # 0.5, 0.3, 0.15, 0.05
    g = torch.Generator().manual_seed(0)
    draws = np.array([_nucleus(q, top_p, g) for _ in range(4000)])
    allowed = [ids_by_mass[k] for k in kept]
    assert set(draws.tolist()) == set(allowed)
    mass = q[allowed].sum().item()
    for i in allowed:
        assert np.mean(draws == i) == pytest.approx(q[i].item() / mass, abs=0.025), i


def test_models_whose_padded_vocabularies_differ_draw_only_the_ids_both_have():
    """The large model's vocabulary padded 32 ids past the small one's: (0, 1) greedy is the large model's argmax
    over the shared ids (recomputed here without the cache), never an id only the large model has."""
    torch.manual_seed(0)
    small = GPTNeoXForCausalLM(tiny_config()).eval()
    large = GPTNeoXForCausalLM(tiny_config(vocab_size=160, hidden_size=64)).eval()
    shared = small.config.vocab_size
    prompt = [5, 17, 99, 3]
    res = contrastive_generate(small, large, prompt, 0.0, 1.0, 12, greedy=True)
    pl = _probs_without_cache(large, prompt + res["ids"])
    assert res["ids"] == [int(pl[len(prompt) - 1 + k, :shared].argmax()) for k in range(12)]


def test_the_floor_given_is_the_mass_every_token_gets():
    """(1, -1) sampling with floor 0 never draws a token the large model prefers (its p' is 0); a floor far above
    the mixture makes p' nearly uniform, so such tokens are drawn too."""
    small, large = _models()

    def drawn_where_large_prefers(floor):
        res = contrastive_generate(small, large, [1, 2, 3], 1.0, -1.0, 30, top_p=1.0, floor=floor,
                                   generator=torch.Generator().manual_seed(0))
        return sum(s < lg for s, lg in zip(res["p_small"], res["p_large"]))

    assert drawn_where_large_prefers(0.0) == 0
    assert drawn_where_large_prefers(1.0) > 0


def test_a_sampled_first_token_is_the_nucleus_draw_from_p_prime_with_that_generator():
    """Not greedy: with each seed, the first token is what nucleus sampling of p' (recomputed here from both
    models without the cache) draws with a generator of that seed, and the seeds do not all agree."""
    from lmdynamics.trajectories.contrastive import _nucleus

    small, large = _models()
    prompt = [4, 5]
    q = contrastive_next(_probs_without_cache(small, prompt)[-1], _probs_without_cache(large, prompt)[-1], 1.0, -0.5)
    firsts = []
    for seed in range(6):
        res = contrastive_generate(small, large, prompt, 1.0, -0.5, 1, top_p=1.0,
                                   generator=torch.Generator().manual_seed(seed))
        assert res["ids"] == [_nucleus(q, 1.0, torch.Generator().manual_seed(seed))]
        firsts += res["ids"]
    assert len(set(firsts)) > 1


@pytest.mark.filterwarnings("error::FutureWarning")  # the cache passed under the name the model's forward takes
def test_each_model_reads_the_prompt_once_then_one_new_token_per_step_and_none_after_the_last():
    """The key/value cache: a model's forward passes see the whole prompt once, then only the token just chosen;
    the last token is never fed (nothing reads its next distribution)."""
    small, large = _models()
    fed = {"small": [], "large": []}
    hooks = [model.register_forward_pre_hook(
        lambda module, args, kwargs, name=name: fed[name].append(kwargs["input_ids"].tolist()), with_kwargs=True)
        for name, model in (("small", small), ("large", large))]
    try:
        res = contrastive_generate(small, large, [5, 17, 99, 3], 1.0, -1.0, 6, greedy=True)
    finally:
        for hook in hooks:
            hook.remove()
    want = [[[5, 17, 99, 3]]] + [[[tok]] for tok in res["ids"][:-1]]
    assert fed["small"] == fed["large"] == want


class _DeviceProbe(torch.nn.Module):
    """A model whose one parameter lives on the meta device; it records the device of the ids it is given and
    answers uniform logits over 8 ids."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.devices = []

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        self.devices.append(input_ids.device)
        return SimpleNamespace(logits=torch.zeros(1, input_ids.shape[1], 8), past_key_values=None)


def test_token_ids_are_sent_to_the_device_of_each_models_parameters():
    small, large = _DeviceProbe(), _DeviceProbe()
    contrastive_generate(small, large, [1, 2], 1.0, 0.0, 3, greedy=True)
    assert small.devices == large.devices == [torch.device("meta")] * 3


def test_nucleus_compares_top_p_in_float64_so_a_set_just_short_of_it_is_not_enough():
    """0.5 + 0.39999999 falls 1e-8 short of 0.9, less than float32's spacing there: the third token is kept too."""
    from lmdynamics.trajectories.contrastive import _nucleus

    q = torch.tensor([0.5, 0.39999999, 0.10000001], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    assert {_nucleus(q, 0.9, g) for _ in range(300)} == {0, 1, 2}


def _write_generations(path, gens):
    path.write_text("".join(json.dumps(g) + "\n" for g in gens))
    return path


def test_a_generations_file_without_generated_tokens_is_refused(tmp_path):
    """An empty file, or one generation without tokens among others, holds nothing to score."""
    from lmdynamics.trajectories.scoring import _read

    for gens in ([], [{"prompt_ids": [1, 2], "ids": [3]}, {"prompt_ids": [1], "ids": []}]):
        path = _write_generations(tmp_path / "generations.jsonl", gens)
        with pytest.raises(ValueError, match=f"^{path} holds no generated tokens$"):
            _read(path)


GENERATIONS = [{"prompt_ids": [5, 17, 99], "ids": [3, 8, 2, 40]}, {"prompt_ids": [7], "ids": [11, 12]}]


def test_scoring_a_hub_store_of_one_checkpoint_writes_its_row_on_the_default_device(runs, tmp_path, monkeypatch):
    """score_generations called directly with one store root as a string: a store recorded from a hub revision
    (found through cache_dir) with one checkpoint; the model is loaded on the default device, cpu; scores.csv has
    exactly the documented columns, the store's tokens and validation perplexity, and the token-weighted
    perplexity of the generated tokens recomputed here in float64."""
    import lmdynamics.trajectories.scoring as scoring
    from lmdynamics.checkpoints import add_to_hf_cache
    from lmdynamics.trajectories.storage import TrajectoryStore

    small, _, _, text = runs
    cache = tmp_path / "hub"
    add_to_hf_cache(small / "checkpoints" / "step00000400", "org/small", "step400", cache)
    store = tmp_path / "store"
    assert trajectories_main(["record", "--source", "org/small", "--hub-cache", str(cache), "--text", str(text),
                              "--blocks", "2", "--block-tokens", "17", "--steps", "400", "--out", str(store)]) == 0
    devices, load_model = [], scoring.load_model

    def spy(checkpoint, device="(none given)"):
        devices.append(device)
        return load_model(checkpoint, device)

    monkeypatch.setattr(scoring, "load_model", spy)
    path = scoring.score_generations(str(_write_generations(tmp_path / "g.jsonl", GENERATIONS)), str(store),
                                     tmp_path / "score", cache_dir=cache)
    assert devices == ["cpu"]
    scores = pd.read_csv(path)
    assert list(scores.columns) == ["model", "step", "tokens", "val_ppl", "generated_ppl", "generated_tokens"]
    traj = TrajectoryStore(store / "org--small").read()
    assert scores["model"].tolist() == ["org/small"] and scores["step"].tolist() == [400]
    assert scores["tokens"].tolist() == traj.tokens.tolist()
    assert scores["val_ppl"].tolist() == pytest.approx(traj.val_ppl.tolist(), rel=1e-12)
    assert scores["generated_tokens"].tolist() == [6]
    model = GPTNeoXForCausalLM.from_pretrained(small / "checkpoints" / "step00000400").eval()
    losses = []
    for g in GENERATIONS:
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([g["prompt_ids"] + g["ids"]])).logits[0].double(), -1)
        losses += [-float(lp[len(g["prompt_ids"]) - 1 + k, t]) for k, t in enumerate(g["ids"])]
    assert scores["generated_ppl"].item() == pytest.approx(np.exp(np.mean(losses)), rel=1e-5)


def test_scoring_refuses_a_store_whose_models_tokenizer_differs_naming_the_last_checkpoint(runs, tmp_path):
    """A store whose evaluation-text tokenizer is not the run's (planted in its manifest): refused before any
    model is scored, the message naming the run at its last recorded step."""
    from lmdynamics.trajectories.offline import TokenizerMismatch
    from lmdynamics.trajectories.scoring import score_generations

    small, _, _, text = runs
    store = tmp_path / "store"
    assert trajectories_main(["record", "--source", str(small), "--text", str(text), "--blocks", "2",
                              "--block-tokens", "17", "--steps", "0,200,400", "--out", str(store)]) == 0
    manifest = store / "small" / "manifest.json"
    planted = json.loads(manifest.read_text())
    planted["meta"]["tokenizer"] = "another tokenizer"
    manifest.write_text(json.dumps(planted))
    with pytest.raises(TokenizerMismatch, match="^the tokenizer of small@step400 differs from the evaluation text's"):
        score_generations(_write_generations(tmp_path / "g.jsonl", GENERATIONS), [store], tmp_path / "score")
    assert not (tmp_path / "score").exists()
