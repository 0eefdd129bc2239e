"""Comparing runs: find and read them (``runs``), group them (``grouping``, ``groups``), and the statistics and
verdict across groups (``statistics``, ``verdict``). The report and its figures are drawn by
``lmdynamics.report.compare_report``; the command is ``lmdynamics compare``."""
