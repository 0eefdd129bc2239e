"""Which runs ``lmdynamics compare`` puts in one group, the groups' labels and the baseline, function by function
(fast; the command around them: tests/test_compare.py)."""

import pytest

from lmdynamics.compare import grouping
from lmdynamics.compare.groups import plan_groups
from lmdynamics.compare.runs import CompareError, Run


def _run(name, d=8, kind="plain", k=4, seed=1, lr=1e-3, info=None, config=None):
    cfg = {"seed_everything": seed, "run": {"name": name, "root": f"/tmp/{name}"},
           "trainer": {"default_root_dir": name, "max_steps": 100},
           "model": {"model": {"hidden_size": d, "head": {"kind": kind, "components": k}}}, "optim": {"lr": lr}}
    return Run(name, None, {"hidden_size": d, "model": "neox"} if info is None else info, cfg if config is None else config, None)


def test_default_groups_are_the_keys_that_differ_but_seeds_bookkeeping_and_unused_head_parameters():
    runs = [_run(f"p8-{s}", seed=s) for s in (1, 2)] + [_run(f"m8-{s}", kind="mos", seed=s) for s in (1, 2)]
    runs += [_run("m8k2", kind="mos", k=2), _run("p32", d=32, k=2)]  # a plain head's K: unused
    plan = plan_groups(runs, None, None)
    assert plan.keys == ["model.model.head.components", "model.model.head.kind", "model.model.hidden_size",
                         "model.model.head.rank"]  # a kind key brings its parameters
    assert plan.of_run == {"p8-1": "d=8 · head=plain", "p8-2": "d=8 · head=plain", "m8-1": "d=8 · head=mos K=4",
                           "m8-2": "d=8 · head=mos K=4", "m8k2": "d=8 · head=mos K=2", "p32": "d=32 · head=plain"}
    assert set(plan.groups) == set(plan.of_run.values()) and plan.baseline is None
    assert plan.groups["d=8 · head=mos K=2"].value("model.model.head.components") == "2"
    assert plan.groups["d=32 · head=plain"].value("model.model.head.components") is None


def test_a_plain_heads_parameter_splits_nothing_when_no_run_uses_it():
    runs = [_run("a", k=2), _run("b", k=4), _run("c", d=16, k=4)]
    assert plan_groups(runs, None, None).keys == ["model.model.hidden_size"]


def test_keys_given_by_a_unique_tail_or_from_run_json_and_the_baseline_joins_them():
    runs = [_run("a", lr=1e-3), _run("b", lr=3e-4), _run("c", kind="mos", lr=1e-3)]
    plan = plan_groups(runs, ["lr"], " head.kind = plain ")
    assert plan.keys == ["optim.lr", "model.model.head.kind", "model.model.head.components", "model.model.head.rank"]
    assert plan.baseline == ("model.model.head.kind", "plain")
    assert plan.of_run == {"a": "lr=0.001 · head=plain", "b": "lr=0.0003 · head=plain", "c": "lr=0.001 · head=mos K=4"}
    by_info = plan_groups(runs, ["hidden_size"], None)  # run.json has the key itself: not a config key's tail
    assert by_info.keys == ["hidden_size"] and by_info.of_run == {"a": "d=8", "b": "d=8", "c": "d=8"}


def test_a_run_with_none_of_the_keys_is_a_group_of_its_own():
    runs = [_run("a", config={"m": {"d": 8}}), _run("b", config={"m": {"d": 16}}), _run("bare", info={}, config={})]
    assert plan_groups(runs, None, None).of_run == {"a": "d=8", "b": "d=16", "bare": "bare"}


