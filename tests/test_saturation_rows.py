"""W-error and rank-constrained-head results as tidy-table rows: what the commands write to OUT/metrics.parquet
reads back equal to their CSV (index = d or r), is declared in the catalogue, and a rerun replaces its rows."""

import pandas as pd
import pytest

from lmdynamics import catalogue, store
from lmdynamics.report.run_report import write_report
from lmdynamics.saturation.rows import lowrank_results, werror_curves
from lmdynamics.checkpoints.synthetic import tiny_config, write_synthetic_run
from lmdynamics.data.tokenizer import train_bpe


def _script(name):
    """The verb of ``analysis/<name>.py`` as the script runs it (``lmdynamics.cli.main([VERB, ...])``)."""
    from types import SimpleNamespace

    from lmdynamics.cli import main

    return SimpleNamespace(main=lambda argv: main([name.replace("_", "-"), *argv]))


def test_werror_curve_round_trips_through_the_table(tmp_path, local_text):
    out = tmp_path / "out"
    args = ["--source", str(local_text), "--tokenizer", "bpe:300", "--max-documents", "60", "--n", "3",
            "--hidden-sizes", "tiny=32", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert _script("werror").main(args) == 0
    csv = pd.read_csv(out / "werror.csv")
    table = store.read_table(store.table_path(out))
    assert set(table.metric) == {"w_error"} and catalogue.get("w_error").label
    assert set(table.run) == {str(local_text)} and set(table.model) == {"3-gram, min count 1"}
    assert set(table.component) == {"corpus"} and set(table.layer) == {-1}
    got = dict(zip(table["index"], table["value"]))
    assert got == dict(zip(csv.d, csv.w_error)) and 32 in got and len(got) == len(csv)  # exact float64 round trip
    assert werror_curves(table) == {(str(local_text), "3-gram, min count 1"): dict(zip(csv.d, csv.w_error))}
    report = write_report(out, tmp_path / "report")  # the report draws it from the table
    assert len(list((tmp_path / "report" / "figures").glob("werror__*.png"))) == 1 and "W-error" in report.read_text()
    assert _script("werror").main(args) == 0  # a rerun replaces its rows
    again = store.read_table(store.table_path(out), latest=False)
    assert len(again) == len(table) and not again.duplicated(subset=list(store.KEY)).any()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, local_text):
    root = tmp_path_factory.mktemp("lowrank")
    tok = train_bpe([local_text.read_text()[:200_000]], 300, root / "tokenizer.json")
    run = write_synthetic_run(root / "syn", [0, 10], tiny_config(vocab_size=300), tok, run="syn", model_name="tiny",
                              tokens_per_step=1024)
    return run / "checkpoints" / "step00000010"


def test_lowrank_head_results_round_trip_through_the_table(checkpoint, tmp_path, local_text):
    out = tmp_path / "lr"
    assert _script("lowrank_head").main(["--checkpoint", str(checkpoint), "--source", str(local_text), "--train-blocks", "24",
                                         "--eval-blocks", "8", "--steps", "5", "--r-min", "8", "--out", str(out),
                                         "--cache-dir", str(tmp_path / "cache")]) == 0
    csv = pd.read_csv(out / "lowrank_head.csv")
    table = store.read_table(store.table_path(out))
    assert {(r.run, r.model, r.step, r.tokens) for r in table.itertuples()} == {("syn", "tiny", 10, 10 * 1024)}
    assert set(table.component) == {"head"} and all(catalogue.get(m).label for m in set(table.metric))
    ranks = table[table.metric == "lowrank_head_loss"]
    by_rank = csv[csv.reference.isna()]
    assert dict(zip(ranks["index"], ranks["value"])) == dict(zip(by_rank.r, by_rank.loss)) and sorted(ranks["index"]) == [8, 16, 32]
    for metric, reference in (("full_head_loss", "full"), ("full_head_trained_loss", "full_trained")):
        row = table[table.metric == metric]
        assert row["index"].tolist() == [store.NO_INDEX]
        assert row["value"].item() == csv[csv.reference == reference].loss.item()
    result = lowrank_results(table)[("syn", "tiny", 10)]
    assert result["ranks"] == dict(zip(by_rank.r, by_rank.loss)) and result["full_trained"] == csv.loss.iloc[-1]
    write_report(out, tmp_path / "report")
    assert len(list((tmp_path / "report" / "figures").glob("lowrank_head__*.png"))) == 1


# --- fast: the rows themselves, without running the commands -------------------------------------------------


def test_checkpoint_identity_from_run_json_or_the_directory(tmp_path):
    import json

    from lmdynamics.layout import step_name
    from lmdynamics.saturation.rows import checkpoint_identity
    run = tmp_path / "myrun"
    ckpt = run / "checkpoints" / step_name(20)
    ckpt.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run": "r1", "model": "m70", "tokens_per_step": 512}))
    assert checkpoint_identity(ckpt) == {"run": "r1", "model": "m70", "step": 20, "tokens": 20 * 512}
    # run.json without names: the run directory's name, for the model too; no tokens_per_step: 0 tokens
    (run / "run.json").write_text(json.dumps({}))
    assert checkpoint_identity(ckpt) == {"run": "myrun", "model": "myrun", "step": 20, "tokens": 0}
    # a stepN directory that is not under checkpoints/ is named by itself, even with a run.json two levels up
    other = run / "elsewhere" / step_name(30)
    other.mkdir(parents=True)
    assert checkpoint_identity(other) == {"run": step_name(30), "model": step_name(30), "step": 30, "tokens": 0}
    plain = tmp_path / "exported"
    plain.mkdir()
    assert checkpoint_identity(plain) == {"run": "exported", "model": "exported", "step": 0, "tokens": 0}


