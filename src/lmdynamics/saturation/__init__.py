"""Saturation and the softmax bottleneck (Godey et al. 2024; docs/science.md section 3).

- ``harness``: lm-evaluation-harness result files (0.3 and 0.4 layouts) -> tidy-table rows;
- ``detect``: best / final / gap / onset / saturated of one series; ``signals``: did the head move first;
- ``analyze``: the whole ``lmdynamics saturation`` run (CSV, report, figures); ``figures``: its plots;
- ``scaling``: the scaling-law gap (A, alpha fitted with B, beta, E fixed);
- ``werror``: W-error(d) of a corpus's sparse n-gram next-token matrix;
- ``lowrank_head``: a rank-r head W = A B trained on a frozen backbone;
- ``evaluate``: checkpoints evaluated with lm-eval (HFLM) or the held-out loss of a corpus.
"""
