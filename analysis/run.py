"""Offline analysis of checkpoints (``lmdynamics analyze``): ``python analysis/run.py --config configs/analysis/pythia-paper.yaml``.

Flags override the YAML: --models (comma-separated hub ids or run directories), --steps (a preset or
comma-separated steps), --probe.source (a text file, hub dataset or run directory), --out (holds metrics.parquet).
"""

import sys

from lmdynamics.offline.cli import main

if __name__ == "__main__":
    sys.exit(main())
