"""The values ActivationConvergence writes (cka_prev, cka_final, converged_fraction), on activations with
known answers, driven through its Lightning hooks.

The probe returns designed activations: small integers (exact in the fp16 activation files) and, where a
CKA of 1 is wanted, the same matrix with its features permuted, signs flipped, scaled by 2 and shifted
(CKA is invariant to all four). Every CKA is checked against the float64 sample-space reference.
"""

import pytest
import torch

from lmdynamics.callbacks.convergence import ActivationConvergence
from tests.helpers.callbacks import drive
from tests.test_metrics_cka import np_cka, np_cka_debiased

N, D, TOKENS_PER_STEP = 48, 6, 10


def noise(seed):
    return torch.randint(-8, 9, (N, D), generator=torch.Generator().manual_seed(seed)).float()


def same(x, seed=0):
    """x with features permuted and sign-flipped, scaled by 2 and shifted: CKA(x, same(x)) = 1 exactly."""
    g = torch.Generator().manual_seed(100 + seed)
    perm = torch.randperm(D, generator=g)
    signs = torch.where(torch.rand(D, generator=g) < 0.5, -1.0, 1.0)
    return 2 * x[:, perm] * signs + 3


FINAL0, FINAL1, FINAL2, EARLY = noise(1), noise(2), noise(3), noise(4)
# Per step 0..4. Layer 0 mlp settles at step 3; layer 1 mlp at step 1; layer 1 attn reaches its final
# representation at step 0, leaves it at step 2 and is back from step 3 (the dip restarts the clock).
ACTS = {
    (0, "mlp"): [noise(10), noise(11), same(noise(11)), same(FINAL0, 1), FINAL0],
    (1, "mlp"): [EARLY, same(FINAL1, 2), same(FINAL1, 3), same(FINAL1, 4), FINAL1],
    (1, "attn"): [same(FINAL2, 5), FINAL2, noise(12), same(FINAL2, 6), FINAL2],
}
CONVERGED = {(0, "mlp"): 3 / 4, (1, "mlp"): 1 / 4, (1, "attn"): 3 / 4}
STEPS = range(5)


def acts_at(step):
    return {key: series[step] for key, series in ACTS.items()}


def reference(x, y, debiased):
    f = np_cka_debiased if debiased else np_cka
    return f(x.double().numpy(), y.double().numpy())


def fit(run, debiased=False, start=0, stop=4):
    """ActivationConvergence measuring every step of a 4-step run (or of steps start..stop of it)."""
    return drive(ActivationConvergence(every=1, debiased=debiased), run, acts_at, start=start, stop=stop,
                 tokens_per_step=TOKENS_PER_STEP)


def values(table, metric):
    rows = table[table.metric == metric]
    return {(int(r.layer), r.component, int(r.step)): float(r.value) for r in rows.itertuples()}


def test_designed_activations_are_what_they_claim():
    for series in ACTS.values():
        for x in series:
            assert torch.equal(x.half().float(), x)  # exact in the fp16 activation files
    assert reference(ACTS[(0, "mlp")][2], ACTS[(0, "mlp")][1], False) == pytest.approx(1.0)
    assert max(reference(noise(a), noise(b), False) for a, b in [(10, 11), (11, 1), (12, 3)]) < 0.6


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_prev_is_against_the_previous_measurement(tmp_path, debiased):
    table = fit(tmp_path / "run", debiased)
    names = ["cka_prev"] + (["cka_prev_debiased"] if debiased else [])
    for name in names:
        got = values(table, name)
        assert set(got) == {(*key, s) for key in ACTS for s in STEPS[1:]}
        for (layer, comp, step), value in got.items():
            series = ACTS[(layer, comp)]
            assert value == pytest.approx(reference(series[step], series[step - 1], name.endswith("_debiased")),
                                          abs=1e-9), (layer, comp, step)
    prev = values(table, "cka_prev")
    assert prev[(0, "mlp", 2)] == pytest.approx(1.0) and prev[(0, "mlp", 3)] < 0.6  # not against step 0 or 1
    assert prev[(1, "mlp", 4)] == pytest.approx(1.0) and prev[(1, "attn", 3)] < 0.6


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_final_and_converged_fraction(tmp_path, debiased):
    table = fit(tmp_path / "run", debiased)
    assert (table.tokens == table.step * TOKENS_PER_STEP).all() and set(table.model) == {"m"}
    names = ["cka_final"] + (["cka_final_debiased"] if debiased else [])
    for name in names:
        got = values(table, name)
        assert set(got) == {(*key, s) for key in ACTS for s in STEPS}
        for (layer, comp, step), value in got.items():
            series = ACTS[(layer, comp)]
            assert value == pytest.approx(reference(series[step], series[-1], name.endswith("_debiased")),
                                          abs=1e-9), (layer, comp, step)
    fractions = values(table, "converged_fraction")
    assert fractions == pytest.approx({(*key, 4): f for key, f in CONVERGED.items()})  # first step / final step


def test_resumed_run_compares_with_the_last_stored_measurement(tmp_path):
    run = tmp_path / "run"
    fit(run, stop=2)  # measures steps 0, 1, 2 and stores their activations
    table = fit(run, start=2)  # resumed at step 2: the next cka_prev (step 3) is against the stored step 2
    prev = values(table, "cka_prev")
    assert sorted({s for *_, s in prev}) == [1, 2, 3, 4]
    for key, series in ACTS.items():
        assert prev[(*key, 3)] == pytest.approx(reference(series[3], series[2], False), abs=1e-9)
