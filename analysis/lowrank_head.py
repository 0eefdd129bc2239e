"""``lmdynamics lowrank-head``: loss of a rank-constrained head on a frozen checkpoint, over a rank grid."""

import sys

from lmdynamics.cli import main

sys.exit(main(["lowrank-head", *sys.argv[1:]]))
