"""WeightRank: effective rank, PER, stable rank and condition number of every weight matrix while training.

Matrices: per layer QKV, attention dense, MLP in and out, and OV per head (W_O^h W_V^h); the input
embedding. (The output head belongs to ``HeadRank``.) With ``gradients`` the same metrics, prefixed
``grad_``, of the accumulated gradient just before the optimizer step, OV gradient G_O W_V + W_O G_V.
The rows come from ``lmdynamics.measure``, the functions the offline analysis uses.
"""

from __future__ import annotations

import time

from ..measure import gradient_metric_rows, weight_metric_rows
from .base import MeasurementCallback, iter_full_parameters

_HEAD = ("embed_out.weight", "lm_head.weight")


def _is_head(name: str) -> bool:
    return name.endswith(_HEAD)


class WeightRank(MeasurementCallback):
    """Rank metrics of every weight matrix (and optionally its gradient) at the measurement steps.

    Args:
        gradients: also measure the accumulated gradient before the optimizer step (costs one more set of SVDs).
        every, log_cap, enabled: see ``MeasurementCallback``.
    """

    def __init__(self, every: int | None = None, log_cap: int | None = None, enabled: bool = True, gradients: bool = False):
        super().__init__(every, log_cap, enabled)
        self.gradients = gradients
        self._grad_measured: set[int] = set()

    def measure(self, trainer, pl_module, step: int):
        model = pl_module.model
        stream = iter_full_parameters(model, skip=_is_head)
        if not trainer.is_global_zero:
            for _ in stream:  # take part in the gathers
                pass
            return None
        return weight_metric_rows(stream, model.config.num_attention_heads)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step  # the gradient at the weights of this step
        if not (self.enabled and self.gradients) or step not in self.steps or step in self._grad_measured:
            return
        self._grad_measured.add(step)
        start = time.perf_counter()
        model = pl_module.model
        grads, params = [], {}
        for name, p in model.named_parameters():
            if _is_head(name):
                continue
            if hasattr(p, "ds_id"):
                from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

                g, w = safe_get_full_grad(p), safe_get_full_fp32_param(p)
            else:
                g, w = p.grad, p.detach()
            if g is not None and trainer.is_global_zero:
                grads.append((name, g.detach().float().cpu()))
                params[name] = w.float().cpu()
        if trainer.is_global_zero and grads:
            rows = gradient_metric_rows(grads, params, model.config.num_attention_heads)
            self.record(trainer, pl_module, step, rows)
        self.seconds += time.perf_counter() - start
