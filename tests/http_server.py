"""A real HTTP file server on loopback for inputs read through fsspec's HTTP filesystem (as a
signed URL is): files of a folder, with ``Range`` requests, the query string ignored (it stands
for a signature that grants access).

A signature that expires mid-job: when the folder holds a file ``.deny-ranges-after`` with a
number ``n``, every ranged GET after the first ``n`` the server answered is refused (403).

Fixture (exposed through ``tests/conftest.py``): ``http_folder`` (function) yields
``(folder, base_url)``: files written to ``folder`` are served at ``base_url/<name>``.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

_COUNT_LOCK = threading.Lock()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET / HEAD of the files in ``folder``, whole or one ``bytes=a-b`` range."""

    def __init__(self, *args, folder: Path, **kwargs) -> None:
        self.folder = folder
        super().__init__(*args, **kwargs)

    def _file(self) -> Path | None:
        path = self.folder / self.path.partition("?")[0].lstrip("/")
        return path if path.is_file() else None

    def _head(self, path: Path | None) -> bytes | None:
        if path is None:
            self.send_response(404)
            self.end_headers()
            return None
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1] or 0)
            stop = int(match[2]) + 1 if match[2] else len(data)
            body = data[start:stop]
            self.send_response(206)
            self.send_header("Content-Range",
                             f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return body

    def do_HEAD(self) -> None:
        self._head(self._file())

    def _denied(self) -> bool:
        control = self.folder / ".deny-ranges-after"
        if "Range" not in self.headers or not control.is_file():
            return False
        with _COUNT_LOCK:
            self.server.ranged_gets = getattr(self.server, "ranged_gets", 0) + 1
            return self.server.ranged_gets > int(control.read_text())

    def do_GET(self) -> None:
        if self._denied():
            self.send_error(403, "Forbidden: the signature has expired")
            return
        body = self._head(self._file())
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``(folder, base_url)``: the files of ``folder`` served on 127.0.0.1 (random port)."""
    pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(_RangeHandler, folder=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
