"""Shared fixtures: a seeded synthetic anisotropic dataset and the optional Banking77 data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cloud_servers import (  # noqa: F401  (fixtures)
    azure_storage_options,
    azure_url,
    gcs_storage_options,
    gcs_url,
)
from tests.http_server import http_folder  # noqa: F401  (fixture)
from tests.s3_server import s3_storage_options, s3_url  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: object, timeout: float = 300
                  ) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` with ``args`` in a fresh interpreter, as a user runs it;
    returns the finished process (stdout and stderr as text), whatever its exit code."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script),
                           *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
BANKING77 = ROOT.parent / "shared/datasets/banking77/minilm-l6-v2.npz"


def make_anisotropic(n: int = 2000, d: int = 64, seed: int = 0) -> np.ndarray:
    """Seeded float32 [n, d]: gaussian with decaying per-axis scales, randomly rotated, offset
    by a mean vector, rows L2-normalised (like sentence embeddings)."""
    rng = np.random.default_rng(seed)
    scales = 0.92 ** np.arange(d)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    offset = rng.standard_normal(d)
    offset *= 1.5 / np.linalg.norm(offset)
    x = (rng.standard_normal((n, d)) * scales) @ rotation.T + offset
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def write_tiny_embeddings(path: Path) -> Path:
    """A small stand-in for the Banking77 npz (train/test 600/100 x 32, 3 labels) at ``path``,
    for smoke-running the benchmark scripts."""
    x = make_anisotropic(700, 32, seed=5)
    labels = np.arange(700) % 3
    np.savez(path, train_x=x[:600], train_y=labels[:600], test_x=x[600:], test_y=labels[600:])
    return path


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@pytest.fixture(scope="session")
def aniso() -> np.ndarray:
    """2000 x 64 synthetic corpus (read-only so no test can disturb the others)."""
    return _read_only(make_anisotropic(2000, 64, seed=0))


@pytest.fixture(scope="session")
def aniso_queries() -> np.ndarray:
    """50 queries drawn from the same distribution as :func:`aniso`, different seed."""
    return _read_only(make_anisotropic(50, 64, seed=1))


def banking77() -> dict[str, np.ndarray]:
    """Banking77 MiniLM-L6-v2 embeddings (train_x/train_y/test_x/test_y), or skip the test."""
    if not BANKING77.is_file():
        pytest.skip(f"Banking77 embeddings not found at {BANKING77} (the ../shared checkout "
                    f"is optional; quality tests need it)")
    with np.load(BANKING77, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="session")
def banking77_data() -> dict[str, np.ndarray]:
    return banking77()
