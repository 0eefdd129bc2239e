"""``lmdynamics convergence``: CKA-to-final of a training run (``analysis/convergence.py runs/demo``)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["convergence", *sys.argv[1:]]))
