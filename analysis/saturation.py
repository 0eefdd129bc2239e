"""Did a model saturate, when, and did its output head move first? (Godey et al. 2024; docs/science.md section 3) (``lmdynamics saturation``; the code: lmdynamics.saturation.commands.saturation)."""

import sys

from lmdynamics.saturation.commands.saturation import main

if __name__ == "__main__":
    sys.exit(main())
