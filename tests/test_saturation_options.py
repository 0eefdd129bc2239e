"""Every option of ``lmdynamics saturation`` reaches its consumer: the source readers, the measures join and the
report writer receive exactly what the command line (or a config file, the command line winning) says, in
process (the end-to-end runs of the command are in tests/test_saturation_cli.py)."""

import pytest

from lmdynamics.commands import saturation as command
from lmdynamics.report import saturation_report
from lmdynamics.saturation import analyze
from lmdynamics.saturation.detect import MARGIN, MIN_FRACTION


@pytest.fixture
def calls(monkeypatch):
    """Each consumer replaced by a recorder that returns a token naming its call."""
    seen = {}

    def recorder(name, result):
        def record(*args, **kwargs):
            seen[name] = (args, kwargs)
            return result
        return record

    monkeypatch.setattr(analyze, "from_table", recorder("from_table", "series of the table"))
    monkeypatch.setattr(analyze, "from_evals", recorder("from_evals", "series of the evals"))
    monkeypatch.setattr(analyze, "with_measures", recorder("with_measures", "series with measures"))
    monkeypatch.setattr(saturation_report, "write", recorder("write", "OUT/report.md"))
    return seen


def test_table_source_and_every_report_option(calls, capsys):
    code = command.main(["--table", "runs/x", "--metric", "val_loss", "--task", "lambada", "--out", "OUT",
                         "--measures", "analysis/y", "--min_fraction", "0.3", "--margin", "0.07", "--lower_is_better",
                         "--scaling_large", "a, b", "--params", "a=1e6,b=2e6", "--scaling_fixed", "B=1,beta=0.5,E=2"])
    assert code == 0, capsys.readouterr().err
    assert calls["from_table"] == (("runs/x", "val_loss", "lambada"), {})
    assert "from_evals" not in calls
    assert calls["with_measures"] == (("series of the table", "analysis/y"), {})
    assert calls["write"] == (("OUT", "series with measures", False, 0.3, 0.07),
                              {"large": ["a", "b"], "params": {"a": 1e6, "b": 2e6},
                               "fixed": {"B": 1.0, "beta": 0.5, "E": 2.0}})
    assert capsys.readouterr().out == "saturation report written to OUT/report.md\n"


def test_evals_source_and_the_defaults(calls):
    assert command.main(["--evals", "evals/", "--task", "lambada", "--metric", "acc", "--out", "OUT",
                         "--tokens_per_step", "2048", "--higher_is_better"]) == 0
    assert calls["from_evals"] == (("evals/", "lambada", "acc", 2048), {})
    assert "from_table" not in calls and "with_measures" not in calls
    assert calls["write"] == (("OUT", "series of the evals", True, MIN_FRACTION, MARGIN),
                              {"large": [], "params": {}, "fixed": {}})
    assert command.main(["--table", "t", "--metric", "m", "--out", "OUT"]) == 0
    assert calls["from_table"] == (("t", "m", None), {}) and calls["write"][0][2] is None  # direction: the data's


@pytest.mark.parametrize("given, wins", [(("--table", "cli-table"), "from_table"), (("--evals", "cli-evals"), "from_evals")])
def test_a_source_on_the_command_line_wins_over_the_configs(calls, tmp_path, given, wins):
    other = "table" if wins == "from_evals" else "evals"
    config = tmp_path / "sat.yaml"
    config.write_text(f"{other}: from-config\ntask: lambada\nmetric: ppl\nout: OUT\n")
    assert command.main(["--config", str(config), *given]) == 0
    assert calls[wins][0][0] == given[1]
    assert ({"from_table", "from_evals"} - {wins}).isdisjoint(calls)


@pytest.mark.parametrize("argv, message", [
    (["--table", "t", "--evals", "e"], "give one of --evals DIR or --table PATH, not both"),
    (["--scaling_fixed", "C=1"], "--scaling_fixed takes B, beta and E, not ['C']"),
    (["--scaling_fixed", "b=1"], "--scaling_fixed takes B, beta and E, not ['b']"),
    (["--scaling_fixed", "B"], "--scaling_fixed: 'B' is not name=number"),
    (["--params", "a"], "--params: 'a' is not name=number"),
])
def test_bad_options_are_one_line_naming_the_option(calls, capsys, argv, message):
    base = [] if "--table" in argv else ["--table", "t"]
    assert command.main([*base, "--metric", "m", "--out", "OUT", *argv]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert "write" not in calls


def test_help_names_the_command_and_describes_every_option():
    parser = command.build_parser()
    text = parser.format_help()
    assert text.startswith("usage: lmdynamics saturation")
    options = [a for a in parser._actions if a.option_strings and a.dest not in ("help", "print_config")]
    assert {a.dest for a in options} >= {"evals", "table", "task", "metric", "measures", "out", "higher", "min_fraction",
                                         "margin", "tokens_per_step", "scaling_large", "params", "scaling_fixed"}
    for action in options:
        assert isinstance(action.help, str) and len(action.help) > 10, action.option_strings
        assert action.option_strings[-1] in text


def test_traceback_on_request_raises_instead_of_one_line(calls, monkeypatch):
    monkeypatch.setenv("LMDYNAMICS_TRACEBACK", "1")
    with pytest.raises(analyze.InputError, match="--params: 'a' is not name=number"):
        command.main(["--table", "t", "--metric", "m", "--out", "OUT", "--params", "a"])


def test_a_config_file_sets_every_option_and_a_list_of_large_models_reaches_the_fit(calls, tmp_path):
    config = tmp_path / "sat.yaml"
    config.write_text("table: runs/x\nmetric: val_loss\nout: OUT\nscaling_large: [a, b]\nparams: a=1e6,b=2e6\n"
                      "scaling_fixed: B=1,beta=0.5,E=2\nmin_fraction: 0.2\nmargin: 0.1\n")
    assert command.main(["--config", str(config)]) == 0
    assert calls["write"] == (("OUT", "series of the table", None, 0.2, 0.1),
                              {"large": ["a", "b"], "params": {"a": 1e6, "b": 2e6},
                               "fixed": {"B": 1.0, "beta": 0.5, "E": 2.0}})


@pytest.mark.parametrize("key", ["evals", "table", "task", "metric", "measures", "out", "params", "scaling_fixed",
                                 "scaling_large"])
def test_a_config_value_that_is_not_text_is_one_line_naming_its_key(calls, capsys, tmp_path, key):
    """A mapping where a name, path or list of pairs belongs is refused by the parser, before anything is read."""
    config = tmp_path / "sat.yaml"
    base = {"evals" if key == "table" else "table": "t", "metric": "m", "out": "OUT", "task": "lambada"}
    config.write_text("".join(f"{k}: {v}\n" for k, v in {**base, key: "{x: 1}"}.items()))
    assert command.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {key}: ") and err.count("\n") == 1, err
    assert calls == {}


def test_a_missing_config_file_is_one_line_naming_it_as_the_saturation_config(calls, capsys, tmp_path):
    assert command.main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == (f"error: saturation config {tmp_path / 'nope.yaml'} does not exist; the bundled "
                                       "configs are in configs/ (list them with: lmdynamics configs)\n")


def test_main_without_arguments_reads_the_command_line(calls, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lmdynamics-saturation", "--table", "t", "--metric", "m", "--out", "OUT"])
    assert command.main() == 0
    assert calls["from_table"] == (("t", "m", None), {})
