"""Linear CKA: exact, streaming (torchmetrics, DDP-safe) and minibatch.

Biased linear CKA (Kornblith et al. 2019, eq. 5, feature space): with X, Y centred by column,
    CKA = ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F).
Debiased CKA replaces HSIC by the unbiased estimator of Song et al. (2012, eq. 5), as in Kornblith's
``cka.py`` and Nguyen et al. (2021): with K = X X^T, L = Y Y^T and K~, L~ their copies with zero diagonal,
    HSIC_1(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3)),
    CKA_debiased = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)).
HSIC_1 is exactly invariant to shifting X or Y by a constant row, which is what lets the streaming
version compute it from uncentred running sums.

Degenerate inputs (a constant X or Y; a negative debiased self-HSIC in tiny samples) give NaN.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

__all__ = ["linear_cka", "StreamingLinearCKA", "MinibatchCKA"]


def _as_pair(x, y, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"{name}: x and y must be 2-D (n samples, features), got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x and y need the same number of rows (samples), got {x.shape[0]} and {y.shape[0]}")
    return x, y


def _ratio(num: torch.Tensor, den_sq: torch.Tensor) -> float:
    """num / sqrt(den_sq), NaN when the denominator is zero or negative."""
    den_sq = float(den_sq)
    if not den_sq > 0:
        return math.nan
    return float(num) / math.sqrt(den_sq)


# ----------------------------------------------------------------------------------------------------
# sufficient statistics (feature space): shared by linear_cka (n > d) and StreamingLinearCKA


def _moments(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> dict[str, torch.Tensor]:
    """Float64 sums over the rows of x (n, d1), y (n, d2) from which either CKA follows exactly."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    out = {
        "n": torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),
        "sx": x.sum(0),
        "sy": y.sum(0),
        "sxx": x.T @ x,
        "syy": y.T @ y,
        "sxy": x.T @ y,
    }
    if debiased:
        a = (x * x).sum(1)  # |x_i|^2
        b = (y * y).sum(1)
        out.update(
            saa=(a * a).sum(), sbb=(b * b).sum(), sab=(a * b).sum(),
            sax=a @ x, sby=b @ y, sbx=b @ x, say=a @ y,
        )
    return out


def _biased_from_moments(m: dict[str, torch.Tensor]) -> float:
    n = m["n"]
    cxy = m["sxy"] - torch.outer(m["sx"], m["sy"]) / n
    cxx = m["sxx"] - torch.outer(m["sx"], m["sx"]) / n
    cyy = m["syy"] - torch.outer(m["sy"], m["sy"]) / n
    return _ratio((cxy * cxy).sum(), (cxx * cxx).sum() * (cyy * cyy).sum())


def _hsic1_from_moments(n, s1, s2, c12, tr1, tr2, s12, sa1_2, sa2_1) -> torch.Tensor:
    """n(n-3) HSIC_1 for X1, X2 from sums (uncentred is fine: HSIC_1 is shift invariant).

    s1, s2: column sums; c12 = X1^T X2; tr1 = sum |x1_i|^2; tr2 = sum |x2_i|^2; s12 = sum |x1_i|^2 |x2_i|^2;
    sa1_2 = sum |x1_i|^2 x2_i; sa2_1 = sum |x2_i|^2 x1_i. Uses tr(K~L~) = ||X1^T X2||^2 - sum a_i b_i,
    1'K~1 = |s1|^2 - tr1 and 1'K~L~1 = s1' C12 s2 - s2.sa1_2 - s1.sa2_1 + s12.
    """
    tkl = (c12 * c12).sum() - s12
    sk = s1 @ s1 - tr1
    sl = s2 @ s2 - tr2
    kl1 = s1 @ c12 @ s2 - s2 @ sa1_2 - s1 @ sa2_1 + s12
    return tkl + sk * sl / ((n - 1) * (n - 2)) - 2 * kl1 / (n - 2)


