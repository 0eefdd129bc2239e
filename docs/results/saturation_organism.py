"""Numbers and figures for docs/results/saturation-organism.md, recomputed from the runs' tidy tables.

    .venv/bin/python docs/results/saturation_organism.py alarms [--kl-schedule E,C] [--recorded runs.csv] RUN_ROOT...  # monitor: first rule vs the current one; counts per run set
    .venv/bin/python docs/results/saturation_organism.py late RUN_ROOT...        # late rise per run, criterion per group
    .venv/bin/python docs/results/saturation_organism.py heads [--optimum] [--exact] [--figure OUT.png] RUN_ROOT...  # section 1
    .venv/bin/python docs/results/saturation_organism.py kl RUN_ROOT...         # exact KL per context: state-pooled + spread
    .venv/bin/python docs/results/saturation_organism.py spectrum RUN...        # a head's singular values: init vs final
    .venv/bin/python docs/results/saturation_organism.py optimisers RUN...      # the head retrained alone: AdamW vs SGD vs optimum
    .venv/bin/python docs/results/saturation_organism.py offset                 # validation samples' true loss - floor
    .venv/bin/python docs/results/saturation_organism.py figure OUT.png RUN_ROOT...  # validation loss curves
    .venv/bin/python docs/results/saturation_organism.py planted                 # the rule on planted noise / collapse
    .venv/bin/python docs/results/saturation_organism.py alarm-figure OUT.png RUN [250,64]  # one run's alarms

Excess. ``val_loss - floor`` (the logged ``excess_loss``) carries the validation sample's own deviation from the
expected floor (256 blocks of the default language: their true loss is 3.1970, the floor 3.1544, +0.0425 nats, the
same for every run on that language and seed). ``val_loss - val_true_loss`` (run.json) removes it: an unbiased
estimate of the expected KL(true || model), the quantity the float64 rank-r optimum bounds; ``kl`` computes the KL
exactly per validation context (a sum over the vocabulary, no sampling of the next symbol).

A run's group is its name without the ``-seed_everythingN`` part (the sweep's naming). "Late rise" is final minus
best validation loss; the issue's saturation criterion for a group of seeds: rise > 3 x the sample standard
deviation of the final loss over the seeds in at least 2 of 3 seeds.
"""

import json
import re
import sys
from pathlib import Path

# this folder holds docs/results/bottleneck/ (figures), which would shadow pandas' optional `bottleneck` module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lmdynamics import store  # noqa: E402
from lmdynamics.callbacks.head_rank import SaturationRule  # noqa: E402
from lmdynamics.catalogue import head_series  # noqa: E402
from lmdynamics.checkpoints.steps import pythia_schedule  # noqa: E402

FIRST_RULE = {"loss_margin": 0.02, "kl_jump": 0.05, "patience": 1, "noise_factor": 0.0, "kl_reference": "min"}
CURRENT_RULE = {}  # SaturationRule's defaults (= configs/train/demo.yaml's head_rank block)


def runs(roots):
    """Finished runs under the roots (a final checkpoint at max_steps; runs still training are left out)."""
    for root in roots:
        for run in sorted(p for p in Path(root).iterdir() if store.table_path(p).is_dir()):
            last = json.loads((run / "run.json").read_text())["max_steps"]
            if (run / "checkpoints" / f"step{last:08d}").is_dir():
                yield run


def series(run: Path):
    """(run.json, validation loss step -> value, head KL-to-uniform step -> value, head ER step -> value)."""
    info = json.loads((run / "run.json").read_text())
    t = store.read_table(store.table_path(run), metrics=["val_loss", "kl_uniform", "er"])
    val = t[(t.metric == "val_loss") & (t.component == "model")].set_index("step")["value"].sort_index()
    kl = head_series(t, "kl_uniform").set_index("step")["value"]  # a mixture's: the mean over its heads, as live
    er = head_series(t, "er").set_index("step")["value"]
    return info, val, kl, er


def init_seed(run: Path) -> int:
    """The run's ``seed_everything`` (the initialisation seed; run.json's ``seed`` is the data seed)."""
    import yaml

    return int(yaml.safe_load((run / "config.yaml").read_text())["seed_everything"])


def group_of(name: str) -> str:
    return re.sub(r"-seed_everything\d+", "", name)


