"""The run report of the ingestion job, as people read it (no Beam).

* :mod:`~semq_transforms.report.figures`: derived figures of ``report.json``: the byte split
  of the published shards (codes per level, params, ids, input fingerprints, other;
  bits/dim) and the run's wall time and rows/s.
* :mod:`~semq_transforms.report.files`: where a run's report is in the index, and reading it.
* :mod:`~semq_transforms.report.markdown`: ``report.md``.
* :mod:`~semq_transforms.report.plot`: ``report.svg``, recall@k and compression per shard.
* :mod:`~semq_transforms.report.units`: ``12.4 MiB``, ``3.2 s``, ``20,000``.

The report dict itself is built, and its files written, by
:mod:`semq_transforms.transforms.publish`.
"""

from semq_transforms.report.markdown import report_markdown
from semq_transforms.report.plot import PLOT_NAME, report_svg
from semq_transforms.report.units import human_bytes, human_count, human_seconds

__all__ = ["PLOT_NAME", "human_bytes", "human_count", "human_seconds", "report_markdown",
           "report_svg"]