def _debiased_from_moments(m: dict[str, torch.Tensor]) -> float:
    n = m["n"]
    trx = torch.diagonal(m["sxx"]).sum()
    try_ = torch.diagonal(m["syy"]).sum()
    hxy = _hsic1_from_moments(n, m["sx"], m["sy"], m["sxy"], trx, try_, m["sab"], m["say"], m["sbx"])
    hxx = _hsic1_from_moments(n, m["sx"], m["sx"], m["sxx"], trx, trx, m["saa"], m["sax"], m["sax"])
    hyy = _hsic1_from_moments(n, m["sy"], m["sy"], m["syy"], try_, try_, m["sbb"], m["sby"], m["sby"])
    return _ratio(hxy, hxx * hyy)


# ----------------------------------------------------------------------------------------------------
# sample space (n <= d): n x n Gram matrices


def _hsic1_gram(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """n(n-3) HSIC_1 from Gram matrices (Song et al. 2012, eq. 5), diagonals ignored."""
    n = k.shape[0]
    k = k.clone().fill_diagonal_(0)
    l = l.clone().fill_diagonal_(0)
    kr, lr = k.sum(1), l.sum(1)
    return (k * l).sum() + kr.sum() * lr.sum() / ((n - 1) * (n - 2)) - 2 * (kr @ lr) / (n - 2)


def linear_cka(x, y, debiased: bool = False) -> float:
    """Linear CKA between x (n, d1) and y (n, d2) in float64; rows are paired samples.

    Invariant to orthogonal transforms, isotropic scaling and shifts of either side; symmetric.
    ``debiased=True`` uses the unbiased HSIC estimator (needs n > 3), which is ~0 for independent data
    where the biased one is inflated by roughly d / n. Works in feature space (O(n d^2)) or sample space
    (O(n^2 d)), whichever is cheaper; both give the same number.
    """
    x, y = _as_pair(x, y, "linear_cka")
    n = x.shape[0]
    if n < (4 if debiased else 2):
        raise ValueError(f"linear_cka needs at least {4 if debiased else 2} samples (rows){' for debiased=True' if debiased else ''}, got {n}")
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    x = x - x.mean(0)  # exact for CKA; centring first keeps float64 cancellation small
    y = y - y.mean(0)
    d1, d2 = x.shape[1], y.shape[1]
    if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):
        k, l = x @ x.T, y @ y.T
        if debiased:
            return _ratio(_hsic1_gram(k, l), _hsic1_gram(k, k) * _hsic1_gram(l, l))
        return _ratio((k * l).sum(), (k * k).sum() * (l * l).sum())
    m = _moments(x, y, debiased)
    return _debiased_from_moments(m) if debiased else _biased_from_moments(m)


