"""Survivors of ``make mutate``'s fast covering tests that a test outside that selection kills, and that test.

Two kinds of line cannot be told apart by a fast test in one CPU process: what only several processes run (a DDP
reduction over ranks, MFU over the world size: ``tests/test_distributed.py``, 2 processes over gloo,
slow) and where a tensor is placed (without ``device=`` a tensor lands on the CPU, which on a CPU-only machine is the
input's device anyway, and a line behind a branch on the values cannot run on PyTorch's ``meta`` device, which
checks devices without values: ``tests/test_metrics_on_gpu.py`` and the GPU tests, marked ``gpu``). Such a mutant is
registered here, as in ``equivalent_mutants.py`` (the mutated function, the exact line before and after), with the
test that kills it. ``mutation_report.py`` lists it apart as *killed elsewhere* with that test, and counts it killed
only where ``make mutate ELSEWHERE=1`` (``run_elsewhere.py``) ran the test on the mutant and the test failed; a
``gpu`` test skips without CUDA, so there its mutants are "not run" and stay survivors in the score.
"""

from __future__ import annotations

DISTRIBUTED = "tests/test_distributed.py::test_ddp_two_processes_measure_once_and_match_one_process"
METRICS_ON_GPU = "tests/test_metrics_on_gpu.py"
GPU_TRAINING = "tests/test_distributed.py::test_deepspeed_strategy_end_to_end"

KILLED_ELSEWHERE: list[tuple[str, str, str, str]] = [
    # what only several processes run: the world size, and reductions over ranks (a misspelt op is refused there)
    ('training.module.xǁLMModuleǁon_train_batch_end', 'values["mfu"] = tokens_per_sec * self.flops_per_token / (self._peak_flops * self.trainer.world_size)', 'values["mfu"] = tokens_per_sec * self.flops_per_token / (self._peak_flops / self.trainer.world_size)', DISTRIBUTED),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op="sum")  # every rank\'s micro-batches', 'loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op="XXsumXX")  # every rank\'s micro-batches', DISTRIBUTED),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")', 'total = self.trainer.strategy.reduce(self._val_sum, reduce_op="XXsumXX")', DISTRIBUTED),
    # reduce_op=None reaches torch.distributed.all_reduce as op=None, which refuses it
    ('training.module.xǁLMModuleǁon_train_batch_end', 'loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op="sum")  # every rank\'s micro-batches', "loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op=None)  # every rank's micro-batches", DISTRIBUTED),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")', 'total = self.trainer.strategy.reduce(self._val_sum, reduce_op=None)', DISTRIBUTED),
    # the step's loss accumulators made on the CPU: on a GPU, adding or stacking them with the loss raises
    ('training.module.xǁLMModuleǁon_train_batch_start', 'self._step_loss = torch.zeros(2, dtype=torch.float64, device=self.device)', 'self._step_loss = torch.zeros(2, dtype=torch.float64, device=None)', GPU_TRAINING),
    ('training.module.xǁLMModuleǁon_train_batch_start', 'self._step_loss = torch.zeros(2, dtype=torch.float64, device=self.device)', 'self._step_loss = torch.zeros(2, dtype=torch.float64, )', GPU_TRAINING),
    ('training.module.xǁLMModuleǁon_validation_epoch_start', 'self._val_sum = torch.zeros(2, dtype=torch.float64, device=self.device)', 'self._val_sum = torch.zeros(2, dtype=torch.float64, device=None)', GPU_TRAINING),
    ('training.module.xǁLMModuleǁon_validation_epoch_start', 'self._val_sum = torch.zeros(2, dtype=torch.float64, device=self.device)', 'self._val_sum = torch.zeros(2, dtype=torch.float64, )', GPU_TRAINING),
    ('training.module.xǁLMModuleǁtraining_step', 'torch.tensor(float(predicted), dtype=torch.float64, device=self.device)])', 'torch.tensor(float(predicted), dtype=torch.float64, device=None)])', GPU_TRAINING),
    ('training.module.xǁLMModuleǁtraining_step', 'torch.tensor(float(predicted), dtype=torch.float64, device=self.device)])', 'torch.tensor(float(predicted), dtype=torch.float64, )])', GPU_TRAINING),
    ('training.module.xǁLMModuleǁvalidation_step', 'self._val_sum += torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, device=self.device)])', 'self._val_sum += torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, device=None)])', GPU_TRAINING),
    ('training.module.xǁLMModuleǁvalidation_step', 'self._val_sum += torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, device=self.device)])', 'self._val_sum += torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, )])', GPU_TRAINING),
    # a tensor made on the CPU: a GPU run raises (a CPU tensor mixed with a CUDA one) or returns it on the CPU. Only
    # lines behind a data-dependent branch are here: the others are killed on the CPU by tests that run them on PyTorch's
    # `meta` device (tests/test_metrics_spectrum.py, tests/test_metrics_cka.py), which checks devices without values
    ('metrics.spectrum.x_gini', 'rank = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)', 'rank = torch.arange(1, n + 1, dtype=s.dtype, device=None)', METRICS_ON_GPU),
    ('metrics.spectrum.x_gini', 'rank = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)', 'rank = torch.arange(1, n + 1, dtype=s.dtype, )', METRICS_ON_GPU),
    ('metrics.spectrum.x_singular_values', 'out = torch.full((*batch, k), float("nan"), dtype=torch.float64, device=w.device)', 'out = torch.full((*batch, k), float("nan"), dtype=torch.float64, device=None)', METRICS_ON_GPU),
    ('metrics.spectrum.x_singular_values', 'out = torch.full((*batch, k), float("nan"), dtype=torch.float64, device=w.device)', 'out = torch.full((*batch, k), float("nan"), dtype=torch.float64, )', METRICS_ON_GPU),
]

_INDEX = {(function, before, after): test for function, before, after, test in KILLED_ELSEWHERE}


def killer(function: str, before: str, after: str) -> str | None:
    """The test registered to kill mutant ``before`` -> ``after`` of ``function``, or None."""
    return _INDEX.get((function, before, after))

