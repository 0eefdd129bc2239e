"""``lmdynamics.generate.generate`` on a tiny random model (fast): greedy decoding is the argmax continuation written
out, sampling is seeded and is the documented temperature / top-p sampling, padded ids are never produced, the
end-of-text token ends a sample, and bad settings are one line. The command on a trained run: tests/test_generate.py."""

import shutil

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lmdynamics.generate import generate

VOCAB, PADDED = 60, 64  # the tokenizer's ids and the model's (padded) vocabulary


class Tokenizer:
    """Characters 'a'.. as ids 0..VOCAB-1; id ``eos`` is end-of-text. With ``bos``, like a Hugging Face tokenizer
    whose post-processor adds special tokens, that id starts every text unless ``add_special_tokens=False``; like a
    fast tokenizer, ``add_special_tokens`` must be a bool."""

    def __init__(self, eos=None, bos=None):
        self.eos_token_id, self.bos = eos, bos

    def __call__(self, text, add_special_tokens=True):
        if not isinstance(add_special_tokens, bool):
            raise TypeError(f"{add_special_tokens!r} is not an instance of 'bool'")
        ids = [ord(c) - ord("a") for c in text]
        return {"input_ids": ([self.bos] if add_special_tokens and self.bos is not None else []) + ids}

    def __len__(self):
        return VOCAB


def _model(seed=0):
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, vocab_size=PADDED, max_position_embeddings=64)).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)  # peaked next-token distributions
    return model


def _argmax(model, ids, n, eos=None):
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids])).logits[0, -1, :VOCAB].argmax())
            ids.append(nxt)
            out.append(nxt)
            if nxt == eos:
                break
    return out


def test_greedy_is_the_argmax_among_the_tokenizers_ids():
    model = _model()
    model.generation_config.do_sample, model.generation_config.top_k = True, 3  # a checkpoint's sampling config
    with torch.no_grad():  # a padded id gets the largest logit everywhere: it must still never be produced
        model.get_output_embeddings().weight[VOCAB + 3] = model.get_output_embeddings().weight[:VOCAB].sum(0) * 5
    got = generate(model, Tokenizer(), "abc", max_new_tokens=8, temperature=0)
    assert got == [_argmax(model, [0, 1, 2], 8)]
    assert all(i < VOCAB for i in got[0])


def test_the_prompt_is_its_text_tokens_without_the_special_tokens_a_tokenizer_adds():
    model = _model()
    assert generate(model, Tokenizer(bos=7), "abc", max_new_tokens=6, temperature=0) == [_argmax(model, [0, 1, 2], 6)]
    with pytest.raises(ValueError, match="has no tokens"):  # a special token alone is no text to continue
        generate(model, Tokenizer(bos=7), "", max_new_tokens=2, temperature=0)


def test_the_defaults_are_the_documented_ones():
    """40 new tokens at temperature 0.8, top-p 0.9, seed 0, one sample (the module docstring and the command's)."""
    model = _model(1)
    model.generation_config.eos_token_id = None  # no end-of-text: every sample runs to its length
    got = generate(model, Tokenizer(), "ab")
    assert len(got) == 1 and len(got[0]) == 40
    assert got == generate(model, Tokenizer(), "ab", max_new_tokens=40, temperature=0.8, top_p=0.9, seed=0,
                           num_samples=1)
    assert got != generate(model, Tokenizer(), "ab", max_new_tokens=40, temperature=0.8, top_p=0.9, seed=1)


@pytest.mark.parametrize("temperature", [0, 0.7])
def test_generation_warns_about_nothing_whatever_the_checkpoints_generation_config(temperature, caplog):
    """The settings are complete: no warning from transformers about a missing pad token or attention mask, or about
    sampling settings (the checkpoint's own, or ours) that greedy decoding would ignore."""
    import logging
    import warnings

    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: let this test see every warning
    model = _model()
    config = model.generation_config
    config.do_sample, config.temperature, config.top_p, config.top_k = True, 0.5, 0.7, 3  # a checkpoint's sampling
    for eos in (5, None):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with caplog.at_level(logging.WARNING, logger="transformers"):
                logging.getLogger("transformers").addHandler(caplog.handler)
                try:
                    got = generate(model, Tokenizer(eos=eos), "abc", max_new_tokens=4, temperature=temperature)
                finally:
                    logging.getLogger("transformers").removeHandler(caplog.handler)
        assert len(got[0]) >= 1
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [], eos


def test_every_prompt_token_is_attended_to_with_or_without_an_end_of_text_token():
    """Without an end-of-text id the pad id is 0 (token 'a'): a prompt holding it is still attended to whole."""
    model = _model(1)  # masking the 'a' of "ba" changes this model's greedy continuation from its second token
    for eos in (None, 0):
        model.generation_config.eos_token_id = eos
        assert generate(model, Tokenizer(eos=eos), "ba", max_new_tokens=5, temperature=0) == \
            [_argmax(model, [1, 0], 5, eos=eos)], eos


def test_end_of_text_ends_a_sample_and_is_kept():
    model = _model()
    greedy = _argmax(model, [0, 1, 2], 8)
    eos = greedy[2]  # the third token of the greedy continuation
    first = greedy.index(eos)
    assert generate(model, Tokenizer(eos=eos), "abc", max_new_tokens=8, temperature=0) == [greedy[: first + 1]]


