#!/usr/bin/env bash
# The checks of docs/results/gpu.md in one run on a machine with one CUDA GPU, each under its own time limit
# inside one overall budget (a GPU lease is short): GPU-marked tests, singular values against svdvals, offline
# weight metrics GPU against CPU, MFU of pythia-160m, and ZeRO-3 at the pythia-1.4b shape with every callback
# on, its live weight metrics against an unsharded recomputation and the GPU's peak memory.
#
#   bench/gpu_checks.sh OUTDIR [BUDGET_SECONDS]      # logs: OUTDIR/<check>.log; summary on stdout
#   CHECKS="mfu zero3" bench/gpu_checks.sh OUTDIR  # only the named checks (gpu_tests svd analysis_gpu mfu zero3)
#
# PYTHON (default: .venv/bin/python if present, else python3) runs everything. Shortened where the full
# check would not fit a lease: MFU over 80 steps of 32 x 2048 tokens (no accumulation), ZeRO-3 over 12 steps
# of 4 x 2048 tokens with checkpoints at steps 0, 1, 2, 4 and 12.
set -u
out=${1:?usage: bench/gpu_checks.sh OUTDIR [BUDGET_SECONDS]}
budget=${2:-560}
mkdir -p "$out"
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export LMDYNAMICS_TRACEBACK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD/src:$PWD
start=$(date +%s)
work=$(mktemp -d)

check() {  # check NAME LIMIT_S COMMAND...: run under min(LIMIT_S, what is left of the budget), print its tail
    local name=$1 limit=$2; shift 2
    [[ -n "${CHECKS:-}" && " $CHECKS " != *" $name "* ]] && return  # CHECKS="mfu zero3": only those
    local left=$(( budget - ($(date +%s) - start) ))
    (( limit > left )) && limit=$left
    if (( limit < 20 )); then echo "== $name: skipped, ${left}s of the budget left"; return; fi
    echo "== $name (limit ${limit}s): $*"
    local t0=$(date +%s)
    timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
    echo "   exit $? after $(( $(date +%s) - t0 ))s"
    grep -v -E "Warning|warn\(|^\s*$" "$out/$name.log" | tail -n "${TAIL:-14}" | cut -c1-220
}

echo "== device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
$PY -c "import torch, lightning, transformers, deepspeed; print('   torch', torch.__version__, 'cuda', torch.version.cuda, '| lightning', lightning.__version__, '| transformers', transformers.__version__, '| deepspeed', deepspeed.__version__)" 2>&1 | tail -1

check gpu_tests 150 $PY -m pytest -m gpu -q -x -p no:cacheprovider tests/test_distributed.py
check svd 90 $PY bench/bench_metrics.py --device cuda --dims 512 1024 2048 --repeats 2
check analysis_gpu 100 $PY bench/bench_analysis.py --gpu-vs-cpu --threads "$(nproc)"
check mfu 300 $PY bench/bench_mfu.py --steps 80 --skip 30 --pairs 1
# ZeRO-3 fit, then its live weight metrics against the saved weights; the GPU's memory sampled every 0.5 s
export PY work
TAIL=20 check zero3 240 bash -c '
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$work/mem.txt" 2>/dev/null &
    sampler=$!
    $PY train/run.py fit --config configs/train/pythia-1.4b.yaml --config configs/train/scale/nodes-zero3.yaml \
        --trainer.num_nodes 1 --trainer.devices 1 --data.source python-docs --data.streaming false \
        --data.tokenizer bpe:4096 --probe.num_sequences 16 --trainer.max_steps 12 --data.global_batch_size 4 --checkpoints.log_cap 4 \
        --trainer.log_every_n_steps 1 --run.root "$work/runs" --run.report false --trainer.enable_progress_bar false
    rc=$?
    kill $sampler
    echo "fit exit $rc; GPU memory used, peak of 0.5 s samples: $(sort -n "$work/mem.txt" | tail -1) MiB"
    [ $rc = 0 ] && $PY bench/live_against_offline.py "$work/runs/pythia-1.4b" --all'
echo "== total $(( $(date +%s) - start ))s"
rm -rf "$work"
