"""``lmdynamics fit`` and ``lmdynamics validate``: train a model, or evaluate a checkpoint of a run into
``<run>/evaluations/`` (``train/run.py fit``, ``make train``). The parser is LightningCLI's
(``lmdynamics.training.cli``): ``--config FILE.yaml`` (several allowed, later ones win) and every key as an
option (``--trainer.max_steps 400``; ``--help`` lists them).

``fit --ckpt_path last`` resumes a run exactly where its last checkpoint left it, logs included (rows the
killed process wrote after the checkpoint are replaced, earlier ones kept); a finished run only redoes its
end-of-run work; a run killed before its first checkpoint starts again. ``validate`` never touches the
run's logs or table: it writes to ``<run>/evaluations/validate-stepNNNNNNNN``, rows labelled with the
checkpoint's step.

Exit status: 0 done (or nothing to do), 2 bad input (one line ``error: ...``; nothing written), 1 training
failed (a non-finite loss), 128 + the signal's number when interrupted (130 for Ctrl-C, 143 for SIGTERM), after
printing how to resume. ``LMDYNAMICS_TRACEBACK=1`` shows the whole traceback of a bad-input error instead of
its one line (every verb: ``lmdynamics.arguments.traceback_requested``).
"""

from __future__ import annotations

import sys

from ..arguments import BAD_INPUT, canonical_flags, one_line, traceback_requested


def main(args: list[str] | None = None) -> int:
    """Run ``fit`` or ``validate`` (``args`` starts with the subcommand; default: the command line)."""
    from ..config_files import check_config_files
    from ..training.fit_keys import unknown_key

    line = list(sys.argv[1:] if args is None else args)
    canonical = canonical_flags(line)
    if args is None and canonical != line:
        args = canonical  # LightningCLI reads sys.argv itself when it is the command line
    elif args is not None:
        args = canonical
    # bad config files and unknown keys answer before lightning is imported (training/fit_keys.py)
    problem = check_config_files(canonical) or unknown_key(canonical)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return BAD_INPUT

    from ..report.run_report import figures_for_run
    from ..training.cli import build_cli
    from ..training.module import NonFiniteLossError
    from ..training.resume import INTERRUPTED
    from ..training.run_directory import RunDirectoryExists, RunFinished

    user_errors = (ValueError, FileNotFoundError, RunDirectoryExists, KeyError)  # bad input: exit 2
    INTERRUPTED.update(hint=None, signal=None)
    try:
        build_cli(args, write_report=figures_for_run)
    except RunFinished as done:
        print(f"[lmdynamics] {done}", file=sys.stderr)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except user_errors as err:
        if traceback_requested():
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:  # before or after training (Lightning handles it during)
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        if INTERRUPTED["hint"]:  # Lightning's graceful shutdown after Ctrl-C ends with sys.exit(1)
            return 128 + int(INTERRUPTED["signal"] or 2)
        raise exit_
    except Exception as err:  # jsonargparse's ArgumentError and friends: config problems
        if type(err).__name__ in {"ArgumentError", "NSKeyError", "ParserError"}:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return BAD_INPUT
        raise
    return 0
