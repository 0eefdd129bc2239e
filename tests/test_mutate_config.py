"""``make mutate``'s module table (tests/helpers/mutate.py): every module and every covering test it names exists,
so a renamed file or test cannot silently leave a module's mutants without tests; the per-module table it writes
is valid TOML with the project's shared settings."""

import importlib.util
import json
import re
import tomllib

import pytest

from tests.helpers.cli import ROOT


def _helper(name: str):
    """``tests/helpers/<name>.py``, loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"{name}_helper", ROOT / "tests" / "helpers" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mutate():
    return _helper("mutate")


def _report():
    return _helper("mutation_report")


def test_every_module_and_covering_test_exists():
    mutate = _mutate()
    for module, tests in mutate.COVERING_TESTS.items():
        assert (ROOT / "src" / "lmdynamics" / module).is_file(), module
        assert tests, module
        for name in tests:
            file, _, test = mutate.test_path(name).partition("::")
            assert (ROOT / file).is_file(), (module, name)
            if test:
                assert re.search(rf"^def {re.escape(test)}\(", (ROOT / file).read_text(), re.M), (module, name)


def test_the_table_of_one_module_is_the_shared_one_plus_the_module_and_its_tests():
    mutate = _mutate()
    text = (ROOT / "pyproject.toml").read_text()
    block = mutate.mutmut_block("saturation/rows.py")
    table = tomllib.loads(text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + block, 1))["tool"]["mutmut"]
    assert table["only_mutate"] == ["src/lmdynamics/saturation/rows.py"]
    selection = table["pytest_add_cli_args_test_selection"]
    tests = [mutate.test_path(t) for t in mutate.COVERING_TESTS["saturation/rows.py"]]
    assert selection[:len(tests)] == tests and len(selection) == len(tests) + 4
    assert selection[-2:] == ["-m", "not slow"]
    shared = tomllib.loads(text)["tool"]["mutmut"]
    assert "only_mutate" not in shared and {k: table[k] for k in shared} == shared


def test_help_text_survivors_are_told_from_the_rest():
    """Only a change wholly inside an option's help= strings is help text; a default, a keyword, a string
    elsewhere on the line or a changed help= keyword is not."""
    report = _report()

    def diff(before, after):  # as mutmut show prints a change, each line of a statement marked
        return "\n".join([f"      -    {ln}" for ln in before.split("\n")] + [f"      +    {ln}" for ln in after.split("\n")])

    line = 'p.add_argument("--margin", type=float, default=MARGIN, help=f"gap (default {MARGIN})")'
    assert report.help_text_only(diff(line, line.replace('help=f"gap', 'help=f"XXgap')))
    two = 'p.add_argument("--x", help="first part "\n"second part")'
    assert report.help_text_only(diff(two, two.replace('"second part"', '"XXsecond partXX"')))
    assert report.help_text_only(diff('help="a", default=1)', 'help="XXaXX", default=1)'))  # a line of a longer call
    assert not report.help_text_only(diff(line, line.replace("default=MARGIN", "default=None")))
    assert not report.help_text_only(diff(line, line.replace('"--margin"', '"XX--marginXX"')))
    assert not report.help_text_only(diff(line, line.replace("help=", "hel=")))
    assert not report.help_text_only(diff('raise ValueError("bad")', 'raise ValueError("XXbadXX")'))
    assert not report.help_text_only(diff(line, line))


def test_a_mutant_whose_tests_crash_is_killed_and_every_mutant_is_in_the_score():
    """A covering run that aborts (SIGABRT, as ARPACK does on a start vector of the wrong size) or segfaults fails
    the suite: killed, named with its signal. mutmut files these under "suspicious" (any code it does not know) and
    "segfault" (-11, and -9 too): neither may drop out of the score. A run killed by SIGKILL (-9: the machine's
    out-of-memory killer as likely as the mutant) is not counted killed, but stays in the score as a survivor would."""
    report = _report()
    a, b = "lmdynamics.a.x_f__mutmut_", "lmdynamics.b.x_g__mutmut_"
    mutmut_state = {a + "1": "killed", a + "2": "suspicious", a + "3": "segfault", a + "4": "segfault",
                    a + "5": "survived", a + "6": "suspicious", b + "1": "timeout", b + "2": "equivalent",
                    b + "3": "no tests"}
    codes = {a + "1": 1, a + "2": -6, a + "3": -11, a + "4": -9, a + "5": 0, a + "6": 77, b + "1": 36, b + "2": 0,
             b + "3": 33}
    crashed = report.crashes(mutmut_state, codes)
    assert crashed == {a + "2": "SIGABRT", a + "3": "SIGSEGV"}
    status = {n: ("crashed" if n in crashed else s) for n, s in mutmut_state.items()}
    per = {m: report.score(states) for m, states in report.per_module(status).items()}
    assert per == {"lmdynamics.a": (3, 6), "lmdynamics.b": (1, 2)}  # the equivalent is left out of b
    assert report.score(report.Counter(status.values())) == (4, 8)


def test_every_equivalent_mutant_names_a_line_of_todays_code_and_a_reason():
    """A registered equivalent mutant whose original line has changed would silently stop matching: each entry's
    line(s) must still be in its module, with a known reason, once."""
    registry = _helper("equivalent_mutants")
    assert len(set(registry.EQUIVALENT)) == len(registry.EQUIVALENT)
    for function, before, after, reason in registry.EQUIVALENT:
        assert reason in registry.REASONS and before != after, (function, before)
        module = re.sub(r"\.x(ǁ\w+ǁ|_)\w+$", "", function)
        source = (ROOT / "src" / "lmdynamics" / (module.replace(".", "/") + ".py")).read_text()
        stripped = {line.strip() for line in source.splitlines()}
        for line in before.split("\n"):
            assert line in stripped, (function, line)


def test_modules_start_largest_source_first_and_none_is_lost():
    mutate = _mutate()
    modules = list(mutate.COVERING_TESTS)
    order = mutate.largest_first(list(reversed(modules)))
    assert sorted(order) == sorted(modules)
    sizes = [(ROOT / "src" / "lmdynamics" / m).stat().st_size for m in order]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.slow  # runs mutmut's mutant generation in a subprocess
def test_registered_equivalents_are_marked_skipped_before_the_run_and_nothing_else(tmp_path, monkeypatch):
    """``skip_equivalents.py`` in a module's scratch copy marks exactly the generated mutants that the registry
    argues equivalent (each registered change of the module is found), and leaves every other mutant to the run."""
    import json
    import subprocess
    import sys

    mutate = _mutate()
    module = "saturation/detect.py"
    work = tmp_path / "scratch"
    mutate.scratch_copy(module, work)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "tests/helpers/skip_equivalents.py"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    codes = json.loads((work / "mutants/src/lmdynamics/saturation/detect.py.meta").read_text())["exit_code_by_key"]
    skipped = {name for name, code in codes.items() if code == 34}
    assert skipped and set(codes.values()) == {None, 34}
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "helpers"))
    from equivalent_mutants import EQUIVALENT
    from mutation_report import changed_lines, why_equivalent
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    monkeypatch.chdir(work)  # mutmut reads its mutants relative to the working directory
    diffs = {name: changed_lines(get_diff_for_mutant(name, path="src/lmdynamics/saturation/detect.py"))
             for name in codes}
    assert skipped == {name for name, diff in diffs.items() if why_equivalent(name, diff) is not None}
    registered = {(f, b, a) for f, b, a, _ in EQUIVALENT if f.startswith("saturation.detect.")}
    found = set()
    for name in skipped:
        lines = [ln.strip() for ln in diffs[name].splitlines()]
        found.add((name.rsplit("__mutmut_", 1)[0].removeprefix("lmdynamics."),
                   "\n".join(ln[1:].strip() for ln in lines if ln.startswith("-")),
                   "\n".join(ln[1:].strip() for ln in lines if ln.startswith("+"))))
    assert found == registered


def test_a_scratch_copy_finds_the_shared_data_where_the_tests_look_for_it(tmp_path):
    """mutmut runs the tests from ``<scratch>/mutants/``, whose conftest looks for ``../shared`` (the Pythia
    tokenizer): without it the tests that need the tokenizer skip, and their functions' mutants count as untested."""
    mutate = _mutate()
    work = tmp_path / "scratch"
    mutate.scratch_copy("trajectories/counts.py", work)
    if not (ROOT.parent / "shared").is_dir():
        pytest.skip("no ../shared beside this checkout")
    assert (work / "shared" / "data" / "pythia-20b-tokenizer.json").is_file()  # ../shared of work/mutants/