class StreamingLinearCKA(Metric):
    """Linear CKA accumulated over batches: exactly ``linear_cka`` of the concatenated batches.

    Keeps float64 sums of x, y, x x^T, y y^T, x y^T and n (plus, for ``debiased=True``, sums of fourth
    moments that the unbiased HSIC needs), so memory is O(d^2) whatever the number of samples, and
    DDP ranks combine by summation (``dist_reduce_fx="sum"``): ``compute()`` under DDP is the CKA of all
    ranks' samples. Pass ``dim_x``/``dim_y`` to allocate the state up front; otherwise it is allocated
    at the first ``update``, and under DDP every rank must then see at least one batch.
    ``compute()`` returns a 0-d float64 tensor (NaN for degenerate data).

    Precision note: the centring is done from running sums (sum x y^T - sum x sum y^T / n), so features
    whose mean is ~1e4 times their spread lose about 8 of float64's 16 digits.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    _VECTORS = ("sx", "sy")
    _DEBIASED = ("saa", "sbb", "sab", "sax", "sby", "sbx", "say")

    def __init__(self, debiased: bool = False, dim_x: int | None = None, dim_y: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.debiased = bool(debiased)
        self._dims = (dim_x, dim_y)
        names = ["n", "sx", "sy", "sxx", "syy", "sxy"] + (list(self._DEBIASED) if self.debiased else [])
        shapes = self._shapes(dim_x, dim_y) if dim_x is not None and dim_y is not None else None
        for name in names:
            default = torch.zeros(shapes[name] if shapes else (0,), dtype=torch.float64)
            if name == "n":
                default = torch.zeros((), dtype=torch.float64)
            self.add_state(name, default=default, dist_reduce_fx="sum")

    @staticmethod
    def _shapes(d1: int, d2: int) -> dict[str, tuple[int, ...]]:
        return {
            "n": (), "sx": (d1,), "sy": (d2,), "sxx": (d1, d1), "syy": (d2, d2), "sxy": (d1, d2),
            "saa": (), "sbb": (), "sab": (), "sax": (d1,), "sby": (d2,), "sbx": (d1,), "say": (d2,),
        }

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = _as_pair(x, y, "StreamingLinearCKA.update")
        d1, d2 = x.shape[1], y.shape[1]
        if self.sxx.ndim != 2:  # lazy allocation at the first batch (the unallocated state is 1-D, empty)
            for name, shape in self._shapes(d1, d2).items():
                if hasattr(self, name) and name != "n":
                    setattr(self, name, torch.zeros(shape, dtype=torch.float64, device=self.n.device))
        if self.sxx.shape != (d1, d1) or self.syy.shape != (d2, d2):
            raise ValueError(
                f"StreamingLinearCKA: batch has {d1} x-features and {d2} y-features, but the metric holds "
                f"{self.sxx.shape[0]} and {self.syy.shape[0]}; use one metric per pair of layers"
            )
        m = _moments(x.to(self.n.device), y.to(self.n.device), self.debiased)
        for name, value in m.items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> torch.Tensor:
        n = int(self.n)
        if n < (4 if self.debiased else 2):
            raise ValueError(f"StreamingLinearCKA has seen {n} samples; it needs at least {4 if self.debiased else 2}")
        names = ["n", "sx", "sy", "sxx", "syy", "sxy"] + (list(self._DEBIASED) if self.debiased else [])
        m = {name: getattr(self, name) for name in names}
        value = _debiased_from_moments(m) if self.debiased else _biased_from_moments(m)
        return torch.tensor(value, dtype=torch.float64)


class MinibatchCKA(Metric):
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021, eq. 3): unbiased HSIC averaged over batches.

    CKA_mb = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) * mean_b HSIC_1(L_b, L_b)),
    each batch needing n > 3 rows. Memory O(1); DDP ranks combine by summation. With a single batch it
    equals ``linear_cka(x, y, debiased=True)``. Unlike ``StreamingLinearCKA`` it is not the CKA of the
    concatenation: it estimates the same population quantity from batches without O(d^2) state.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("hsic_xy", "hsic_xx", "hsic_yy", "batches"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = _as_pair(x, y, "MinibatchCKA.update")
        n = x.shape[0]
        if n < 4:
            raise ValueError(f"MinibatchCKA: every batch needs at least 4 rows for the unbiased HSIC, got {n}")
        x = x.to(device=self.batches.device, dtype=torch.float64)
        y = y.to(device=self.batches.device, dtype=torch.float64)
        x = x - x.mean(0)
        y = y - y.mean(0)
        k, l = x @ x.T, y @ y.T
        norm = n * (n - 3)
        self.hsic_xy += _hsic1_gram(k, l) / norm
        self.hsic_xx += _hsic1_gram(k, k) / norm
        self.hsic_yy += _hsic1_gram(l, l) / norm
        self.batches += 1

    def compute(self) -> torch.Tensor:
        if int(self.batches) == 0:
            raise ValueError("MinibatchCKA has seen no batch; call update(x, y) first")
        return torch.tensor(_ratio(self.hsic_xy, self.hsic_xx * self.hsic_yy), dtype=torch.float64)
