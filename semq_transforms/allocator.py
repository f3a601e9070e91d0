"""glibc malloc settings for a process that handles shard-sized arrays.

A shard of 65,536 x 384 float32 rows is 96 MiB, and fitting, encoding and validating it
makes temporaries of 4-64 MiB. glibc's defaults serve every block over 32 MiB (often over
128 KiB: the threshold only rises as blocks are freed) with a fresh ``mmap`` and unmap it
on ``free``, and give the top of the heap back to the system as soon as 128 KiB of it is
free. Each shard then pays for zero-filled pages again (a page fault per 4 KiB, and the
kernel clearing them): on the standard machine a 1M-row job spent about a quarter of its
time in the kernel doing that (``benchmarks/pipeline.py``). With several worker threads,
each thread's arena also keeps its own free memory, which the others cannot reuse.

:func:`tune_allocator` keeps blocks up to :data:`MMAP_THRESHOLD` in the heap, keeps up to
:data:`TRIM_THRESHOLD` of free heap for the next shard, and puts every thread on one arena
(Python objects use Python's own allocator and Arrow buffers Arrow's, so the arena lock is
taken rarely: for numpy arrays). Measured on the standard machine, 1M rows: the job's
system time went from about 8 s to about 3 s, and with two worker threads its peak memory
went down, not up (one arena reuses what either thread freed).

The settings are process-wide. ``python -m pipelines.ingest`` applies them at start and
exports them (as glibc's ``MALLOC_*`` environment variables) to the worker processes it
starts; the container image (``infra/Dockerfile``) sets the same variables for remote
workers. A program that composes the transforms itself can call :func:`tune_allocator`
first. ``SEMQ_MALLOC_TUNING=0`` turns it off; it does nothing outside glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import MutableMapping

__all__ = ["ENV_SWITCH", "MALLOC_ENV", "tune_allocator"]

#: Blocks up to this size come from the heap (reused), not from a fresh mmap: above a
#: default shard's 96 MiB and its largest temporaries.
MMAP_THRESHOLD = 256 << 20
#: Free memory at the top of the heap kept for reuse before it is given back.
TRIM_THRESHOLD = 256 << 20
#: Extra heap requested when the heap grows (fewer, larger brk calls).
TOP_PAD = 64 << 20
#: Arenas: one, shared by all threads.
ARENA_MAX = 1

#: Set to "0" (or "false", "no", "off") to leave the allocator alone.
ENV_SWITCH = "SEMQ_MALLOC_TUNING"

# (mallopt parameter number from glibc's malloc.h, the environment variable glibc reads at a
# process's start for it, the value)
_SETTINGS = (
    (-3, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),   # M_MMAP_THRESHOLD
    (-1, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD),   # M_TRIM_THRESHOLD
    (-2, "MALLOC_TOP_PAD_", TOP_PAD),                 # M_TOP_PAD
    (-8, "MALLOC_ARENA_MAX", ARENA_MAX),              # M_ARENA_MAX
)

#: The settings as environment variables (what the container image sets).
MALLOC_ENV = {name: str(value) for _, name, value in _SETTINGS}


def tune_allocator(environ: MutableMapping[str, str] | None = None) -> bool:
    """Apply the settings to this process (``mallopt``) and export them to ``environ``
    (default ``os.environ``, so child processes start with them).

    A setting whose ``MALLOC_*`` variable is already in ``environ`` is left alone: the user
    chose it, and glibc applied it when the process started. So a second call changes
    nothing. Returns True if every setting is in place; False when ``SEMQ_MALLOC_TUNING``
    turns tuning off, the C library is not glibc, or glibc refused a setting (the process
    keeps its default for that one).
    """
    environ = os.environ if environ is None else environ
    if environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = True
    # The mmap threshold first: setting any of the first three turns glibc's self-raising
    # threshold off, and it starts at 128 KiB.
    for param, name, value in _SETTINGS:
        if name in environ:
            continue
        applied = mallopt(param, value) == 1 and applied
        environ[name] = str(value)
    return applied
