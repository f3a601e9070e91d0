"""The program Dataflow's Flex Template launcher runs (FLEX_TEMPLATE_PYTHON_PY_FILE in the
``flex-template`` image of infra/Dockerfile): the ingestion job, as ``python -m
pipelines.ingest`` runs it.

    python main.py --config=/app/configs/s3.yaml [--index_url=URL] [Beam options]

The launcher passes the template's parameters (``metadata.json``) as ``--name=value`` options
with Dataflow's own (``--runner``, ``--template_location``, ...). The job then only describes
itself for the service and exits 0; the pipeline writes its report when Dataflow runs it.
"""

import sys

from semq_transforms.allocator import tune_allocator

if __name__ == "__main__":
    tune_allocator()         # before Beam, Arrow or BLAS start threads (pipelines/ingest.py)

    from pipelines.ingest import main

    sys.exit(main())