def test_every_mutant_killed_elsewhere_names_a_line_of_todays_code_and_a_test_that_exists():
    """A survivor registered as killed by a slow or GPU test must still match today's code, name a test that exists
    outside the module's covering selection, and not be argued equivalent as well (no test could kill it then)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    try:
        from equivalent_mutants import EQUIVALENT
        from killed_elsewhere import KILLED_ELSEWHERE
    finally:
        sys.path.remove(str(ROOT / "tests" / "helpers"))
    assert KILLED_ELSEWHERE and len(set(KILLED_ELSEWHERE)) == len(KILLED_ELSEWHERE)
    assert not {entry[:3] for entry in KILLED_ELSEWHERE} & {entry[:3] for entry in EQUIVALENT}
    mutate = _mutate()
    for function, before, after, test in KILLED_ELSEWHERE:
        assert before != after, function
        module = re.sub(r"\.x(ǁ\w+ǁ|_)\w+$", "", function)
        path = module.replace(".", "/") + ".py"
        stripped = {line.strip() for line in (ROOT / "src" / "lmdynamics" / path).read_text().splitlines()}
        assert all(line in stripped for line in before.split("\n")), (function, before)
        file, _, name = test.partition("::")
        assert (ROOT / file).is_file(), test
        assert not name or re.search(rf"^def {re.escape(name)}\(", (ROOT / file).read_text(), re.M), test
        assert mutate.test_path(file.removeprefix("tests/").removesuffix(".py")) not in \
            [mutate.test_path(t) for t in mutate.COVERING_TESTS[path]], (function, "its test is already covering")


@pytest.mark.slow  # generates a module's mutants and runs pytest in subprocesses
def test_a_mutant_run_elsewhere_reaches_the_processes_its_test_starts(tmp_path, monkeypatch):
    """``run_elsewhere.run_test`` runs a test on one mutant in mutmut's copy of the project: a test that computes CKA
    in a child process (as the DDP test's ranks do) passes with no mutant, fails with a mutant of the ratio (so the
    mutant reached the child), and a test that skips is "not run"."""
    import subprocess
    import sys

    mutate = _mutate()
    work = tmp_path / "scratch"
    mutate.scratch_copy("metrics/cka.py", work)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "tests/helpers/skip_equivalents.py"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (work / "mutants" / "tests" / "test_in_a_child.py").write_text(
        "import subprocess, sys\nimport pytest\n\n\n"
        "def test_cka_of_a_scaled_copy_is_one_in_a_child_process():\n"
        "    code = ('import torch; from lmdynamics.metrics.cka import linear_cka; '\n"
        "            'x = torch.randn(20, 3, dtype=torch.float64); print(linear_cka(x, 2 * x))')\n"
        "    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)\n"
        "    assert abs(float(out.stdout) - 1) < 1e-12\n\n\n"
        "def test_skipped():\n    pytest.skip('needs CUDA')\n")
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "helpers"))
    monkeypatch.chdir(work)  # mutmut reads its mutants relative to the working directory
    from mutation_report import changed_lines
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from run_elsewhere import run_test

    codes = json.loads((work / "mutants/src/lmdynamics/metrics/cka.py.meta").read_text())["exit_code_by_key"]
    ratio = [name for name in codes if ".x__ratio__" in name and "+    return float(num) * math.sqrt(den_sq)" in
             changed_lines(get_diff_for_mutant(name, path="src/lmdynamics/metrics/cka.py"))]
    assert len(ratio) == 1
    test = "tests/test_in_a_child.py::test_cka_of_a_scaled_copy_is_one_in_a_child_process"
    assert run_test(test, "")[0] == "survived"
    assert run_test(test, ratio[0])[0] == "killed"
    assert run_test("tests/test_in_a_child.py::test_skipped", ratio[0])[0].startswith("not run")
