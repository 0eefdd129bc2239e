"""The probe of the live measurements: validation blocks fixed at the start of fit and saved with the run."""

from __future__ import annotations

import lightning as L

from ..distributed import capture_distributed
from ..layout import RunLayout
from ..probes import ProbeSet
from ..probes.capture import ALL_COMPONENTS


class Probe(L.Callback):
    """The probe set, fixed at the start of fit from the validation split and saved as ``<run>/probe.safetensors``.

    Args:
        num_sequences: validation blocks in the probe (the paper used 128).
        positions: ``last`` (one vector per sequence: the last token, the paper's choice) or an int P of
            positions sampled per sequence (more vectors, a better CKA estimate).
        seed: which blocks and positions are drawn.
        batch_size: probe sequences per forward pass.
        components: what is captured per layer, a subset of ``ov, ov_head, attn, mlp, resid, final`` (the
            offline analysis's ``components``); empty: all. Large models may leave out ``ov_head`` (each head's
            OV activation: per-step activation files grow with layers x heads).
    """

    def __init__(self, num_sequences: int = 128, positions: str | int = "last", seed: int = 0, batch_size: int = 32,
                 components: list[str] | None = None):
        if num_sequences <= 0:
            raise ValueError(f"probe.num_sequences must be positive, got {num_sequences}")
        if positions != "last" and not (isinstance(positions, int) and positions > 0):
            raise ValueError(f"probe.positions must be 'last' or a positive int, got {positions!r}")
        self.num_sequences, self.positions, self.seed, self.batch_size = num_sequences, positions, seed, batch_size
        if components is not None:
            unknown = sorted(set(components) - set(ALL_COMPONENTS))
            if unknown:
                raise ValueError(f"probe.components: unknown {unknown}; choose from {list(ALL_COMPONENTS)}")
        self.components = None if components is None else tuple(components)
        self.probe: ProbeSet | None = None
        self._cache: tuple[int, dict] | None = None

    def check_config(self, datamodule, spec) -> None:
        """Fail before training if the validation split cannot supply the probe."""
        available = len(datamodule.val_all)
        if self.num_sequences > available:
            raise ValueError(f"probe.num_sequences {self.num_sequences} exceeds the {available} validation blocks; lower it or raise data.val_fraction")
        if isinstance(self.positions, int) and self.positions > datamodule.context_length:
            raise ValueError(f"probe.positions {self.positions} exceeds the context length {datamodule.context_length}")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.probe is not None:
            return
        dm = trainer.datamodule
        self.check_config(dm, None)
        path = RunLayout(trainer.default_root_dir).probe
        fresh = ProbeSet.from_sequences(dm.val_all, num_sequences=self.num_sequences, positions=self.positions,
                                        seed=self.seed, meta={"source": "validation split", "corpus": dm.corpus_id})
        if path.is_file():  # a resumed run keeps the very same probe
            saved = ProbeSet.load(path)
            if saved.fingerprint() != fresh.fingerprint():
                raise ValueError(f"{path} differs from the probe this config draws; restore the run's config or remove the probe")
            self.probe = saved
        else:
            self.probe = fresh
            if trainer.is_global_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                fresh.save(path)

    def activations(self, trainer, pl_module, step: int) -> dict | None:
        """Probe activations of the model at ``step`` on rank 0 (None elsewhere), captured once per step."""
        if self._cache is not None and self._cache[0] == step:
            return self._cache[1]
        acts = capture_distributed(trainer, pl_module.model, self.probe, self.batch_size, self.components)
        self._cache = (step, acts)
        return acts
