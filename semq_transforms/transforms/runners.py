"""Pipeline options that pin a local runner which works offline.

Why: since Beam 2.6x the Python ``DirectRunner`` (``SwitchingDirectRunner``) first tries the
Prism runner, and on a machine without a cached Prism binary it downloads one from GitHub
releases (``apache_beam-v<version>-prism-<os>-<arch>.zip``). Offline that fails and the runner
falls back to the FnApiRunner: it works, but only after a download attempt that needs the
network, with a Prism worker pool started on the way, and which runner ran depends on the
machine (a cached Prism binary changes it). ``runner="FnApiRunner"`` names the runner the fallback ends in for
batch pipelines, so every run is the same and no network is needed. It honours the
DirectRunner's options:

* ``direct_running_mode="in_memory"``: one worker in this process (fastest to start).
* ``"multi_threading"``: ``direct_num_workers`` worker threads in this process.
* ``"multi_processing"``: ``direct_num_workers`` SDK worker subprocesses
  (``python -m apache_beam.runners.worker.sdk_worker_main``): DoFns and elements really cross
  process boundaries, as on a distributed runner. The subprocesses inherit the environment and
  working directory, so ``semq_transforms`` must be importable there (installed, or on
  ``PYTHONPATH``).

Checked with apache-beam 2.77 offline: the default ``DirectRunner`` logs "Downloading prism
..." then "Falling back to DirectRunner"; these options run without either, and metrics are
aggregated across the worker processes.
"""

from __future__ import annotations

from typing import Any, Literal

from apache_beam.options.pipeline_options import PipelineOptions

RunningMode = Literal["in_memory", "multi_threading", "multi_processing"]
_MODES = ("in_memory", "multi_threading", "multi_processing")


def direct_options(mode: RunningMode = "in_memory", workers: int = 2,
                   **extra: Any) -> PipelineOptions:
    """PipelineOptions for a local run on the FnApiRunner (no Prism download).

    Args:
        mode: ``"in_memory"`` (one in-process worker; ``workers`` is ignored),
            ``"multi_threading"`` or ``"multi_processing"``.
        workers: worker threads or processes for the two parallel modes (>= 1).
        **extra: more pipeline options by name (``pickle_library="cloudpickle"``, ...).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if type(workers) is not int or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    # flags=[]: without it PipelineOptions parses sys.argv (and warns about its own flags).
    return PipelineOptions([], runner="FnApiRunner", direct_running_mode=mode,
                           direct_num_workers=1 if mode == "in_memory" else workers, **extra)
