"""Linear CKA: invariances, an independent numpy reference, streaming = concatenation (also over 2 DDP
processes), minibatch CKA."""

import datetime
import math
import os
import re
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmdynamics.metrics import MinibatchCKA, StreamingLinearCKA, linear_cka


# --- independent float64 numpy reference (sample space, explicit n x n matrices) -------------------------


def np_cka(x, y):
    """Kornblith et al. 2019: CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with centred Gram matrices."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k = h @ (x @ x.T) @ h
    l = h @ (y @ y.T) @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def np_hsic1(k, l):
    """Song et al. 2012 unbiased HSIC, written out with explicit ones-vectors."""
    n = k.shape[0]
    k = k.copy()
    l = l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ k @ l @ one)) / (
        n * (n - 3)
    )


def np_cka_debiased(x, y):
    k, l = x @ x.T, y @ y.T
    return np_hsic1(k, l) / np.sqrt(np_hsic1(k, k) * np_hsic1(l, l))


def correlated(n, d1, d2, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64)
    y = x[:, : min(d1, d2)] @ torch.randn(min(d1, d2), d2, generator=g, dtype=torch.float64)
    y = y + 2.0 * torch.randn(n, d2, generator=g, dtype=torch.float64)
    return x + shift, y - shift


def random_orthogonal(d, seed):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


# shapes exercising the feature-space path (n > d) and the sample-space path (n < d)
SHAPES = [(300, 12, 7), (24, 40, 33)]


@pytest.mark.parametrize("n,d1,d2", SHAPES)
@pytest.mark.parametrize("debiased", [False, True])
def test_matches_independent_numpy_reference(n, d1, d2, debiased):
    x, y = correlated(n, d1, d2, seed=1)
    ref = (np_cka_debiased if debiased else np_cka)(x.numpy(), y.numpy())
    got = linear_cka(x, y, debiased=debiased)
    assert 0.05 < abs(ref) < 0.95  # a non-trivial value, so the comparison means something
    assert got == pytest.approx(ref, rel=1e-10, abs=1e-12)
    # float32 inputs are accumulated in float64: same number up to the inputs' own rounding
    assert linear_cka(x.float(), y.float(), debiased=debiased) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("n,d1,d2", SHAPES)
@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_scale_and_shift(n, d1, d2, debiased):
    x, _ = correlated(n, d1, d2, seed=2)
    y = 3.7 * x @ random_orthogonal(d1, seed=3) + torch.linspace(-5, 5, d1, dtype=torch.float64)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    x2, y2 = correlated(n, d1, d2, seed=4)
    base = linear_cka(x2, y2, debiased=debiased)
    moved = linear_cka(x2 @ random_orthogonal(d1, seed=5) * 0.01 + 7.0, y2, debiased=debiased)
    assert moved == pytest.approx(base, rel=1e-9)
    assert base < 0.99  # and unrelated data is not 1


@pytest.mark.parametrize("debiased", [False, True])
def test_symmetric(debiased):
    x, y = correlated(50, 9, 5, seed=6)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(linear_cka(y, x, debiased=debiased), rel=1e-12)


def test_debiased_near_zero_for_independent_samples():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2000, 20, generator=g, dtype=torch.float64)
    y = torch.randn(2000, 20, generator=g, dtype=torch.float64)
    biased = linear_cka(x, y)
    debiased = linear_cka(x, y, debiased=True)
    # the biased estimator is inflated by ~ sqrt(d1 d2) / n = 0.01; the unbiased HSIC removes it
    assert biased > 0.007
    assert abs(debiased) < 0.003


def test_degenerate_inputs():
    x = torch.ones(10, 3)
    y = torch.randn(10, 2)
    assert np.isnan(linear_cka(x, y))  # a constant representation has no variance to compare
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(torch.randn(3, 2), torch.randn(3, 2), debiased=True)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("preallocate", [False, True])
def test_streaming_equals_concatenation(debiased, preallocate):
    x, y = correlated(403, 16, 9, seed=8, shift=25.0)  # uncentred data: centring happens from running sums
    dims = dict(dim_x=16, dim_y=9) if preallocate else {}
    metric = StreamingLinearCKA(debiased=debiased, **dims)
    for xb, yb in zip(torch.split(x, [1, 100, 57, 245]), torch.split(y, [1, 100, 57, 245])):
        metric.update(xb.float(), yb.float())  # float32 batches, float64 sums
    ref_x, ref_y = x.float().double(), y.float().double()
    expected = linear_cka(ref_x, ref_y, debiased=debiased)
    # the debiased sums are fourth moments of uncentred data (mean 25 x the spread here): ~1e-9 is float64's limit
    rel = 1e-8 if debiased else 1e-10
    assert float(metric.compute()) == pytest.approx(expected, rel=rel)
    reference = np_cka_debiased if debiased else np_cka
    assert float(metric.compute()) == pytest.approx(reference(ref_x.numpy(), ref_y.numpy()), rel=rel)
    metric.reset()
    metric.update(x[:50], y[:50])
    assert float(metric.compute()) == pytest.approx(linear_cka(x[:50], y[:50], debiased=debiased), rel=1e-9)


def test_streaming_rejects_mismatched_batches():
    metric = StreamingLinearCKA()
    metric.update(torch.randn(10, 4), torch.randn(10, 3))
    with pytest.raises(ValueError, match="features"):
        metric.update(torch.randn(10, 5), torch.randn(10, 3))


def test_minibatch_cka():
    x, y = correlated(120, 10, 6, seed=9)
    one = MinibatchCKA()
    one.update(x, y)
    assert float(one.compute()) == pytest.approx(linear_cka(x, y, debiased=True), rel=1e-10)
    # several batches: ratio of averaged unbiased HSICs (Nguyen et al. 2021), from the numpy reference
    metric = MinibatchCKA()
    hsic = np.zeros(3)
    for xb, yb in zip(x.split(40), y.split(40)):
        metric.update(xb, yb)
        k, l = xb.numpy() @ xb.numpy().T, yb.numpy() @ yb.numpy().T
        hsic += [np_hsic1(k, l), np_hsic1(k, k), np_hsic1(l, l)]
    assert float(metric.compute()) == pytest.approx(hsic[0] / np.sqrt(hsic[1] * hsic[2]), rel=1e-10)
    with pytest.raises(ValueError, match="at least 4 rows"):
        metric.update(x[:3], y[:3])


# --- two DDP processes (gloo on CPU): the synced metric is the CKA of both shards together ---------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        x, y = correlated(203, 8, 5, seed=10, shift=3.0)
        shard = slice(0, 70) if rank == 0 else slice(70, None)  # uneven shards
        results = {}
        for debiased in (False, True):
            metric = StreamingLinearCKA(debiased=debiased)  # lazily allocated on both ranks
            metric.update(x[shard][:30], y[shard][:30])
            metric.update(x[shard][30:], y[shard][30:])
            results[f"streaming_{debiased}"] = float(metric.compute())
        mb = MinibatchCKA()
        mb.update(x[shard], y[shard])
        results["minibatch"] = float(mb.compute())
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_streaming_cka_over_two_ddp_processes(tmp_path):
    ctx = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = 180
    while not ctx.join(timeout=5):
        deadline -= 5
        if deadline <= 0:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 180 s")
    x, y = correlated(203, 8, 5, seed=10, shift=3.0)
    h = [np_hsic1(a @ a.T, b @ b.T) for a, b in [(x[:70].numpy(), y[:70].numpy()), (x[70:].numpy(), y[70:].numpy())]]
    hxx = [np_hsic1(a @ a.T, a @ a.T) for a in (x[:70].numpy(), x[70:].numpy())]
    hyy = [np_hsic1(b @ b.T, b @ b.T) for b in (y[:70].numpy(), y[70:].numpy())]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["streaming_False"] == pytest.approx(linear_cka(x, y), rel=1e-9)
        assert got["streaming_True"] == pytest.approx(linear_cka(x, y, debiased=True), rel=1e-9)
        assert got["minibatch"] == pytest.approx(sum(h) / np.sqrt(sum(hxx) * sum(hyy)), rel=1e-9)
        # and the synced value is not just the local shard's
        assert abs(got["streaming_False"] - linear_cka(x[:70], y[:70])) > 1e-4


def _related(seed: int = 0, n: int = 40):
    """float64 x (n, 6) and y (n, 5), y partly a linear function of x: CKA well inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = x[:, :4] @ torch.randn(4, 5, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, y


def test_minibatch_cka_centres_each_feature_so_large_offsets_cost_no_accuracy():
    """CKA is shift invariant; the minibatch estimator centres every feature before its Gram matrices, so features
    sitting 1e6..6e6 away from 0 (a different offset per feature) give the CKA of the unshifted ones."""
    x, y = _related()
    metric = MinibatchCKA()
    metric.update(x + 1e6 * torch.arange(1, 7), y - 1e6 * torch.arange(1, 6))
    assert float(metric.compute()) == pytest.approx(linear_cka(x, y, debiased=True), rel=1e-9)


@pytest.mark.parametrize("dims", [False, True])
def test_streaming_cka_is_biased_by_default_whether_allocated_up_front_or_at_the_first_batch(dims):
    """``StreamingLinearCKA()`` is the biased linear CKA of the concatenated batches, to float64 rounding, whether
    its state is allocated up front (dim_x, dim_y) or at the first batch."""
    x, y = _related(1)
    metric = StreamingLinearCKA(**({"dim_x": 6, "dim_y": 5} if dims else {}))
    for i in range(4):
        metric.update(x[10 * i: 10 * (i + 1)], y[10 * i: 10 * (i + 1)])
    assert float(metric.compute()) == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert abs(linear_cka(x, y) - linear_cka(x, y, debiased=True)) > 1e-3  # the default is told apart


@pytest.mark.parametrize("call, name", [
    (lambda x, y: linear_cka(x, y), "linear_cka"),
    (lambda x, y: MinibatchCKA().update(x, y), "MinibatchCKA.update"),
    (lambda x, y: StreamingLinearCKA().update(x, y), "StreamingLinearCKA.update"),
])
@pytest.mark.parametrize("bad", ["x", "y"])
def test_a_side_that_is_not_2d_is_refused_naming_the_function(call, name, bad):
    x, y = _related(2, n=8)
    x, y = (x[:, 0], y) if bad == "x" else (x, y[:, 0])
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}: x and y must be 2-D"):
        call(x, y)


