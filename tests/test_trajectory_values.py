"""Trajectory values against an independent float64 computation from the losses, and live = offline.

A token's perplexity is exp(loss) in nats (Xia et al. 2023). The trend classes depend on its value, not only on
its direction: "stagnated" needs both window ends within 5% of the window's geometric mean, so two tokens built
just inside and just outside that band (from their losses, in float64 here) must fall on either side of it; a
perplexity in another base (2^loss, 10^loss) or precision moves them across. Group and validation perplexity
are exp(mean loss) over tokens (a token-weighted corpus perplexity), checked with ``math.fsum``.

End to end (slow): the offline recorder run over a training run's checkpoints gives, at every checkpoint, the
same trajectory quantities as the live recorder (losses, validation perplexity over the same blocks, tokens,
steps, token table, parameters), whether it records a run from scratch or completes a live store.
"""

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from lmdynamics.trajectories.classify import class_shares, double_descent_shares, trend_labels
from lmdynamics.trajectories.record import corpus_perplexity
from lmdynamics.report.trajectories_report import build_report, write_report
from lmdynamics.trajectories.storage import TokenTable, Trajectories

STEPS = np.arange(0, 11) * 100  # the window of start fraction 0.2 is steps 200..1000 (9 checkpoints)
START = 2
BAND = 1.05


def band_edge_window(ratio: float) -> np.ndarray:
    """9 perplexities of zero OLS slope on log(step) whose higher end is exactly ``ratio`` x their geometric mean."""
    x = np.log(STEPS[START:].astype(np.float64))
    basis = np.stack([np.ones_like(x), x - x.mean()], 1)
    ends = np.zeros_like(x)
    ends[[0, -1]] = 1.0
    shape = ends - basis @ np.linalg.lstsq(basis, ends, rcond=None)[0]  # orthogonal to 1 and x: slope 0

    def top(d):
        w = 1.5 * (1 + d * shape)
        return max(w[0], w[-1]) / math.exp(np.log(w).mean())

    lo, hi = 0.0, 0.5
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if top(mid) < ratio else (lo, mid)
    return 1.5 * (1 + lo * shape)


def ends_over_gmean(losses_row: np.ndarray) -> tuple[float, float]:
    """float64 from the stored (float32) losses: the window's first and last perplexity over its geometric mean."""
    ppl = [math.exp(float(v)) for v in losses_row[START:]]
    g = math.exp(math.fsum(math.log(p) for p in ppl) / len(ppl))
    return ppl[0] / g, ppl[-1] / g


@pytest.fixture
def planted():
    """Tokens: 0 just inside the band, 1 just outside, 2-3 clearly upward, 4-5 clearly downward, 6-9 noise."""
    rng = np.random.default_rng(0)
    early = np.array([6.0, 3.0])  # steps 0 and 100, before the window
    rows = [np.r_[early, band_edge_window(BAND - 0.005)], np.r_[early, band_edge_window(BAND + 0.005)]]
    s = STEPS / STEPS[-1]
    rows += [8 * (1 + 0.5 * s) * np.exp(rng.normal(0, 0.002, len(s))) for _ in range(2)]
    rows += [8 * (1 - 0.5 * s) * np.exp(rng.normal(0, 0.002, len(s))) for _ in range(2)]
    rows += [20 * np.exp(rng.normal(0, 0.3, len(s))) for _ in range(4)]
    losses = np.log(np.array(rows, dtype=np.float64)).astype(np.float32)
    n = len(rows)
    table = TokenTable(np.arange(n) + 5, np.arange(n) + 1, np.zeros(n), np.zeros(n))
    traj = Trajectories(losses, STEPS.copy(), STEPS * 64, np.exp(np.linspace(3, 1, len(STEPS))), table,
                        {"model": "m", "parameters": 1000})
    inside, outside = ends_over_gmean(losses[0]), ends_over_gmean(losses[1])
    assert max(inside) < BAND < max(outside) and min(inside) > 1 / BAND  # the construction, checked in float64
    return traj


