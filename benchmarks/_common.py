"""Shared setup for the benchmark scripts: one thread, paths, data, machine info, timing.

Import this module FIRST in a benchmark script (before numpy or anything that imports it):
it pins OpenMP/OpenBLAS/MKL to one thread through environment variables, which BLAS reads
only when it is loaded, and refuses to load if numpy already was.
"""

import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# One thread everywhere; must be set before numpy (and its BLAS) is imported.
if "numpy" in sys.modules:
    raise ImportError("benchmarks/_common.py must be imported before numpy: the one-thread "
                      f"settings ({', '.join(_THREAD_VARS)}=1) are read when numpy's BLAS "
                      "loads. Move `import _common` (or `from _common import ...`) to the top.")
for _var in _THREAD_VARS:
    os.environ[_var] = "1"

import importlib.metadata
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

try:
    import faiss
except ImportError:  # references are skipped
    faiss = None

DEFAULT_DATA = REPO.parent / "shared/datasets/banking77/minilm-l6-v2.npz"


# -- setup ------------------------------------------------------------------------------------

def limit_threads() -> dict:
    """Pin BLAS/OpenMP (numpy, sklearn, faiss) to one thread; report what was pinned."""
    info = {"env": {v: os.environ[v] for v in _THREAD_VARS}}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        info["threadpoolctl"] = None
    else:
        # Keep the limiter referenced for the whole run (module global below).
        global _THREADPOOL_LIMIT
        _THREADPOOL_LIMIT = threadpool_limits(1)
        info["threadpoolctl"] = [{k: p.get(k) for k in ("internal_api", "version",
                                                        "num_threads", "filepath")}
                                 for p in threadpool_info()]
    if faiss is not None:
        faiss.omp_set_num_threads(1)
        info["faiss_omp_max_threads"] = faiss.omp_get_max_threads()
    return info


_THREADPOOL_LIMIT = None


def load_data(path: Path) -> dict:
    """The npz as float32 corpus/queries and int64 labels."""
    if not path.is_file():
        sys.stderr.write(
            f"error: dataset not found: {path}\n"
            f"Put the banking77 MiniLM-L6-v2 embeddings there (an .npz with train_x [n, 384] "
            f"float32, train_y, test_x, test_y), i.e. {DEFAULT_DATA}, or pass --data PATH.\n")
        sys.exit(2)
    with np.load(path) as z:
        return {"x": np.ascontiguousarray(z["train_x"], dtype=np.float32),
                "y": z["train_y"].astype(np.int64),
                "q": np.ascontiguousarray(z["test_x"], dtype=np.float32),
                "qy": z["test_y"].astype(np.int64)}


def write_results(path: Path, threads: dict, results) -> None:
    """Write ``{"machine", "threads", "results"}`` as JSON to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine_info(), "threads": threads,
                                "results": results}, indent=1))


def machine_info() -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = None
    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        blas = {k: deps[k] for k in ("blas", "lapack") if k in deps}
    except (TypeError, AttributeError):  # numpy < 1.26: show_config only prints
        blas = "unavailable"
    return {
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu_model": cpu, "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__, "sklearn": _version("scikit-learn"),
        "faiss": getattr(faiss, "__version__", None), "numpy_blas": blas,
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- measurements -----------------------------------------------------------------------------

def best_seconds(fn, repeat: int):
    """Run ``fn`` ``repeat`` times; return (fastest wall-clock seconds, last result)."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def best_rate(fn, nbytes: float, repeat: int) -> float:
    """Throughput of ``fn`` in units of ``nbytes`` per second (best of ``repeat`` runs).

    With ``nbytes`` in MB this is MB/s; with pairs in millions, Mpairs/s.
    """
    seconds, _ = best_seconds(fn, repeat)
    return nbytes / seconds


# -- faiss reference indexes (shared by the codec and search benchmarks) ----------------------

#: Seed of the random rotation in front of faiss RaBitQ.
RABITQ_SEED = 123


def rabitq_index(d: int, nb_bits: int):
    """faiss IndexRaBitQ (inner product) at ``nb_bits`` behind a seeded random rotation."""
    rotation = faiss.RandomRotationMatrix(d, d)
    rotation.init(RABITQ_SEED)
    inner = faiss.IndexRaBitQ(d, faiss.METRIC_INNER_PRODUCT, nb_bits)
    return faiss.IndexPreTransform(rotation, inner)


def sq_index(d: int, bits: int):
    """faiss IndexScalarQuantizer (inner product), 4 or 8 bits per dimension."""
    qtype = {4: faiss.ScalarQuantizer.QT_4bit, 8: faiss.ScalarQuantizer.QT_8bit}[bits]
    return faiss.IndexScalarQuantizer(d, qtype, faiss.METRIC_INNER_PRODUCT)


def codes_index(index):
    """The index holding the codes (the one behind an IndexPreTransform), downcast."""
    if isinstance(index, faiss.IndexPreTransform):
        return faiss.downcast_index(index.index)
    return index
