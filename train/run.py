"""``lmdynamics fit`` and ``lmdynamics validate``: ``train/run.py fit --config configs/train/demo.yaml`` (the verb comes first)."""

import sys

from lmdynamics.cli import main

sys.exit(main(sys.argv[1:]))
