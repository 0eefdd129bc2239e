"""``lmdynamics evaluate``: lm-eval (or a corpus loss) at every checkpoint of a run or hub revisions."""

import sys

from lmdynamics.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
