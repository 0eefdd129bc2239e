"""``lmdynamics werror``: W-error curve of a corpus's n-gram next-token matrix."""

import sys

from lmdynamics.cli import main

sys.exit(main(["werror", *sys.argv[1:]]))
