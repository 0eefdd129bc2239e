"""The tidy table: one row per key for every reader, rewinding for resumed runs, tables of older layouts."""

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import pyarrow.parquet as pq

from lmdynamics import store

KEY = list(store.KEY)


def rows(step, value, metric="er", run="r", layers=(0, 1)):
    return [{"run": run, "model": "m", "step": step, "tokens": step * 10, "layer": layer, "component": "mlp",
             "metric": metric, "value": value + layer} for layer in layers]


def test_latest_row_of_a_key_wins(tmp_path):
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0))
    store.append(table, rows(1, 5.0, layers=(1,)))  # layer 1 recomputed
    got = store.read_table(table).sort_values(KEY)
    assert got.value.tolist() == [1.0, 6.0]
    assert len(store.read_table(table, latest=False)) == 3


def test_replace_leaves_one_row_per_key_for_plain_parquet_readers(tmp_path):
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0) + rows(2, 2.0))
    store.append(table, rows(3, 3.0, metric="cka_final"))
    for value in (7.0, 8.0):  # recomputed twice, e.g. `analysis/convergence.py` run again
        store.replace(table, rows(3, value, metric="cka_final"))
    plain = pd.read_parquet(table)
    assert not plain.duplicated(subset=KEY).any() and len(plain) == 6
    assert sorted(plain[plain.metric == "cka_final"].value) == [8.0, 9.0]
    assert plain.sort_values(KEY).reset_index(drop=True).equals(store.read_table(table).sort_values(KEY).reset_index(drop=True))


def test_replace_is_idempotent(tmp_path):
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0))
    store.replace(table, rows(2, 2.0))
    first = pd.read_parquet(table).sort_values(KEY).reset_index(drop=True)
    store.replace(table, rows(2, 2.0))
    again = pd.read_parquet(table).sort_values(KEY).reset_index(drop=True)
    assert first.equals(again) and len(store.parts(table)) == 1


def test_compact_keeps_newest_and_rows_appended_after_it_stay_newer(tmp_path):
    table = store.table_path(tmp_path)
    for v in (1.0, 2.0, 3.0):
        store.append(table, rows(1, v))
    store.compact(table)
    assert len(store.parts(table)) == 1 and sorted(pd.read_parquet(table).value) == [3.0, 4.0]
    store.append(table, rows(1, 9.0, layers=(0,)))
    assert sorted(store.read_table(table).value) == [4.0, 9.0]
    store.compact(table)
    assert sorted(pd.read_parquet(table).value) == [4.0, 9.0]


def test_compact_after_a_kill_between_writing_and_removing_loses_nothing(tmp_path):
    """A rewrite killed after its new part is in place but before the old parts are gone leaves duplicates
    of equal value, which readers resolve and the next compaction removes."""
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0))
    store.append(table, rows(1, 2.0) + rows(2, 2.0))
    old = {p.name: p.read_bytes() for p in store.parts(table)}
    store.compact(table)
    for name, data in old.items():  # as if the unlinks never happened
        (table / name).write_bytes(data)
    assert len(store.read_table(table)) == 4
    store.compact(table)
    assert len(pd.read_parquet(table)) == 4 and len(store.parts(table)) == 1


def test_rewind_drops_rows_after_the_step_and_end_of_run_metrics_of_that_run_only(tmp_path):
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0) + rows(2, 2.0) + rows(3, 3.0) + rows(2, 0.5, metric="cka_final"))
    store.append(table, rows(3, 3.0, run="other"))
    store.rewind(table, "r", 2, metrics=["cka_final"])
    got = pd.read_parquet(table)
    assert sorted(zip(got.run, got.step, got.metric)) == sorted(
        [("r", 1, "er")] * 2 + [("r", 2, "er")] * 2 + [("other", 3, "er")] * 2)


