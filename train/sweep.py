"""Run a grid of training runs: ``python train/sweep.py --config sweep.yaml [--workers N] [--print-commands]``."""

import sys

from lmdynamics.sweep import main

if __name__ == "__main__":
    sys.exit(main())
