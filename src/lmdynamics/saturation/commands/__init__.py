"""The saturation study's commands (``lmdynamics saturation|werror|evaluate|lowrank-head``; ``analysis/*.py`` wrap them)."""
