"""The live trajectory recorder (``callbacks.trajectories.TrajectoryRecorder``) driven through its hooks on a tiny
GPT-NeoX: the stored per-token losses and the validation perplexity against a float64 recomputation, the steps it
records, the store's token table and metadata, a resumed recording, other ranks (ZeRO-3 included) and bad
settings. Fast (no training run): ``make mutate``'s selection for the module; the real CLI's live = offline test
is ``test_trajectories_live`` (slow)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lmdynamics import store
from lmdynamics.callbacks.trajectories import TRAJECTORY_VAL_PPL, TrajectoryRecorder
from lmdynamics.trajectories.storage import TrajectoryStore

VOCAB, EOS, TOKENS_PER_STEP = 32, 0, 7


class Tokenizer:
    def get_vocab(self):
        return {f"t{i}": i for i in range(VOCAB)}


def tiny_model():
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=16, vocab_size=VOCAB))


def val_blocks(n=6, t=9, seed=0):
    """Packed validation blocks with end-of-text ids inside, at a block's start and across a block boundary."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(1, VOCAB, (n, t), generator=g)
    blocks[0, 3] = blocks[1, 0] = blocks[2, t - 1] = blocks[4, 5] = EOS
    return blocks


def losses_64(model, blocks):
    """-log p(x_{t+1} | x_{<=t}) of every token after the first of each block, from float64 logits."""
    was_training = model.training
    with torch.no_grad():
        logits = model.eval()(input_ids=blocks).logits.double()[:, :-1]
    model.train(was_training)
    return (torch.logsumexp(logits, -1) - logits.gather(-1, blocks[:, 1:, None]).squeeze(-1)).numpy()


def perturb(model, step):
    """The model changes between recorded steps, as in training."""
    g = torch.Generator().manual_seed(1000 + step)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def record_run(run, cb, blocks, model, start=0, stop=4, schedule=None, rank=0, expected=None):
    """The hooks Lightning calls for steps start..stop (max_steps ``stop``); ``expected[step]`` = the float64 losses
    of the model as it was measured."""
    run.mkdir(parents=True, exist_ok=True)
    cb.attach(None, schedule)
    dm = SimpleNamespace(val_blocks_tensor=blocks, eos_id=EOS, tokenizer=Tokenizer())
    trainer = SimpleNamespace(datamodule=dm, is_global_zero=rank == 0, global_rank=rank, global_step=start,
                              accumulate_grad_batches=1, max_steps=stop, default_root_dir=str(run), loggers=[],
                              world_size=2 if rank else 1)
    module = SimpleNamespace(model=model, spec=SimpleNamespace(name="m"), tokens_per_step=TOKENS_PER_STEP)
    original = cb.measure

    def measure(trainer, pl_module, step):
        perturb(model, step)
        if expected is not None:  # a step measured again keeps its first values (the store does not rewrite)
            expected.setdefault(step, losses_64(model, blocks))
        return original(trainer, pl_module, step)

    cb.measure = measure
    cb.setup(trainer, module, "fit")
    cb.on_train_start(trainer, module)
    for step in range(start + 1, stop + 1):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module, None, None, step - 1)
    return trainer


def test_stored_losses_and_perplexity_are_the_float64_next_token_losses_of_each_step(tmp_path):
    """At each recorded step: the store holds the losses of the first ``num_blocks`` blocks, block by block and
    position by position (float16: within 2^-10 relative), and the perplexity exp(mean loss) over *all* validation
    blocks, also as the ``trajectory_val_ppl`` row (the step's tokens); the model is left in training mode."""
    blocks, model, expected = val_blocks(), tiny_model(), {}
    run = tmp_path / "live"
    model.train()
    record_run(run, TrajectoryRecorder(num_blocks=4, batch_size=3, every=1, enabled=True), blocks, model, stop=3,
               expected=expected)
    assert model.training
    traj = TrajectoryStore(run / "trajectories" / "live").read()
    assert traj.steps.tolist() == [0, 1, 2, 3] and traj.tokens.tolist() == [s * TOKENS_PER_STEP for s in range(4)]
    assert traj.losses.shape == (4 * 8, 4)
    for k, step in enumerate(traj.steps):
        np.testing.assert_allclose(traj.losses[:, k], expected[step][:4].reshape(-1), rtol=2.0 ** -10, atol=1e-6)
        assert traj.val_ppl[k] == pytest.approx(math.exp(expected[step].mean()), rel=1e-5)
    assert len({round(p, 3) for p in traj.val_ppl}) == 4  # the steps really differ
    table = store.read_table(store.table_path(run))
    rows = table[table.metric == TRAJECTORY_VAL_PPL].sort_values("step")
    assert rows.step.tolist() == [0, 1, 2, 3] and rows.tokens.tolist() == traj.tokens.tolist()
    assert set(rows.layer) == {-1} and set(rows.component) == {"trajectories"}
    np.testing.assert_allclose(rows.value, traj.val_ppl, rtol=1e-12)


