"""Before ``mutmut run`` in a module's scratch copy (``make mutate``): generate the mutants and mark every mutant
registered in ``tests/helpers/equivalent_mutants.py`` as skipped (mutmut's exit code 34), so that the run does not
spend a full pass of the covering tests on it.

A registered equivalent survives every test by its argument, and a survivor is the slowest kind of mutant (it runs
every covering test of its function, where a killed one stops at the first failure). mutmut keeps a recorded
result while its function's source is unchanged and skips mutants that have one, so ``mutmut run`` then runs only
the others. ``tests/helpers/mutation_report.py`` lists the skipped ones as equivalent (not run). ``make mutate
CHECK_EQUIVALENTS=1`` (``mutate.py --run-equivalents``) leaves this step out and runs them too, to check the registry.

Run from the scratch copy: ``python tests/helpers/skip_equivalents.py``; prints how many it marked.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from equivalent_mutants import EQUIVALENT  # noqa: E402
from mutation_report import changed_lines, function_of, why_equivalent  # noqa: E402

SKIPPED = 34  # mutmut's exit code for a skipped mutant (mutmut.stats.status_by_exit_code)


def main() -> int:
    import mutmut.__main__ as mm
    from mutmut.mutation.data import SourceFileMutationData

    Path("mutants").mkdir(exist_ok=True)
    mm.copy_src_dir()
    mm.copy_also_copy_files()
    mm.setup_source_paths()
    mm.create_mutants(1)
    registered = {function for function, *_ in EQUIVALENT}
    marked = 0
    for path in mm.walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name in data.exit_code_by_key:
            if function_of(name) in registered and \
                    why_equivalent(name, changed_lines(mm.get_diff_for_mutant(name, path=path))) is not None:
                data.exit_code_by_key[name] = SKIPPED
                marked += 1
        data.save()
    print(f"skip_equivalents: {marked} registered equivalent mutant(s) marked skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
