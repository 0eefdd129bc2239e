"""``lmdynamics contrastive``: contrastive text from a small and a large checkpoint."""

import sys

from lmdynamics.cli import main

sys.exit(main(["contrastive", *sys.argv[1:]]))
