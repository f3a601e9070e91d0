"""Runnable Beam pipelines.

``python -m pipelines.ingest --config configs/<name>.yaml [beam options]`` is the ingestion
job (see ``pipelines/ingest.py``).
"""
