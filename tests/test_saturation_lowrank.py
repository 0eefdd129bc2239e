"""Rank-constrained head on a frozen backbone: r = d reaches the full head's loss; loss falls with r."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lmdynamics.saturation.lowrank_head import features, head_loss, rank_grid, sweep, train_head


@pytest.fixture(scope="module")
def teacher():
    """A tiny GPT-NeoX whose own samples are the corpus: its full-rank head is then the best head there is."""
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=96, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)  # peaky next-token distributions: low rank hurts
        blocks = torch.randint(0, 96, (768, 1))
        for _ in range(23):
            logits = model(input_ids=blocks).logits[:, -1]
            blocks = torch.cat([blocks, torch.multinomial(logits.softmax(-1), 1)], dim=1)
    return model, blocks


def test_r_equal_d_reaches_the_full_head_and_loss_does_not_rise_with_r(teacher):
    model, blocks = teacher
    train, held = features(model, blocks[:512]), features(model, blocks[512:])
    for init, steps, lr in (("svd", 80, 3e-3), ("normal", 300, 2e-2)):
        result = sweep(train, held, [1, 2, 4, 8, 16], steps=steps, lr=lr, batch=1024, init=init)
        losses = result["ranks"]
        # the same function class as a full head trained the same way, and near the teacher's own head
        assert losses[16] == pytest.approx(result["full_trained"], abs=0.05), (init, losses, result)
        assert losses[16] < result["full"] + 0.1, (init, losses, result)
        for lo, hi in zip([1, 2, 4, 8], [2, 4, 8, 16]):
            assert losses[hi] <= losses[lo] + 0.02, (init, losses)
        assert losses[1] > result["full"] + 0.3  # rank 1 really is a bottleneck here


def test_full_head_loss_matches_the_model_and_grid():
    torch.manual_seed(1)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16, max_position_embeddings=16)).eval()
    blocks = torch.randint(0, 50, (4, 16))
    f = features(model, blocks)
    with torch.no_grad():
        ref = model(input_ids=blocks, labels=blocks).loss
    assert head_loss(f.h, f.y, f.head) == pytest.approx(float(ref), rel=1e-5)
    # at r = d the svd start is the full head itself
    w = train_head(f, 8, steps=0)
    assert torch.allclose(w, f.head, atol=1e-5)
    assert rank_grid(768) == [32, 64, 128, 256, 512, 768] and rank_grid(128) == [8, 16, 32, 64, 128]
