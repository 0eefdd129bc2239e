"""``lmdynamics compare``: one report across runs (``analysis/compare.py runs/a runs/b --out DIR``)."""

import sys

from lmdynamics.cli import main

sys.exit(main(["compare", *sys.argv[1:]]))