@pytest.mark.parametrize("group_by, baseline, words", [
    (["hidden_sise"], None, ["--group_by hidden_sise: no run has this config key", "model.model.hidden_size",
                             "keys that differ between the runs: model.model.head.kind"]),
    (["model"], None, ["--group_by model: a config section", "model.model.head.kind"]),  # run.json's model name
    (["kind"], "plain", ["--baseline 'plain'", "KEY=VALUE"]),
    (["kind"], "=plain", ["--baseline '=plain'"]), (["kind"], "head.kind=", ["--baseline 'head.kind='"]),
    (["kind"], "head.kind=tied", ["--baseline model.model.head.kind=tied: no run has this value",
                                  "values of model.model.head.kind: mos, plain"]),
    (["trainer.max_steps", "seed_everything", "max_steps"], None, []),  # fine: full keys and one unique tail
])
def test_bad_grouping_is_one_error_naming_what_exists(group_by, baseline, words):
    runs = [_run("a"), _run("b", kind="mos", seed=2)]
    if not words:
        assert plan_groups(runs, group_by, baseline).keys[:2] == ["trainer.max_steps", "seed_everything"]
        return
    with pytest.raises(CompareError) as err:
        plan_groups(runs, group_by, baseline)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value), str(err.value)


def test_a_tail_of_several_keys_and_a_key_some_run_lacks_are_refused():
    runs = [_run("a", config={"x": {"lr": 1}, "y": {"lr": 2}}), _run("b", config={"x": {"lr": 1}, "y": {"lr": 3}})]
    with pytest.raises(CompareError, match="several config keys end so .x.lr, y.lr."):
        plan_groups(runs, ["lr"], None)
    runs = [_run(n, config={"a": {"depth": 2}} if n != "c" else {"b": 1}, info={}) for n in "abcde"]
    with pytest.raises(CompareError, match=r"--group_by a.depth: not in the config or run.json of c; "):
        plan_groups(runs, ["a.depth"], None)
    runs = [_run(n, config={"b": 1}, info={}) for n in "abcde"] + [_run("f", config={"a": {"depth": 2}}, info={})]
    with pytest.raises(CompareError, match=r"of a, b, c and others;"):
        plan_groups(runs, ["a.depth"], None)


def test_a_head_parameter_is_no_missing_key():
    runs = [_run("a", config={"m": {"head": {"kind": "plain"}}}), _run("b", config={"m": {"head": {"kind": "mos", "components": 2}}})]
    assert plan_groups(runs, ["m.head.kind"], None).of_run == {"a": "head=plain", "b": "head=mos K=2"}


def test_labels_name_keys_shortly_section_by_section():
    values = [("hidden_size", "8"), ("model.model.head.kind", "mos"), ("model.model.head.components", "4"),
              ("model.model.head.rank", None), ("optim.lr", "0.001"), ("data.batch_size", "8"), ("x.y.zeta", "1")]
    assert grouping.label(values) == "d=8 · head=mos K=4 · lr=0.001 · batch=8 · zeta=1"
    assert grouping.label([("a.b", None)]) == "all runs"
    assert grouping.group_of({"a": {"lr": 0.5, "on": True, "dims": [1, 2]}}, {}, ["a.lr", "a.on", "a.dims"]).values == (
        ("a.dims", "[1, 2]"), ("a.lr", "0.5"), ("a.on", "true"))


def test_natural_order_sorts_numbers_by_value():
    labels = ["d=16 · K=2", "d=8 · K=10", "d=8 · K=2", "d=128", "d=16.5", "d=8"]
    assert sorted(labels, key=grouping.natural) == ["d=8", "d=8 · K=2", "d=8 · K=10", "d=16 · K=2", "d=16.5", "d=128"]
    assert sorted(["x", "10", "9"], key=grouping.natural) == ["9", "10", "x"]  # numbers before words


def test_each_group_keeps_one_style_and_twenty_groups_differ_in_colour_or_line():
    labels = [f"d={d}" for d in range(1, 21)]
    styles = grouping.styles(labels)
    assert len({(s["color"], s["ls"]) for s in styles.values()}) == 20
    assert grouping.styles(list(reversed(labels)) + labels[:3]) == styles  # the same label, the same style
    assert styles["d=2"]["color"] != styles["d=1"]["color"] and styles["d=2"]["marker"] != styles["d=1"]["marker"]
    assert grouping.styles(["d=16", "d=8"])["d=8"] == styles["d=1"]  # the legend's order: the first style first


