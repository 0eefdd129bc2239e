"""W-error of a corpus: how much of its empirical next-token matrix a rank-d head can represent (``lmdynamics werror``; the code: lmdynamics.saturation.commands.werror)."""

import sys

from lmdynamics.saturation.commands.werror import main

if __name__ == "__main__":
    sys.exit(main())
