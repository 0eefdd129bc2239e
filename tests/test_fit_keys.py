"""A key typo of ``lmdynamics fit`` answers before lightning is imported (``training/fit_keys.py``): the key file is
the real parser's, it refuses only what the parser refuses, and it accepts every bundled config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from lmdynamics.commands import fit as fit_command
from lmdynamics.training import fit_keys

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = json.loads(fit_keys.KEYS_FILE.read_text())


def test_the_key_file_is_the_parsers():
    """Stale after a setting was added or renamed: regenerate with `.venv/bin/python -m lmdynamics.training.fit_keys`."""
    assert fit_keys.parser_sections() == SECTIONS


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "train").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_training_config_passes(config):
    assert fit_keys.unknown_key(["fit", "--config", str(config)]) is None


@pytest.mark.parametrize("argv", [
    ["--trainer.strategy.class_path", "lightning.pytorch.strategies.DDPStrategy"],  # under a setting: the parser's
    ["--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping"],
    ["--model.model.head.kind=mos", "--ckpt_path", "last", "--print_config"],
    ["--seed_everything", "3", "--run.dry_run", "true"],
])
def test_known_keys_and_keys_under_settings_pass(argv):
    assert fit_keys.unknown_key(["fit", *argv]) is None


def test_a_key_under_a_setting_in_a_file_is_left_to_the_parser(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"strategy": {"class_path": "x", "init_args": {"a": 1}}}}))
    assert fit_keys.unknown_key(["fit", "--config", str(config)]) is None


@pytest.mark.parametrize("tree, flag, unknown, guess", [
    ({"model": {"model": {"hiden_size": 8}}}, None, "model.model.hiden_size", "model.model.hidden_size"),
    ({"data": {"synthetic": {"zipff": 1.0}}}, None, "data.synthetic.zipff", "data.synthetic.zipf"),
    ({"trainr": {"max_steps": 3}}, None, "trainr", "trainer"),
    (None, "--trainer.max_step", "--trainer.max_step", "--trainer.max_steps"),
    (None, "--probe.num_sequence=8", "--probe.num_sequence", "--probe.num_sequences"),
])
def test_an_unknown_key_is_one_line_before_lightning(tmp_path, monkeypatch, capsys, tree, flag, unknown, guess):
    """The typo is answered with exit 2 and the closest key, and the training CLI is never imported (importing it
    fails here)."""
    argv = ["fit", "--config", str(ROOT / "configs" / "train" / "demo.yaml")]
    if tree is not None:
        (tmp_path / "typo.yaml").write_text(yaml.safe_dump(tree))
        argv += ["--config", str(tmp_path / "typo.yaml")]
    else:
        argv += [flag, "3"] if "=" not in flag else [flag]
    monkeypatch.setitem(sys.modules, "lmdynamics.training.cli", None)  # any import of it raises ImportError
    assert fit_command.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: unknown ") and unknown in err and f"did you mean {guess}?" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("section", sorted(SECTIONS), ids=lambda s: s or "top")
def test_every_section_of_the_file_is_closed_in_the_parser(tmp_path, monkeypatch, capsys, section):
    """What the file refuses, the real parser refuses too: a name no section has is an error there as well (so
    the fast check never refuses a key the parser would take)."""
    tree: dict = {"no_such_key_xyz": 1}
    for name in reversed(section.split(".") if section else []):
        tree = {name: tree}
    config = tmp_path / "bogus.yaml"
    config.write_text(yaml.safe_dump(tree))
    assert fit_keys.unknown_key(["fit", "--config", str(config)]) is not None
    monkeypatch.setattr(fit_keys, "unknown_key", lambda argv: None)  # the parser alone
    code = fit_command.main(["fit", "--config", str(config), "--print_config"])
    assert code == 2 and "no_such_key_xyz" in capsys.readouterr().err