@pytest.mark.parametrize("d1, d2", [(0, 3), (3, 0), (0, 0)])
def test_streaming_cka_of_batches_without_features_is_nan_like_linear_cka(d1, d2):
    """A side without features is degenerate data: NaN, as ``linear_cka`` of the concatenated batches gives."""
    g = torch.Generator().manual_seed(3)
    metric = StreamingLinearCKA()
    batches = [(torch.randn(5, d1, generator=g, dtype=torch.float64), torch.randn(5, d2, generator=g, dtype=torch.float64))
               for _ in range(2)]
    for x, y in batches:
        metric.update(x, y)
    assert math.isnan(linear_cka(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])))
    assert math.isnan(float(metric.compute()))


# --- the same sync in one process: torchmetrics' gather replaced by one that returns every "rank's" state -----


def _gather_across(ranks):
    """A stand-in for ``torch.distributed`` all-gather over metrics ``ranks`` (rank 0 first): asked for one of rank
    0's state tensors, it returns that state of every rank, as the real gather returns each process's copy."""

    def gather(tensor, group=None):
        names = [name for name, state in ranks[0].metric_state.items() if state is tensor]
        assert len(names) == 1, "the gather was asked for a tensor that is not one of the metric's states"
        return [getattr(metric, names[0]) for metric in ranks]

    return gather


