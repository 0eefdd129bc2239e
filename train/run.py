"""Train or validate a GPT-NeoX model: ``python train/run.py fit --config configs/train/demo.yaml``."""

import sys

from lmdynamics.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
