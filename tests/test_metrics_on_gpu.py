"""The metrics on a GPU: every result on the input's device, equal to the CPU's float64 result.

On the CPU, a tensor made without ``device=`` lands on the input's device anyway, so only an accelerator tells a
missing ``device=`` apart: there it raises (a CPU tensor mixed with a CUDA one) or returns a CPU result. These
tests are marked ``gpu`` (skipped without CUDA) and reach each place where the metrics make a tensor: the empty
and non-finite spectra, the chunked Gram matrix of a big matrix, the chunked QR of a big tall one, the Gini
ranks, and the CKA metrics fed from the other device. The lines reached before any branch on the values are also
checked on the CPU on PyTorch's ``meta`` device (tests/test_metrics_spectrum.py, tests/test_metrics_cka.py);
``make mutate`` lists the mutants that only these tests see (the non-finite spectra and the Gini ranks).
"""

import pytest
import torch

from lmdynamics.metrics import MinibatchCKA, StreamingLinearCKA, gini, linear_cka, singular_values
from lmdynamics.metrics import spectrum

pytestmark = pytest.mark.gpu


def _on_gpu_equals_cpu(gpu_value, cpu_value):
    assert gpu_value.device.type == "cuda"
    assert gpu_value.dtype == cpu_value.dtype and gpu_value.shape == cpu_value.shape
    torch.testing.assert_close(gpu_value.cpu(), cpu_value, rtol=1e-9, atol=1e-12, equal_nan=True)


def _big_tall(seed: int = 0) -> torch.Tensor:
    """A float32 matrix over the chunk size (8192 x 96 > 2^19 elements) and over twice as tall as wide: the
    chunked Gram (96 > one 64-column block) and the chunked QR paths."""
    g = torch.Generator().manual_seed(seed)
    rows = 8192
    assert rows * 96 > spectrum._CHUNK_ELEMENTS and 96 > spectrum._BLOCK
    return torch.randn(rows, 96, generator=g) * torch.logspace(0, -1, 96)


@pytest.mark.parametrize("method", ["auto", "gram", "svd"])
@pytest.mark.parametrize("case", ["empty", "non-finite", "one-non-finite-in-a-stack", "small", "big-tall", "stack"])
def test_singular_values_on_the_gpu_are_the_cpu_ones_on_the_gpu(case, method):
    g = torch.Generator().manual_seed(1)
    w = {"empty": lambda: torch.zeros(2, 5, 0),
         "non-finite": lambda: torch.full((7, 4), float("nan")),
         "one-non-finite-in-a-stack": lambda: torch.stack([torch.randn(7, 4, generator=g), torch.full((7, 4), float("inf"))]),
         "small": lambda: torch.randn(40, 12, generator=g),
         "big-tall": _big_tall,
         "stack": lambda: torch.randn(3, 20, 9, generator=g)}[case]()
    _on_gpu_equals_cpu(singular_values(w.cuda(), method=method), singular_values(w, method=method))


def test_gini_of_a_gpu_spectrum_and_a_gpu_stack_is_the_cpu_gini():
    g = torch.Generator().manual_seed(2)
    stack = torch.randn(4, 30, 10, generator=g, dtype=torch.float64)
    _on_gpu_equals_cpu(gini(stack.cuda()), gini(stack))
    s = singular_values(stack[0])
    assert gini(s.cuda()) == pytest.approx(gini(s), rel=1e-12)


def _pair(seed: int = 3, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    return x, x[:, :4] @ torch.randn(4, 5, generator=g, dtype=torch.float64) + torch.randn(n, 5, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("dims", [{}, {"dim_x": 6, "dim_y": 5}])
@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_cka_on_the_gpu_takes_batches_from_either_device(debiased, dims):
    """Lightning moves a module's metrics to its GPU: the metric then takes CPU batches (moved) and GPU batches."""
    x, y = _pair()
    metric = StreamingLinearCKA(debiased=debiased, **dims).cuda()
    metric.update(x[:30], y[:30])
    metric.update(x[30:].cuda(), y[30:].cuda())
    assert all(state.device.type == "cuda" for state in metric.metric_state.values())
    assert float(metric.compute()) == pytest.approx(linear_cka(x, y, debiased=debiased), rel=1e-9)
    assert linear_cka(x.cuda(), y.cuda(), debiased=debiased) == pytest.approx(linear_cka(x, y, debiased=debiased), rel=1e-9)


@pytest.mark.parametrize("metric_device", ["cpu", "cuda"])
def test_minibatch_cka_takes_batches_from_the_other_device(metric_device):
    x, y = _pair(4)
    reference = MinibatchCKA()
    metric = MinibatchCKA().to(metric_device)
    other = "cuda" if metric_device == "cpu" else "cpu"
    for rows in (slice(0, 32), slice(32, 64)):
        reference.update(x[rows], y[rows])
        metric.update(x[rows].to(other), y[rows].to(other))
    assert all(state.device.type == metric_device for state in metric.metric_state.values())
    assert float(metric.compute()) == pytest.approx(float(reference.compute()), rel=1e-9)
