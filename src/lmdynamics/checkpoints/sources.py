"""Checkpoint sources: a hub repo with ``stepN`` revisions (Pythia) or a local training run directory.

Both resolve a step to a local Hugging Face checkpoint directory (config.json, weights, tokenizer), which
the analysis streams tensors from or loads with ``from_pretrained``. The hub source goes through
``huggingface_hub.hf_hub_download``, so it works offline (``HF_HUB_OFFLINE=1``) from a populated cache
(``models--Org--name/refs/stepN`` -> ``snapshots/<commit>/``) and downloads only what it needs online.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmdynamics.checkpoints.steps import PYTHIA_TOKENS_PER_STEP, select_steps
from lmdynamics.checkpoints.streaming import WEIGHT_FILES, CheckpointError, CorruptCheckpointError, weight_files
from lmdynamics.layout import RunLayout, tokens_at
_REPO_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


@dataclass
class Checkpoint:
    """One checkpoint of one model, resolved to a local directory."""

    run: str
    model: str
    step: int
    tokens: int
    path: Path
    config: dict = field(default_factory=dict)

    @property
    def num_heads(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def tokenizer_file(self) -> Path | None:
        path = self.path / "tokenizer.json"
        return path if path.is_file() else None

    def weight_files(self) -> list[Path]:
        return weight_files(self.path)


def _read_config(directory: Path, label: str) -> dict:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{label}: {path} is missing; is it a Hugging Face checkpoint directory?") from None
    except ValueError as err:
        raise CorruptCheckpointError(f"{label}: {path} is not valid JSON ({err})") from err
    if config.get("model_type") != "gpt_neox":
        raise CheckpointError(f"{label}: model_type is {config.get('model_type')!r}, not 'gpt_neox'; only GPT-NeoX models are supported")
    return config


class HubSource:
    """A hub repository whose revisions ``stepN`` are the checkpoints (e.g. ``EleutherAI/pythia-160m``).

    ``tokens_per_step`` defaults to Pythia's 2,097,152. Steps for ``all`` are the 154 released Pythia
    steps (the hub is not asked for its branch list, so this works offline).
    """

    def __init__(self, repo_id: str, tokens_per_step: int = PYTHIA_TOKENS_PER_STEP, revision_format: str = "step{step}",
                 cache_dir: str | os.PathLike | None = None):
        if not _REPO_ID.match(repo_id):
            raise ValueError(f"{repo_id!r} is not a hub repo id like 'EleutherAI/pythia-160m' nor an existing run directory")
        self.repo_id = repo_id
        self.run = repo_id
        self.model = repo_id.split("/")[-1]
        self.tokens_per_step = int(tokens_per_step)
        self.revision_format = revision_format
        self.cache_dir = cache_dir

    def __repr__(self) -> str:
        return f"HubSource({self.repo_id!r})"

    def steps(self, spec) -> list[int]:
        return select_steps(spec, None)

    def tokens(self, step: int) -> int:
        return tokens_at(step, self.tokens_per_step)

    def checkpoint(self, step: int) -> Checkpoint:
        """Resolve ``step`` to a local snapshot directory (config, weights and tokenizer fetched or found)."""
        revision = self.revision_format.format(step=step)
        label = f"{self.repo_id}@{revision}"
        config_path = self._download("config.json", revision, label, required=True)
        directory = Path(config_path).parent
        config = _read_config(directory, label)
        for name in WEIGHT_FILES:
            got = self._download(name, revision, label, required=False)
            if got is None:
                continue
            if name.endswith(".index.json"):
                shards = dict.fromkeys(json.loads(Path(got).read_text())["weight_map"].values())
                for shard in shards:
                    self._download(shard, revision, label, required=True)
            break
        else:
            raise CheckpointError(f"{label}: no weight file ({', '.join(WEIGHT_FILES)}) in the repo or the local cache")
        self._download("tokenizer.json", revision, label, required=False)
        return Checkpoint(self.run, self.model, int(step), self.tokens(step), directory, config)

    def repair_hint(self, step: int) -> str:
        """What to do about a corrupt file of this revision."""
        revision = self.revision_format.format(step=step)
        return (f"delete revision {revision} of {self.repo_id} from the Hugging Face cache (`huggingface-cli delete-cache`) "
                f"and download it again, or leave step {step} out")

    def tokenizer_file(self, step: int) -> Path | None:
        """The revision's tokenizer.json (fetched alone, without the weights), or None if it has none."""
        revision = self.revision_format.format(step=step)
        got = self._download("tokenizer.json", revision, f"{self.repo_id}@{revision}", required=False)
        return Path(got) if got else None

    def _download(self, filename: str, revision: str, label: str, required: bool) -> str | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            return hf_hub_download(self.repo_id, filename, revision=revision, cache_dir=self.cache_dir)
        except RevisionNotFoundError:
            raise CheckpointError(f"{label}: revision {revision} does not exist on the hub; check the step list") from None
        except RepositoryNotFoundError:
            raise CheckpointError(f"{label}: repository {self.repo_id} not found (or gated); check the model name") from None
        except LocalEntryNotFoundError:
            if not required:
                return None
            raise CheckpointError(
                f"{label}: {filename} is not in the local Hugging Face cache and the hub cannot be reached "
                f"(offline); download revision {revision} first or drop that step"
            ) from None
        except EntryNotFoundError:
            if not required:
                return None
            raise CheckpointError(f"{label}: the revision has no {filename}") from None


