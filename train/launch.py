"""``lmdynamics launch``: a SLURM script or a torchrun command (``train/launch.py slurm --nodes 4 -- fit --config ...``)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["launch", *sys.argv[1:]]))
