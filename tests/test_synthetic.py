"""The synthetic language of chosen softmax rank: rank, floor, sampling, streaming, and a run on it."""

import itertools
import json

import numpy as np
import pytest
import torch

from lmdynamics import store
from lmdynamics.data.synthetic import SyntheticBlocks, SyntheticLanguage, SyntheticSpec
from tests.helpers.cli import tiny_config

SMALL = {"vocab_size": 64, "rank": 8, "classes": 4}


@pytest.mark.parametrize("spec", [
    SyntheticSpec(), SyntheticSpec(vocab_size=64, rank=8, classes=4), SyntheticSpec(vocab_size=40, rank=38, classes=7),
    SyntheticSpec(vocab_size=100, rank=20, classes=5, lags=(1, 3)),
])
def test_centred_log_prob_matrix_has_rank_exactly_r(spec):
    lang = SyntheticLanguage(spec)
    m = lang.centred_log_prob_matrix()
    assert m.dtype == np.float64 and m.shape[1] == spec.vocab_size - 1
    assert np.abs(m.mean(axis=1)).max() < 1e-12
    s = np.linalg.svd(m, compute_uv=False)
    assert s[spec.rank - 1] > 1e-6 * s[0]
    if len(s) > spec.rank:
        assert s[spec.rank] < 1e-11 * s[0]
    assert np.linalg.matrix_rank(m) == spec.rank


def test_conditional_is_a_distribution_that_needs_more_than_the_previous_symbol():
    lang = SyntheticLanguage(SyntheticSpec(**SMALL))
    cls = lang.token_class
    a, b = [int(np.flatnonzero(cls == c)[0]) for c in (0, 1)]  # symbols of two different classes
    a2 = int(np.flatnonzero(cls == 0)[1])  # another symbol of a's class
    p = np.exp(lang.conditional([0, 5, a, 7]))
    assert p[0] == 0 and abs(p.sum() - 1) < 1e-12
    # same previous symbol, different class two back: different distributions (attention has work to do)
    assert np.abs(lang.conditional([0, a, 7])[1:] - lang.conditional([0, b, 7])[1:]).max() > 1e-3
    # same classes at both lags: the same state, the same distribution
    assert np.array_equal(lang.conditional([0, 9, a, 7]), lang.conditional([0, 3, a2, 7]))


def _brute_force_entropies(lang, T):
    """Expected conditional entropy at positions 1 .. T-1 by enumerating every prefix (V = 5 languages only)."""
    expected = []
    for t in range(1, T):  # predicting symbol t after every prefix of t - 1 emitted symbols
        total = 0.0
        for prefix in itertools.product(range(1, lang.V), repeat=t - 1):
            ctx = [0, *prefix]
            prob = np.prod([np.exp(lang.conditional(ctx[:i])[ctx[i]]) for i in range(1, len(ctx))])
            lp = lang.conditional(ctx)[1:]
            total += prob * float(-(np.exp(lp) * lp).sum())
        expected.append(total)
    return expected


def test_entropy_floor_equals_brute_force_enumeration():
    lang = SyntheticLanguage(SyntheticSpec(vocab_size=5, rank=2, classes=2, lags=(1, 2), seed=3))
    T = 5
    expected = _brute_force_entropies(lang, T)
    assert np.allclose(lang.position_entropies(T), expected, rtol=0, atol=1e-12)
    assert lang.entropy_floor(T) == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("lags", [(1, 2), (1, 3)])  # (1, 3): a class history deeper than two symbols