def alarms(roots, kl_schedule=None, recorded=None) -> pd.DataFrame:
    """Per run: the validation minimum, the late rise, and the events of the first and the current rule.
    ``kl_schedule`` = (every, log_cap): replay the first rule with KL only at the steps the run's live monitor
    saw (its checkpoint schedule), when the run was re-measured at a finer cadence. ``recorded``: a ``runs.csv``
    of an earlier copy of these runs (a results folder): its final validation loss and live event count, by run
    name, next to ours (is the rerun the same run?)."""
    before = pd.read_csv(recorded).set_index("run") if recorded else None
    rows = []
    for run in runs(roots):
        info, val, kl, er = series(run)
        kl_first = kl
        if kl_schedule is not None:
            keep = set(pythia_schedule(info["max_steps"], *kl_schedule))
            kl_first = kl[kl.index.isin(keep)]
        live = [json.loads(line)["step"] for line in (run / "events.jsonl").read_text().splitlines()] if (run / "events.jsonl").is_file() else []
        first = SaturationRule.replay(val.to_dict(), kl_first.to_dict(), **FIRST_RULE)
        current = SaturationRule.replay(val.to_dict(), kl.to_dict(), **CURRENT_RULE)
        always = {step: 1.0 + i for i, step in enumerate(kl.index)}  # a KL that always "jumps": the loss test alone
        loss_alone = SaturationRule.replay(val.to_dict(), always, **CURRENT_RULE)
        rows.append({"run": run.name, "best_step": int(val.idxmin()), "final_step": int(val.index[-1]),
                     "final - best": float(val.iloc[-1] - val.min()), "live events": " ".join(map(str, live)) or "-",
                     "first rule": " ".join(str(e["step"]) for e in first) or "-",
                     "current rule": " ".join(str(e["step"]) for e in current) or "-",
                     "current loss test alone": " ".join(str(e["step"]) for e in loss_alone) or "-",
                     "head KL at best -> final": f"{_at_or_before(kl, int(val.idxmin())):.3f} -> {kl.iloc[-1]:.3f}",
                     "head ER at best -> final": f"{_at_or_before(er, int(val.idxmin())):.1f} -> {er.iloc[-1]:.1f}",
                     **({"final": float(val.iloc[-1]),
                         "recorded final": before["final_val_loss"].get(run.name, np.nan),
                         "recorded events": before["saturation_events"].get(run.name, np.nan)} if before is not None else {}),
                     "root": str(run.parent), "n live": len(live), "n first": len(first), "n current": len(current),
                     "n loss alone": len(loss_alone)})
    return pd.DataFrame(rows)


ALARM_COUNTS = {"live": "n live", "first rule": "n first", "current rule": "n current", "current loss test alone": "n loss alone"}


