"""Groups of runs for the comparison report: which config keys to group by, short labels, one style per group.

A key is a dotted path into a run's resolved ``config.yaml`` (``model.model.hidden_size``) or its ``run.json``
(``hidden_size``); on the command line any unique dot-separated tail of a config key will do (``head.kind``
for ``model.model.head.kind``). With no keys given, runs are grouped by the config keys whose values differ
between them, seed keys excepted (the seeds make the spread within a group) and the run's own bookkeeping
(``run.*``: name, root, loggers) left out. A label is built from the keys' short names, keys of one config
section joined by a space and sections by `` · ``: ``d=8 · head=mos K=4``. A head's parameters count only
for the head kind that has them (``K`` for ``mos``, ``r`` for ``low_rank``), so a plain head's unused
default never splits or names a group.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

#: Config sections that describe how a run is kept, not what it trains.
BOOKKEEPING = ("run.", "ckpt_path", "config", "trainer.logger", "trainer.callbacks", "trainer.default_root_dir",
               "data.cache_dir", "data.num_workers", "trainer.enable_progress_bar", "trainer.enable_model_summary")
#: Short names of common keys (by their last one or two parts).
SHORT = {"hidden_size": "d", "num_layers": "L", "num_heads": "heads", "head.kind": "head", "head.components": "K",
         "head.rank": "r", "max_steps": "steps", "optim.lr": "lr", "data.source": "data", "tie_embeddings": "tied",
         "context_length": "ctx", "batch_size": "batch"}
#: A head parameter and the head kind that uses it.
HEAD_PARAMETERS = {"components": ("mos",), "rank": ("low_rank", "mos")}  # head parameter -> the kinds that use it
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


class GroupKeyError(ValueError):
    """A grouping key no run has: one line naming it and the keys that exist."""


def flatten(node, prefix: str = "") -> dict:
    """A nested mapping as ``{dotted key: leaf value}`` (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node} if prefix else {}
    out = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def is_seed(key: str) -> bool:
    return "seed" in key.rsplit(".", 1)[-1]


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def differing_keys(configs: list[dict]) -> list[str]:
    """The flattened config keys whose values differ between runs (seeds and bookkeeping left out)."""
    flats = [flatten(c) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    out = []
    for key in keys:
        if is_seed(key) or key.startswith(BOOKKEEPING):
            continue
        if len({_text(f.get(key)) for f in flats}) > 1:
            out.append(key)
    return [k for k in out if _relevant_somewhere(k, flats)]


def _relevant_somewhere(key: str, flats: list[dict]) -> bool:
    """False for a head parameter that no run's head kind uses (a plain head's default ``components``)."""
    parent, _, leaf = key.rpartition(".")
    if leaf not in HEAD_PARAMETERS or not parent.endswith("head"):
        return True
    return any(f.get(f"{parent}.kind") in HEAD_PARAMETERS[leaf] for f in flats)


def resolve(key: str, configs: list[dict], infos: list[dict], option: str) -> str:
    """The full key ``key`` stands for: itself if a run's config or run.json has it, else the unique config key
    ending in ``.key``; one line naming the key and the keys that exist otherwise."""
    flats = [flatten(c) for c in configs]
    info_flats = [flatten(i) for i in infos]
    if any(key in f for f in flats) or any(key in f for f in info_flats):
        return key
    every = sorted(set().union(*flats)) if flats else []
    tails = [k for k in every if k.endswith("." + key)]
    if len(tails) == 1:
        return tails[0]
    if len(tails) > 1:
        raise GroupKeyError(f"{option} {key}: several config keys end so ({', '.join(tails)}); give the full dotted key")
    differ = differing_keys(configs)
    listing = ", ".join(every[:60]) + (f", ... ({len(every)} in all)" if len(every) > 60 else "")
    raise GroupKeyError(f"{option} {key}: no run has this config key; keys that differ between the runs: "
                    f"{', '.join(differ) or '(none)'}; keys that exist: {listing}")


def with_kind_parameters(keys: list[str]) -> list[str]:
    """``keys`` plus, for a head ``kind`` key, that head's parameters (``K`` of a mixture and ``r`` of a low-rank
    head tell its groups apart and belong in its label)."""
    out = list(keys)
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        if leaf == "kind" and parent.endswith("head"):
            out += [f"{parent}.{p}" for p in HEAD_PARAMETERS if f"{parent}.{p}" not in out]
    return out


def lookup(config: dict, info: dict, key: str):
    """A dotted key from the resolved config, else from run.json (None when neither has it)."""
    for source in (config, info):
        node = source
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def short_name(key: str) -> str:
    parts = key.split(".")
    for n in (2, 1):
        tail = ".".join(parts[-n:])
        if tail in SHORT:
            return SHORT[tail]
    return parts[-1]


def _order(key: str) -> tuple:
    """Shallow keys first; within a section its ``kind`` first (``head=mos K=4``)."""
    parent, _, leaf = key.rpartition(".")
    return key.count("."), parent, leaf != "kind", leaf


@dataclass(frozen=True)
class Group:
    """One group: its values of the grouping keys (None where a key does not apply) and its label."""

    values: tuple  # ((key, value text or None), ...) in label order
    label: str

    def value(self, key: str):
        return dict(self.values).get(key)


def group_of(config: dict, info: dict, keys: list[str]) -> Group:
    """The group of one run: its value of each key (a head parameter its head kind does not use counts as None)."""
    values = []
    for key in sorted(keys, key=_order):
        parent, _, leaf = key.rpartition(".")
        value = lookup(config, info, key)
        if leaf in HEAD_PARAMETERS and parent.endswith("head") and lookup(config, info, f"{parent}.kind") not in HEAD_PARAMETERS[leaf]:
            value = None
        values.append((key, None if value is None else _text(value)))
    return Group(tuple(values), label(values))


def label(values) -> str:
    """``d=8 · head=mos K=4``: keys of one section joined by a space, sections by `` · ``."""
    sections: dict[str, list[str]] = {}
    for key, value in values:
        if value is None:
            continue
        parent = key.rpartition(".")[0]
        sections.setdefault(parent, []).append(f"{short_name(key)}={value}")
    return " · ".join(" ".join(parts) for parts in sections.values()) or "all runs"


def natural(text: str) -> list:
    """Sort key that orders the numbers inside names by value (``d=8`` before ``d=16``)."""
    return [(0, float(p), "") if p.replace(".", "", 1).isdigit() else (1, 0.0, p)
            for p in re.split(r"(\d+(?:\.\d+)?)", text) if p]


def styles(labels) -> dict[str, dict]:
    """Per group label: colour, line style and marker, the same in every figure; the (colour, line style) pairs
    differ between groups for up to 20 groups (10 colours x 4 line styles, stepped together)."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    order = sorted(set(labels), key=natural)
    return {g: {"color": palette[i % len(palette)], "ls": LINESTYLES[i % len(LINESTYLES)],
                "marker": MARKERS[i % len(MARKERS)]} for i, g in enumerate(order)}
