"""semq_transforms.allocator: the settings take effect (measured by page faults, in fresh
processes, so the test process keeps its own allocator), can be turned off, and the job
applies them when run as a program."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from semq_transforms.allocator import ENV_SWITCH, MALLOC_ENV, tune_allocator

ROOT = Path(__file__).resolve().parents[1]

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's")

# Allocates, frees and reallocates a 96 MiB array (a default shard) eight times and prints
# the page faults the reallocations cost. With glibc's defaults each one is a fresh mmap, so
# every page faults again; with the settings the freed block is reused. (Run without numpy's
# transparent-huge-page advice, so that a fault is one 4 KiB page wherever THP is on.)
_REUSE = """
import resource, sys
import numpy as np
from semq_transforms.allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tune" else None
np.ones((65536, 384), np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    np.ones((65536, 384), np.float32)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop(ENV_SWITCH, None)
    env = {**clean, "PYTHONPATH": str(ROOT), "NUMPY_MADVISE_HUGEPAGE": "0", **env}
    out = subprocess.run([sys.executable, "-c", _REUSE, mode], capture_output=True, text=True,
                         check=True, env=env).stdout
    applied, faults = out.split()
    return applied, int(faults)


@glibc_only
def test_tuned_process_reuses_shard_sized_blocks():
    pages = 65536 * 384 * 4 // 4096             # one array's 4 KiB pages
    applied, tuned = _faults("tune")
    assert applied == "True"
    _, default = _faults("plain")
    assert default >= 4 * pages                   # refaulted: fresh mmaps
    assert tuned < pages // 4                     # reused


@glibc_only
def test_switch_turns_tuning_off():
    applied, faults = _faults("tune", **{ENV_SWITCH: "0"})
    assert applied == "False"
    assert faults >= 4 * (65536 * 384 * 4 // 4096)


def test_exports_settings_for_child_processes_and_keeps_existing_values():
    code = ("import json, platform; from semq_transforms.allocator import tune_allocator\n"
            "environ = {'MALLOC_ARENA_MAX': '4'}\n"
            "print(json.dumps([tune_allocator(environ), environ]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    applied, environ = json.loads(out)
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert environ == {**MALLOC_ENV, "MALLOC_ARENA_MAX": "4"}


def test_switch_leaves_environment_alone():
    environ = {ENV_SWITCH: "off"}
    assert tune_allocator(environ) is False       # turned off before touching anything
    assert environ == {ENV_SWITCH: "off"}


@glibc_only
def test_job_program_applies_the_settings(tmp_path):
    """``python -m pipelines.ingest`` tunes its process before running: its environment
    carries MALLOC_ENV by the time it fails on a missing config (exit 2)."""
    probe = tmp_path / "sitecustomize.py"
    # Report the environment at exit, whatever the job's outcome.
    probe.write_text("import atexit, os\n"
                     "atexit.register(lambda: print('ENV', {k: v for k, v in os.environ.items()"
                     " if k.startswith('MALLOC_')}))\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop(ENV_SWITCH, None)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.ingest", "--config", str(tmp_path / "missing.yaml")],
        check=False, capture_output=True, text=True, cwd=ROOT,
        env={**clean, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert result.returncode == 2, result.stderr
    assert f"ENV {MALLOC_ENV!r}" in result.stdout