def test_the_band_edge_is_decided_by_the_perplexity_of_the_losses(planted):
    labels = trend_labels(planted, 0.2)
    assert labels[0] == "stagnated" and labels[1] == "other"
    assert list(labels[2:6]) == ["upward", "upward", "downward", "downward"]
    shares = class_shares(planted, (0.2,))
    counts = shares.set_index("label")["count"]
    assert counts["stagnated"] >= 1 and counts["upward"] >= 2 and counts["downward"] >= 2
    assert shares["share"].sum() == pytest.approx(1.0)
    dd = double_descent_shares(planted)
    assert dd["group_upward_after_20pct"] == pytest.approx(float(np.mean(labels == "upward")))


def test_group_perplexity_is_exp_of_the_mean_loss_of_each_group(planted, tmp_path):
    report = build_report([planted], "m", start_fraction=0.2, start_fractions=(0.2,))
    write_report(report, tmp_path)
    traced = pd.read_csv(tmp_path / "group_perplexity.csv")
    labels = trend_labels(planted, 0.2)
    groups = {"all": np.ones(len(labels), bool), "stagnated": labels == "stagnated", "upward": labels == "upward"}
    for name, mask in groups.items():
        rows = traced[traced.group == name].sort_values("step")
        assert list(rows.step) == list(STEPS) and (rows.n_tokens == mask.sum()).all()
        for j, value in enumerate(rows.group_ppl):
            column = [float(v) for v in planted.losses[mask, j]]
            assert value == pytest.approx(math.exp(math.fsum(column) / len(column)), rel=1e-12), (name, j)
    rows = traced[traced.group == "all"].sort_values("step")
    np.testing.assert_allclose(rows.val_ppl, planted.val_ppl, rtol=1e-15)
    np.testing.assert_allclose(rows.tokens, planted.tokens, rtol=0)
    np.testing.assert_allclose(rows.flops, 6.0 * 1000 * planted.tokens, rtol=1e-15)


def test_corpus_perplexity_is_exp_of_the_token_mean_loss():
    rng = np.random.default_rng(3)
    losses = rng.gamma(2.0, 2.0, size=(7, 33)).astype(np.float32)
    expected = math.exp(math.fsum(float(v) for v in losses.ravel()) / losses.size)
    assert corpus_perplexity(losses) == pytest.approx(expected, rel=1e-12)
    assert corpus_perplexity(losses) < float(np.exp(losses.astype(np.float64)).mean())  # not a mean of perplexities
    assert corpus_perplexity([2.5]) == pytest.approx(math.exp(2.5), rel=1e-15)  # one token is enough
    with pytest.raises(ValueError, match="no tokens"):
        corpus_perplexity([])


# ------------------------------------------------------------------------------------ live = offline
def same_trajectories(offline: Trajectories, live: Trajectories, steps) -> None:
    """Every trajectory quantity of ``offline`` equals ``live``'s at ``steps``."""
    at = [list(live.steps).index(s) for s in steps]
    got = [list(offline.steps).index(s) for s in steps]
    np.testing.assert_array_equal(offline.tokens[got], live.tokens[at])
    np.testing.assert_allclose(offline.val_ppl[got], live.val_ppl[at], rtol=1e-5)
    np.testing.assert_allclose(offline.losses[:, got], live.losses[:, at], rtol=2.0 ** -10, atol=1e-6)  # float16
    for name in ("ids", "position", "document", "block"):
        np.testing.assert_array_equal(getattr(offline.token_table, name), getattr(live.token_table, name))
    for key in ("parameters", "tokens_per_step", "block_tokens", "tokenizer"):
        assert offline.meta[key] == live.meta[key], key


