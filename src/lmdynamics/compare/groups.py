"""The groups of a comparison: the grouping keys (given or the config keys that differ), each run's group and
the baseline group, checked against the runs (``CompareError``, one line, for keys or values no run has)."""

from __future__ import annotations

from dataclasses import dataclass

from lmdynamics.compare import grouping
from lmdynamics.compare.grouping import natural
from lmdynamics.compare.runs import CompareError, Run, lookup


@dataclass
class Grouping:
    """The grouping keys (full dotted keys), each run's group and the optional baseline (key, value)."""

    keys: list[str]
    groups: dict[str, grouping.Group]  # label -> group
    of_run: dict[str, str]  # run name -> label
    baseline: tuple[str, str] | None = None


def plan_groups(runs: list[Run], group_by: list[str] | None, baseline: str | None) -> Grouping:
    """The groups of the runs; bad keys or a baseline value no run has raise ``CompareError`` (one line)."""
    configs, infos = [r.config for r in runs], [r.info for r in runs]
    try:
        keys = [grouping.resolve(k, configs, infos, "--group_by") for k in group_by] if group_by else grouping.differing_keys(configs)
        base = None
        if baseline is not None:
            key, sep, value = baseline.partition("=")
            if not sep or not key or not value:
                raise CompareError(f"--baseline {baseline!r}: give KEY=VALUE, e.g. model.model.head.kind=plain")
            key = grouping.resolve(key.strip(), configs, infos, "--baseline")
            if key not in keys:
                keys.append(key)
            base = (key, value.strip())
        keys = grouping.with_kind_parameters(keys)
        for key in keys:
            if any(isinstance(lookup(r, key), dict) for r in runs):
                inside = [k for k in grouping.differing_keys(configs) if k.startswith(key + ".")]
                raise CompareError(f"--group_by {key}: a config section, not a value; the keys in it that differ between "
                                   f"the runs: {', '.join(inside) or '(none)'}")
    except grouping.GroupKeyError as err:
        raise CompareError(str(err)) from None
    for key in keys if group_by else []:  # the default keys may be absent from some runs (a run without config)
        missing = [r.name for r in runs if lookup(r, key) is None and not _head_parameter(key)]
        if missing:
            raise CompareError(f"--group_by {key}: not in the config or run.json of {', '.join(missing[:3])}"
                               f"{' and others' if len(missing) > 3 else ''}; group by keys every run has")
    of_run, groups = {}, {}
    for r in runs:
        g = grouping.group_of(r.config, r.info, keys)
        if keys and all(v is None for _, v in g.values):  # none of the keys: the run is a group of its own
            g = grouping.Group(g.values, r.name)
        of_run[r.name] = g.label
        groups[g.label] = g
    if base is not None and not any(g.value(base[0]) == base[1] for g in groups.values()):
        have = sorted({str(g.value(base[0])) for g in groups.values()}, key=natural)
        raise CompareError(f"--baseline {base[0]}={base[1]}: no run has this value; values of {base[0]}: {', '.join(have)}")
    return Grouping(keys, groups, of_run, base)


def _head_parameter(key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    return leaf in grouping.HEAD_PARAMETERS and parent.endswith("head")
