"""After ``mutmut run`` (``make mutate``): the mutation score and every surviving mutant with its change.

Score = killed (a test failed, or it timed out) / all mutants that were run or had no covering test, less those
shown equivalent, overall and per module (mutant names are ``<module>.<function>__mutmut_<n>``). A surviving
mutant is *equivalent* when ``tests/helpers/equivalent_mutants.py`` names its function and exact change with the
argument why no test can tell it from the original; it is listed with that argument, apart from the survivors.
A survivor whose change lies wholly inside the ``help=`` text of an option is listed apart too, as *help text*:
it stays a survivor in the score, but it changes no number a user sees (the survivors that can are the rest).
A survivor registered in ``tests/helpers/killed_elsewhere.py`` (a line only several processes or a GPU run) is listed
apart with the test that kills it, and counted killed only where ``run_elsewhere.py`` ran that test on it and the
test failed (``mutants/elsewhere.json``, written by ``make mutate ELSEWHERE=1``).
A mutant whose covering run died of SIGABRT or SIGSEGV failed the suite as surely as a failed assertion: it is
*crashed*, counted killed and listed with its signal (mutmut files it as "suspicious" or "segfault").
"""

import io
import json
import subprocess
import tokenize
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from equivalent_mutants import equivalence  # noqa: E402
from killed_elsewhere import killer  # noqa: E402


def mutmut(*args: str) -> str:
    return subprocess.run([str(Path(sys.executable).parent / "mutmut"), *args], capture_output=True, text=True,
                          check=True).stdout


def changed_lines(diff: str) -> str:
    """The - / + lines of a unified diff (its file header left out), indented for the listing."""
    return "\n".join("      " + ln for ln in diff.splitlines() if ln[:1] in "-+" and not ln.startswith(("---", "+++")))


def change(name: str) -> str:
    """The mutated line(s) of one mutant, as - / + lines."""
    return changed_lines(mutmut("show", name))


def function_of(name: str) -> str:
    """``lmdynamics.a.b.x_f__mutmut_3`` -> ``a.b.x_f``: the function as the registry names it."""
    return name.rsplit("__mutmut_", 1)[0].removeprefix("lmdynamics.")


def before_after(diff: str) -> tuple[str, str]:
    """The removed and the added lines of a change (as ``change`` lists them), stripped and joined by newlines: the
    ``before`` and ``after`` by which the registries name a mutant."""
    lines = [ln.strip() for ln in diff.splitlines()]
    return ("\n".join(ln[1:].strip() for ln in lines if ln.startswith("-")),
            "\n".join(ln[1:].strip() for ln in lines if ln.startswith("+")))


def why_equivalent(name: str, diff: str) -> str | None:
    """The registered argument that mutant ``name`` (its change ``diff``) is equivalent, else None."""
    return equivalence(function_of(name), *before_after(diff))


def elsewhere(name: str, diff: str) -> str | None:
    """The test outside the covering selection registered to kill mutant ``name`` (its change ``diff``), else None."""
    return killer(function_of(name), *before_after(diff))


def _tokens(code: str) -> list[tuple[int, str]]:
    """(type, text) of the Python tokens of a code fragment (a line of a longer statement: tokenizing stops
    quietly at its unbalanced end)."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT,
                                tokenize.ENDMARKER):
                out.append((tok.type, tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def help_text_only(diff: str) -> bool:
    """True when the change replaces only string literals that are (part of) a ``help=`` keyword's value."""
    lines = [ln.strip() for ln in diff.splitlines()]
    before = _tokens("\n".join(ln[1:].strip() for ln in lines if ln.startswith("-")))
    after = _tokens("\n".join(ln[1:].strip() for ln in lines if ln.startswith("+")))
    if not before or len(before) != len(after) or before == after:
        return False
    for i, (old, new) in enumerate(zip(before, after)):
        if old == new:
            continue
        if old[0] != tokenize.STRING or new[0] != tokenize.STRING:
            return False
        j = i - 1
        while j >= 0 and before[j][0] == tokenize.STRING:  # implicit concatenation: "a" "b"
            j -= 1
        if j < 1 or before[j][1] != "=" or before[j - 1][1] != "help":
            return False
    return True


CRASH_SIGNALS = {-6: "SIGABRT", 134: "SIGABRT", -11: "SIGSEGV", 139: "SIGSEGV"}  # as a child, and as a shell reports it
KILLED = ("killed", "timeout", "killed elsewhere", "crashed")
NOT_KILLED = ("survived", "no tests", "suspicious", "segfault")  # segfault: mutmut's name for SIGKILL (-9) too


