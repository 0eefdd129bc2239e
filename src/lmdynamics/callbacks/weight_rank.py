"""WeightRank: every spectrum measurement of the catalogue (ER, PER, ...; ``lmdynamics metrics`` lists them) of
every weight matrix while training.

Matrices: per layer QKV, attention dense, MLP in and out, and OV per head (W_O^h W_V^h); the input
embedding. (The output head belongs to ``HeadRank``.) With ``gradients`` the same metrics, prefixed
``grad_``, of the accumulated gradient just before the optimizer step, OV gradient G_O W_V + W_O G_V.
The rows come from ``lmdynamics.measure``, the functions the offline analysis uses.
"""

from __future__ import annotations

import time

from ..measure import classify_weight, gradient_metric_rows, is_head_weight, weight_metric_rows
from ..distributed import is_zero3_param, iter_full_parameters
from .base import MeasurementCallback


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
        stream = iter_full_parameters(model, skip=is_head_weight)
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
            if is_head_weight(name):
                continue
            kind = classify_weight(name)
            needs_weight = kind is not None and kind[1] in ("qkv", "dense")  # the OV gradient's W_O and W_V
            if is_zero3_param(p):
                from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

                g = safe_get_full_grad(p)
                w = safe_get_full_fp32_param(p) if needs_weight else None
            else:
                g, w = p.grad, (p.detach() if needs_weight else None)
            if g is not None and trainer.is_global_zero:
                grads.append((name, g.detach().float().cpu()))
                if w is not None:
                    params[name] = w.float().cpu()
        if trainer.is_global_zero and grads:
            rows = gradient_metric_rows(grads, params, model.config.num_attention_heads)
            self.record(trainer, pl_module, step, rows)
        self.seconds += time.perf_counter() - start
