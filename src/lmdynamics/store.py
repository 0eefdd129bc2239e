"""The tidy table: every measurement as rows of (run, model, step, tokens, layer, component, metric, index, value).

A table is a directory named ``metrics.parquet`` holding one Parquet file per append, named by write time. Appending writes a
new part under a hidden temporary name and renames it into place, so a reader (pandas, pyarrow, DuckDB,
``read_table``) never sees a half-written part, several processes (DDP ranks, analysis shards) can append
to one table without locks, and a killed writer leaves nothing behind but a hidden temporary file that
readers ignore. ``pandas.read_parquet(path)`` reads the whole table.

One row per key (run, model, step, layer, component, metric, index): a value written again for a key replaces
the older one. ``read_table`` keeps the newest row of each key; ``replace`` (a writer that may recompute
keys) and ``compact`` (at the end of a run or an analysis) rewrite the table on disk so that any Parquet
reader sees one row per key too; ``rewind`` drops what a resumed run will compute again.

Conventions: ``layer`` is the 0-based transformer layer, or -1 for model-level values (loss, input
embedding, head, final hidden state), and nothing else; ``component`` names the part measured (``mlp``,
``attn``, ``ov``, ``ov_head03``, ``resid``, ``qkv``, ``dense``, ``mlp_in``, ``mlp_out``, ``embed_in``,
``head``, ...); ``metric`` names the quantity (``cka_final``, ``per``, ``er``, ``loss`` ...; see
``lmdynamics.catalogue``); ``index`` is the position of a row within a vector-valued measurement (the
singular value of ``sv_norm``, a token), -1 for scalar measurements. Rows may omit ``index`` (it is -1).

Tables written before ``index`` existed are read as if written today: the missing column is -1 and the
head's spectrum, stored then as component ``head_spectrum`` with the singular-value index in ``layer``,
becomes component ``head`` at layer -1 with the index in ``index`` (:func:`upgrade`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path

COLUMNS = ("run", "model", "step", "tokens", "layer", "component", "metric", "index", "value")
SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("model", pa.string()),
        ("step", pa.int64()),
        ("tokens", pa.int64()),
        ("layer", pa.int64()),
        ("component", pa.string()),
        ("metric", pa.string()),
        ("index", pa.int64()),
        ("value", pa.float64()),
    ]
)
TABLE_NAME = "metrics.parquet"
NO_INDEX = -1  # the index of a scalar measurement


def table_path(directory: str | os.PathLike) -> Path:
    """The table inside an output or run directory (``<dir>/metrics.parquet``)."""
    return Path(directory) / TABLE_NAME


def to_frame(rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dicts or a DataFrame) as a DataFrame with exactly the table's columns and dtypes."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=t.to_pandas_dtype()) for c, t in zip(SCHEMA.names, SCHEMA.types)})
    frame["index"] = frame["index"].fillna(NO_INDEX) if "index" in frame else NO_INDEX
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"tidy-table rows lack column(s) {missing}; every row needs {list(COLUMNS)}")
    frame = frame[list(COLUMNS)]
    for name, typ in zip(SCHEMA.names, SCHEMA.types):
        frame[name] = frame[name].astype(typ.to_pandas_dtype())
    return frame


def append(path: str | os.PathLike, rows: Iterable[Mapping] | pd.DataFrame) -> Path | None:
    """Append rows to the table at ``path`` atomically; returns the part written (None if no rows)."""
    frame = to_frame(rows)
    if frame.empty:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a tidy-table directory; move it away or choose another --out")
    name = f"part-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    with atomic_path(path / name) as tmp:  # readers glob part-*.parquet: the hidden temporary is invisible
        pq.write_table(table, tmp)
    return path / name


def parts(path: str | os.PathLike) -> list[Path]:
    """The complete part files of a table (hidden temporaries excluded), in a stable order."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p for p in path.glob("part-*.parquet") if p.is_file())


KEY = ("run", "model", "step", "layer", "component", "metric", "index")


