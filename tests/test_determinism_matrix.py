"""Params and codes are the same bytes whatever the BLAS kernel, BLAS threads and numpy SIMD.

Each case runs tests/determinism/probe.py in a subprocess with one environment (an
``OPENBLAS_CORETYPE``, ``OPENBLAS_NUM_THREADS``, ``NPY_DISABLE_CPU_FEATURES``) and compares
its SHA-256 digests of every codec's and level chain's params and codes, on the committed
inputs (tests/determinism/inputs.npz: token-table-like, constant dimensions, duplicate rows,
rank-deficient, tiny and d = 384 shards), with the committed tests/determinism/digests.json.

CI runs a slice on every run (marked ``ci``); ``SEMQ_DETERMINISM_MATRIX=full`` runs every
case (the kernels this numpy's OpenBLAS accepts x 1 and 2 threads x numpy limited to AVX2 and
to SSE4.2). The kernel that really ran is read back with threadpoolctl and checked.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "determinism"
ROOT = HERE.parents[1]
GOLDEN = HERE / "digests.json"
FULL = os.environ.get("SEMQ_DETERMINISM_MATRIX") == "full"

#: OPENBLAS_CORETYPE values and the kernel OpenBLAS reports for each (Zen uses Haswell's
#: kernels, Prescott Katmai's); a machine that cannot run a kernel falls back to another.
CORETYPES = {"Nehalem": "Nehalem", "Sandybridge": "Sandybridge", "Haswell": "Haswell",
             "Zen": "Haswell", "SkylakeX": "SkylakeX", "Prescott": "Katmai"}
#: numpy SIMD limits: dispatch targets to disable (only those the machine has are named).
SIMD_LIMITS = {"all": (), "avx2": ("X86_V4", "AVX512_ICL", "AVX512_SPR"),
               "sse4": ("X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR")}
#: The slice CI runs every time, whatever the machine's own OPENBLAS_CORETYPE: three kernels
#: every x86-64-v3 machine can run, both thread counts, numpy held to AVX2 and to SSE4.2.
CI_SLICE = {("Haswell", 1, "all"), ("Nehalem", 2, "sse4"), ("Sandybridge", 2, "avx2")}

CASES = [pytest.param(core, threads, simd, id=f"{core}-{threads}t-{simd}",
                      marks=() if (core, threads, simd) in CI_SLICE or FULL else
                      pytest.mark.skip(reason="full matrix: SEMQ_DETERMINISM_MATRIX=full"))
         for core, threads, simd in itertools.product(CORETYPES, (1, 2), SIMD_LIMITS)]


def run_probe(env_changes: dict[str, str], *args: str) -> dict:
    """Run the probe with ``env_changes`` on top of this environment; its JSON result."""
    path = [p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), **env_changes)
    proc = subprocess.run([sys.executable, str(HERE / "probe.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _disable(simd: str) -> str:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return " ".join(t for t in SIMD_LIMITS[simd]
                    if t in __cpu_dispatch__ and __cpu_features__.get(t))


def _differences(result: dict) -> list[str]:
    golden = json.loads(GOLDEN.read_text())["digests"]
    got = result["digests"]
    assert set(got) == set(golden), "the probe's keys changed: regenerate digests.json"
    return sorted(k for k in golden if got[k] != golden[k])


@pytest.mark.parametrize(("core", "threads", "simd"), CASES)
def test_params_and_codes_match_the_committed_digests(core, threads, simd):
    result = run_probe({"OPENBLAS_CORETYPE": core, "OPENBLAS_NUM_THREADS": str(threads),
                        "OMP_NUM_THREADS": str(threads),
                        "NPY_DISABLE_CPU_FEATURES": _disable(simd)})
    kernels = {arch for api, arch, _ in result["runtime"]["blas"] if api == "openblas"}
    if kernels and CORETYPES[core] not in kernels:
        pytest.skip(f"OpenBLAS ran {sorted(kernels)} for OPENBLAS_CORETYPE={core} here")
    assert all(n == threads for _, _, n in result["runtime"]["blas"])
    if simd != "all":
        assert not set(SIMD_LIMITS[simd]) & set(result["runtime"]["simd"])
    differ = _differences(result)
    assert not differ, (
        f"{len(differ)} digests differ under {core}, {threads} thread(s), numpy SIMD {simd} "
        f"(kernels {sorted(kernels)}), e.g. {differ[:6]}. Params or codes depend on the "
        f"machine: a determinism bug (semq_transforms/codecs/exact.py says the rules), not a "
        f"format change.")


def test_the_machine_as_it_is_and_a_row_alone_match():
    """This machine's own environment (OPENBLAS_CORETYPE set or not), with every input also
    encoded in batches of 1, 7 and 300 rows (a row's code must not depend on its batch)."""
    assert not _differences(run_probe({}, "--batched"))
