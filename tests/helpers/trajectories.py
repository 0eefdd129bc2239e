"""Two synthetic runs ("small", "large") sharing a byte-level BPE trained on the test text."""

from pathlib import Path

from lmdynamics.checkpoints.synthetic import tiny_config, write_synthetic_run
from lmdynamics.data.tokenizer import train_bpe

STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 100, 150, 200, 250, 300, 350, 400]


def two_synthetic_runs(root: Path, text: Path, steps=STEPS):
    tok = train_bpe([text.read_text()[:200_000]], 300, root / "tokenizer.json")
    small = write_synthetic_run(root / "small", steps, tiny_config(vocab_size=300), tok, run="small", seed=0)
    large = write_synthetic_run(root / "large", steps, tiny_config(vocab_size=300, hidden_size=64), tok, run="large", seed=5)
    return small, large
