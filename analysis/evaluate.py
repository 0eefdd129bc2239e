"""Evaluate every checkpoint of a run (or hub revisions) with lm-evaluation-harness, or cheaply with the (``lmdynamics evaluate``; the code: lmdynamics.saturation.commands.evaluate)."""

import sys

from lmdynamics.saturation.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
