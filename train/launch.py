"""Print a SLURM batch script or a torchrun command for multi-GPU training: ``python train/launch.py slurm --nodes 4 -- fit --config ...``."""

import sys

from lmdynamics.training.launch import main

if __name__ == "__main__":
    sys.exit(main())
