"""Offline weight analysis: streaming (ours) vs the naive way, and peak memory vs the largest tensor.

1. Speed and agreement on a pythia-70m-shaped checkpoint (random weights, safetensors in a temp dir):
   ours = ``weight_metric_rows(iter_tensors(dir))`` (tensor by tensor, Gram/QR spectra, OV through its
   d_head x d_head core); naive = ``GPTNeoXForCausalLM.from_pretrained`` then a full ``torch.linalg.svd``
   per matrix (every weight matrix, the head and each head's d x d OV product), in float32 (the model's
   dtype) and in float64. Targets: >= 5x faster, same values to 1e-5.
2. Peak memory of weight-only analysis, in a fresh process, on checkpoints whose total size is > 4x their
   largest tensor (pythia-70m widths with 24 layers; the pythia-410m shape); target: peak RSS <= 2 x
   largest tensor + 400 MB. Beside it, the same metrics on a model built with ``from_pretrained``.
3. ``--gpu-vs-cpu``: the same streaming metrics of a pythia-1b-shaped checkpoint with its tensors on the GPU
   (as ``analyze`` runs where the machine has one) against the CPU: time and largest difference.

    python bench/bench_analysis.py [--quick] [--gpu-vs-cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PYTHIA_70M = dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048)
PYTHIA_410M = dict(vocab_size=50304, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096)
PYTHIA_1B = dict(vocab_size=50304, hidden_size=2048, num_hidden_layers=16, num_attention_heads=8,
                 intermediate_size=8192)
QUICK = dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024)
MATS = {"qkv": "attention.query_key_value", "dense": "attention.dense", "mlp_in": "mlp.dense_h_to_4h", "mlp_out": "mlp.dense_4h_to_h"}


def gpt_neox_config(**shape):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(max_position_embeddings=2048, rotary_pct=0.25, use_parallel_residual=True,
                         tie_word_embeddings=False, **shape)


def write_random_checkpoint(directory: Path, shape: dict, seed: int = 0) -> tuple[int, int]:
    """A Hugging Face checkpoint of random weights written tensor by tensor (no model built).
    Returns (total bytes, largest tensor bytes)."""
    from safetensors.torch import save_file

    d, v, f, n_layers = shape["hidden_size"], shape["vocab_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    g = torch.Generator().manual_seed(seed)
    tensors = {"gpt_neox.embed_in.weight": torch.randn(v, d, generator=g) * 0.02,
               "embed_out.weight": torch.randn(v, d, generator=g) * 0.02,
               "gpt_neox.final_layer_norm.weight": torch.ones(d), "gpt_neox.final_layer_norm.bias": torch.zeros(d)}
    for i in range(n_layers):
        p = f"gpt_neox.layers.{i}."
        for name, (rows, cols) in {"attention.query_key_value": (3 * d, d), "attention.dense": (d, d),
                                   "mlp.dense_h_to_4h": (f, d), "mlp.dense_4h_to_h": (d, f)}.items():
            tensors[p + name + ".weight"] = torch.randn(rows, cols, generator=g) / math.sqrt(cols)
            tensors[p + name + ".bias"] = torch.randn(rows, generator=g) * 0.01
        for ln in ("input_layernorm", "post_attention_layernorm"):
            tensors[p + ln + ".weight"], tensors[p + ln + ".bias"] = torch.ones(d), torch.zeros(d)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    gpt_neox_config(**shape).to_json_file(str(directory / "config.json"))
    sizes = [t.numel() * t.element_size() for t in tensors.values()]
    return sum(sizes), max(sizes)


def ours_on(directory: Path, heads: int, device: str = "cpu") -> tuple[float, dict]:
    """Ours: ``weight_metric_rows(iter_tensors(dir))``, every tensor moved to ``device`` as it is read (as the
    offline runner does on a GPU); (seconds, {(layer, component, metric): value})."""
    from lmdynamics.checkpoints import iter_tensors
    from lmdynamics.measure import weight_metric_rows

    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    rows = weight_metric_rows(((n, w.to(device)) for n, w in iter_tensors(directory)), num_heads=heads)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, {(r["layer"], r["component"], r["metric"]): r["value"] for r in rows}


def gpu_against_cpu(tmp: Path, shape: dict, label: str) -> None:
    """3. The offline weight metrics of one checkpoint on the GPU and on the CPU: time and agreement."""
    total, _ = write_random_checkpoint(tmp / "gpu", shape)
    heads = shape["num_attention_heads"]
    print(f"\n3. weight metrics of a {label} checkpoint ({total / (1 << 20):.0f} MB), GPU against CPU "
          f"({torch.get_num_threads()} CPU threads)")
    ours_on(tmp / "gpu", heads, "cuda")  # warm-up: CUDA context, cuSOLVER handles
    t_gpu, v_gpu = ours_on(tmp / "gpu", heads, "cuda")
    t_cpu, v_cpu = ours_on(tmp / "gpu", heads, "cpu")
    abs_d, rel_d, where = max_diffs(v_cpu, v_gpu)
    print(f"   {'device':<10}{'time s':>9}{'GPU faster':>12}")
    print(f"   {'cpu':<10}{t_cpu:>9.2f}")
    print(f"   {torch.cuda.get_device_name():<10.10}{t_gpu:>9.2f}{t_cpu / t_gpu:>11.1f}x")
    print(f"   {len(v_gpu)} values; GPU against CPU: max |diff| {abs_d:.2e}, max rel diff {rel_d:.2e} (at {where})")
    shutil.rmtree(tmp / "gpu")


def _metrics_of(s: torch.Tensor, head: bool) -> dict:
    s = s.double()
    p = s / s.sum()
    q = p[p > 0]
    er = math.exp(float(-(q * q.log()).sum()))
    out = {"er": er, "per": er / s.numel(), "stable_rank": float((s**2).sum() / s[0] ** 2),
           "condition_number": float(s[0] / s[-1])}
    if head:
        out["kl_uniform"] = math.log(s.numel()) - math.log(er)
    return out


def naive(directory: Path, heads: int, dtype: torch.dtype) -> tuple[float, dict]:
    from transformers import GPTNeoXForCausalLM

    t = time.perf_counter()
    model = GPTNeoXForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    out = {}

    def svd(w):
        return torch.linalg.svd(w.detach().to(dtype), full_matrices=False).S

    for i, layer in enumerate(model.gpt_neox.layers):
        mods = {"qkv": layer.attention.query_key_value, "dense": layer.attention.dense,
                "mlp_in": layer.mlp.dense_h_to_4h, "mlp_out": layer.mlp.dense_4h_to_h}
        for comp, mod in mods.items():
            out.update({(i, comp, k): v for k, v in _metrics_of(svd(mod.weight), False).items()})
        w_qkv, w_o = mods["qkv"].weight.detach().to(dtype), mods["dense"].weight.detach().to(dtype)
        d = w_o.shape[0]
        dh = d // heads
        for h in range(heads):
            w_v = w_qkv[h * 3 * dh + 2 * dh : h * 3 * dh + 3 * dh]
            ov = w_o[:, h * dh : (h + 1) * dh] @ w_v
            out.update({(i, f"ov_head{h:02d}", k): v for k, v in _metrics_of(svd(ov), False).items()})
    out.update({(-1, "embed_in", k): v for k, v in _metrics_of(svd(model.gpt_neox.embed_in.weight), False).items()})
    out.update({(-1, "head", k): v for k, v in _metrics_of(svd(model.get_output_embeddings().weight), True).items()})
    return time.perf_counter() - t, out


def max_diffs(a: dict, b: dict) -> tuple[float, float, str]:
    """Max abs difference over er, per, stable_rank and kl_uniform; max relative difference over those and
    the condition numbers (those of the rank-deficient OV products, inf in exact arithmetic, left out);
    and the key of the largest relative one."""
    worst_abs, worst_rel, where = 0.0, 0.0, ""
    for k, x in a.items():
        y = b.get(k)
        if y is None or (k[2] == "condition_number" and k[1].startswith("ov_head")):
            continue
        if k[2] != "condition_number":
            worst_abs = max(worst_abs, abs(x - y))
        rel = abs(x - y) / max(abs(x), 1e-300)
        if rel > worst_rel:
            worst_rel, where = rel, "/".join(map(str, k))
    return worst_abs, worst_rel, where


# ---------------------------------------------------------------------------------------------- memory
_CHILD = r"""
import json, sys, torch
torch.set_num_threads(int(sys.argv[3]))
import lmdynamics.metrics
from lmdynamics.checkpoints import iter_tensors
from lmdynamics.measure import weight_metric_rows
if sys.argv[2] == "naive":
    from transformers import GPTNeoXForCausalLM
    from transformers.utils import logging
    logging.disable_progress_bar()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
