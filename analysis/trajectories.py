"""Per-token training trajectories: ``python analysis/trajectories.py {record,report,score} --help``."""

import sys

from lmdynamics.trajectories.cli import main

if __name__ == "__main__":
    sys.exit(main())
