"""Reports with plots: the only package that imports matplotlib (`render`).
"""

from __future__ import annotations

from raystilts.report.render import (
    ReportFiles,
    summary_metrics,
    write_report,
)

__all__ = [
    "ReportFiles",
    "summary_metrics",
    "write_report",
]