def test_sampling_is_seeded_and_draws_from_the_tempered_distribution():
    model = _model(1)
    a = generate(model, Tokenizer(), "ab", max_new_tokens=6, temperature=1.0, top_p=1.0, seed=3, num_samples=3)
    assert a == generate(model, Tokenizer(), "ab", max_new_tokens=6, temperature=1.0, top_p=1.0, seed=3, num_samples=3)
    eos = model.generation_config.eos_token_id  # the tokenizer has none: the model's end-of-text id
    assert len(a) == 3 and len({tuple(s) for s in a}) > 1
    assert all(len(s) == 6 and eos not in s or s.index(eos) == len(s) - 1 for s in a) and any(eos in s for s in a)
    assert all(i < VOCAB for s in a for i in s)
    # the first new token's frequencies over many seeds follow softmax(logits / T) over the tokenizer's ids
    with torch.no_grad():
        logits = model(torch.tensor([[0, 1]])).logits[0, -1, :VOCAB].double()
    for temperature in (0.5, 2.0):
        p = torch.softmax(logits / temperature, -1)
        draws = [generate(model, Tokenizer(), "ab", max_new_tokens=1, temperature=temperature, top_p=1.0, seed=s)[0][0]
                 for s in range(200)]
        freq = torch.bincount(torch.tensor(draws), minlength=VOCAB).double() / len(draws)
        assert float((freq - p).abs().max()) < 4 * float((p * (1 - p) / len(draws)).sqrt().max()) + 0.01, temperature


def test_top_p_one_cuts_no_token():
    """At a high temperature the distribution is nearly uniform over the tokenizer's 60 ids: 300 draws reach more
    than 50 distinct ids (a top-k cut would stop at k)."""
    model = _model(3)
    model.generation_config.top_k = 5  # a checkpoint's own sampling config does not apply
    draws = generate(model, Tokenizer(), "a", max_new_tokens=1, temperature=1000.0, top_p=1.0, seed=0, num_samples=300)
    assert len({s[0] for s in draws}) > 50  # the first new token, after the same prompt each time


def test_a_small_top_p_keeps_only_the_most_likely_token():
    model = _model(2)
    greedy = _argmax(model, [3, 4], 5)
    for seed in range(3):
        assert generate(model, Tokenizer(), "de", max_new_tokens=5, temperature=1.0, top_p=1e-6, seed=seed) == [greedy]


@pytest.mark.parametrize("over, words", [
    ({"max_new_tokens": 0}, "--max_new_tokens must be positive"), ({"temperature": -0.1}, "--temperature must be >= 0"),
    ({"top_p": 0.0}, "--top_p must be in (0, 1]"), ({"top_p": 1.5}, "--top_p must be in (0, 1]"),
    ({"num_samples": 0}, "--num_samples must be positive"), ({"prompt": ""}, "has no tokens"),
    ({"prompt": "a" * 62, "max_new_tokens": 3}, "the prompt (62 tokens) + 3 new tokens exceed the model's context of 64")])
def test_bad_settings_are_one_line(over, words):
    args = {"prompt": "abc", **over}
    with pytest.raises(ValueError) as err:
        generate(_model(), Tokenizer(), args.pop("prompt"), **args)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_edges_of_the_settings_are_allowed():
    model = _model()
    assert len(generate(model, Tokenizer(), "a" * 61, max_new_tokens=3, temperature=0)[0]) == 3  # exactly the context
    assert len(generate(model, Tokenizer(), "ab", max_new_tokens=1, temperature=0.5, top_p=1.0)[0]) == 1


def test_checkpoint_is_a_checkpoint_directory_a_run_s_last_checkpoint_or_source_at_step(tmp_path):
    """``--checkpoint`` (``generate.resolve``): a checkpoint directory as given; a run directory's last checkpoint by
    step value (10 before 100 by value, not by name); ``RUN@STEP`` that step; a path that is not there and has no
    ``@`` is one line naming the three forms; a directory that is neither is refused."""
    from lmdynamics.checkpoints import CheckpointError
    from lmdynamics.checkpoints.synthetic import tiny_config, write_synthetic_run
    from lmdynamics.generate import resolve

    cfg = tiny_config(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    run = write_synthetic_run(tmp_path / "run", [5, 100, 10], cfg, run="tiny", tokens_per_step=8)
    step_dirs = {int(p.name[4:]): p for p in (run / "checkpoints").iterdir() if p.name.startswith("step")}
    assert sorted(step_dirs) == [5, 10, 100]
    assert resolve(str(run)) == step_dirs[100]
    assert resolve(str(step_dirs[10])) == step_dirs[10]
    assert resolve(f"{run}@10") == step_dirs[10] and resolve(f"{run}@step5") == step_dirs[5]
    with pytest.raises(CheckpointError, match=r"--checkpoint .*nope: no such directory; give a checkpoint directory, a "
                                              r"run directory \(runs/demo, after make train\) or SOURCE@STEP"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="no checkpoint for step 7"):
        resolve(f"{run}@7")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve(f"{tmp_path / 'nope'}@7")
    both = tmp_path / "both"  # a checkpoint directory that also holds a run.json is a checkpoint directory
    shutil.copytree(step_dirs[10], both)
    shutil.copy(run / "run.json", both / "run.json")
    assert resolve(str(both)) == both
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a Hugging Face checkpoint directory"):
        resolve(str(tmp_path / "empty"))