def test_the_store_names_every_token_and_describes_the_run(tmp_path):
    """Token table: ids of positions 1..T-1 of the recorded blocks, their block and position, and the document
    counted along the packed stream by end-of-text ids (an end-of-text belongs to the document it ends); the kept
    blocks; metadata a later comparison reads (model name, tokens per step, block length, live, tokenizer)."""
    from lmdynamics.probes.sources import tokenizer_fingerprint
    from lmdynamics.trajectories.offline import non_embedding_parameters

    blocks, model = val_blocks(), tiny_model()
    run = tmp_path / "run7"
    record_run(run, TrajectoryRecorder(num_blocks=3, every=2, enabled=True), blocks, model, stop=2)
    st = TrajectoryStore(run / "trajectories" / "run7")
    table = st.token_table()
    n, t = 3, blocks.shape[1]
    assert table.ids.tolist() == blocks[:n, 1:].reshape(-1).tolist()
    assert table.block.tolist() == [b for b in range(n) for _ in range(t - 1)]
    assert table.position.tolist() == list(range(1, t)) * n
    stream = blocks.reshape(-1).tolist()
    doc, documents = 0, []
    for i, x in enumerate(stream):  # the document of each token: end-of-texts seen before it
        documents.append(doc)
        doc += x == EOS
    documents = np.array(documents).reshape(blocks.shape)[:n, 1:]
    assert table.document.tolist() == documents.reshape(-1).tolist()
    assert torch.equal(st.blocks(), blocks[:n])
    meta = st.read().meta
    assert meta["model"] == "run7" and meta["source"] == str(run) and meta["recorded"] == "live"
    assert meta["tokens_per_step"] == TOKENS_PER_STEP and meta["block_tokens"] == t
    assert meta["tokenizer"] == tokenizer_fingerprint(Tokenizer()) and meta["parameters"] == non_embedding_parameters(model)
    assert meta["text"] == "validation split" and meta["val_ppl_on"] == "validation blocks"


@pytest.mark.parametrize("every, log_cap, schedule, expected", [
    (3, None, None, [0, 1, 2, 3, 6, 9, 12]),
    (3, 8, None, [0, 1, 2, 3, 4, 6, 8, 9, 12]),
    (None, None, (5, None), [0, 1, 2, 4, 5, 10, 12]),  # empty: the checkpoint steps
])
def test_trajectories_are_recorded_at_the_steps_of_the_schedule(tmp_path, every, log_cap, schedule, expected):
    cb = TrajectoryRecorder(num_blocks=1, every=every, log_cap=log_cap, enabled=True)
    run = tmp_path / "run"
    record_run(run, cb, val_blocks(t=6), tiny_model(), stop=12, schedule=schedule)
    assert TrajectoryStore(run / "trajectories" / "run").steps == expected


def test_a_resumed_recording_appends_to_the_same_store(tmp_path):
    """A new recorder (the process resumed from the checkpoint of step 1, after the killed one had recorded step 2)
    over the same store: step 2, measured again, is not stored twice; the later steps are appended; every value is
    the one its step's model gave."""
    blocks, model, expected = val_blocks(), tiny_model(), {}
    run = tmp_path / "run"
    record_run(run, TrajectoryRecorder(num_blocks=2, every=1, enabled=True), blocks, model, stop=2, expected=expected)
    cb = TrajectoryRecorder(num_blocks=2, every=1, enabled=True)
    record_run(run, cb, blocks, model, start=1, stop=4, expected=expected)
    traj = TrajectoryStore(run / "trajectories" / "run").read()
    assert traj.steps.tolist() == [0, 1, 2, 3, 4]
    for k, step in enumerate(traj.steps):
        np.testing.assert_allclose(traj.losses[:, k], expected[step][:2].reshape(-1), rtol=2.0 ** -10, atol=1e-6)


