"""How fast each `lmdynamics VERB` answers a small mistake: `--help` and an unknown config key.

Every verb runs as a fresh process (`python -m lmdynamics.cli VERB ...`) from an empty directory, REPEATS times
alternating verbs, and we print the median wall time and the median CPU time (user + sys of the child) side by
side. CPU time is the machine-independent part: on a shared machine wall time also counts waiting for a core.
The modules each verb imports before it answers are listed too (lightning, deepspeed, torch, transformers).

    python bench/bench_cli_answers.py            # every verb, 3 repeats
    python bench/bench_cli_answers.py --quick    # 1 repeat
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from lmdynamics.cli import SUBCOMMANDS

HEAVY = ("lightning", "deepspeed", "torch", "transformers")
PROBE = ("import runpy, sys, atexit\n"
         "atexit.register(lambda: print('IMPORTED', *[m for m in %r if m in sys.modules], file=sys.stderr))\n"
         "sys.argv = ['lmdynamics', *sys.argv[1:]]\n"
         "runpy.run_module('lmdynamics.cli', run_name='__main__')\n") % (HEAVY,)


def answer(argv: list[str], cwd: str) -> tuple[float, float, int, str]:
    """(wall s, CPU s, exit code, heavy modules imported) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    imported = next((ln.split(None, 1)[1] if " " in ln else "" for ln in res.stderr.splitlines()
                     if ln.startswith("IMPORTED")), "?")
    return wall, cpu, res.returncode, imported or "-"


def main() -> int:
    repeats = 1 if "--quick" in sys.argv else 3
    verbs = [v for v in SUBCOMMANDS if v != "configs"]
    cases = [(v, kind) for v in verbs for kind in ("--help", "typo")]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in cases}
    info: dict[tuple[str, str], tuple[int, str]] = {}
    with tempfile.TemporaryDirectory() as empty:
        for _ in range(repeats):  # alternate: each repeat runs every case once
            for verb, kind in cases:
                argv = [verb, "--help"] if kind == "--help" else [verb, "--no_such_key_xyz", "1"]
                wall, cpu, rc, imported = answer(argv, empty)
                times[(verb, kind)].append((wall, cpu))
                info[(verb, kind)] = (rc, imported)
    print(f"{'verb':<14}{'case':<8}{'wall s':>8}{'cpu s':>8}{'exit':>6}  heavy modules imported")
    for verb, kind in cases:
        wall = statistics.median(t[0] for t in times[(verb, kind)])
        cpu = statistics.median(t[1] for t in times[(verb, kind)])
        rc, imported = info[(verb, kind)]
        print(f"{verb:<14}{kind:<8}{wall:>8.2f}{cpu:>8.2f}{rc:>6}  {imported}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
