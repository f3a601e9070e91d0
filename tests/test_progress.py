"""Progress of a local run: shown on stderr when it is a terminal (a pseudo-terminal here),
never on a pipe or with ``--quiet``; the progress file the workers append to."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from semq_transforms.sample_data import write_sample_embeddings
from semq_transforms.transforms import direct_options
from semq_transforms.transforms.progress import (
    PROGRESS_ENV,
    progress_line,
    read_progress,
    record_shard,
    runs_locally,
)

ROOT = Path(__file__).resolve().parents[1]


def test_progress_line():
    assert progress_line(shards_done=0, shards=4, rows_done=0, rows=20_000, elapsed=0.5) \
        == "shards 0/4, 0 of 20,000 rows"
    assert progress_line(shards_done=1, shards=4, rows_done=5000, rows=20_000, elapsed=2.0) \
        == "shards 1/4, 5,000 of 20,000 rows, 2,500 rows/s, about 6 s left"
    assert progress_line(shards_done=1, shards=40, rows_done=5000, rows=205_000,
                         elapsed=2.0) \
        == "shards 1/40, 5,000 of 205,000 rows, 2,500 rows/s, about 1 min 20 s left"
    assert progress_line(shards_done=4, shards=4, rows_done=20_000, rows=20_000, elapsed=8.0,
                         finished=True) \
        == "shards 4/4, 20,000 of 20,000 rows, 2,500 rows/s, done in 8.00 s"


def test_shards_are_recorded_only_for_a_watching_launcher(tmp_path, monkeypatch):
    path = tmp_path / "progress.txt"
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    record_shard(0, 10)                       # nobody watches: nothing written anywhere
    monkeypatch.setenv(PROGRESS_ENV, str(path))
    record_shard(0, 10)                       # the launcher's file is gone: not created
    assert not path.exists()
    path.write_bytes(b"")
    for shard_no, rows in [(0, 10), (2, 7), (0, 10)]:     # shard 0 replayed by the runner
        record_shard(shard_no, rows)
    with path.open("ab") as f:
        f.write(b"3 5")                       # a line still being written
    assert path.read_bytes() == b"0 10\n2 7\n0 10\n3 5"
    assert read_progress(str(path)) == {0: 10, 2: 7}
    assert read_progress(str(tmp_path / "missing")) == {}


def test_progress_is_shown_on_local_runners_only():
    assert runs_locally(direct_options()) and runs_locally(direct_options("multi_processing"))
    assert runs_locally(PipelineOptions([]))
    assert not runs_locally(PipelineOptions(["--runner=DataflowRunner"]))
    assert not runs_locally(PipelineOptions(["--runner=PortableRunner"]))


# -- the job on a terminal and on a pipe ---------------------------------------------------------


@pytest.fixture(scope="module")
def input_url(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("input")
    write_sample_embeddings(str(folder), rows=2000, dim=16, seed=2, files=2)
    return f"{folder}/*.parquet"


def config_file(tmp_path: Path, input_url: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({
        "name": "progress-job",
        "input": {"url": input_url, "dim": 16, "batch_rows": 250},
        "output": {"index_url": str(tmp_path / "idx")},
        "encode": {"codecs": ["semq4"], "rows_per_shard": 500},
        "validation": {"k": 5, "sample_queries": 16, "min_recall_at_k": 0.01,
                       "max_rejected_fraction": 0.0}}))
    return str(path)


def run_job(args: list[str], *, terminal: bool) -> tuple[int, str, str]:
    """Run the job in a subprocess, stderr on a pseudo-terminal (or a pipe); returns the
    exit code, stdout and what stderr showed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(PROGRESS_ENV, None)
    command = [sys.executable, "-m", "pipelines.ingest", *args]
    if not terminal:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        return done.returncode, done.stdout, done.stderr
    controller, terminal_fd = pty.openpty()
    with subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=terminal_fd) as proc:
        os.close(terminal_fd)
        shown = []
        while True:
            try:
                chunk = os.read(controller, 1 << 16)
            except OSError:               # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown.append(chunk)
        out = proc.stdout.read().decode()
        proc.wait(timeout=600)
    os.close(controller)
    return proc.returncode, out, b"".join(shown).decode(errors="replace")


def test_a_terminal_shows_progress(tmp_path, input_url):
    code, out, err = run_job(["--config", config_file(tmp_path, input_url)], terminal=True)
    assert code == 0, out + err
    assert "\rshards 4/4, 2,000 of 2,000 rows, " in err and ", done in " in err
    assert "shards 4/4" not in out


@pytest.mark.parametrize("quiet, terminal", [(False, False), (True, True)],
                         ids=["pipe", "quiet-terminal"])
def test_a_pipe_or_quiet_shows_no_progress(tmp_path, input_url, quiet, terminal):
    args = ["--config", config_file(tmp_path, input_url), *(["--quiet"] if quiet else [])]
    code, out, err = run_job(args, terminal=terminal)
    assert code == 0, out + err
    assert "published version 1" in out
    assert "shards " not in err and "neither job options" not in err
