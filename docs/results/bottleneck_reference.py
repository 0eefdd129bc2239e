"""Reference for docs/results/bottleneck.md: the least excess loss any rank-d softmax head can reach on the
synthetic language of configs/train/interventions/synthetic.yaml, with a perfect backbone.

Free per-state features H (states x d) and a free head W ((V-1) x d), fitted in float64 with Adam to minimise
the expected KL(p_s || softmax(H_s W^T)) under the exact state distribution of a 32-token block (positions
averaged). A numerical optimum (a local method), so an upper bound on the true minimum; printed per d.

    python docs/results/bottleneck_reference.py [d ...] [--zipf S]   # --zipf: the language with Zipf frequencies
"""

import sys

import numpy as np
import torch

from lmdynamics.data.synthetic import SyntheticLanguage, SyntheticSpec


def rank_limited_excess(lang: SyntheticLanguage, d: int, context_length: int = 32, steps: int = 3000) -> float:
    weights = lang.state_marginals(context_length).mean(axis=0)
    keep = weights > 0
    w = torch.tensor(weights[keep] / weights[keep].sum())
    p = torch.tensor(lang.probs[keep][:, 1:])
    lp = torch.tensor(lang.log_probs[keep][:, 1:])
    entropy = -(w * (p * lp).sum(1)).sum()
    torch.manual_seed(0)
    h = torch.randn(int(keep.sum()), d, dtype=torch.float64, requires_grad=True)
    head = torch.randn(p.shape[1], d, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([h, head], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = -(w * (p * torch.log_softmax(h @ head.T, 1)).sum(1)).sum() - entropy
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return float(loss.detach())


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = sys.argv[1:]
    zipf = 0.0
    if "--zipf" in args:
        i = args.index("--zipf")
        zipf, args = float(args[i + 1]), args[:i] + args[i + 2 :]
    lang = SyntheticLanguage(SyntheticSpec(vocab_size=256, rank=32, classes=8, lags=(1, 2), logit_scale=2.5, seed=0, zipf=zipf))
    for d in [int(a) for a in args] or [4, 8, 16, 24, 32, 48, 64]:
        print(f"d={d:3d}: least excess loss of a rank-{d} softmax head {rank_limited_excess(lang, d):.4f} nats")
