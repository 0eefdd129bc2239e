"""A training run's own data, rebuilt from the ``data`` section of its ``config.yaml``: the training split it
trained on (corpus counts) and its validation blocks (the evaluation text live recording uses).

The tokenizer is the one saved beside the run's last checkpoint when given (not a re-derivation of the
config's spec), and the corpus must still read as the id recorded in ``run.json`` (else it changed since
training and the tokens would not be the run's).
"""

from __future__ import annotations

import json
import os

import yaml

from ..layout import RunLayout

__all__ = ["run_data_settings", "prepared_datamodule"]


def run_data_settings(run: str | os.PathLike, tokenizer_file: str | os.PathLike | None = None) -> tuple[dict, str]:
    """``TextDataModule`` keyword arguments of a run (``tokenizer`` replaced by ``tokenizer_file`` if given) and
    the corpus id its ``run.json`` records."""
    layout = RunLayout(run)
    if not layout.config.is_file() or not layout.run_json.is_file():
        raise FileNotFoundError(f"{run} is not a training run directory (no config.yaml and run.json); "
                                f"train it first or give another run directory")
    data = dict((yaml.safe_load(layout.config.read_text()) or {}).get("data") or {})
    if tokenizer_file is not None:
        data["tokenizer"] = str(tokenizer_file)
    return data, json.loads(layout.run_json.read_text()).get("corpus_id", "")


def prepared_datamodule(data: dict, corpus_id: str = "", label: str = ""):
    """A prepared ``TextDataModule`` of ``data``; with ``corpus_id``, refused (one line) if its corpus reads otherwise."""
    from ..data.datamodule import TextDataModule

    dm = TextDataModule(**data)
    dm.prepare()
    if corpus_id and dm.corpus_id != corpus_id:
        raise ValueError(f"{label}: the corpus now reads as {dm.corpus_id}, not {corpus_id} as in run.json (it changed "
                         f"since training); the run's tokens cannot be rebuilt from it")
    return dm