def alarm_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per run root (one labelled run set) of an ``alarms`` table: runs, and for each rule the runs it fired in
    (false alarms, on runs labelled non-saturating) and its events in all."""
    out = []
    for root, d in table.groupby("root", sort=False):
        row = {"run set": root, "runs": len(d)}
        for name, col in ALARM_COUNTS.items():
            row[f"{name}: runs with events"] = int((d[col] > 0).sum())
            row[f"{name}: events"] = int(d[col].sum())
        out.append(row)
    return pd.DataFrame(out)


def _at_or_before(series: pd.Series, step: float) -> float:
    """The value at the last step <= ``step`` (NaN when there is none, e.g. a short run)."""
    earlier = series[series.index <= step]
    return float(earlier.iloc[-1]) if len(earlier) else np.nan


def _robust_noise(val: pd.Series) -> float:
    """Robust sd of the validation loss's step-to-step noise: 1.4826 x median |successive difference| / sqrt 2
    (as SaturationRule's noise estimate, here over the whole stretch given)."""
    diffs = np.diff(val.to_numpy())
    return float(1.4826 * np.median(np.abs(diffs)) / np.sqrt(2)) if len(diffs) else np.nan


def late(roots) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for run in runs(roots):
        info, val, _, _ = series(run)
        floor = (info.get("synthetic") or {}).get("entropy_floor", np.nan)
        rows.append({"run": run.name, "group": group_of(run.name), "seed": init_seed(run), "best": float(val.min()),
                     "best_step": int(val.idxmin()), "final": float(val.iloc[-1]), "rise": float(val.iloc[-1] - val.min()),
                     "final excess": float(val.iloc[-1] - floor),
                     "final - val_true_loss": float(val.iloc[-1] - (info.get("synthetic") or {}).get("val_true_loss", np.nan)),
                     "val@40% - final": _at_or_before(val, 0.4 * info["max_steps"]) - float(val.iloc[-1]),
                     "noise sd after 40%": _robust_noise(val[val.index >= 0.4 * info["max_steps"]])})
    per_run = pd.DataFrame(rows)
    groups = []
    for g, d in per_run.groupby("group"):
        sd = float(d["final"].std()) if len(d) > 1 else np.nan
        groups.append({"group": g, "seeds": len(d), "final mean": d["final"].mean(), "final sd": sd,
                       "rise per seed": " ".join(f"{r:.4f}" for r in d["rise"]),
                       "seeds with rise > 3 sd": int((d["rise"] > 3 * sd).sum()) if len(d) > 1 else "-",
                       "saturates (>= 2 of 3)": bool(len(d) >= 3 and (d["rise"] > 3 * sd).sum() >= 2)})
    return per_run, pd.DataFrame(groups)


def heads(roots, optimum: bool = False, exact: bool = False) -> pd.DataFrame:
    """Section 1: final excess loss and head ER per group (mean, seeds, and a 95% t-interval of the mean).
    ``exact``: also the exact KL per validation context of the final checkpoint (``context_kl``), mean over seeds."""
    from lmdynamics.compare.verdict import t_interval

    rows = []
    for run in runs(roots):
        info, val, _, er = series(run)
        head = info["architecture"]["head"]
        floor = info["synthetic"]["entropy_floor"]
        lang = info["synthetic"]
        rows.append({"group": group_of(run.name), "root": str(run.parent), "head": head["kind"], "r": head["rank"] or info["hidden_size"],
                     "K": head["components"] if head["kind"] == "mos" else 1, "excess": float(val.iloc[-1] - lang["val_true_loss"]),
                     "excess over the expected floor": float(val.iloc[-1] - floor),
                     **({"KL": context_kl(run)["KL (exact, mean)"]} if exact else {}),
                     "best excess": float(val.min() - floor), "er": float(er.iloc[-1]) if len(er) else np.nan,
                     "tokens": info["max_steps"] * info["tokens_per_step"]})
    per_run = pd.DataFrame(rows)
    out = []
    for g, d in per_run.groupby("group"):
        mean, low, high, n = t_interval(d["excess"])
        out.append({"group": g, "root": d["root"].iloc[0], "head": d["head"].iloc[0], "r": d["r"].iloc[0], "K": d["K"].iloc[0], "seeds": n,
                    "excess mean": mean, "95% t-interval": f"[{low:.4f}, {high:.4f}]",
                    "excess per seed": " ".join(f"{x:.4f}" for x in d["excess"]),
                    "val - expected floor (mean)": d["excess over the expected floor"].mean(), "head ER mean": d["er"].mean(),
                    **({"exact KL mean": d["KL"].mean(), "exact KL per seed": " ".join(f"{x:.4f}" for x in d["KL"])} if exact else {}),
                    "tokens": d["tokens"].iloc[0]})
    table = pd.DataFrame(out).sort_values(["head", "r"])
    col = "exact KL mean" if exact else "excess mean"
    # each run root is one sweep (one setting): a row is compared with the heads of its own root only
    plain_r = table[table["head"] == "low_rank"].set_index(["root", "r"])[col]
    mos = table["head"] == "mos"  # share of the plain rank-r head's excess (exact KL with --exact) the mixture removes
    low_rank_of = pd.MultiIndex.from_frame(table.loc[mos, ["root", "r"]])
    table.loc[mos, "share of low_rank r's excess removed"] = 1 - table.loc[mos, col].to_numpy() / plain_r.reindex(low_rank_of).to_numpy()
    if optimum:
        opt = {r: rank_optimum(lang, int(r), info["context_length"]) for r in table["r"].unique()}
        table["float64 rank-r optimum"] = table["r"].map(opt)
        table["excess / optimum"] = table["excess mean"] / table["float64 rank-r optimum"]
        if exact:
            table["exact KL / optimum"] = table["exact KL mean"] / table["float64 rank-r optimum"]
        # the budget's share: what the full-rank head on the same backbone (the root's one plain head) still lacks
        plain = table[table["head"] == "plain"].groupby("root")["excess mean"]
        full = plain.first()[plain.size() == 1]
        if len(full):
            table["(excess - full-rank excess) / optimum"] = (table["excess mean"] - table["root"].map(full)) / table["float64 rank-r optimum"]
    return table.drop(columns="root")


def language(info: dict):
    """The run's synthetic language, rebuilt from its run.json."""
    from lmdynamics.data.synthetic import SyntheticLanguage, SyntheticSpec

    spec = info["synthetic"]
    keys = ("vocab_size", "rank", "classes", "logit_scale", "seed", "zipf")
    return SyntheticLanguage(SyntheticSpec(lags=tuple(spec["lags"]), **{k: spec[k] for k in keys if k in spec}))


def true_log_probs(lang, blocks) -> tuple[np.ndarray, np.ndarray]:
    """log p(x_t = v | x_<t) [blocks, ctx - 1, V] for t = 1..ctx-1 (what position t - 1 predicts) and the states."""
    x = blocks.numpy()
    states = np.stack([lang.state(x[:, :t]) for t in range(1, x.shape[1])], axis=1)  # [blocks, ctx - 1]
    return lang.log_probs[states], states


def context_kl(run: Path, n_blocks: int = 256) -> dict:
    """Exact KL(true || model) of the run's final checkpoint at every context of the first ``n_blocks`` validation
    blocks (a sum over the vocabulary), its mean, and the split mean = pooled + spread: pooled, the KL of the
    per-state geometric mean of the model's predictions (renormalised), what the model would lose if every context
    of a state got that one prediction (for a rank-r head still a rank-r head's prediction: log-linear in the mean
    hidden state); spread = -log Z_s >= 0 (Z_s the geometric mean's mass), what it loses because contexts of the same
    state get different predictions (the backbone does not map a state to one point). Exact on the sample: mean
    KL = mean pooled + mean spread (Jensen)."""
    import torch

    from lmdynamics.models.heads import load_causal_lm

    info = json.loads((run / "run.json").read_text())
    lang = language(info)
    blocks = lang.blocks(range(n_blocks), info["context_length"], info["seed"], "val")
    model = load_causal_lm(run / "checkpoints" / f"step{info['max_steps']:08d}").eval()
    with torch.no_grad():
        logq = torch.log_softmax(model(input_ids=blocks).logits.double(), dim=-1).numpy()[:, :-1, 1:]  # predicts t = 1..ctx-1
    logp, states = true_log_probs(lang, blocks)
    logp = logp[..., 1:]
    p = np.exp(logp)
    kl = (p * (logp - logq)).sum(-1)  # [blocks, ctx - 1]
    pooled = np.zeros_like(kl)
    spread = np.zeros_like(kl)
    for s in np.unique(states):
        at = states == s
        log_g = logq[at].mean(axis=0)  # geometric mean of the predictions at this state (unnormalised)
        log_z = float(np.log(np.exp(log_g).sum()))
        pooled[at] = float((p[at][0] * (logp[at][0] - log_g + log_z)).sum())
        spread[at] = -log_z
    return {"KL (exact, mean)": float(kl.mean()), "pooled": float(pooled.mean()), "spread": float(spread.mean()),
            "KL at positions 1-2": float(kl[:, :2].mean()), "KL at positions >= 3": float(kl[:, 2:].mean()),
            "val - val_true_loss": None}


def head_spectrum(run: Path, R: int = 32) -> dict:
    """Singular values of the head matrix at step 0 and at the end: the R directions the language needs against
    the rest (do the extra directions keep their initial scale?), and the effective rank of each part."""
    import torch

    from lmdynamics.metrics.spectrum import effective_rank
    from lmdynamics.models.heads import head_matrices, load_causal_lm

    info = json.loads((run / "run.json").read_text())

    def head_and_gain(step):
        model = load_causal_lm(run / "checkpoints" / f"step{step:08d}")
        (_, w), *_ = head_matrices(model)
        return w.double(), model.gpt_neox.final_layer_norm.weight.detach().double()

    (w0, _), (w1, g1) = head_and_gain(0), head_and_gain(info["max_steps"])
    s0, s1 = torch.linalg.svdvals(w0), torch.linalg.svdvals(w1)
    # logits = (g * normalised h) W^T: the head the normalised state sees is W diag(g); the gain (a vector) is not
    # decayed, so a weight decay on W can move scale from W into g without changing any prediction
    s_eff = torch.linalg.svdvals(w1 * g1)
    return {"run": run.name, "ER init": float(effective_rank(s0)), "ER final": float(effective_rank(s1)),
            f"sigma_1..{R} final (mean)": float(s1[:R].mean()), f"sigma_{R + 1}.. final (mean)": float(s1[R:].mean()),
            f"sigma_{R + 1}.. init (mean)": float(s0[R:].mean()),
            f"energy share of sigma_1..{R} (final)": float((s1[:R] ** 2).sum() / (s1**2).sum()),
            f"ER of sigma_1..{R} alone (final)": float(effective_rank(s1[:R])),
            "mean |final LayerNorm gain| (final)": float(g1.abs().mean()),
            f"sigma_1..{R} of W diag(g) final (mean)": float(s_eff[:R].mean()),
            f"sigma_{R + 1}.. of W diag(g) final (mean)": float(s_eff[R:].mean()), "ER of W diag(g) final": float(effective_rank(s_eff))}


def minimise(loss_fn, params, tolerance: float = 1e-7, rounds: int = 2) -> float:
    """L-BFGS (strong Wolfe line search) on ``loss_fn()`` over ``params`` in rounds of 500 iterations until the
    gradient's norm is under ``tolerance`` or ``rounds`` ran; returns the final gradient norm (the row reports it)."""
    import torch

    lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=500, history_size=50, tolerance_grad=tolerance / 10,
                              tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    for _ in range(rounds):
        lbfgs.step(closure)
        closure()
        norm = float(torch.cat([q.grad.flatten() for q in params]).norm())
        if norm < tolerance:
            break
    return norm


def head_optimisers(run: Path, n_exact: int = 1024, n_val: int = 256, sgd_lrs=(0.1, 0.5, 2.5), R: int = 32,
                    steps: int | None = None, seed: int = 0, rounds: int = 2, tolerance: float = 1e-7) -> pd.DataFrame:
    """Is the full head's effective rank the optimiser's doing? The run's final backbone frozen, only its head
    retrained on its final hidden states (after the final LayerNorm, gain included: what the head reads), from the
    run's own initial head (step 0), for the run's number of updates (or ``steps``), each on fresh training blocks
    (the run's tokens per step; one pass, as the run trained), on the run's schedule (linear warmup, cosine to
    lr x min_lr_ratio), with: AdamW as trained (its betas, eps, the head's weight decay), AdamW without decay, and
    SGD (momentum 0.9, no decay) at each peak rate of ``sgd_lrs``; every optimiser sees the same batches. Beside
    them the run's own trained head and the float64 minimiser of the exact expected loss on the features of
    ``n_exact`` training blocks (soft targets p(. | context), full batch, L-BFGS from the initial head; unique up
    to the vocabulary-mean direction when the features span d). Each row: the exact KL(true || head) on ``n_val``
    validation blocks (a sum over the vocabulary), the ER of W (what the live monitor logs) and of W with its mean
    over the vocabulary removed (the direction softmax cannot see), the ER of its centred validation logits (what
    the predictions use: W's components in directions the features hardly reach change no prediction), and the
    mean singular value of the first ``R`` and of the rest; the first row, the true log-probabilities' ER. No gradient clipping (the run clips the whole model's gradient norm at 1.0)."""
    import torch
    import torch.nn.functional as F

    from lmdynamics.metrics.spectrum import effective_rank
    from lmdynamics.models.heads import load_causal_lm
    from lmdynamics.saturation.lowrank_head import features
    from lmdynamics.training.module import lr_multiplier

    info = json.loads((run / "run.json").read_text())
    lang, ctx, opt, sched = language(info), info["context_length"], info["optimizer"], info["schedule"]
    model = load_causal_lm(run / "checkpoints" / f"step{info['max_steps']:08d}").eval()
    w_init = load_causal_lm(run / "checkpoints" / "step00000000").get_output_embeddings().weight.detach().double()
    steps, warm, min_ratio = steps or sched["max_steps"], sched["warmup_steps"], sched["min_lr_ratio"]
    per_step = info["tokens_per_step"] // ctx  # blocks per update
    train = features(model, lang.blocks(range(steps * per_step), ctx, info["seed"], "train"), batch=256)
    val_blocks = lang.blocks(range(n_val), ctx, info["seed"], "val")
    val = features(model, val_blocks)
    logp_val = torch.from_numpy(true_log_probs(lang, val_blocks)[0][..., 1:].reshape(-1, lang.V - 1))
    h_val = val.h.double()

    def row(name: str, w: torch.Tensor) -> dict:
        w = w.detach().double()
        with torch.no_grad():
            logq = torch.log_softmax(h_val @ w.T, dim=-1)[:, 1:]
            kl = float((logp_val.exp() * (logp_val - logq)).sum(-1).mean())
            logits = (h_val @ w.T)[:, 1:]
        s, s_c = torch.linalg.svdvals(w), torch.linalg.svdvals(w - w.mean(dim=0))
        return {"head": name, "exact KL": kl, "ER": float(effective_rank(s)), "ER (vocabulary mean removed)": float(effective_rank(s_c)),
                "ER of the logits": centred_logit_er(logits), f"sigma_1..{R} (mean)": float(s[:R].mean()),
                f"sigma_{R + 1}.. (mean)": float(s[R:].mean())}

    def centred_logit_er(logits: torch.Tensor) -> float:
        """ER of the validation contexts' logits over the emitted symbols, each context's mean removed (the shift
        softmax cannot see): the rank the predictions use, whatever W does in directions the features do not reach."""
        return float(effective_rank(torch.linalg.svdvals(logits - logits.mean(dim=1, keepdim=True))))

    batch = per_step * (ctx - 1)  # the positions of one update's blocks
    head_decay = opt["weight_decay"] if opt.get("head_weight_decay") is None else opt["head_weight_decay"]

    def retrain(make_optimiser) -> torch.Tensor:
        w = w_init.float().clone().requires_grad_()
        optimiser = make_optimiser([w])
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: lr_multiplier(k + 1, steps, warm, min_ratio))
        torch.manual_seed(seed)
        for k in range(steps):
            at = slice(k * batch, (k + 1) * batch)
            loss = F.cross_entropy(train.h[at] @ w.T, train.y[at])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
        return w

    adamw = lambda decay: lambda p: torch.optim.AdamW(p, lr=sched["peak_lr"], betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=decay)  # noqa: E731
    true_row = {"head": f"the true distribution (rank {lang.spec.rank})", "exact KL": 0.0,
                "ER of the logits": centred_logit_er(logp_val)}
    rows = [true_row, row("trained (the run's own head)", model.get_output_embeddings().weight),
            row(f"AdamW, decay {head_decay:g} (as trained)", retrain(adamw(head_decay))),
            row("AdamW, no decay", retrain(adamw(0.0)))]
    for lr in sgd_lrs:
        rows.append(row(f"SGD momentum 0.9, peak lr {lr:g}", retrain(lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9))))
    # the float64 minimiser of the expected loss on these features: soft targets, full batch, over the emitted
    # symbols 1..V-1 (the start symbol's probability is 0, so its logit has no finite minimiser: its row stays the
    # run's trained one, as in every other row up to training)
    exact_blocks = lang.blocks(range(n_exact), ctx, info["seed"], "train")
    h = features(model, exact_blocks).h.double()
    p = torch.from_numpy(true_log_probs(lang, exact_blocks)[0][..., 1:].reshape(-1, lang.V - 1)).exp()
    start_row = model.get_output_embeddings().weight.detach().double()[:1]
    expected_loss = lambda w: -(p * torch.log_softmax(h @ w.T, dim=-1)).sum(-1).mean()  # noqa: E731
    w = w_init[1:].clone().requires_grad_()
    norm = minimise(lambda: expected_loss(w), [w], tolerance, rounds)
    rows.append({**row("float64 minimiser of the expected loss (L-BFGS)", torch.cat([start_row, w])), "gradient norm": norm})
    # the same with W = A B of rank R (from the full minimiser's Eckart-Young truncation): what the directions past
    # R buy on these features
    u, sv, vt = torch.linalg.svd((w - w.mean(dim=0)).detach(), full_matrices=False)
    a = (u[:, :R] * sv[:R].sqrt()).contiguous().requires_grad_()
    b = (sv[:R].sqrt()[:, None] * vt[:R]).contiguous().requires_grad_()
    norm = minimise(lambda: expected_loss(a @ b), [a, b], tolerance, rounds)
    rows.append({**row(f"float64 minimiser of rank {R} (L-BFGS on A B)", torch.cat([start_row, a @ b])), "gradient norm": norm})
    return pd.DataFrame(rows).assign(run=run.name)


