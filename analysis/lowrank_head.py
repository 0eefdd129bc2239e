"""Rank-constrained head: freeze a checkpoint's backbone, train a head W = A B of rank r for r on a log grid, (``lmdynamics lowrank-head``; the code: lmdynamics.saturation.commands.lowrank_head)."""

import sys

from lmdynamics.saturation.commands.lowrank_head import main

if __name__ == "__main__":
    sys.exit(main())
