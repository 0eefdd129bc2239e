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
from hypothesis import settings  # noqa: E402

torch.set_num_threads(2)
# Property tests draw fresh examples on every run; in CI the same examples every time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
PYTHIA_TOKENIZER = ROOT.parent / "shared" / "data" / "pythia-20b-tokenizer.json"


def require_pythia_tokenizer(path: Path = PYTHIA_TOKENIZER) -> Path:
    """The Pythia tokenizer file from the shared data directory; skip without it, but fail in CI (``CI=true``),
    where a missing ../shared would otherwise hide the tokenizer and packing tests."""
    if path.is_file():
        return path
    why = (f"needs the Pythia tokenizer at {path}, which is missing: the shared data directory (../shared, "
           "beside this checkout; see docs/science.md sec. 1) is not there")
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{why}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(f"{why}; skipped outside CI (CI=true makes it a failure)")


@pytest.fixture(scope="session")
def pythia_tokenizer_file() -> Path:
    return require_pythia_tokenizer()


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


# `make test-fast` (LMDYNAMICS_TEST_FAST=1, `-m "not slow and not gpu"`): the inner loop of unit and property
# tests. A test in it that starts a process (a CLI subprocess, make, a multi-process group) fails with the line
# that says to mark it `slow`, so the fast suite stays fast as tests are added.
FAST_SUITE = os.environ.get("LMDYNAMICS_TEST_FAST", "") == "1"


#: Processes a fast test may start: building the bundled corpus runs pydoc in a child interpreter (a detail of
#: the data layer that many unit tests pass through, seconds once per cache directory).
ALLOWED_PROCESS_STARTERS = ("lmdynamics/data/python_docs.py",)


@pytest.fixture(autouse=True)
def _fast_suite_starts_no_process(request, monkeypatch):
    if FAST_SUITE and request.node.get_closest_marker("slow") is None:
        import multiprocessing.process
        import subprocess
        import traceback

        def refusing(original):
            def start(*args, **kwargs):
                if any(frame.filename.replace(os.sep, "/").endswith(ALLOWED_PROCESS_STARTERS)
                       for frame in traceback.extract_stack()):
                    return original(*args, **kwargs)
                raise RuntimeError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.slow "
                                   "(make test-fast runs no subprocess, make or multi-process group)")
            return start

        monkeypatch.setattr(subprocess.Popen, "__init__", refusing(subprocess.Popen.__init__))
        monkeypatch.setattr(multiprocessing.process.BaseProcess, "start",
                            refusing(multiprocessing.process.BaseProcess.start))
    yield
