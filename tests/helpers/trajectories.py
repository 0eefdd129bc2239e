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


def short_documents(n: int = 14, seed: int = 3) -> list[str]:
    """``n`` short documents of a few words (accents and digits included), drawn with ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = "alpha beta gamma delta the of and model layer head rank 42 (x) é".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 40)))) for _ in range(n)]


def run_directory(root: Path, data: dict, corpus_id: str) -> Path:
    """A run directory as training leaves it for the trajectory commands: config.yaml's data section, run.json's
    corpus id (no checkpoints)."""
    import json

    import yaml

    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    (root / "run.json").write_text(json.dumps({"corpus_id": corpus_id}))
    return root
