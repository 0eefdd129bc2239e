"""Contrastive decoding: the limits w = (1, 0) and (0, 1) are each model's own greedy decoding, (1, -1) greedy
never picks a token the large model prefers; the CLI and the scoring of generations under every checkpoint."""

import json

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
