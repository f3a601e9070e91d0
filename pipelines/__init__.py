"""Runnable Beam pipelines and the command-line entry points.

The ingestion job (``python -m pipelines.ingest --config configs/<name>.yaml``) arrives with
the pipeline issue; this package holds it.
"""
