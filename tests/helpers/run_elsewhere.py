"""After ``mutmut run`` in a module's scratch copy (``make mutate ELSEWHERE=1``): run each survivor registered in
``killed_elsewhere.py`` against the test registered to kill it, and write ``mutants/elsewhere.json``
(``{mutant: "killed" | "survived" | "not run: ..."}``) for ``mutation_report.py``.

The test runs in mutmut's copy of the project (``mutants/``) with ``MUTANT_UNDER_TEST`` set to the mutant: mutmut's
trampolines read it in every process, so the processes the test starts (the CLI, the DDP ranks, whose
``PYTHONPATH`` puts that copy's ``src`` first) run the mutant too. Each test is first run with no mutant: a test that
fails there proves nothing, and stops this step. A test that passes without running (skipped: a ``gpu`` test on a
machine without CUDA) leaves its mutants "not run".

Run from the scratch copy: ``python tests/helpers/run_elsewhere.py``; prints one line per mutant.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import change, elsewhere, mutmut  # noqa: E402


def run_test(test: str, mutant: str) -> tuple[str, str]:
    """(outcome, pytest's last line) of ``test`` with ``mutant`` active ("" for none)."""
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant, "PYTHONPATH": "src" + os.pathsep + "."}
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test],
                          cwd="mutants", env=env, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode != 0:
        return "killed", last
    if not re.search(r"\d+ passed", last):
        return "not run: " + last.strip("= "), last
    return "survived", last


def main() -> int:
    survivors = [line.strip().rpartition(": ")[0] for line in mutmut("results", "--all", "true").splitlines()
                 if line.strip().endswith(": survived")]
    registered = {name: test for name in survivors if (test := elsewhere(name, change(name))) is not None}
    outcomes, checked = {}, {}
    for name, test in sorted(registered.items()):
        if test not in checked:
            checked[test] = run_test(test, "")
            if checked[test][0] == "killed":
                raise SystemExit(f"run_elsewhere: {test} fails with no mutant ({checked[test][1]}): fix it first")
        outcome = checked[test][0] if checked[test][0].startswith("not run") else run_test(test, name)[0]
        outcomes[name] = outcome
        print(f"{name}: {outcome} by {test}", flush=True)
    partial = Path("mutants/elsewhere.json.partial")  # the report never reads a half-written file
    partial.write_text(json.dumps(outcomes, indent=1) + "\n")
    partial.replace("mutants/elsewhere.json")
    print(f"run_elsewhere: {sum(v == 'killed' for v in outcomes.values())} of {len(outcomes)} registered survivor(s) "
          "killed by their test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