def test_sampled_blocks_follow_the_true_distribution(lags):
    lang = SyntheticLanguage(SyntheticSpec(**SMALL, lags=lags))
    blocks = lang.blocks(range(3000), 16, seed=11, split="val")
    assert blocks[:, 0].eq(0).all() and blocks[:, 1:].ne(0).all() and blocks.max() < 64
    # the true model's loss on the sample matches the exact floor to sampling error
    x = blocks.numpy()
    nll = np.stack([-lang.conditional(x[:, :t])[np.arange(len(x)), x[:, t]] for t in range(1, 16)], axis=1).mean(axis=1)
    assert abs(nll.mean() - lang.entropy_floor(16)) < 4 * nll.std() / np.sqrt(len(x))
    assert lang.true_loss(blocks) == pytest.approx(nll.mean(), rel=1e-12)
    # the first symbol's frequencies match p(. | start)
    freq = np.bincount(x[:, 1], minlength=64) / len(x)
    p = np.exp(lang.conditional([0]))
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / len(x))


def test_blocks_are_reproducible_streamed_and_seeded():
    lang = SyntheticLanguage(SyntheticSpec(**SMALL))
    whole = lang.blocks(range(10), 24, seed=5)
    assert torch.equal(whole, torch.cat([lang.blocks(range(6), 24, seed=5), lang.blocks(range(6, 10), 24, seed=5)]))
    assert torch.equal(whole, SyntheticLanguage(SyntheticSpec(**SMALL)).blocks(range(10), 24, seed=5))
    assert not torch.equal(whole, lang.blocks(range(10), 24, seed=6))
    assert not torch.equal(whole, lang.blocks(range(10), 24, seed=5, split="val"))
    # a loader started at step 2 yields what the uninterrupted one yields from step 2; ranks split each batch
    full = list(SyntheticBlocks(lang, 5, 24, batch_size=4, max_steps=4))
    resumed = list(SyntheticBlocks(lang, 5, 24, batch_size=4, max_steps=4, start_step=2))
    assert len(full) == 4 and all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
    ranks = [list(SyntheticBlocks(lang, 5, 24, batch_size=2, max_steps=4, rank=r, world=2)) for r in (0, 1)]
    assert all(torch.equal(torch.cat([ranks[0][i], ranks[1][i]]), full[i]) for i in range(4))


@pytest.mark.parametrize("spec, words", [
    (SyntheticSpec(vocab_size=10, rank=9), "vocab_size - 2"),
    (SyntheticSpec(vocab_size=200, rank=50, classes=2, lags=(1,)), "reachable states"),
    (SyntheticSpec(lags=(0, 1)), "lags"),
])
def test_bad_language_is_refused(spec, words):
    with pytest.raises(ValueError, match=words):
        SyntheticLanguage(spec)


QUICK = ("--convergence.enabled", "false", "--weight_rank.enabled", "false")  # the measurements these tests do not read


def _synthetic_config(tmp_path, **over):
    return tiny_config(tmp_path, **{"data.source": "synthetic", "data.synthetic": dict(SMALL), "data.val_blocks": 16, **over})


