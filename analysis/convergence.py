"""CKA-to-final for any training run from its stored probe activations (``lmdynamics convergence``):
``python analysis/convergence.py runs/demo``."""

import sys

from lmdynamics.report.commands import convergence_main as main

if __name__ == "__main__":
    sys.exit(main())