base = rss()  # after the imports: the interpreter, torch and the code that runs
heads = int(sys.argv[4])
if sys.argv[2] == "ours":
    rows = weight_metric_rows(iter_tensors(sys.argv[1]), num_heads=heads)
else:  # the same metrics on an instantiated model: what from_pretrained costs
    model = GPTNeoXForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
    rows = weight_metric_rows(model.named_parameters(), num_heads=heads)
# VmHWM: the high-water mark of this process image (ru_maxrss would carry over the parent's from the fork)
hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"base": base, "peak": hwm}))
"""


def peak_memory(directory: Path, how: str, threads: int, heads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(directory), how, str(threads), str(heads)],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_table(directory: Path, shape: dict, threads: int, seed: int) -> None:
    MB = 1 << 20
    total, largest = write_random_checkpoint(directory, shape, seed=seed)
    d, layers = shape["hidden_size"], shape["num_hidden_layers"]
    print(f"   checkpoint d={d}, {layers} layers, vocab {shape['vocab_size']} (float32): total {total / MB:.0f} MB = "
          f"{total / largest:.1f} x its largest tensor ({largest / MB:.0f} MB); budget 2 x largest + 400 MB = "
          f"{(2 * largest + 400 * MB) / MB:.0f} MB")
    print(f"   {'method':<22}{'peak RSS MB':>12}{'above start MB':>16}{'(peak-start)/largest':>22}")
    for how, label in (("ours", "ours (stream)"), ("naive", "from_pretrained")):
        m = peak_memory(directory, how, threads, shape["num_attention_heads"])
        verdict = ("   met" if m["peak"] <= 2 * largest + 400 * MB else "   NOT met") if how == "ours" else ""
        print(f"   {label:<22}{m['peak'] / MB:>12.0f}{(m['peak'] - m['base']) / MB:>16.0f}"
              f"{(m['peak'] - m['base']) / largest:>21.1f}x{verdict}")
    shutil.rmtree(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small shape instead of pythia-70m (smoke run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1: on a shared CPU, multi-threaded LAPACK "
                             "calls can be slowed 100x by contention, which would make the numbers noise)")
    parser.add_argument("--gpu-vs-cpu", action="store_true",
                        help="only part 3: a pythia-1b-shaped checkpoint's weight metrics on the GPU against the CPU "
                             "(the quick shape with --quick); needs CUDA")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    threads = torch.get_num_threads()
    shape = QUICK if args.quick else PYTHIA_70M
    heads = shape["num_attention_heads"]
    MB = 1 << 20
    if args.gpu_vs_cpu:
        if not torch.cuda.is_available():
            sys.exit("bench_analysis.py --gpu-vs-cpu: no CUDA device; run it on a GPU machine")
        with tempfile.TemporaryDirectory() as tmp:
            gpu_against_cpu(Path(tmp), QUICK if args.quick else PYTHIA_1B, "quick-shape" if args.quick else "pythia-1b-shaped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        total, _ = write_random_checkpoint(tmp / "speed", shape)
        label = "quick shape" if args.quick else "pythia-70m shape"
        print(f"1. weight metrics of a {label} checkpoint ({total / MB:.0f} MB, {threads} threads)")
        ours_on(tmp / "speed", heads)  # warm-up (first LAPACK calls)
        t_ours, v_ours = ours_on(tmp / "speed", heads)
        rows = []
        for name, dtype in (("naive float32", torch.float32), ("naive float64", torch.float64)):
            t_naive, v_naive = naive(tmp / "speed", heads, dtype)
            abs_d, rel_d, where = max_diffs(v_naive, v_ours)
            rows.append((name, t_naive, abs_d, rel_d, where))
        print(f"   {'method':<16}{'time s':>9}{'ours faster':>13}{'max |diff|':>13}{'max rel diff':>14}  worst at")
        print(f"   {'ours (stream)':<16}{t_ours:>9.2f}{'':>13}{'':>13}{'':>14}")
        for name, t, abs_d, rel_d, where in rows:
            print(f"   {name:<16}{t:>9.2f}{t / t_ours:>12.1f}x{abs_d:>13.2e}{rel_d:>14.2e}  {where}")
        print(f"   {len(v_ours)} values (|diff|: er, per, stable rank, KL; rel: also condition numbers); "
              "target: >= 5x faster, same values to 1e-5")

        shutil.rmtree(tmp / "speed")

        print("\n2. peak memory of weight-only analysis (fresh process; start = after importing torch and the code)")
        shapes = [dict(shape, num_hidden_layers=16)] if args.quick else [
            dict(PYTHIA_70M, num_hidden_layers=24),  # pythia-70m widths, 24 layers: total > 4 x largest
            PYTHIA_410M,
        ]
        for i, mem_shape in enumerate(shapes):
            memory_table(tmp / f"mem{i}", mem_shape, args.threads, seed=i + 1)


if __name__ == "__main__":
    main()