def test_rank_above_vocabulary_is_one_line_and_writes_nothing(tmp_path, capsys):
    from lmdynamics.commands.fit import main

    assert main(["fit", "--config", str(_synthetic_config(tmp_path)), *QUICK, "--data.synthetic.rank", "63"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "rank 63" in lines[0] and "vocab_size" in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_on_synthetic_records_floor_and_logs_excess_loss(tmp_path):
    from transformers import AutoTokenizer

    from lmdynamics.commands.fit import main

    assert main(["fit", "--config", str(_synthetic_config(tmp_path)), *QUICK]) == 0
    run = tmp_path / "runs" / "tiny"
    info = json.loads((run / "run.json").read_text())
    lang = SyntheticLanguage(SyntheticSpec(**SMALL))
    assert info["synthetic"]["entropy_floor"] == pytest.approx(lang.entropy_floor(32), abs=1e-12)
    assert info["synthetic"]["rank"] == 8 and info["vocab_size"] == 128 and "synthetic" in info["corpus"]
    table = store.read_table(store.table_path(run))
    val = table[table.metric == "val_loss"].set_index("step")["value"]
    excess = table[table.metric == "excess_loss"].set_index("step")["value"]
    assert list(val.index) == [3, 6] and list(excess.index) == [3, 6]
    assert np.allclose(excess, val - info["synthetic"]["entropy_floor"], atol=1e-5)
    tok = AutoTokenizer.from_pretrained(run / "checkpoints" / "step00000006")
    assert len(tok) == 64 and tok.eos_token_id == 0 and tok.convert_tokens_to_ids("s17") == 17


ZIPF = {"vocab_size": 64, "rank": 8, "classes": 4, "zipf": 1.1}


@pytest.mark.parametrize("spec", [SyntheticSpec(zipf=1.0), SyntheticSpec(**ZIPF), SyntheticSpec(vocab_size=40, rank=38, classes=7, zipf=0.5),
                                  SyntheticSpec(vocab_size=64, rank=2, classes=4, zipf=2.0)])
def test_zipf_language_keeps_rank_exactly_r(spec):
    m = SyntheticLanguage(spec).centred_log_prob_matrix()
    s = np.linalg.svd(m, compute_uv=False)
    assert s[spec.rank - 1] > 1e-6 * s[0] and (len(s) == spec.rank or s[spec.rank] < 1e-11 * s[0])
    assert np.linalg.matrix_rank(m) == spec.rank


def test_zipf_frequencies_follow_the_law_and_the_floor_is_exact():
    """The Zipf bias is the state-independent part of every row: log p(v|s) - log p(w|s) averaged over states
    (the random part has mean ~0 over many states) tracks -s log(pi(v)/pi(w)); the floor is the brute-force one."""
    lang = SyntheticLanguage(SyntheticSpec(**ZIPF))
    order = np.exp(-lang.zipf_bias / 1.1)  # pi(v), 1 = most frequent
    assert sorted(np.round(order).astype(int)) == list(range(1, 64))
    # the exact stationary-ish symbol frequency (mean over positions of a 32-block) falls with pi like a power law
    freq = lang.state_marginals(32).mean(axis=0) @ lang.probs[:, 1:]
    slope = np.polyfit(np.log(order), np.log(freq), 1)[0]
    assert -1.6 < slope < -0.6  # the law's exponent -1.1, blurred by the context-dependent part
    half = SyntheticLanguage(SyntheticSpec(**{**ZIPF, "zipf": 0.5}))  # an exponent below 1 biases as well
    assert sorted(np.round(np.exp(-half.zipf_bias / 0.5)).astype(int)) == list(range(1, 64))
    zero = SyntheticLanguage(SyntheticSpec(**{**ZIPF, "zipf": 0.0}))
    assert abs(np.polyfit(np.log(order), np.log(zero.state_marginals(32).mean(axis=0) @ zero.probs[:, 1:]), 1)[0]) < 0.3
    small = SyntheticLanguage(SyntheticSpec(vocab_size=5, rank=2, classes=2, lags=(1, 2), seed=3, zipf=1.5))
    T = 5
    expected = _brute_force_entropies(small, T)
    assert small.entropy_floor(T) == pytest.approx(np.mean(expected), abs=1e-12)
    blocks = lang.blocks(range(3000), 16, seed=2, split="val")
    nll = np.array([lang.true_loss(blocks[i : i + 300]) for i in range(0, 3000, 300)])
    assert abs(nll.mean() - lang.entropy_floor(16)) < 4 * nll.std() / np.sqrt(len(nll))


def test_finite_training_set_repeats_every_block_once_per_epoch():
    lang = SyntheticLanguage(SyntheticSpec(**SMALL, train_blocks=12))
    stream = list(SyntheticBlocks(lang, 5, 16, batch_size=4, max_steps=9))  # 36 blocks = 3 epochs of 12
    pool = lang.blocks(range(12), 16, seed=5)
    keys = {tuple(b.tolist()): i for i, b in enumerate(pool)}
    seen = [keys[tuple(b.tolist())] for batch in stream for b in batch]  # every block is one of the 12
    epochs = [seen[i : i + 12] for i in (0, 12, 24)]
    assert all(sorted(e) == list(range(12)) for e in epochs)  # each epoch: every block once
    assert epochs[0] != epochs[1] != epochs[2]  # in a new order
    resumed = list(SyntheticBlocks(lang, 5, 16, batch_size=4, max_steps=9, start_step=5))
    assert all(torch.equal(a, b) for a, b in zip(stream[5:], resumed))
    assert len({tuple(b.tolist()) for batch in SyntheticBlocks(SyntheticLanguage(SyntheticSpec(**SMALL)), 5, 16, 4, 9) for b in batch}) == 36
    # the language (rank, floor, validation split) does not depend on the training set's size
    assert SyntheticLanguage(SyntheticSpec(**SMALL)).entropy_floor(16) == lang.entropy_floor(16)


@pytest.mark.parametrize("over, words", [({"zipf": -1.0}, "zipf"), ({"zipf": 1.0, "rank": 1}, "rank >= 2"), ({"train_blocks": 0}, "train_blocks")])
def test_bad_language_options_are_refused(over, words):
    with pytest.raises(ValueError, match=words):
        SyntheticLanguage(SyntheticSpec(**{**SMALL, **over}))


def test_new_options_leave_existing_language_ids_alone():
    assert SyntheticSpec(**SMALL).language_id == SyntheticSpec(**SMALL, zipf=0.0, train_blocks=None).language_id
    assert len({SyntheticSpec(**SMALL).language_id, SyntheticSpec(**ZIPF).language_id, SyntheticSpec(**SMALL, train_blocks=8).language_id}) == 3


def test_bad_language_option_on_the_cli_is_one_line_and_writes_nothing(tmp_path, capsys):
    from lmdynamics.commands.fit import main

    assert main(["fit", "--config", str(_synthetic_config(tmp_path)), *QUICK, "--data.synthetic.train_blocks", "0"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "train_blocks" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_no_block_indices_give_no_blocks():
    lang = SyntheticLanguage(SyntheticSpec(vocab_size=64, rank=4))
    for split in ("train", "val"):
        empty = lang.blocks([], 16, seed=3, split=split)
        assert tuple(empty.shape) == (0, 16) and empty.dtype == torch.int64


def test_identity_tokenizer_maps_symbol_i_to_id_i_and_back():
    from lmdynamics.data.synthetic import identity_tokenizer
    tok = identity_tokenizer(12)
    assert len(tok) == 12 and tok.eos_token_id == 0 and tok.bos_token_id == 0
    assert tok.convert_ids_to_tokens([0, 5, 11, 1]) == [tok.eos_token, "s5", "s11", "s1"]
    assert tok("s3 s10", add_special_tokens=False)["input_ids"] == [3, 10]
    assert tok("s12", add_special_tokens=False)["input_ids"] == [0]  # outside the vocabulary: unknown = id 0


def test_identity_tokenizer_decodes_symbols_as_words_that_encode_back():
    """Decoded text (``generate`` on a synthetic run) is the words ``s<i>`` separated by spaces: encoding it gives
    the same ids back, end-of-text included."""
    from lmdynamics.data.synthetic import identity_tokenizer
    tok = identity_tokenizer(12)
    ids = [0, 5, 11, 1, 1, 0, 7]
    text = tok.decode(ids)
    assert text == "<|endoftext|> s5 s11 s1 s1 <|endoftext|> s7"
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert tok.decode([5]) == "s5"  # one symbol: its word (token classes read single tokens)


@pytest.mark.parametrize("lags", [(1, 2), (1, 3)])  # (1, 3): more class histories than states
def test_state_marginals_are_the_state_frequencies_of_sampled_blocks(lags):
    lang = SyntheticLanguage(SyntheticSpec(**SMALL, lags=lags))
    exact = lang.state_marginals(8)  # [positions 1..7, state]
    np.testing.assert_allclose(exact.sum(axis=1), 1.0, rtol=1e-12)
    x = lang.blocks(range(4000), 8, seed=5, split="val").numpy()
    for t in (1, 2, 5):
        seen = np.bincount(lang.state(x[:, :t]), minlength=lang.num_states) / len(x)
        assert np.abs(seen - exact[t - 1]).max() < 4 * np.sqrt(exact[t - 1].max() / len(x)), t


def _accepted(**over) -> bool:
    try:
        SyntheticSpec(**over).check()
    except ValueError:
        return False
    return True


def test_accepted_specs_end_exactly_at_the_documented_limits():
    """Each documented bound (``SyntheticSpec`` and its check's messages) holds at its edge and fails one past it:
    V >= 3; 1 <= R <= V - 2; 1 <= C <= V - 1; lags distinct and >= 1; zipf >= 0, zipf > 0 needs R >= 2;
    train_blocks >= 1 or empty; at most 200,000 class histories (C + 1)^max(lags)."""
    base = dict(vocab_size=10, rank=1, classes=2, lags=(1,))
    assert _accepted(**{**base, "vocab_size": 3}) and not _accepted(**{**base, "vocab_size": 2})
    assert _accepted(**{**base, "rank": 8}) and not _accepted(**{**base, "rank": 9}) and not _accepted(**{**base, "rank": 0})
    assert _accepted(**{**base, "classes": 9}) and not _accepted(**{**base, "classes": 10})
    assert _accepted(**{**base, "classes": 1}) and not _accepted(**{**base, "classes": 0})
    assert _accepted(**{**base, "lags": (1, 4)}) and not _accepted(**{**base, "lags": (0, 1)})
    assert not _accepted(**{**base, "lags": ()}) and not _accepted(**{**base, "lags": (2, 2)})
    assert _accepted(**{**base, "zipf": 0.0}) and not _accepted(**{**base, "zipf": -0.1})
    assert not _accepted(**{**base, "zipf": 0.5}) and _accepted(**{**base, "zipf": 0.5, "rank": 2})
    assert _accepted(**{**base, "train_blocks": 1}) and _accepted(**{**base, "train_blocks": None})
    assert not _accepted(**{**base, "train_blocks": 0})
    wide = dict(vocab_size=300_000, rank=1, lags=(1,))
    assert _accepted(**wide, classes=199_999) and not _accepted(**wide, classes=200_000)  # 200,000 histories exactly
    assert _accepted(vocab_size=500, rank=1, classes=446, lags=(1, 2))  # 447^2 = 199,809
    assert not _accepted(vocab_size=500, rank=1, classes=447, lags=(1, 2))  # 448^2 = 200,704


@pytest.mark.parametrize("lags", [(1,), (1, 2), (2,)])
def test_the_rank_may_equal_the_number_of_reachable_states_and_not_exceed_it(lags):
    """R is bounded by the reachable states (``SyntheticSpec``): R = their number builds a language of rank
    exactly R; R + 1 is refused naming both numbers."""
    n = len(SyntheticLanguage(SyntheticSpec(vocab_size=12, rank=1, classes=2, lags=lags)).reachable_states())
    assert n + 1 <= 10  # R + 1 is still within V - 2, so only the state bound can refuse it
    lang = SyntheticLanguage(SyntheticSpec(vocab_size=12, rank=n, classes=2, lags=lags))
    logp = lang.log_probs[lang.reachable_states()][:, 1:]
    centred = logp - logp.mean(axis=1, keepdims=True)
    assert np.linalg.matrix_rank(centred, tol=1e-8) == n
    with pytest.raises(ValueError, match=f"rank {n + 1} needs at least {n + 1} reachable states, the language has {n}"):
        SyntheticLanguage(SyntheticSpec(vocab_size=12, rank=n + 1, classes=2, lags=lags))


@pytest.mark.parametrize("zipf, rank", [(1.0, 3), (1.0, 5), (0.0, 2), (0.0, 4)])
def test_the_random_part_of_the_true_logits_has_standard_deviation_logit_scale(zipf, rank):
    """``logit_scale``: the standard deviation of the true logits' random part (with zipf > 0: once the Zipf bias
    -s log pi(v) is taken off). Each state's log-probabilities are its logits up to a constant, so the spread of
    the row-centred log-probabilities estimates it (960 states x 1499 symbols, two languages)."""
    var = []
    for seed in (0, 1):
        lang = SyntheticLanguage(SyntheticSpec(vocab_size=1500, rank=rank, classes=30, lags=(1, 2), logit_scale=2.0,
                                               zipf=zipf, seed=seed))
        part = lang.log_probs[:, 1:] - (lang.zipf_bias[None, :] if zipf else 0.0)
        var.append((part - part.mean(axis=1, keepdims=True)).var())
    assert np.sqrt(np.mean(var)) == pytest.approx(2.0, rel=0.06)


@pytest.mark.parametrize("lags", [(1,), (1, 2), (2,), (1, 3), (2, 3)])
def test_reachable_states_are_exactly_the_states_some_prefix_reaches(lags):
    """Every class sequence after the start symbol, up to the depth where no lag sees the start any more, run
    through ``state``: the set of states met equals ``reachable_states`` (start patterns included, no state that
    no prefix reaches)."""
    lang = SyntheticLanguage(SyntheticSpec(vocab_size=12, rank=1, classes=2, lags=lags))
    symbol_of_class = [int(np.flatnonzero(lang.token_class == c)[0]) for c in range(lang.C)]
    met = set()
    for length in range(1, max(lags) + 2):  # prefixes: the start symbol then length - 1 symbols
        for classes in itertools.product(range(lang.C), repeat=length - 1):
            prefix = np.array([0] + [symbol_of_class[c] for c in classes])
            met.add(int(lang.state(prefix)))
    assert sorted(met) == lang.reachable_states().tolist()


@pytest.mark.parametrize("classes, lags", [(2, (1,)), (3, (1, 2)), (2, (1, 3)), (4, (2, 3, 5))])
def test_states_number_every_class_tuple_once(classes, lags):
    """``state_of_classes`` maps the (C + 1)^k tuples of classes at the lags (start class C included) one to one
    onto the language's state indices 0 .. num_states - 1, for tuples in any batch shape."""
    lang = SyntheticLanguage(SyntheticSpec(vocab_size=40, rank=1, classes=classes, lags=lags))
    tuples = np.array(list(itertools.product(range(classes + 1), repeat=len(lags))))
    states = lang.state_of_classes(tuples)
    assert sorted(states.tolist()) == list(range(lang.num_states)) == list(range(lang.log_probs.shape[0]))
    np.testing.assert_array_equal(lang.state_of_classes(tuples.reshape(-1, 1, len(lags))), states.reshape(-1, 1))


def test_state_marginals_have_one_row_per_predicted_position():
    lang = SyntheticLanguage(SyntheticSpec(vocab_size=12, rank=2, classes=2, lags=(1, 2)))
    for context_length in (1, 2, 5):
        marginals = lang.state_marginals(context_length)
        assert marginals.shape == (context_length - 1, lang.num_states)
        np.testing.assert_allclose(marginals.sum(axis=1), 1.0)
    assert lang.position_entropies(1).shape == (0,)


def test_the_entropy_floor_is_computed_without_numpy_warnings():
    """The start symbol's probability is 0 and its log-probability -inf in every state: its 0 * -inf term is
    dropped, silently (a RuntimeWarning on every floor would reach every synthetic run's log)."""
    import warnings
    lang = SyntheticLanguage(SyntheticSpec(**SMALL))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        floor = lang.entropy_floor(16)
    assert np.isfinite(floor) and 0 < floor < np.log(SMALL["vocab_size"] - 1)
