"""ActivationConvergence: how far each layer's probe activations are from where they end up.

At each measurement step: linear CKA of every (layer, component) to the previous measurement
(``cka_prev``, live stability) and, optionally, to a reference model (``cka_ref``, e.g. the released
Pythia of the same size). Activations are stored in fp16, one file per step, under ``<run>/activations``;
at the end of fit CKA-to-final (``cka_final``) and the per-layer convergence summary are computed from
them (``lmdynamics.cka_to_final.finalize_run``, also a command for any run).
"""

from __future__ import annotations

import time

from lightning.pytorch.utilities import rank_zero_info

from ..layout import RunLayout
from ..measure import cka_rows
from ..probes import capture, save_activations
from ..probes.activations import as_stored
from .base import MeasurementCallback


class ActivationConvergence(MeasurementCallback):
    """Per-layer CKA: to the previous measurement, to an optional reference model, and to the final step.

    Args:
        reference: a local checkpoint directory or a hub id of a model with the same layer count and width.
        reference_revision: hub revision of the reference (e.g. ``step143000``).
        debiased: also record the unbiased-HSIC CKA (``*_debiased`` metrics).
        store_activations: keep fp16 probe activations per step (needed for CKA-to-final).
        threshold: CKA-to-final level for the per-layer convergence summary.
        every, log_cap, enabled: see ``MeasurementCallback``.
    """

    def __init__(self, every: int | None = None, log_cap: int | None = None, enabled: bool = True,
                 reference: str | None = None, reference_revision: str | None = None, debiased: bool = False,
                 store_activations: bool = True, threshold: float = 0.95):
        super().__init__(every, log_cap, enabled)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"convergence.threshold must lie in (0, 1], got {threshold}")
        self.reference, self.reference_revision = reference, reference_revision
        self.debiased, self.store_activations, self.threshold = debiased, store_activations, threshold
        self._previous: dict | None = None
        self._reference_acts: dict | None = None

    def _reference_config(self):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.reference, revision=self.reference_revision)
        except OSError as err:
            raise ValueError(f"convergence.reference {self.reference!r} (revision {self.reference_revision}) could not be loaded: {str(err).splitlines()[0]}") from None

    def check_config(self, datamodule, spec) -> None:
        """Refuse, before training, a reference whose architecture differs from the trained model's."""
        if not self.enabled or not self.reference:
            return
        ref = self._reference_config()
        ours = (spec.num_layers, spec.hidden_size)
        theirs = (ref.num_hidden_layers, ref.hidden_size)
        if ours != theirs:
            raise ValueError(f"convergence.reference {self.reference} has {theirs[0]} layers of width {theirs[1]}, the trained model {ours[0]} of width {ours[1]}; choose a reference of the same size")

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self.enabled or not self.reference:
            return
        start = time.perf_counter()
        self.check_config(trainer.datamodule, pl_module.spec)
        if trainer.is_global_zero:
            from transformers import GPTNeoXForCausalLM

            ref = GPTNeoXForCausalLM.from_pretrained(self.reference, revision=self.reference_revision)
            probe = self.probe(trainer)
            self._reference_acts = capture(ref, probe.probe, batch_size=probe.batch_size, components=probe.components)
            del ref
        self.seconds += time.perf_counter() - start

    def measure(self, trainer, pl_module, step: int):
        acts = self.probe(trainer).activations(trainer, pl_module, step)
        if not trainer.is_global_zero:
            return None
        if self.store_activations:  # CKA from the values the activation files hold, as CKA-to-final and offline
            acts = as_stored(acts)
        rows = []
        if self._previous is not None:
            rows += cka_rows(acts, self._previous, "cka_prev", self.debiased)
        if self._reference_acts is not None:
            rows += cka_rows(acts, self._reference_acts, "cka_ref", self.debiased)
        self._previous = acts
        if self.store_activations:
            save_activations(RunLayout(trainer.default_root_dir).activation_file(step), acts)
        return rows

    def state_dict(self) -> dict:
        """The previous measurement's activations at full precision, so that a resumed run's next cka_prev is
        the uninterrupted run's (the stored files are fp16). Plain tensors keyed like the files."""
        from ..probes.activations import activation_key

        if self._previous is None:
            return {}
        return {"previous": {activation_key(layer, comp): t for (layer, comp), t in self._previous.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        from ..probes import Activations
        from ..probes.activations import parse_activation_key

        if state_dict.get("previous"):
            self._previous = Activations({parse_activation_key(k): t for k, t in state_dict["previous"].items()})

    def on_train_start(self, trainer, pl_module) -> None:
        if self.enabled and trainer.global_step > 0 and trainer.is_global_zero and self._previous is None:
            # resumed from a checkpoint without the previous activations: the newest stored ones before this step
            stored = RunLayout(trainer.default_root_dir).activation_steps()
            earlier = [p for step, p in stored if step <= trainer.global_step]
            if earlier:
                from ..probes import load_activations

                self._previous = load_activations(earlier[-1])
        super().on_train_start(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not (self.enabled and self.store_activations and trainer.is_global_zero):
            return
        from ..cka_to_final import finalize_run

        start = time.perf_counter()
        summary = finalize_run(trainer.default_root_dir, threshold=self.threshold, debiased=self.debiased)
        self.seconds += time.perf_counter() - start
        super().on_fit_end(trainer, pl_module)
        if summary:
            rank_zero_info(f"[lmdynamics] CKA-to-final written for {summary['steps']} steps; " + summary["line"])