class RunSource:
    """A local training run: ``<run>/run.json`` and one Hugging Face checkpoint per ``<run>/checkpoints/stepN``."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir)
        self.layout = RunLayout(self.path)
        meta_path = self.layout.run_json
        if not meta_path.is_file():
            raise CheckpointError(f"{self.path} is not a training run directory (no run.json); give a run directory or a hub repo id")
        try:
            meta = json.loads(meta_path.read_text())
            self.run = str(meta["run"])
            self.model = str(meta["model"])
            self.tokens_per_step = int(meta["tokens_per_step"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{meta_path} is malformed ({err}); it needs run, model and tokens_per_step") from err

    def __repr__(self) -> str:
        return f"RunSource({str(self.path)!r})"

    def _step_dirs(self) -> dict[int, Path]:
        return self.layout.checkpoint_dirs()

    def available_steps(self) -> list[int]:
        steps = sorted(self._step_dirs())
        if not steps:
            raise CheckpointError(f"run {self.path} has no checkpoints under {self.layout.checkpoints}; train it first (make train)")
        return steps

    def steps(self, spec) -> list[int]:
        return select_steps(spec, self.available_steps())

    def tokens(self, step: int) -> int:
        return tokens_at(step, self.tokens_per_step)

    def repair_hint(self, step: int) -> str:
        """What to do about a corrupt file of this run's checkpoint: it cannot be downloaded again."""
        return (f"a run's own checkpoint cannot be downloaded again: restore {self.layout.checkpoint_dir(step)} "
                f"from a backup or by training the run again, or leave step {step} out (steps, final_step)")

    def tokenizer_file(self, step: int) -> Path | None:
        directory = self._step_dirs().get(int(step))
        path = directory / "tokenizer.json" if directory is not None else None
        return path if path is not None and path.is_file() else None

    def checkpoint(self, step: int) -> Checkpoint:
        directory = self._step_dirs().get(int(step))
        label = f"{self.path}@step{step}"
        if directory is None:
            raise CheckpointError(f"{label}: no checkpoint for step {step} under {self.layout.checkpoints}; "
                                  f"{describe_steps(sorted(self._step_dirs()))}")
        return Checkpoint(self.run, self.model, int(step), self.tokens(step), directory, _read_config(directory, label))


def describe_steps(steps: list[int], shown: int = 12) -> str:
    """``the steps there are 0, 100, ..., 600`` (the first and last few of a long list), or that there are none."""
    if not steps:
        return "it has no checkpoints yet"
    if len(steps) > shown:
        listed = [*map(str, steps[: shown // 2]), "...", *map(str, steps[-shown // 2:])]
        return f"its {len(steps)} checkpoint steps are {', '.join(listed)}"
    return f"its checkpoint steps are {', '.join(map(str, steps))}"


def open_source(spec: str | os.PathLike, tokens_per_step: int | None = None, cache_dir: str | os.PathLike | None = None):
    """A run directory (an existing path) or a hub repo id (``Org/name``) as a checkpoint source."""
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; give a run directory or a hub repo id")
        return RunSource(path)
    from lmdynamics.hub import is_hub_id

    if not is_hub_id(spec):
        raise CheckpointError(f"run directory {path} does not exist; train it first (`make train` writes runs/demo) "
                              f"or give an existing run directory or a hub repo id (Org/name)")
    if tokens_per_step is None:
        tokens_per_step = PYTHIA_TOKENS_PER_STEP
    return HubSource(str(spec), tokens_per_step=tokens_per_step, cache_dir=cache_dir)


def add_to_hf_cache(checkpoint_dir: str | os.PathLike, repo_id: str, revision: str, cache_dir: str | os.PathLike,
                    commit: str | None = None) -> Path:
    """Import a local checkpoint directory into a Hugging Face hub cache as ``repo_id@revision``.

    Lays files out exactly as ``hf_hub_download`` does (``blobs/<sha256>``, ``snapshots/<commit>/<file>``
    symlinked to its blob, ``refs/<revision>``), so the hub source then finds the revision offline. Used by
    the tests and handy on air-gapped machines. Returns the snapshot directory.
    """
    import hashlib
    import shutil

    src = Path(checkpoint_dir)
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo_dir / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(file, blob)
        target = snapshot / file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(os.path.relpath(blob, target.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot
