"""Offline analysis of checkpoints: ``python analysis/run.py --config configs/analysis/pythia-paper.yaml``.

Flags override the YAML: --models (comma-separated hub ids or run directories), --steps (a preset or
comma-separated steps), --probe (a text file, hub dataset or run directory), --out (holds metrics.parquet).
"""

import sys

from lmdynamics.analysis.runner import main

if __name__ == "__main__":
    sys.exit(main())
