"""Contrastive text between two checkpoints: ``python analysis/contrastive.py --help``."""

import sys

from lmdynamics.trajectories.contrastive_cli import main

if __name__ == "__main__":
    sys.exit(main())
