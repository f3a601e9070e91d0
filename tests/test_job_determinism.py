"""The ingestion job publishes the same bytes whatever the runner, process layout and BLAS.

The job runs as a user runs it (``python -m pipelines.ingest``, a subprocess each) on one
input with a fixed run id: in-process, in two worker processes, on Beam's portable runner
(``--runner=PortableRunner --job_endpoint=embed --environment_type=LOOPBACK``: a job service
speaking the protocol Dataflow, Flink and Spark speak), on that protocol end to end (a job
service in a process of its own, an EXTERNAL pool of two SDK workers, the package staged with
``--setup_file``, as a Flink or Spark cluster runs it), with one and two BLAS threads and
other OpenBLAS kernels. Every run must publish identical shard files and a manifest with the
same digest.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from semq_transforms.format.store import IndexStore
from semq_transforms.sample_data import write_sample_embeddings

ROOT = Path(__file__).resolve().parents[1]

#: (name, environment changes, Beam options)
RUNS = [
    ("in-process", {}, []),
    ("one-blas-thread", {"OPENBLAS_NUM_THREADS": "1"}, []),
    ("two-threads-nehalem", {"OPENBLAS_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "Nehalem"}, []),
    ("multi-process", {}, ["--direct_running_mode=multi_processing",
                           "--direct_num_workers=2"]),
    ("portable-runner", {"OPENBLAS_CORETYPE": "Haswell"},
     ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]),
    ("job-service-external-pool", {}, ["--runner=PortableRunner",
                                       "--job_endpoint=localhost:{job_port}",
                                       "--environment_type=EXTERNAL",
                                       "--environment_config=localhost:{pool_port}",
                                       "--sdk_worker_parallelism=2",
                                       f"--setup_file={ROOT / 'pyproject.toml'}"]),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory) -> Iterator[dict[str, int]]:
    """A Beam job service (``local_job_service_main``) and an SDK worker pool
    (``worker_pool_main``: starts SDK worker processes on request, as an EXTERNAL environment
    of a Flink or Spark cluster does), each a process of its own on loopback."""
    pytest.importorskip("build", reason="--setup_file needs the 'build' package "
                        "(pip install -e '.[dev]')")
    ports = {"job_port": _free_port(), "pool_port": _free_port()}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    staging = tmp_path_factory.mktemp("staging")
    services = [
        subprocess.Popen([sys.executable, "-m",
                          "apache_beam.runners.portability.local_job_service_main",
                          "--port", str(ports["job_port"]), "--staging_dir", str(staging)],
                         env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                          "--service_port", str(ports["pool_port"])], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for port in ports.values():
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"no Beam service on port {port}"
                    assert all(s.poll() is None for s in services), "a Beam service exited"
                    time.sleep(0.1)
        yield ports
    finally:
        for service in services:
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()


@pytest.fixture(scope="module")
def published(tmp_path_factory, portable_services
              ) -> dict[str, tuple[str, dict[str, bytes]]]:
    base = tmp_path_factory.mktemp("job-determinism")
    write_sample_embeddings(str(base / "input"), rows=2500, dim=384, seed=7, files=2)
    out = {}
    for name, env_changes, beam_args in RUNS:
        index = base / name
        config = base / f"{name}.yaml"
        config.write_text(yaml.safe_dump({
            "name": "determinism",
            "input": {"url": f"{base / 'input'}/*.parquet", "dim": 384},
            "output": {"index_url": str(index), "run_id": "same-run"},
            "encode": {"codecs": ["semq1", "semqr4"], "rows_per_shard": 1000},
            "validation": {"k": 10, "sample_queries": 32, "seed": 1, "min_recall_at_k": 0.5,
                           "max_rejected_fraction": 0.0, "min_compression_ratio": 0}}))
        path = [p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), **env_changes)
        beam_args = [arg.format(**portable_services) for arg in beam_args]
        proc = subprocess.run([sys.executable, "-m", "pipelines.ingest", "--config", str(config),
                               *beam_args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, f"{name}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        shards = {p.name: p.read_bytes() for p in sorted(index.glob("runs/*/*.semq"))}
        out[name] = (IndexStore(str(index)).read_manifest().digest, shards)
    return out


@pytest.mark.parametrize("name", [name for name, _, _ in RUNS[1:]])
def test_same_manifest_digest_and_shard_bytes(published, name):
    digest, shards = published["in-process"]
    assert len(shards) == 3
    assert published[name][1] == shards, f"{name}: shard files differ from the in-process run"
    assert published[name][0] == digest, f"{name}: manifest digest differs"


_SINK_SCRIPT = """
import sys
import numpy as np, apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from semq_transforms.config import EncodeConfig, ValidationConfig
from semq_transforms.transforms import WriteSemqIndex
x = np.random.default_rng(5).standard_normal((1500, 48)).astype(np.float32)
rows = [(f"doc-{i}", x[i].tolist()) for i in range(len(x))]
with beam.Pipeline(options=PipelineOptions(sys.argv[2:])) as p:
    _ = (p | beam.Create(rows[::-1] if "--reverse" in sys.argv else rows)
         | WriteSemqIndex(sys.argv[1], run_id="sink-run", dim=48,
                          encode=EncodeConfig(codecs=["semq1", "semqr4"], rows_per_shard=500),
                          validation=ValidationConfig(k=10, sample_queries=32, seed=1,
                                                      min_recall_at_k=0.5,
                                                      max_rejected_fraction=0.0,
                                                      min_compression_ratio=0)))
"""


def test_the_pcollection_sink_writes_the_same_bytes_through_an_external_worker_pool(
        tmp_path, portable_services):
    """WriteSemqIndex over Beam's portable protocol end to end (a job service process, an
    EXTERNAL pool of SDK workers, the package staged with --setup_file) writes the shards and
    manifest digest of an in-process run that got its rows in the reverse order."""
    path = [p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    runs = {"in-process": ["--reverse"],
            "external-pool": ["--runner=PortableRunner",
                              f"--job_endpoint=localhost:{portable_services['job_port']}",
                              "--environment_type=EXTERNAL",
                              f"--environment_config=localhost:{portable_services['pool_port']}",
                              "--sdk_worker_parallelism=2",
                              f"--setup_file={ROOT / 'pyproject.toml'}"]}
    out = {}
    for name, args in runs.items():
        index = tmp_path / name
        proc = subprocess.run([sys.executable, "-c", _SINK_SCRIPT, str(index), *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        out[name] = (IndexStore(str(index)).read_manifest().digest,
                     {p.name: p.read_bytes() for p in sorted(index.glob("runs/*/*.semq"))})
    assert len(out["in-process"][1]) == 3
    assert out["external-pool"] == out["in-process"]
