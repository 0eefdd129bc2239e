"""Shared test set-up: no hub access, few threads, the Pythia tokenizer from ../shared."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Spin-waiting OpenMP threads make small LAPACK calls very slow when the cores are shared (CI, other jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
PYTHIA_TOKENIZER = ROOT.parent / "shared" / "data" / "pythia-20b-tokenizer.json"


@pytest.fixture(scope="session")
def pythia_tokenizer_file() -> Path:
    if not PYTHIA_TOKENIZER.is_file():
        pytest.skip(f"the Pythia tokenizer is expected at {PYTHIA_TOKENIZER}")
    return PYTHIA_TOKENIZER


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def local_text(tmp_path_factory) -> Path:
    """Plain English-like text, enough for Pythia's validation split to hold 128 probe blocks of 2048 tokens."""
    rng = random.Random(0)
    words = ("the of and to in is a that for it as was with be by on not he this are or his from at which but "
             "have an they you were her she there been one all we their").split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(400, 900))) + "." for _ in range(600)]
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n\n".join(docs))
    return path