@pytest.mark.slow
def test_offline_trajectories_of_a_run_equal_the_live_ones_at_every_checkpoint(tmp_path):
    from lmdynamics.commands.trajectories import main as trajectories_main
    from lmdynamics.trajectories.storage import TrajectoryStore
    from tests.helpers.cli import run_cli, tiny_config

    # 8 validation blocks, 4 of them recorded; 10 checkpoints (0..9), enough for the report's double-descent windows
    cfg = tiny_config(tmp_path, **{"run.name": "live", "trainer.max_steps": 9, "checkpoints.every": 1})
    res = run_cli("fit", "--config", str(cfg), "--trajectories.enabled", "true", "--trajectories.num_blocks", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "live"
    live = TrajectoryStore(run / "trajectories" / "live").read()
    assert list(live.steps) == list(range(10))
    val = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val_loss"])  # all 8 blocks, at steps 3, 6, 9
    for step in (3, 6, 9):
        loss = val[val.step == step]["val_loss"].iloc[-1]
        assert live.val_ppl[list(live.steps).index(step)] == pytest.approx(math.exp(loss), rel=1e-4)

    scratch = tmp_path / "scratch"  # no live store: the offline recorder records the run's validation blocks
    shutil.copytree(run, scratch)
    shutil.rmtree(scratch / "trajectories")
    assert trajectories_main(["run", str(scratch), "--blocks", "4"]) == 0
    same_trajectories(TrajectoryStore(scratch / "trajectories" / "live").read(), live, live.steps)

    partial = tmp_path / "partial"  # a live store that stopped after step 3: the rest completed from checkpoints
    shutil.copytree(run, partial)
    source = TrajectoryStore(run / "trajectories" / "live")
    shutil.rmtree(partial / "trajectories")
    cut = TrajectoryStore.create(partial / "trajectories" / "live", source.token_table(), source.manifest["meta"],
                                 source.blocks().numpy())
    for j in (0, 1, 2, 3):
        cut.append(int(live.steps[j]), live.losses[:, j], float(live.val_ppl[j]), int(live.tokens[j]))
    assert trajectories_main(["run", str(partial)]) == 0
    completed = TrajectoryStore(partial / "trajectories" / "live").read()
    assert list(completed.steps) == list(live.steps)
    same_trajectories(completed, live, range(4, 10))


def test_double_descent_of_a_run_too_short_for_three_windows_is_nan_and_the_group_share_stays():
    """A short run (5 checkpoints, as the tiny demo's) cannot hold three windows of >= 3 checkpoints: our per-token
    share is NaN, the authors' group share (upward after 20%) is still computed, and the report is built."""
    steps = np.array([0, 1, 2, 3, 6])
    rng = np.random.default_rng(4)
    losses = np.log(np.r_[[10 * (1 + 0.3 * steps / 6)] * 3, [10 * (1 - 0.3 * steps / 6)] * 2]
                    * np.exp(rng.normal(0, 0.001, (5, 5)))).astype(np.float32)
    table = TokenTable(np.arange(5), np.arange(5) + 1, np.zeros(5), np.zeros(5))
    traj = Trajectories(losses, steps, steps * 128, np.exp(np.linspace(3, 2, 5)), table, {"model": "m", "parameters": 10})
    dd = double_descent_shares(traj)
    labels = trend_labels(traj, 0.2)
    assert math.isnan(dd["per_token_down_up_down"]) and dd["group_upward_after_20pct"] == float(np.mean(labels == "upward"))
    build_report([traj], "m", start_fraction=0.2, start_fractions=(0.2,))


def test_a_flat_token_of_high_perplexity_is_stagnated_without_the_variance_condition():
    """The variance condition (var < geometric mean, mixed units) is off unless asked for: a flat token at perplexity
    ~10^4 with a 2% wiggle (variance ~4 x 10^4) is stagnated by default and "other" only with the condition."""
    wiggle = np.r_[0.0, 0.0, 0.02 * np.cos(np.arange(len(STEPS) - 2) * np.pi)]
    losses = np.log(1e4 * (1 + wiggle))[None].astype(np.float32)
    traj = Trajectories(losses, STEPS.copy(), STEPS * 64, np.ones(len(STEPS)), TokenTable([1], [1], [0], [0]), {"model": "m"})
    window = np.exp(losses[0, START:].astype(np.float64))
    assert window.var() > math.exp(np.log(window).mean())  # the condition would fail
    assert trend_labels(traj, 0.2)[0] == "stagnated"
    assert trend_labels(traj, 0.2, variance_condition=True)[0] == "other"
    shares = class_shares(traj, (0.2,)).set_index("label")["count"]
    assert shares["stagnated"] == 1
