"""``lmdynamics saturation``: saturation of eval or loss curves (Godey et al. 2024)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["saturation", *sys.argv[1:]]))
