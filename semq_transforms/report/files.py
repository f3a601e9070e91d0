"""Where a run's report lives in an index and how it is read back (no Beam: the job's publish
step and ``semq-index`` both read reports with it)."""

from __future__ import annotations

import json

from semq_transforms.errors import FormatError
from semq_transforms.format.store import IndexStore

__all__ = ["MAX_REPORT_BYTES", "read_report", "report_path"]

#: Largest report read back (a report is kilobytes; a larger file is not one of ours).
MAX_REPORT_BYTES = 64 << 20


def report_path(run_id: str, suffix: str = "json") -> str:
    """The report's path relative to the index root: ``runs/<run_id>/report.<suffix>``."""
    return f"runs/{run_id}/report.{suffix}"


def read_report(store: IndexStore, run_id: str, suffix: str = "json") -> dict | None:
    """The run's report (``suffix`` ``"json"``, or ``"pending.json"`` for the copy a run
    writes before it commits) as a dict; None when it is missing, unreadable, over
    :data:`MAX_REPORT_BYTES` or not a JSON object. Other storage errors propagate."""
    try:
        report = json.loads(store.read_bytes(report_path(run_id, suffix), MAX_REPORT_BYTES))
    except (FileNotFoundError, FormatError, ValueError):
        return None
    return report if isinstance(report, dict) else None
