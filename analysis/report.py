"""``lmdynamics report``: figures and report.md of a tidy table (``analysis/report.py --table runs/demo``)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["report", *sys.argv[1:]]))