def sample_offsets(val_blocks=(64, 256, 1024, 4096), zipfs=(0.0, 1.0), data_seed: int = 1234) -> pd.DataFrame:
    """The true loss of the first n validation blocks (configs/train/interventions/synthetic.yaml's language and data
    seed) against the exact expected floor: what ``val_loss - floor`` carries besides the model's KL."""
    from lmdynamics.data.synthetic import SyntheticLanguage, SyntheticSpec

    rows = []
    for zipf in zipfs:
        lang = SyntheticLanguage(SyntheticSpec(vocab_size=256, rank=32, classes=8, lags=(1, 2), logit_scale=2.5, seed=0, zipf=zipf))
        floor = lang.entropy_floor(32)
        for n in val_blocks:
            true = lang.true_loss(lang.blocks(range(n), 32, data_seed, "val"))
            rows.append({"zipf": zipf, "val blocks": n, "floor": floor, "sample true loss": true, "offset": true - floor})
    return pd.DataFrame(rows)


def kl_table(roots) -> pd.DataFrame:
    """``context_kl`` of every finished run, with its logged estimate val_loss - val_true_loss beside it."""
    rows = []
    for run in runs(roots):
        info, val, _, _ = series(run)
        row = {"run": run.name, **context_kl(run)}
        row["val - val_true_loss"] = float(val.iloc[-1] - info["synthetic"]["val_true_loss"])
        rows.append(row)
    return pd.DataFrame(rows)