def test_flatten_keeps_lists_as_values():
    assert grouping.flatten({"a": {"b": 1, "c": [1, {"d": 2}]}, "e": None}) == {"a.b": 1, "a.c": [1, {"d": 2}], "e": None}
    assert grouping.flatten(3) == {}


def test_only_a_keys_last_part_names_a_seed_and_keys_after_it_still_differ():
    configs = [{"data": {"seed": s, "seeding": {"kind": k}}, "zeta": z} for s, k, z in ((1, "a", 1), (2, "b", 2))]
    assert grouping.differing_keys(configs) == ["data.seeding.kind", "zeta"]


def test_list_values_with_mappings_in_any_key_order_are_one_value():
    a = grouping.group_of({"m": {"blocks": [{"x": 1, "y": 2}]}}, {}, ["m.blocks"])
    b = grouping.group_of({"m": {"blocks": [{"y": 2, "x": 1}]}}, {}, ["m.blocks"])
    assert a == b and a.label == 'blocks=[{"x": 1, "y": 2}]'


def test_a_kind_brings_its_parameters_only_for_a_head():
    assert grouping.with_kind_parameters(["data.kind"]) == ["data.kind"]
    assert grouping.with_kind_parameters(["model.head.components"]) == ["model.head.components"]
    assert grouping.with_kind_parameters(["model.head.kind"]) == ["model.head.kind", "model.head.components", "model.head.rank"]


def test_an_unknown_key_lists_at_most_sixty_existing_keys():
    configs = [{"k": {f"key{i:02d}": i for i in range(61)}}]
    with pytest.raises(grouping.GroupKeyError) as err:
        grouping.resolve("nothing", configs, [{}], "--group_by")
    listing = str(err.value).split("keys that exist: ")[1]
    assert listing == ", ".join(f"k.key{i:02d}" for i in range(60)) + ", ... (61 in all)"
    with pytest.raises(grouping.GroupKeyError) as err:
        grouping.resolve("nothing", [{"k": {f"key{i:02d}": i for i in range(60)}}], [{}], "--group_by")
    assert str(err.value).split("keys that exist: ")[1] == ", ".join(f"k.key{i:02d}" for i in range(60))


def test_the_baseline_value_may_hold_an_equals_sign_and_its_errors_name_the_option():
    runs = [_run(n, config={"m": {"tag": t, "d": d}}) for n, t, d in (("a", "x=1", 8), ("b", "y", 16), ("c", "z", 8))]
    assert plan_groups(runs, ["m.d"], "m.tag=x=1").baseline == ("m.tag", "x=1")
    with pytest.raises(CompareError, match=r"^--baseline tags: no run has this config key"):
        plan_groups(runs, ["m.d"], "tags=y")
    with pytest.raises(CompareError, match=r"values of m.d: 8, 16$"):
        plan_groups(runs, ["m.d"], "m.d=4")


def test_a_run_without_the_keys_is_its_own_group_also_with_a_baseline():
    runs = [_run("a", config={"m": {"d": 8}}), _run("b", config={"m": {"d": 16}}), _run("bare", info={}, config={})]
    plan = plan_groups(runs, None, "m.d=8")
    assert plan.of_run["bare"] == "bare" and plan.groups["bare"].value("m.d") is None


def test_a_head_key_that_is_no_parameter_must_be_in_every_run():
    runs = [_run("a", config={"m": {"head": {"kind": "mos"}}}), _run("b", config={"m": {"head": {"components": 2}}})]
    with pytest.raises(CompareError, match="--group_by m.head.kind: not in the config or run.json of b"):
        plan_groups(runs, ["m.head.kind"], None)


def test_a_head_parameter_counts_where_only_run_json_names_a_kind_that_uses_it():
    """The head's kind is looked up like any key: in the resolved config, else in run.json."""
    info = {"model": {"head": {"kind": "mos", "rank": 4}}}
    assert grouping.group_of({}, info, ["model.head.rank"]).value("model.head.rank") == "4"  # values as labels show them
    plain = {"model": {"head": {"kind": "plain", "rank": 4}}}
    assert grouping.group_of({}, plain, ["model.head.rank"]).value("model.head.rank") is None  # unused by a plain head
