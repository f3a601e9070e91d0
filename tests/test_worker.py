"""SDK worker processes end with the job that started them (``transforms/_worker.py``): the
local runner's multi-process mode starts real worker processes (through ``sh -c``), the
launcher is killed with SIGKILL, and a worker in the middle of a long step must not write
afterwards. (Beam's own harness notices a dead runner after about a second, and a step that
ends within that second wrote its files.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_LAUNCHER = """
import os, sys, time
import apache_beam as beam
from semq_transforms.transforms import direct_options
from semq_transforms.transforms._worker import worker_setup, in_sdk_worker_process

folder = sys.argv[1]

class SlowWriter(beam.DoFn):
    def setup(self):
        worker_setup()

    def process(self, n):
        with open(os.path.join(folder, f"started-{n}-{os.getpid()}"), "w") as f:
            f.write(str(in_sdk_worker_process()))
        go = os.path.join(folder, "killed")
        while not os.path.exists(go):                   # a long step (a big shard) ...
            time.sleep(0.01)
        time.sleep(0.5)                                 # ... that ends just after the kill
        open(os.path.join(folder, f"written-{n}"), "w").close()
        yield n

with beam.Pipeline(options=direct_options("multi_processing", 2)) as p:
    _ = p | beam.Create([0, 1]) | beam.Reshuffle() | beam.ParDo(SlowWriter())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads worker states from /proc")
def test_workers_exit_when_the_launcher_is_killed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(tmp_path)], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
            assert launcher.poll() is None, "the pipeline ended before its step started"
            time.sleep(0.1)
        started = list(tmp_path.glob("started-*"))
        assert started, "no worker started the step"
        time.sleep(0.5)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        (tmp_path / "killed").touch()
        started = list(tmp_path.glob("started-*"))
        assert {p.read_text() for p in started} == {"True"}    # the gate sees a Beam worker
        workers = {int(p.name.rsplit("-", 1)[1]) for p in started}
        for pid in workers:
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(pid), f"worker {pid} outlived its job"
        time.sleep(1.0)        # past the end of the step the workers were in
        assert not list(tmp_path.glob("written-*")), "a worker wrote after its job was killed"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for path in tmp_path.glob("started-*"):        # never leave a worker behind
            try:
                os.kill(int(path.name.rsplit("-", 1)[1]), signal.SIGKILL)
            except ProcessLookupError:
                pass


_STARTS_A_WATCHED_CHILD = """
import subprocess, sys, time
child = ("import sys, time; from semq_transforms.transforms._worker import watch_starter; "
         "watch_starter(); open(sys.argv[1], 'w').close(); time.sleep(120)")
# through a shell, as Beam starts its workers
subprocess.Popen(f"{sys.executable} -c \\"{child}\\" {sys.argv[1]}", shell=True)
time.sleep(120)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
def test_a_watched_process_ends_when_its_starter_is_killed(tmp_path):
    """The mechanism alone, deterministic: a process started through ``sh -c`` that watches
    its starter ends within seconds of the starter's SIGKILL (it would sleep for two
    minutes, and the shell between them outlives the starter)."""
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    starter = subprocess.Popen([sys.executable, "-c", _STARTS_A_WATCHED_CHILD, str(ready)],
                               cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        shells = _children(starter.pid)
        watched = [pid for shell in shells for pid in _children(shell)] or shells
        assert watched and all(_alive(pid) for pid in watched)
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in watched) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in watched), "the watched process outlived it"
    finally:
        if starter.poll() is None:
            starter.kill()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


_LOGS_A_SIGNED_URL = """
import logging
import apache_beam as beam
from semq_transforms.transforms import direct_options
from semq_transforms.transforms._worker import worker_setup

class Logs(beam.DoFn):
    def setup(self):
        worker_setup()

    def process(self, n):          # as a storage library would, on the worker
        logging.getLogger("some.library").warning(
            "GET %s failed", f"https://host/x.parquet?X-Amz-Signature=TOKEN{n}W")
        yield n

with beam.Pipeline(options=direct_options("multi_processing", 2)) as p:
    _ = p | beam.Create([0, 1]) | beam.Reshuffle() | beam.ParDo(Logs())
"""


def test_worker_log_lines_reach_the_launcher_redacted(tmp_path):
    """Beam forwards a worker's log records to the launcher, which prints them: with
    worker_setup the token is masked in the worker, before it is sent."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    done = subprocess.run([sys.executable, "-c", _LOGS_A_SIGNED_URL], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "GET https://host/x.parquet?*** failed" in output
    assert "TOKEN0W" not in output and "TOKEN1W" not in output