def heads_figure(table: pd.DataFrame, out: str) -> None:
    """Excess loss against r next to the float64 rank-r optimum, and head ER against r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    mos = table[table["head"] == "mos"]
    table = table[table["head"] != "mos"]
    y, seeds = ("exact KL mean", "exact KL per seed") if "exact KL mean" in table else ("excess mean", "excess per seed")
    per_seed = [[float(x) for x in row.split()] for row in table[seeds]]
    for r, xs in zip(table["r"], per_seed):
        a.plot([r] * len(xs), xs, "k.", ms=5)
    a.plot(table["r"], table[y], "ko-", label="low-rank / full head (mean, dots: seeds)")
    a.plot(table["r"], table["float64 rank-r optimum"], "s--", color="tab:red", label="float64 rank-r optimum")
    for _, row in mos.iterrows():
        xs = [float(x) for x in row[seeds].split()]
        a.plot([row["r"]] * len(xs), xs, ".", color="tab:blue", ms=5)
        a.plot([row["r"]], [row[y]], "*", color="tab:blue", ms=11, label=f"MoS K = {row['K']}, components of rank r")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("head rank r (64 = full-rank head)")
    a.set_ylabel("KL to the true distribution (nats)" if y == "exact KL mean" else "excess loss (nats)")
    a.legend(fontsize=7)
    a.grid(alpha=0.3)
    b.plot(table["r"], table["head ER mean"], "ko-", label="head ER")
    b.plot(table["r"], [min(r, 32) for r in table["r"]], "--", color="tab:gray", label="min(r, R = 32)")
    b.set_xscale("log", base=2)
    b.set_xlabel("head rank r")
    b.set_ylabel("effective rank of W")
    b.legend(fontsize=7)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def rank_optimum(spec: dict, r: int, context_length: int) -> float:
    """docs/results/bottleneck_reference.py's least excess loss of a rank-r softmax head on the run's language."""
    import importlib.util

    from lmdynamics.data.synthetic import SyntheticLanguage, SyntheticSpec

    ref_spec = importlib.util.spec_from_file_location("bottleneck_reference", Path(__file__).parent / "bottleneck_reference.py")
    ref = importlib.util.module_from_spec(ref_spec)
    ref_spec.loader.exec_module(ref)
    keys = ("vocab_size", "rank", "classes", "lags", "logit_scale", "seed", "zipf")
    lang = SyntheticLanguage(SyntheticSpec(**{k: tuple(spec[k]) if k == "lags" else spec[k] for k in keys if k in spec}))
    return ref.rank_limited_excess(lang, r, context_length)


def alarm_figure(out: str, run: str, kl_schedule=None) -> None:
    """Validation loss and head KL-to-uniform of one run, with the first rule's and the current rule's events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info, val, kl, _ = series(Path(run))
    kl_first = kl if kl_schedule is None else kl[kl.index.isin(set(pythia_schedule(info["max_steps"], *kl_schedule)))]
    first = [e["step"] for e in SaturationRule.replay(val.to_dict(), kl_first.to_dict(), **FIRST_RULE)]
    current = [e["step"] for e in SaturationRule.replay(val.to_dict(), kl.to_dict(), **CURRENT_RULE)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(val.index, val.values, "k.-", lw=1, label="validation loss")
    for s in first:
        ax.axvline(s, color="tab:red", ls="--", lw=1)
    for s in current:
        ax.axvline(s, color="tab:green", ls="-", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats)")
    ax2 = ax.twinx()
    ax2.plot(kl.index, kl.values, color="tab:blue", lw=1, label="head KL-to-uniform")
    ax2.set_ylabel("head KL-to-uniform", color="tab:blue")
    ax.set_title(f"{Path(run).name}: first rule fires at {first or 'none'} (red), current at {current or 'none'} (green)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def planted(seeds: int = 300) -> pd.DataFrame:
    """The rule on the planted series of tests/test_callbacks.py (KL from the planted spectra in closed form):
    false alarms on noise (a fall to a plateau, noise sd 0.02, KL growing 5-10% per validation) and detections of
    the planted collapse (a climb of 0.02 nats per validation from validation 20 on, KL jumping), per setting."""
    def kl(s):
        p = s / s.sum()
        return float(np.log(len(s)) + (p * np.log(p)).sum())

    n = 30
    kl_noise = {t: kl((0.95 - 0.004 * t) ** np.arange(8)) for t in range(n)}
    q = np.r_[np.full(20, 0.9), np.linspace(0.85, 0.5, 10)]
    kl_sat = {t: kl(q[t] ** np.arange(8)) for t in range(n)}
    settings = {"first rule": FIRST_RULE, "current (patience 3, noise_factor 5)": {},
                "patience 3, noise_factor 4": {"noise_factor": 4.0}, "patience 4, noise_factor 4": {"patience": 4, "noise_factor": 4.0},
                "patience 1, noise_factor 5": {"patience": 1}}
    rows = []
    for name, rule in settings.items():
        false, steps = 0, []
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            noise = 2.0 + 0.5 * np.exp(-np.arange(n) / 4) + rng.normal(0, 0.02, n)
            false += bool(SaturationRule.replay(dict(enumerate(noise)), kl_noise, **rule))
            sat = np.r_[2.0 + np.exp(-np.arange(20) / 4), 2.0 + 0.02 * np.arange(1, 11)] + rng.normal(0, 0.005, n)
            events = SaturationRule.replay(dict(enumerate(sat)), kl_sat, **rule)
            steps.append(events[0]["step"] - 19 if events else np.nan)  # validations after the minimum
        steps = np.array(steps)
        from scipy.stats import beta

        lo = beta.ppf(0.025, false, seeds - false + 1) if false else 0.0  # Clopper-Pearson 95% interval of the rate
        hi = beta.ppf(0.975, false + 1, seeds - false) if false < seeds else 1.0
        rows.append({"rule": name, "false alarms on noise": f"{false}/{seeds}", "rate 95% interval": f"[{lo:.3f}, {hi:.3f}]", "collapses detected": f"{int(np.isfinite(steps).sum())}/{seeds}",
                     "validations after the minimum (median)": float(np.nanmedian(steps)) if np.isfinite(steps).any() else np.nan})
    return pd.DataFrame(rows)


def figure(out: str, roots) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs(roots):
        info, val, _, _ = series(run)
        floor = (info.get("synthetic") or {}).get("entropy_floor")
        y = val - floor if floor is not None else val
        ax.plot(val.index, y, label=run.name, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss - entropy floor (nats)" if floor is not None else "validation loss (nats)")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 60)
    usage = __doc__.split("\n\n")[1]
    if "--help" in sys.argv or "-h" in sys.argv:
        print(usage)
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in ('alarms', 'late', 'heads', 'spectrum', 'optimisers', 'offset', 'kl', 'planted', 'alarm-figure', 'figure'):
        commands = ", ".join(('alarms', 'late', 'heads', 'spectrum', 'optimisers', 'offset', 'kl', 'planted', 'alarm-figure', 'figure'))
        print(f"error: unknown command {sys.argv[1] if len(sys.argv) > 1 else '(none)'}; give one of {commands} "
              "(--help shows each)", file=sys.stderr)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "alarms":
            kl_schedule = None
            recorded = None
            while args and args[0] in ("--kl-schedule", "--recorded"):  # [--kl-schedule E,C] [--recorded runs.csv]
                if args[0] == "--kl-schedule":
                    kl_schedule = tuple(int(a) for a in args[1].split(","))
                else:
                    recorded = args[1]
                args = args[2:]
            table = alarms(args, kl_schedule, recorded)
            print(table.drop(columns=["root", *ALARM_COUNTS.values()]).round(4).to_markdown(index=False))
            print()
            print(alarm_counts(table).to_markdown(index=False))
        elif cmd == "late":
            per_run, groups = late(args)
            print(per_run.round(4).to_markdown(index=False))
            print()
            print(groups.round(4).to_markdown(index=False))
        elif cmd == "heads":  # [--optimum]: also the float64 rank-r optimum (about 15 s per r); [--exact]: context_kl
            out = args[args.index("--figure") + 1] if "--figure" in args else None  # --figure OUT.png (needs --optimum)
            args = [a for i, a in enumerate(args) if a not in ("--optimum", "--figure") and not (i and args[i - 1] == "--figure")]
            exact = "--exact" in args
            args = [a for a in args if a != "--exact"]
            table = heads(args, optimum="--optimum" in sys.argv or out is not None, exact=exact)
            print(table.round(4).to_markdown(index=False))
            if out:
                heads_figure(table, out)
        elif cmd == "spectrum":
            print(pd.DataFrame([head_spectrum(Path(r)) for r in args]).round(4).to_markdown(index=False))
        elif cmd == "optimisers":
            print(pd.concat([head_optimisers(Path(r)) for r in args]).round(4).to_markdown(index=False))
        elif cmd == "offset":
            print(sample_offsets().round(4).to_markdown(index=False))
        elif cmd == "kl":
            print(kl_table(args).round(4).to_markdown(index=False))
        elif cmd == "planted":
            print(planted().to_markdown(index=False))
        elif cmd == "alarm-figure":  # OUT.png RUN [every,log_cap]
            alarm_figure(args[0], args[1], tuple(int(a) for a in args[2].split(",")) if len(args) > 2 else None)
        elif cmd == "figure":
            figure(args[0], args[1:])
        else:
            raise SystemExit(f"unknown command {cmd!r}: alarms, late, heads, kl, spectrum, optimisers, offset, planted, figure or alarm-figure")
    except FileNotFoundError as e:  # a run root or run directory that does not exist: one line, nothing written
        print(f"error: {e.filename or e} does not exist; give run roots or run directories (see --help)", file=sys.stderr)
        sys.exit(2)
