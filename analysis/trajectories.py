"""``lmdynamics trajectories``: per-token loss trajectories (``analysis/trajectories.py {record,report,score,run}``)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["trajectories", *sys.argv[1:]]))
