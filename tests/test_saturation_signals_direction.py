"""The head signals of the saturation analysis (``saturation.signals``, ``analyze``) on series that really move.

Each signal degrades in one direction (docs/science.md section 3: the head's KL-to-uniform rises, its effective
rank falls, the last layer's anisotropy rises). A signal that moves that way by far more than the margin is
flagged ("moved"); the same signal moving as far the other way is not. "Moved first" holds at a tie (signal
onset = curve onset) and fails one checkpoint later. ``--min-fraction`` and ``--margin`` given on the command
line reach the head-signal verdicts as they reach the curve's.

The directions below are written from the science, not read from ``signals.SIGNALS``.
"""

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest

from lmdynamics import store
from lmdynamics.commands.saturation import main as saturation_main
from lmdynamics.saturation.detect import detect
from lmdynamics.saturation.signals import moved_first

DEGRADES_UP = {"kl_uniform": True, "er": False, "anisotropy": True}  # True: the signal rises as the head degrades
STEPS = np.arange(0, 11) * 100
LOSS = np.r_[np.linspace(5, 3, 6), 3.0 * np.array([1.0, 1.0, 1.1, 1.2, 1.3])]  # best at 500, onset 700, +30%
CURVE_ONSET = 700


def moving(signal: str, onset: int, degrade: bool, per_step: float = 0.3, base: float = 2.0, cap: int = 99) -> np.ndarray:
    """Flat at ``base`` up to step ``onset``, then a relative move of ``per_step`` per checkpoint (for at most
    ``cap`` checkpoints), in the signal's degradation direction (``degrade``) or against it."""
    k = np.clip((STEPS - onset) // 100, 0, cap)
    factor = 1 + per_step * k
    up = DEGRADES_UP[signal] == degrade
    return base * (factor if up else 1 / factor)


def rows(model: str, signal: str, values, layer: int = -1, component: str | None = None) -> list[dict]:
    comp = component or ("final" if signal == "anisotropy" else "head")
    return [dict(run=model, model=model, step=int(s), tokens=int(s) * 10, layer=layer, component=comp, metric=signal,
                 index=-1, value=float(v)) for s, v in zip(STEPS, values)]


def frame_of(*groups) -> pd.DataFrame:
    return pd.DataFrame([r for g in groups for r in g])


def curve():
    fields = detect(STEPS, LOSS, higher_is_better=False)
    assert fields.saturated and fields.onset_step == CURVE_ONSET
    return fields


@pytest.mark.parametrize("signal", sorted(DEGRADES_UP))
def test_a_signal_that_degrades_is_flagged_and_the_same_signal_improving_is_not(signal):
    degrading = moved_first(frame_of(rows("m", signal, moving(signal, 400, degrade=True))), "m", curve())[signal]
    assert degrading["moved"] is True and degrading["onset_step"] == 400 and degrading["first"] is True
    improving = moved_first(frame_of(rows("m", signal, moving(signal, 400, degrade=False))), "m", curve())[signal]
    assert improving["moved"] is False and improving["first"] is False and math.isnan(improving["onset_step"])


def test_anisotropy_of_the_deepest_residual_layer_when_the_final_state_is_not_measured():
    deep = rows("m", "anisotropy", moving("anisotropy", 400, degrade=True), layer=3, component="resid")
    shallow = rows("m", "anisotropy", moving("anisotropy", 400, degrade=False), layer=0, component="resid")
    verdict = moved_first(frame_of(deep, shallow), "m", curve())["anisotropy"]
    assert verdict["moved"] is True and verdict["onset_step"] == 400
    deep_improves = rows("m", "anisotropy", moving("anisotropy", 400, degrade=False), layer=3, component="resid")
    shallow_degrades = rows("m", "anisotropy", moving("anisotropy", 400, degrade=True), layer=0, component="resid")
    assert moved_first(frame_of(deep_improves, shallow_degrades), "m", curve())["anisotropy"]["moved"] is False


@pytest.mark.parametrize("signal", sorted(DEGRADES_UP))
@pytest.mark.parametrize("offset, first", [(-100, True), (0, True), (100, False)])
def test_moved_first_at_a_tie_and_one_checkpoint_either_side(signal, offset, first):
    onset = CURVE_ONSET + offset
    verdict = moved_first(frame_of(rows("m", signal, moving(signal, onset, degrade=True))), "m", curve())[signal]
    assert verdict["moved"] is True and verdict["onset_step"] == onset
    assert verdict["first"] is first


def test_no_first_verdict_when_the_curve_is_not_saturated():
    flat = detect(STEPS, np.linspace(5, 3, len(STEPS)), higher_is_better=False)
    assert not flat.saturated
    frame = frame_of(*(rows("m", s, moving(s, 400, degrade=True)) for s in DEGRADES_UP))
    for signal, verdict in moved_first(frame, "m", flat).items():
        assert verdict["moved"] is True and verdict["first"] is None, signal


# ------------------------------------------------------------------------------------ the command line
def table(tmp_path):
    """Two models whose curve saturates by 30% (onset 700) under every option below, and whose head signals:
    ``small``: step 8% in their degradation direction after step 400 (over the default margin 0.05, under 0.1);
    ``lucky``: are flat from 10% of training on, but far better at step 0 (only a min fraction of 0 sees that)."""
    out = []
    for model in ("small", "lucky"):
        out += [dict(run=model, model=model, step=int(s), tokens=int(s) * 10, layer=-1, component="model",
                     metric="val_loss", index=-1, value=float(v)) for s, v in zip(STEPS, LOSS)]
        for signal in DEGRADES_UP:
            if model == "small":
                values = moving(signal, 400, degrade=True, per_step=0.08, cap=1)
            else:
                values = np.full(len(STEPS), 2.0)
                values[0] = 2.0 / 3 if DEGRADES_UP[signal] else 6.0  # step 0: three times better
            out += rows(model, signal, values)
    directory = tmp_path / "run"
    store.append(store.table_path(directory), out)
    return directory


def saturation_csv(directory, out, *options) -> pd.DataFrame:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = saturation_main(["--table", str(directory), "--metric", "val_loss", "--out", str(out), *options])
    assert code == 0, err.getvalue()
    return pd.read_csv(out / "saturation.csv").set_index("model")


def test_min_fraction_and_margin_reach_the_head_signal_verdicts(tmp_path):
    directory = table(tmp_path)
    default = saturation_csv(directory, tmp_path / "default")
    wide = saturation_csv(directory, tmp_path / "wide", "--margin", "0.1")
    from_start = saturation_csv(directory, tmp_path / "start", "--min-fraction", "0")
    for csv in (default, wide, from_start):
        assert csv.saturated.all() and (csv.onset_step == CURVE_ONSET).all()  # the curve's verdict never changes
    assert (default.best_step == 500).all() and (from_start.best_step == 500).all()
    for signal in DEGRADES_UP:
        # small: moved (8% > 5%, onset 400 before 700) at the default margin; not at --margin 0.1
        assert default.loc["small", f"{signal}_moved"] and default.loc["small", f"{signal}_moved_first"], signal
        assert default.loc["small", f"{signal}_onset_step"] == 400
        assert not wide.loc["small", f"{signal}_moved"] and not wide.loc["small", f"{signal}_moved_first"], signal
        # lucky: its step-0 value counts only with --min-fraction 0: then it moved, from step 0
        assert not default.loc["lucky", f"{signal}_moved"] and not default.loc["lucky", f"{signal}_moved_first"]
        assert from_start.loc["lucky", f"{signal}_moved"] and from_start.loc["lucky", f"{signal}_moved_first"], signal
        assert from_start.loc["lucky", f"{signal}_onset_step"] == 0
    report = (tmp_path / "wide" / "report.md").read_text()
    assert "gap > 0.1" in report and "- **small**: saturation detected" in report
    assert "no head signal moved first" in report.split("- **small**")[1].splitlines()[0]
    assert "head signals that moved first" in (tmp_path / "default" / "report.md").read_text().split("- **small**")[1]


def test_spectra_of_other_components_do_not_enter_the_head_signals():
    """The head's own rows (component ``head``, layer -1) decide; the same metrics of the input embedding and of
    the layers' weights (as the spectrum measurement writes them) moving the other way change nothing."""
    frame = []
    for signal in ("kl_uniform", "er"):
        frame += rows("m", signal, moving(signal, 400, degrade=False))
        frame += rows("m", signal, moving(signal, 400, degrade=True, per_step=3.0), component="embed")
        for layer in (0, 1):
            frame += rows("m", signal, moving(signal, 400, degrade=True, per_step=3.0), layer=layer, component="mlp_in")
    verdict = moved_first(pd.DataFrame(frame), "m", curve())
    assert verdict["kl_uniform"]["moved"] is False and verdict["er"]["moved"] is False


def test_only_the_heads_rows_at_layer_minus_one_enter_plain_or_mixture():
    """The head signals are the output head's spectrum (layer -1): rows of the same head components at another
    layer, moving the other way, change no verdict, for the plain head and for each mixture component."""
    for heads in (["head"], ["head_c00", "head_c01"]):
        frame = []
        for signal in ("kl_uniform", "er"):
            for comp in heads:
                frame += rows("m", signal, moving(signal, 400, degrade=True), component=comp)
                frame += rows("m", signal, moving(signal, 400, degrade=False, per_step=3.0), layer=2, component=comp)
        verdicts = moved_first(pd.DataFrame(frame), "m", curve())
        judged = [name for name in verdicts if name != "anisotropy"]
        assert judged == (["kl_uniform", "er"] if heads == ["head"] else
                          ["kl_uniform", "er"] + [f"{s}[{c}]" for s in ("kl_uniform", "er") for c in heads])
        for name in judged:
            assert verdicts[name]["moved"] is True and verdicts[name]["onset_step"] == 400, (heads, name)


def test_the_plain_head_is_the_head_signal_when_a_table_also_has_mixture_components():
    """``head`` and ``head_cNN`` rows of one model (e.g. two tables concatenated): the head signal is ``head``'s
    own series, not the mean with the components, and no component gets its own verdict."""
    frame = []
    for signal in ("kl_uniform", "er"):
        frame += rows("m", signal, moving(signal, 400, degrade=True))
        frame += rows("m", signal, moving(signal, 400, degrade=False, per_step=3.0), component="head_c00")
    verdicts = moved_first(pd.DataFrame(frame), "m", curve())
    assert sorted(verdicts) == ["anisotropy", "er", "kl_uniform"]
    assert verdicts["kl_uniform"]["moved"] is True and verdicts["er"]["moved"] is True


def test_a_signal_of_three_checkpoints_gets_a_verdict_and_of_two_none():
    three = [dict(model="m", step=s, tokens=s, layer=-1, component="head", metric="kl_uniform", index=-1, value=v)
             for s, v in ((0, 1.0), (500, 1.0), (1000, 2.0))]
    verdict = moved_first(pd.DataFrame(three), "m", curve())["kl_uniform"]
    assert verdict["moved"] is True and verdict["onset_step"] == 500 and verdict["first"] is True
    verdict = moved_first(pd.DataFrame(three[1:]), "m", curve())["kl_uniform"]
    assert verdict["moved"] is None and verdict["first"] is None and math.isnan(verdict["onset_step"])


def test_a_signal_with_a_nan_value_gets_no_verdict_and_the_others_still_do(tmp_path):
    """An all-zero head gives a NaN KL-to-uniform: that signal has no verdict, the report is still written and
    the other signals keep theirs."""
    out = [dict(run="m", model="m", step=int(s), tokens=int(s) * 10, layer=-1, component="model", metric="val_loss",
                index=-1, value=float(v)) for s, v in zip(STEPS, LOSS)]
    for signal in DEGRADES_UP:
        values = moving(signal, 400, degrade=True)
        if signal == "kl_uniform":
            values[5] = np.nan
        out += rows("m", signal, values)
    store.append(store.table_path(tmp_path / "run"), out)
    csv = saturation_csv(tmp_path / "run", tmp_path / "out").loc["m"]
    assert pd.isna(csv["kl_uniform_moved"]) and pd.isna(csv["kl_uniform_moved_first"])
    for signal in ("er", "anisotropy"):
        assert csv[f"{signal}_moved"] and csv[f"{signal}_moved_first"] and csv[f"{signal}_onset_step"] == 400, signal
    assert "(not in the table: kl_uniform)" in (tmp_path / "out" / "report.md").read_text()


def test_the_report_table_says_what_saturation_csv_says(tmp_path):
    """Through ``lmdynamics saturation``: each model's row of report.md's table carries the CSV's numbers and
    verdicts: saturated yes/no, each head signal's "moved first" yes / no / n/a (no verdict: the curve is not
    saturated, or the signal is not in the table)."""
    from lmdynamics.cli import main as cli_main
    directory = table(tmp_path)
    extra = []
    for model, loss in (("flat", np.linspace(5, 3, len(STEPS))), ("bare", LOSS)):  # not saturated; no head rows
        extra += [dict(run=model, model=model, step=int(s), tokens=int(s) * 10, layer=-1, component="model",
                       metric="val_loss", index=-1, value=float(v)) for s, v in zip(STEPS, loss)]
    extra += rows("flat", "er", moving("er", 400, degrade=True))
    store.append(store.table_path(directory), extra)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(["saturation", "--table", str(directory), "--metric", "val_loss", "--out", str(tmp_path / "o")]) == 0
    csv = pd.read_csv(tmp_path / "o" / "saturation.csv").set_index("model")
    assert list(csv.index) == ["bare", "flat", "lucky", "small"]  # one row per model, by name
    lines = (tmp_path / "o" / "report.md").read_text().splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| model |"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    cells = {}
    for ln in lines[header + 2:]:
        if not ln.startswith("|"):
            break
        values = [c.strip() for c in ln.strip("|").split("|")]
        cells[values[0]] = dict(zip(columns, values))
    assert set(cells) == {"small", "lucky", "flat", "bare"}
    assert lines[header + 1] == "|---" * len(columns) + "|"  # a markdown table: one separator per column

    def word(value):
        return "n/a" if pd.isna(value) else ("yes" if value else "no")

    for model, row in cells.items():
        r = csv.loc[model]
        assert row["saturated"] == word(r.saturated) and row["best step"] == str(r.best_step), model
        assert row["final step"] == str(r.final_step) and row["gap"] == f"{r.gap:+.1%}", model
        assert row["onset"] == ("—" if pd.isna(r.onset_step) else str(int(r.onset_step))), model
        for signal in DEGRADES_UP:
            assert row[f"{signal} moved first"] == word(r[f"{signal}_moved_first"]), (model, signal)
    assert cells["small"]["er moved first"] == "yes" and cells["lucky"]["er moved first"] == "no"
    assert cells["flat"]["saturated"] == "no" and cells["flat"]["er moved first"] == "n/a"  # curve not saturated
    assert cells["bare"]["saturated"] == "yes" and cells["bare"]["kl_uniform moved first"] == "n/a"  # no head rows
    per_model = {ln.split("**")[1]: ln for ln in lines if ln.startswith("- **")}
    assert "no head signal in the table" in per_model["bare"]
    assert ("head signals that moved first: head KL-to-uniform of s/sum(s), head effective rank, last-layer anisotropy"
            in per_model["small"])
    assert "no head signal moved first" in per_model["lucky"]
