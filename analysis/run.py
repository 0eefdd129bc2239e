"""``lmdynamics analyze``: offline analysis of checkpoints (``analysis/run.py --config configs/analysis/demo-run.yaml``)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["analyze", *sys.argv[1:]]))