def read_table(path: str | os.PathLike, latest: bool = True, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """The whole table as one DataFrame (empty, with the right columns, if nothing was written yet).

    Parts are named by write time, so with ``latest`` a value written again for the same
    (run, model, step, layer, component, metric), e.g. by a resumed run redoing a step, replaces the older one.
    Parts of any older layout are read too (:func:`upgrade`). ``metrics``: read only these metrics' rows
    (Parquet skips the others), for readers of many tables.
    """
    frame, _ = _read_parts(path, metrics)
    if latest:
        frame = frame.drop_duplicates(subset=list(KEY), keep="last").reset_index(drop=True)
    return frame


def _read_parts(path, metrics: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[Path]]:
    files = parts(path)
    if not files:
        return to_frame([]), []
    filters = None if metrics is None else [("metric", "in", list(metrics))]
    return upgrade(pa.concat_tables([pq.read_table(f, schema=SCHEMA, filters=filters) for f in files]).to_pandas()), files


def normalise(rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Rows of today's or any older layout as a frame of today's (:func:`to_frame`, then :func:`upgrade`)."""
    return upgrade(to_frame(rows))


def upgrade(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of any older layout in today's: ``index`` -1 where it was missing, and the head spectrum's old
    ``head_spectrum`` rows (index in ``layer``) as component ``head`` at layer -1 with the index in ``index``."""
    frame["index"] = frame["index"].fillna(NO_INDEX).astype("int64")
    old = frame["component"] == "head_spectrum"
    if old.any():
        frame.loc[old, "index"] = frame.loc[old, "layer"]
        frame.loc[old, "layer"] = -1
        frame.loc[old, "component"] = "head"
    return frame


def rewrite(path: str | os.PathLike, keep=None) -> Path | None:
    """Rewrite the table as one part holding the newest row of each key (and, with ``keep``, only the rows
    for which ``keep(frame)`` is True); returns the new part (None if nothing is left).

    The new part is complete before any old one is removed, and it sorts right after the newest part it
    replaces (before any part a concurrent writer adds later), so a reader sees every row at every moment
    (for an instant some twice, which ``read_table`` resolves), and a writer killed half-way leaves only
    duplicates that the next rewrite removes.
    """
    frame, files = _read_parts(path)
    if not files:
        return None
    frame = frame.drop_duplicates(subset=list(KEY), keep="last")
    if keep is not None:
        frame = frame[keep(frame)]
    newest = files[-1].name.removeprefix("part-").removesuffix(".parquet").split("-")[0]
    target = None
    if len(frame):
        target = Path(path) / f"part-{newest}-compact-{uuid.uuid4().hex[:12]}.parquet"
        with atomic_path(target) as tmp:
            pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)
    for f in files:
        f.unlink(missing_ok=True)
    return target


def compact(path: str | os.PathLike) -> Path | None:
    """If some key has several rows, rewrite the table with one row per key (the newest), so that what
    ``read_table`` returns is what any Parquet reader sees; otherwise leave the parts as they are."""
    if not read_table(path, latest=False).duplicated(subset=list(KEY)).any():
        return None
    return rewrite(path)


def replace(path: str | os.PathLike, rows: Iterable[Mapping] | pd.DataFrame) -> Path | None:
    """Write rows that may recompute keys already in the table: append, then compact, so no reader sees a
    key twice. For writers that recompute (CKA-to-final of a run, re-run analyses), not per-step appends."""
    written = append(path, rows)
    if written is not None:
        compact(path)
    return written


def rewind(path: str | os.PathLike, run: str, step: int, metrics: Iterable[str] = ()) -> None:
    """Drop the rows of ``run`` after ``step`` and its rows of ``metrics`` (values computed at the end of a
    run, e.g. CKA-to-final): what a run resumed from its checkpoint at ``step`` computes again."""
    metrics = set(metrics)

    def stale(frame: pd.DataFrame) -> pd.Series:
        return (frame.run == run) & ((frame.step > step) | frame.metric.isin(metrics))

    if stale(_read_parts(path)[0]).any():
        rewrite(path, keep=lambda frame: ~stale(frame))


def resolve_table(source: str | os.PathLike) -> Path:
    """The ``metrics.parquet`` directory of a run/analysis directory, or the table directory itself."""
    path = Path(source)
    if (path / TABLE_NAME).is_dir():
        return path / TABLE_NAME
    if path.is_dir() and (path.name == TABLE_NAME or parts(path)):
        return path
    raise FileNotFoundError(
        f"no tidy table at {source}: pass a run or analysis directory holding {TABLE_NAME}/, "
        f"or that {TABLE_NAME} directory itself")


def load_table(source: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """A DataFrame, or the table read from a path (see ``resolve_table``); raises if it has no rows."""
    if isinstance(source, pd.DataFrame):
        frame = normalise(source)
        where = "the DataFrame given"
    else:
        path = resolve_table(source)
        frame, where = read_table(path), str(path)
    if frame.empty:
        raise ValueError(f"the tidy table {where} has no rows yet: run training or analysis first "
                         f"(make train / make analyze), then draw the report")
    return frame
