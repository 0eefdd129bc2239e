"""Draw every figure a tidy table supports and write a Markdown report (``lmdynamics report``).

    python analysis/report.py --table runs/demo            # a run directory (holds metrics.parquet/)
    python analysis/report.py --table analysis_out/metrics.parquet --out analysis_out/report

Writes <out>/report.md and <out>/figures/*.png. Reads only the tidy table, never model files.
"""

import sys

from lmdynamics.report.commands import report_main as main

if __name__ == "__main__":
    sys.exit(main())