def test_tables_in_the_old_layout_are_read_and_compacted(tmp_path):
    """Parts written before: several appends with repeated keys, and a part written by hand with other
    integer widths, columns in another order and no tokens column."""
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0))
    store.append(table, rows(1, 2.0))
    old = pd.DataFrame({"value": [0.25], "metric": ["per"], "run": ["r"], "model": ["m"], "layer": np.int32([3]),
                        "step": np.int32([4]), "component": ["attn"]})
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), table / "part-00000000000000000001-1-old.parquet")
    got = store.read_table(table)
    assert len(got) == 3 and got.step.dtype == np.int64
    hand = got[got.metric == "per"].iloc[0]
    assert (hand.step, hand.layer, hand.value) == (4, 3, 0.25) and pd.isna(hand.tokens)
    store.compact(table)
    after = pd.read_parquet(table).sort_values(KEY).reset_index(drop=True)
    assert len(after) == 3 and sorted(after.value) == [0.25, 2.0, 3.0]
    assert after.drop(columns="tokens").equals(got.sort_values(KEY).reset_index(drop=True).drop(columns="tokens"))


def test_a_killed_writer_leaves_no_visible_part(tmp_path):
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0))
    (table / ".part-00000000000000000009-1-x.parquet.tmp").write_bytes(b"PAR1 truncated")
    assert len(pd.read_parquet(table)) == 2 and len(store.read_table(table)) == 2
    store.compact(table)
    assert os.path.exists(table / ".part-00000000000000000009-1-x.parquet.tmp")  # not a part: left alone


def test_a_table_of_the_layout_before_the_index_column_reads_in_todays_layout(tmp_path):
    """Before the ``index`` column: no index at all, and the head spectrum stored as component
    ``head_spectrum`` with the singular value's position in ``layer``. Read back (and through ``normalise``),
    those rows are component ``head`` at layer -1 with the position in ``index``; every other row keeps its
    layer and gets index -1."""
    table = store.table_path(tmp_path)
    table.mkdir(parents=True)
    old = pd.DataFrame({"run": ["r"] * 5, "model": ["m"] * 5, "step": np.int64([8] * 5), "tokens": np.int64([80] * 5),
                        "layer": np.int64([0, 1, 2, 2, -1]),
                        "component": ["head_spectrum", "head_spectrum", "head_spectrum", "mlp", "head"],
                        "metric": ["sv_norm", "sv_norm", "sv_norm", "er", "er"], "value": [1.0, 0.5, 0.25, 7.0, 9.0]})
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), table / "part-00000000000000000001-1-old.parquet")
    for got in (store.read_table(table), store.normalise(old.to_dict("records"))):
        got = got.sort_values(["metric", "index", "layer"]).reset_index(drop=True)
        assert got["index"].dtype == np.int64
        spectrum = got[got.metric == "sv_norm"]
        assert spectrum.component.tolist() == ["head"] * 3 and spectrum.layer.tolist() == [-1] * 3
        assert spectrum["index"].tolist() == [0, 1, 2] and spectrum.value.tolist() == [1.0, 0.5, 0.25]
        rest = got[got.metric == "er"].sort_values("layer")
        assert rest.layer.tolist() == [-1, 2] and rest.component.tolist() == ["head", "mlp"]
        assert rest["index"].tolist() == [store.NO_INDEX] * 2 and rest.value.tolist() == [9.0, 7.0]


def _rows(n, metric="m", run="r", index=None):
    return [{"run": run, "model": "x", "step": s, "tokens": 10 * s, "layer": -1, "component": "head", "metric": metric,
             "value": float(s), **({} if index is None else {"index": index})} for s in range(n)]


def test_reading_some_metrics_gives_exactly_their_rows(tmp_path):
    path = store.table_path(tmp_path)
    store.append(path, _rows(3, "a") + _rows(2, "b") + _rows(4, "c"))
    store.append(path, _rows(2, "a"))  # a second part
    whole = store.read_table(path)
    for metrics in (["a"], ["b", "c"]):
        got = store.read_table(path, metrics=metrics)
        want = whole[whole["metric"].isin(metrics)].reset_index(drop=True)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want)


