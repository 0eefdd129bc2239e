"""``lmdynamics sweep``: a grid of training runs (``train/sweep.py --config configs/sweeps/X.yaml``)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["sweep", *sys.argv[1:]]))
