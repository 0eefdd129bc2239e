"""Compare runs: ``python analysis/compare.py runs/a runs/b ... --out DIR [--group-by KEY]`` (see lmdynamics.compare)."""

import sys

from lmdynamics.report.compare_report import main

if __name__ == "__main__":
    sys.exit(main())