@pytest.mark.parametrize("sharded", [False, True])
def test_other_ranks_write_nothing_and_run_the_forward_passes_only_under_zero3(tmp_path, sharded):
    """Rank 1 writes no store and no row; under ZeRO-3 (sharded parameters) it runs the same forward passes as
    rank 0 (each layer's gather is a collective), otherwise none."""
    model = tiny_model()
    if sharded:
        for p in model.parameters():
            p.ds_id = 0  # what DeepSpeed ZeRO-3 marks its parameters with
    calls = []
    model.gpt_neox.register_forward_hook(lambda *args: calls.append(1))
    blocks = val_blocks(n=5)
    record_run(tmp_path / "run", TrajectoryRecorder(num_blocks=2, batch_size=2, every=1, enabled=True), blocks, model,
               stop=1, rank=1)
    assert len(calls) == (2 * 3 if sharded else 0)  # steps 0 and 1, 3 batches of 2 of the 5 blocks
    assert not (tmp_path / "run" / "trajectories").exists() and not store.table_path(tmp_path / "run").exists()


def test_recording_is_off_by_default(tmp_path):
    cb = TrajectoryRecorder(every=1)
    record_run(tmp_path / "run", cb, val_blocks(), tiny_model(), stop=2)
    assert not (tmp_path / "run" / "trajectories").exists() and cb.store is None


@pytest.mark.parametrize("over, words", [({"num_blocks": 0}, "num_blocks"), ({"batch_size": 0}, "batch_size"),
                                         ({"num_blocks": -1}, "num_blocks")])
def test_bad_settings_are_refused(over, words):
    with pytest.raises(ValueError, match=words):
        TrajectoryRecorder(**over)


def test_more_blocks_than_the_validation_split_has_are_refused_before_training(tmp_path):
    """``num_blocks`` above the validation blocks: one error at setup naming both numbers; with exactly as many
    blocks as there are, it records."""
    with pytest.raises(ValueError, match="trajectories.num_blocks 7 exceeds the 6 validation blocks"):
        record_run(tmp_path / "a", TrajectoryRecorder(num_blocks=7, every=1, enabled=True), val_blocks(), tiny_model())
    assert not (tmp_path / "a" / "trajectories").exists()
    record_run(tmp_path / "b", TrajectoryRecorder(num_blocks=6, every=1, enabled=True), val_blocks(), tiny_model(), stop=0)
    assert TrajectoryStore(tmp_path / "b" / "trajectories" / "b").num_tokens == 6 * 8


def test_one_block_a_batch_is_allowed_and_gives_the_same_values(tmp_path):
    """The smallest settings (one stored block, one block a forward pass) record the float64 losses and the
    perplexity over all validation blocks, as larger batches do."""
    blocks, model, expected = val_blocks(), tiny_model(), {}
    run = tmp_path / "run"
    record_run(run, TrajectoryRecorder(num_blocks=1, batch_size=1, every=1, enabled=True), blocks, model, stop=1,
               expected=expected)
    traj = TrajectoryStore(run / "trajectories" / "run").read()
    for k, step in enumerate(traj.steps):
        np.testing.assert_allclose(traj.losses[:, k], expected[step][0], rtol=2.0 ** -10, atol=1e-6)
        assert traj.val_ppl[k] == pytest.approx(math.exp(expected[step].mean()), rel=1e-5)


def test_the_demo_config_lists_the_recorder_defaults():
    """configs/train/demo.yaml's ``trajectories`` section shows every setting at the value a config that leaves it
    out gets (the callback's default)."""
    from pathlib import Path

    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/train/demo.yaml").read_text())
    r = TrajectoryRecorder()
    assert demo["trajectories"] == {"enabled": r.enabled, "num_blocks": r.num_blocks, "batch_size": r.batch_size,
                                    "every": r.every, "log_cap": r.log_cap}