@pytest.mark.parametrize("kind", ["streaming-lazy", "streaming-up-front", "streaming-debiased", "minibatch"])
def test_a_metric_synced_across_ranks_is_the_metric_of_every_ranks_samples(kind):
    """``compute()`` under DDP combines the ranks' states with each state's ``dist_reduce_fx``: the streaming CKA of
    uneven shards (70, 133 rows) equals ``linear_cka`` of all 203 rows, the minibatch CKA the ratio of the summed
    unbiased HSICs of the shards. The gather is simulated in this process (the slow test above runs two), so a
    wrong reduction (a mean, or none) shows in the fast suite; after ``compute()`` each rank keeps its own state."""
    x, y = correlated(203, 8, 5, seed=10, shift=3.0)
    shards = (slice(0, 70), slice(70, None))

    def make():
        if kind == "minibatch":
            return MinibatchCKA()
        up_front = {"dim_x": 8, "dim_y": 5} if kind == "streaming-up-front" else {}
        return StreamingLinearCKA(debiased=kind == "streaming-debiased", **up_front)

    ranks = [make() for _ in shards]
    for metric, shard in zip(ranks, shards):
        metric.update(x[shard][:30], y[shard][:30])
        if kind != "minibatch":  # the minibatch estimator averages per batch: one batch per rank keeps the reference simple
            metric.update(x[shard][30:], y[shard][30:])
    ranks[0].dist_sync_fn = _gather_across(ranks)
    ranks[0].distributed_available_fn = lambda: True
    if kind == "minibatch":
        a, b = (x[:30].numpy(), y[:30].numpy()), (x[70:100].numpy(), y[70:100].numpy())
        h = [sum(np_hsic1(p @ p.T, q @ q.T) for p, q in pairs) for pairs in
             ([a, b], [(a[0], a[0]), (b[0], b[0])], [(a[1], a[1]), (b[1], b[1])])]
        expected = h[0] / np.sqrt(h[1] * h[2])
    else:
        expected = linear_cka(x, y, debiased=kind == "streaming-debiased")
    assert float(ranks[0].compute()) == pytest.approx(expected, rel=1e-9)
    local = make()
    local.update(x[:30], y[:30])
    if kind != "minibatch":
        local.update(x[30:70], y[30:70])
    for name, state in ranks[0].metric_state.items():
        assert torch.equal(state, local.metric_state[name]), name