def exit_codes() -> dict[str, int]:
    """``{mutant: exit code of its covering run}`` from mutmut's ``.meta`` files."""
    codes: dict[str, int] = {}
    for meta in Path("mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text()).get("exit_code_by_key", {}))
    return codes


def crashes(status: dict[str, str], codes: dict[str, int]) -> dict[str, str]:
    """``{mutant: signal}`` of the mutants mutmut could not class whose covering run aborted or segfaulted. SIGKILL
    (-9) is left out: the machine's out-of-memory killer sends it as readily as a mutant provokes it."""
    return {n: CRASH_SIGNALS[codes[n]] for n, s in status.items()
            if s in ("suspicious", "segfault") and codes.get(n) in CRASH_SIGNALS}


def score(states: Counter) -> tuple[int, int]:
    """(killed, considered) of a count of mutant states: every state but the equivalent ones is considered."""
    killed = sum(states[k] for k in KILLED)
    return killed, killed + sum(states[k] for k in NOT_KILLED)


def per_module(status: dict[str, str]) -> dict[str, Counter]:
    """``{module: Counter(state)}`` of mutant states."""
    out: dict[str, Counter] = {}
    for name, state in status.items():
        out.setdefault(name.rsplit(".", 1)[0], Counter())[state] += 1
    return out


def main() -> int:
    mutmut("export-cicd-stats")
    stats = json.loads(Path("mutants/mutmut-cicd-stats.json").read_text())
    status = {}
    for line in mutmut("results", "--all", "true").splitlines():
        name, _, state = line.strip().rpartition(": ")
        if name:
            status[name] = state
    listed = sorted(n for n, s in status.items() if s in ("survived", "no tests", "suspicious", "segfault", "skipped"))
    with ThreadPoolExecutor(4) as pool:
        diffs = dict(zip(listed, pool.map(change, listed)))  # one `mutmut show` per listed mutant
    equivalent = {n: why for n in listed if status[n] in ("survived", "skipped")
                  and (why := why_equivalent(n, diffs[n])) is not None}
    not_run = {n for n in equivalent if status[n] == "skipped"}  # skip_equivalents.py marked them before the run
    unregistered_skips = sorted(n for n in listed if status[n] == "skipped" and n not in equivalent)
    if unregistered_skips:
        raise SystemExit(f"mutation_report: skipped but not a registered equivalent: {', '.join(unregistered_skips)}")
    for name in equivalent:
        status[name] = "equivalent"
    ran = json.loads(Path("mutants/elsewhere.json").read_text()) if Path("mutants/elsewhere.json").is_file() else {}
    killers = {n: test for n in listed if status[n] == "survived" and (test := elsewhere(n, diffs[n])) is not None}
    for name in killers:
        if ran.get(name) == "killed":
            status[name] = "killed elsewhere"
    help_only = {n for n in listed if status[n] == "survived" and help_text_only(diffs[n])}
    crashed = crashes(status, exit_codes())
    for name in crashed:
        status[name] = "crashed"
    counts = Counter(status.values())
    if equivalent:
        print(f"\nequivalent ({len(equivalent)}): no test can tell them from the original"
              + (f" ({len(not_run)} registered before the run and not run: make mutate CHECK_EQUIVALENTS=1 runs them)"
                 if not_run else ""))
        for name, why in equivalent.items():
            print(f"  {name}{' (not run)' if name in not_run else ''}\n{diffs[name]}\n      why: {why}")
    if help_only:
        print(f"\nsurvived, help text only ({len(help_only)}): the change is inside an option's help=, no number changes")
        for name in sorted(help_only):
            print(f"  {name}\n{diffs[name]}")
    if killers:
        verified = sum(status[n] == "killed elsewhere" for n in killers)
        print(f"\nkilled elsewhere ({verified} of {len(killers)} run and killed here; the rest stay survivors in the score): "
              "a test outside the covering selection (several processes, or a GPU) kills each; make mutate ELSEWHERE=1 "
              "runs it")
        for name, test in sorted(killers.items()):
            print(f"  {name} ({ran.get(name, 'not run: make mutate ELSEWHERE=1 runs it')})\n{diffs[name]}\n      by: {test}")
    if crashed:
        print(f"\ncrashed ({len(crashed)}): the covering tests died of a signal, the suite fails: counted killed")
        for name, signal in sorted(crashed.items()):
            print(f"  {name} ({signal})\n{diffs[name]}")
    for kind in ("survived", "no tests", "suspicious", "segfault"):
        names = sorted(n for n, s in status.items() if s == kind and n not in help_only and n not in killers)
        if names:
            print(f"\n{kind}{' (help text apart)' if kind == 'survived' and help_only else ''} ({len(names)}):")
            for name in names:
                print(f"  {name}\n{diffs[name]}")
    print("\nper module (killed / considered, equivalent mutants not considered):")
    for module, states in sorted(per_module(status).items()):
        done, considered = score(states)
        helps = sum(1 for n in help_only if n.rsplit(".", 1)[0] == module)
        pending = sum(1 for n in killers if status[n] == "survived" and n.rsplit(".", 1)[0] == module)
        print(f"  {module}: {done}/{considered} = {done / max(1, considered):.1%}"
              + "".join(f", {k}: {states[k]}" for k in ("equivalent", "killed elsewhere", "crashed", *NOT_KILLED)
                        if states[k]) + (f" (help text only: {helps})" if helps else "")
              + (f" (registered as killed elsewhere, not killed in this run: {pending})" if pending else ""))
    killed, considered = score(counts)
    print(f"\nmutants: {stats['total']}  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"mutation score: {killed}/{considered} = {killed / max(1, considered):.1%} killed"
          + (f"; survivors outside help texts: {counts['survived'] - len(help_only)}" if help_only else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