def test_rows_from_a_filtered_frame_or_dicts_read_back_exactly_by_any_parquet_reader(tmp_path):
    path = store.table_path(tmp_path)
    frame = pd.DataFrame(_rows(6, index=2))
    store.append(path, frame[frame["step"] > 2])  # a frame whose index does not start at 0
    store.append(path, _rows(2, "n") + [{**_rows(1, "n")[0], "step": 9, "index": 4}])  # index given for some rows only
    plain = pd.read_parquet(path)  # what the module says any reader gets
    assert list(plain.columns) == list(store.COLUMNS) and isinstance(plain.index, pd.RangeIndex)
    table = store.read_table(path).sort_values(["metric", "step"]).reset_index(drop=True)
    assert table["step"].tolist() == [3, 4, 5, 0, 1, 9] and table["index"].tolist() == [2, 2, 2, -1, -1, 4]
    store.rewrite(path)
    plain = pd.read_parquet(path)
    assert list(plain.columns) == list(store.COLUMNS) and isinstance(plain.index, pd.RangeIndex) and len(plain) == 6


def test_an_empty_frame_has_the_tables_columns_and_types_and_rows_lacking_a_column_are_refused():
    empty = store.to_frame([])
    assert list(empty.columns) == list(store.COLUMNS)
    assert [str(t) for t in empty.dtypes] == ["object", "object", "int64", "int64", "int64", "object", "object", "int64",
                                              "float64"]
    with pytest.raises(ValueError, match=r"lack column\(s\) \['tokens'\]"):
        store.to_frame([{k: v for k, v in _rows(1)[0].items() if k != "tokens"}])


def test_a_rewrite_sorts_after_every_part_it_replaces_and_returns_none_when_nothing_is_left(tmp_path):
    path = store.table_path(tmp_path)
    for i in range(3):
        store.append(path, _rows(2, f"m{i}"))
    names = [p.name for p in store.parts(path)]
    target = store.rewrite(path)
    assert target.name > max(names) and store.parts(path) == [target]
    later = store.append(path, _rows(1, "later"))
    assert store.parts(path) == [target, later]  # a part written afterwards sorts after it
    assert store.rewrite(path, keep=lambda frame: frame["step"] < 0) is None and store.parts(path) == []


def test_load_table_takes_a_frame_a_run_directory_or_the_table_itself(tmp_path):
    run = tmp_path / "run"
    store.append(store.table_path(run), _rows(2))
    for source in (run, store.table_path(run), str(run)):
        assert store.load_table(source)["step"].tolist() == [0, 1]
    assert store.resolve_table(run) == store.table_path(run)
    other = tmp_path / "parts_elsewhere"  # a table directory by another name, holding parts
    store.append(other, _rows(1))
    assert store.resolve_table(other) == other and len(store.load_table(other)) == 1
    assert store.load_table(pd.DataFrame(_rows(3)))["index"].tolist() == [-1, -1, -1]
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match="no tidy table at"):
        store.resolve_table(tmp_path / "bare")
    (tmp_path / "bare" / store.TABLE_NAME).mkdir()
    with pytest.raises(ValueError, match=f"the tidy table {tmp_path / 'bare' / store.TABLE_NAME} has no rows yet"):
        store.load_table(tmp_path / "bare")
    with pytest.raises(ValueError, match="the DataFrame given has no rows yet"):
        store.load_table(pd.DataFrame(columns=list(store.COLUMNS)))


def test_a_part_that_a_concurrent_rewrite_removed_meanwhile_does_not_fail_this_one(tmp_path, monkeypatch):
    table = store.table_path(tmp_path)
    store.append(table, rows(1, 1.0))
    store.append(table, rows(1, 2.0))
    real = store._read_parts

    def read_then_lose_one(path, metrics=None):
        frame, files = real(path, metrics)
        files[0].unlink()  # another rewrite removed it after this one read it
        return frame, files

    monkeypatch.setattr(store, "_read_parts", read_then_lose_one)
    target = store.rewrite(table)
    assert [p.name for p in store.parts(table)] == [target.name]
    assert sorted(store.read_table(table).value) == [2.0, 3.0]