@pytest.mark.parametrize("debiased", [False, True])
def test_state_allocated_up_front_lets_a_rank_without_a_batch_take_part_in_the_sync(debiased):
    """With ``dim_x`` and ``dim_y`` the state has its shapes before any batch (zeros), so a DDP rank that saw no batch
    still syncs, adding nothing: the synced CKA is that of the other rank's samples."""
    x, y = correlated(60, 8, 5, seed=3, shift=1.0)
    busy, idle = StreamingLinearCKA(debiased=debiased, dim_x=8, dim_y=5), StreamingLinearCKA(debiased=debiased, dim_x=8, dim_y=5)
    assert idle.sxx.shape == (8, 8) and idle.sxy.shape == (8, 5) and idle.sy.shape == (5,) and float(idle.n) == 0
    busy.update(x, y)
    busy.dist_sync_fn, busy.distributed_available_fn = _gather_across([busy, idle]), (lambda: True)
    assert float(busy.compute()) == pytest.approx(linear_cka(x, y, debiased=debiased), rel=1e-12)


@pytest.mark.parametrize("dims", [{"dim_x": 8}, {"dim_y": 5}])
def test_one_dimension_alone_allocates_at_the_first_batch(dims):
    """Both dimensions are needed to allocate up front: one alone leaves the allocation to the first batch, which
    reads both from the data."""
    x, y = correlated(60, 8, 5, seed=4)
    metric = StreamingLinearCKA(**dims)
    assert metric.sxx.numel() == 0
    metric.update(x, y)
    assert float(metric.compute()) == pytest.approx(linear_cka(x, y), rel=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_the_streaming_state_stays_on_the_metrics_device_whatever_device_the_batch_comes_from(debiased):
    """A metric moved to another device (``metric.to(device)``, as Lightning moves a module's metrics to its GPU) keeps
    its sums there: a batch on the CPU is moved to the metric's device before its moments are taken, and a lazily
    allocated state is allocated there. PyTorch's ``meta`` device stands in for an accelerator (no values, but
    shapes and devices), so this runs without a GPU."""
    x, y = correlated(10, 4, 3, seed=5)
    for dims in ({}, {"dim_x": 4, "dim_y": 3}):
        metric = StreamingLinearCKA(debiased=debiased, **dims).to("meta")
        metric.update(x, y.float())
        metric.update(x, y)
        assert {name: state.device.type for name, state in metric.metric_state.items()} == \
            {name: "meta" for name in metric.metric_state}
        assert metric.sxx.shape == (4, 4) and metric.sxy.shape == (4, 3)


def test_the_minibatch_state_stays_on_the_metrics_device_whatever_device_the_batch_comes_from():
    """As for the streaming CKA: both sides of a CPU batch are moved to the metric's device (``meta`` standing in for
    an accelerator) before their Gram matrices meet; one side left behind meets the other on another device and
    raises."""
    x, y = correlated(10, 4, 3, seed=6)
    metric = MinibatchCKA().to("meta")
    metric.update(x, y.float())
    metric.update(x.float(), y)
    assert {name: state.device.type for name, state in metric.metric_state.items()} == \
        {name: "meta" for name in metric.metric_state}
