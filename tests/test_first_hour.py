"""What a new user meets first, through the training CLI in this process: run names that are not one
directory name, an unusable run.root, empty and malformed config files, the dry run's run directory. Each is
one line naming what is wrong (exit 2) and writes nothing."""

import json
import sys

import pytest

from lmdynamics.commands.fit import main
from tests.helpers.cli import tiny_config


def last_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), lines
    return lines[-1]


@pytest.mark.parametrize("name", ["a/b", "..", ".", "x/../y", "/abs", ""])
def test_a_run_name_must_be_one_directory_name(tmp_path, capsys, name):
    cfg = tiny_config(tmp_path)
    assert main(["fit", "--config", str(cfg), "--run.name", name]) == 2
    err = last_error(capsys)
    assert "run.name" in err and "one directory name" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "abs").exists()


def test_an_unusable_run_root_is_named(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cfg = tiny_config(tmp_path)
    roots = [str(blocker / "runs")] + (["/proc/nope"] if sys.platform.startswith("linux") else [])
    for root in roots:
        assert main(["fit", "--config", str(cfg), "--run.root", root]) == 2
        err = last_error(capsys)
        assert f"run.root {root}" in err and "--run.root" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "tiny.yaml"]


def test_an_empty_config_file_is_named(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    assert main(["fit", "--config", str(empty)]) == 2
    err = last_error(capsys)
    assert str(empty) in err and "is empty" in err


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: x\n   root: [1\n")
    assert main(["fit", "--config", str(tiny_config(tmp_path)), f"--config={bad}"]) == 2
    err = last_error(capsys)
    assert f"{bad}, line 3" in err and "malformed YAML" in err
    assert not (tmp_path / "runs").exists()


def test_a_list_is_no_config(tmp_path, capsys):
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert main(["fit", "--config", str(listed)]) == 2
    assert str(listed) in last_error(capsys)


def test_the_dry_run_prints_the_run_directory_and_writes_nothing(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["fit", "--config", str(cfg), "--run.dry_run", "true", "--run.name", "where"]) == 0
    out = capsys.readouterr().out
    plan = json.loads(out[out.index("{"):])
    assert plan["run_directory"] == str((tmp_path / "runs" / "where").absolute())
    assert not (tmp_path / "runs").exists()


def test_configs_lists_whole_sentences(capsys):
    """`lmdynamics configs`: each description is the first whole sentence of the config's leading comment,
    never a line of it cut where the comment wrapped."""
    from lmdynamics.commands.configs import config_root, leading_paragraph
    from lmdynamics.cli import main as lmdynamics

    assert lmdynamics(["configs"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    paths = sorted(config_root().rglob("*.yaml"))
    assert len(rows) == len(paths)
    for row, path in zip(rows, paths):
        name, description = row.split(None, 1)
        assert name == path.relative_to(config_root().parent).as_posix()
        prose = leading_paragraph(path.read_text())
        assert prose.startswith(description.rstrip(".")), (name, description)
        assert description.endswith((".", "!", "?")), (name, description)
        assert not description.endswith(("sec.", "al.", "e.g.")), (name, description)
    mos = next(r for r in rows if r.startswith("configs/train/interventions/mos.yaml"))
    assert mos.endswith("not bounded by rank d + 1.")


def test_lowrank_head_progress_lines_carry_an_eta(monkeypatch):
    """The sweep's progress lines: each phase announced, units done, and an ETA of (units left) x (seconds per
    unit so far), here on a clock that advances 2 s per unit: after 4 of 10 units, 6 x 2 = 12 s."""
    import io

    from lmdynamics.saturation import lowrank_head as lh

    now = [100.0]
    monkeypatch.setattr(lh.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    progress = lh.Progress(stream=out, every_seconds=0)
    progress.phase("training heads", 10, "head steps")
    progress.detail = "head 1/2 (rank 4)"
    for _ in range(4):
        now[0] += 2.0
        progress.advance()
    progress.done()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[lmdynamics] lowrank-head: training heads 0/10 head steps")
    assert "4/10 head steps | head 1/2 (rank 4) | elapsed 0:00:08 | ETA 0:00:12" in lines[4]
    assert lines[-1].endswith("done in 0:00:08") and progress.seconds == {"training heads": 8.0}


def test_the_lowrank_head_sweep_reports_progress_through_its_phases(tmp_path):
    """On a small random model: every phase is announced, each head is named, and the result is unchanged by
    the reporting (the same losses as a sweep without it)."""
    import io

    import torch

    from lmdynamics.saturation import lowrank_head as lh

    g = torch.Generator().manual_seed(0)
    head = torch.randn(40, 8, generator=g)
    train = lh.Features(torch.randn(500, 8, generator=g), torch.randint(0, 40, (500,), generator=g), head)
    held = lh.Features(torch.randn(200, 8, generator=g), torch.randint(0, 40, (200,), generator=g), head)
    out = io.StringIO()
    reported = lh.sweep(train, held, [2, 8], steps=20, progress=lh.Progress(stream=out, every_seconds=0))
    quiet = lh.sweep(train, held, [2, 8], steps=20)
    assert reported == quiet
    text = out.getvalue()
    assert "training heads" in text and "ETA" in text
    assert "head 1/3 (rank 2)" in text and "head 3/3 (full)" in text and "done in" in text


@pytest.mark.parametrize("synthetic", [True, False])
def test_the_comparison_report_defines_excess_loss_only_on_a_synthetic_language(tmp_path, synthetic):
    from lmdynamics.cli import main as lmdynamics_main

    def compare(argv):
        return lmdynamics_main(["compare", *argv])
    from tests.test_compare import _fake_run

    for name, d in (("a", 8), ("b", 16)):
        run = _fake_run(tmp_path / "runs", name, d, "plain", {50: 3.0, 100: 2.9})
        if not synthetic:  # a run on a real corpus: no entropy floor in its run.json
            info = json.loads((run / "run.json").read_text())
            del info["synthetic"]
            (run / "run.json").write_text(json.dumps(info))
    assert compare([str(tmp_path / "runs"), "--out", str(tmp_path / "cmp")]) == 0
    intro = (tmp_path / "cmp" / "report.md").read_text().split("\n\n")[1]
    assert ("synthetic language's exact entropy floor" in intro) == synthetic
    assert "A late rise" in intro


def test_analysis_commands_name_an_empty_or_malformed_config_file(tmp_path, capsys):
    from lmdynamics.cli import main as lmdynamics

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a\nsteps: 1\n")
    for command in (["analyze"], ["report"], ["generate"]):
        assert lmdynamics([*command, "--config", str(empty)]) == 2
        assert f"config file {empty} is empty" in last_error(capsys)
        assert lmdynamics([*command, "--config", str(bad)]) == 2
        err = last_error(capsys)
        assert f"config file {bad}, line" in err and "malformed YAML" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "empty.yaml"]


@pytest.mark.parametrize("command", ["analyze", "report", "convergence", "generate", "saturation"])
def test_every_command_with_config_files_names_a_bad_one(tmp_path, capsys, command):
    """Every command whose parser reads ``--config`` files (jsonargparse's) checks them first: an empty file, a
    list and malformed YAML are each one line naming the file, exit 2, nothing written."""
    from lmdynamics.cli import main as lmdynamics

    cases = {"empty.yaml": ("", "is empty"), "list.yaml": ("- a\n- b\n", "holds a list"),
             "bad.yaml": ("models: [a\nsteps: 1\n", "malformed YAML")}
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
    for name, (_, words) in cases.items():
        assert lmdynamics([command, "--config", str(tmp_path / name)]) == 2
        assert f"config file {tmp_path / name}" in (line := last_error(capsys)) and words in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)
