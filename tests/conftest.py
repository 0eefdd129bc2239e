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

#: `make mutate` (tests/helpers/mutate.py sets LMDYNAMICS_MUTATE=1) runs each covering test once per mutant, and no
#: mutated module renders figures: there a figure is written as a placeholder file under its own name, without the
#: PNG rendering (Figure.savefig: ~60% of the time of a test that writes a saturation report).
if os.environ.get("LMDYNAMICS_MUTATE") == "1":
    import matplotlib.figure

    def _placeholder_savefig(self, fname, *args, **kwargs):
        data = b"\x89PNG placeholder: make mutate does not render figures\n"
        fname.write(data) if hasattr(fname, "write") else Path(fname).write_bytes(data)

    matplotlib.figure.Figure.savefig = _placeholder_savefig

    # mutmut forks every mutant's test run from a server that has collected the tests: what the package imports
    # lazily (the CLI, Lightning, the GPT-NeoX model) is imported here once instead of once per mutant.
    import importlib
    import pkgutil

    import lmdynamics

    for _module in pkgutil.walk_packages(lmdynamics.__path__, "lmdynamics."):
        importlib.import_module(_module.name)
    importlib.import_module("transformers.models.gpt_neox.modeling_gpt_neox")
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


@pytest.fixture
def figure_texts(monkeypatch) -> dict[str, list[str]]:
    """``{file name: the texts drawn on the figure saved under it}`` (titles, axis labels, tick and legend
    labels) of every figure saved while the test runs, rendered or (under make mutate) not."""
    import re

    import matplotlib.figure
    import matplotlib.text

    seen: dict[str, list[str]] = {}
    original = matplotlib.figure.Figure.savefig

    def recording(self, fname, *args, **kwargs):
        name = re.sub(r"^\.(.+)\.[0-9a-f]{32}\.tmp$", r"\1", Path(str(fname)).name)  # atomic.atomic_path's temporary
        seen[name] = [t.get_text() for t in self.findobj(matplotlib.text.Text) if t.get_text()]
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    return seen


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


#: The test being set up, run or torn down (module- and session-scoped fixtures run inside the first test that needs
#: them, so the guard below names that test).
#: Outside every test (pytest-xdist starting its workers) processes are allowed.
OUTSIDE_A_TEST = "(outside a test)"
_CURRENT_TEST = {"nodeid": OUTSIDE_A_TEST, "slow": False}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    _CURRENT_TEST.update(nodeid=item.nodeid, slow=item.get_closest_marker("slow") is not None)


def _refusing(original):
    import traceback

    def start(*args, **kwargs):
        if _CURRENT_TEST["slow"] or _CURRENT_TEST["nodeid"] == OUTSIDE_A_TEST or any(frame.filename.replace(os.sep, "/").endswith(ALLOWED_PROCESS_STARTERS)
                                        for frame in traceback.extract_stack()):
            return original(*args, **kwargs)
        raise RuntimeError(f"{_CURRENT_TEST['nodeid']} starts a process (in the test or a fixture it uses): mark it "
                           "@pytest.mark.slow (make test-fast runs no subprocess, make or multi-process group)")
    return start


if FAST_SUITE:  # for the whole session, so that module- and session-scoped fixtures are held to it too
    import multiprocessing.process
    import subprocess

    subprocess.Popen.__init__ = _refusing(subprocess.Popen.__init__)
    multiprocessing.process.BaseProcess.start = _refusing(multiprocessing.process.BaseProcess.start)