def test_werror_and_lowrank_rows_read_back_as_written(tmp_path):
    from lmdynamics.saturation.rows import lowrank_rows, werror_rows, write_rows
    curve = {64: 0.31, 8: 0.9, 16: 0.62}
    rows = werror_rows(curve, "wiki", 3, 2)
    assert {(r["run"], r["model"], r["step"], r["layer"], r["component"], r["metric"]) for r in rows} == {
        ("wiki", "3-gram, min count 2", 0, -1, "corpus", "w_error")}
    (tmp_path / "ck").mkdir()
    result = {"ranks": {16: 3.5, 8: 4.25}, "full": 3.0, "full_trained": 3.125}
    table = store.read_table(write_rows(tmp_path / "out", rows + lowrank_rows(result, tmp_path / "ck")))
    assert werror_curves(table) == {("wiki", "3-gram, min count 2"): {8: 0.9, 16: 0.62, 64: 0.31}}
    assert list(werror_curves(table)[("wiki", "3-gram, min count 2")]) == [8, 16, 64]  # by d
    assert lowrank_results(table) == {("ck", "ck", 0): {"ranks": {8: 4.25, 16: 3.5}, "full": 3.0, "full_trained": 3.125}}
    assert list(lowrank_results(table)[("ck", "ck", 0)]["ranks"]) == [8, 16]
    without = [r for r in lowrank_rows({"ranks": {8: 4.0}, "full": 3.0}, tmp_path / "ck")]
    assert lowrank_results(pd.DataFrame(without)) == {("ck", "ck", 0): {"ranks": {8: 4.0}, "full": 3.0}}
    # a rerun with the same keys replaces the old rows
    table = store.read_table(write_rows(tmp_path / "out", werror_rows({8: 0.5}, "wiki", 3, 2)))
    assert werror_curves(table)[("wiki", "3-gram, min count 2")] == {8: 0.5, 16: 0.62, 64: 0.31}


def test_rows_sit_at_layer_minus_one_with_their_documented_index_step_and_tokens(tmp_path):
    import json

    from lmdynamics.saturation.rows import checkpoint_identity, lowrank_rows, werror_rows
    rows = werror_rows({8: 0.9}, "wiki", 3, 2) + lowrank_rows({"ranks": {8: 4.0}, "full": 3.0, "full_trained": 3.1},
                                                             tmp_path)
    assert {r["layer"] for r in rows} == {-1}
    assert {(r["metric"], r["index"]) for r in rows} == {("w_error", 8), ("lowrank_head_loss", 8),
                                                        ("full_head_loss", store.NO_INDEX),
                                                        ("full_head_trained_loss", store.NO_INDEX)}
    assert [(r["step"], r["tokens"]) for r in rows if r["metric"] == "w_error"] == [(0, 0)]  # a corpus has no step
    final = tmp_path / "run" / "checkpoints" / "final"  # under checkpoints/ but not a stepN name: step 0
    final.mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"run": "r", "tokens_per_step": 512}))
    assert checkpoint_identity(final) == {"run": "r", "model": "r", "step": 0, "tokens": 0}


def test_lowrank_results_skip_a_checkpoint_without_its_full_head_and_keep_the_others(tmp_path):
    from lmdynamics.layout import step_name
    from lmdynamics.saturation.rows import lowrank_results, lowrank_rows
    rows = []
    for step, with_full in ((10, False), (20, True)):
        ck = tmp_path / step_name(step)
        ck.mkdir()
        part = lowrank_rows({"ranks": {8: 4.0 + step}, "full": 3.0}, ck)
        rows += [r for r in part if with_full or r["metric"] != "full_head_loss"]
    results = lowrank_results(pd.DataFrame(rows))
    assert list(results) == [(step_name(20), step_name(20), 20)]
    assert results[(step_name(20), step_name(20), 20)] == {"ranks": {8: 24.0}, "full": 3.0}


def test_the_reports_figures_come_in_run_model_and_numeric_step_order_whatever_the_table_order(tmp_path):
    """The report draws one figure per key of werror_curves / lowrank_results, in their order: sorted by run,
    model and step (step 100 after step 20), not in the order rows happen to sit in the table."""
    from lmdynamics.layout import step_name
    from lmdynamics.saturation.rows import lowrank_rows, werror_rows
    rows = []
    for run in ("zeta", "alpha"):
        for step in (100, 20):
            ck = tmp_path / run / "checkpoints" / step_name(step)
            ck.mkdir(parents=True)
            (tmp_path / run / "run.json").write_text('{"run": "%s", "model": "%s"}' % (run, run))
            rows += lowrank_rows({"ranks": {8: 4.0 + step}, "full": 3.0}, ck)
    for corpus in ("wiki", "books"):
        rows += werror_rows({8: 0.5}, corpus, 3, 2)
    frame = pd.DataFrame(rows)  # zeta before alpha, step 100 before 20, wiki before books
    assert list(lowrank_results(frame)) == [("alpha", "alpha", 20), ("alpha", "alpha", 100),
                                            ("zeta", "zeta", 20), ("zeta", "zeta", 100)]
    assert list(werror_curves(frame)) == [("books", "3-gram, min count 2"), ("wiki", "3-gram, min count 2")]
