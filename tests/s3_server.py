"""A real S3 endpoint on loopback for the store tests: moto's standalone server, in-process.

s3fs talks HTTP to ``http://127.0.0.1:<port>`` exactly as it would to AWS (the way s3fs's own
test suite uses moto), so the tests exercise s3fs's request path, its error mapping and the
server's conditional-write (``If-None-Match: *``) answer, not a mock of s3fs.

Fixtures (exposed through ``tests/conftest.py``):

* ``s3_storage_options`` (session): starts the server, yields s3fs ``storage_options``; stops
  the server and restores the environment at the end of the session.
* ``s3_url`` (function): a fresh, empty bucket per test, as ``s3://<bucket>/index``.

Caching: the options carry ``skip_instance_cache=True`` (every ``S3FileSystem(...)`` is a new
instance, so no test shares a filesystem object, a session or a cache with another) and
``use_listings_cache=False`` (no dircache, so a listing always asks the server). Each test also
gets its own bucket, so no object leaks between tests either.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest

# Dummy credentials: moto accepts any; these keep a developer's real AWS settings (profile,
# config file, session token) out of the tests. Set only while the session fixture is alive.
_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/semq-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/semq-tests/aws-credentials",
    # Never send loopback traffic through a proxy configured on the machine.
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
_REMOVED_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")

_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def s3_storage_options() -> Iterator[dict[str, Any]]:
    """s3fs ``storage_options`` for a moto S3 server listening on 127.0.0.1 (random port)."""
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests "
                        "(pip install -e '.[dev]')")
    s3fs = pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in _FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        for name in _REMOVED_ENV:
            mp.delenv(name, raising=False)

        # werkzeug logs every request at INFO; keep the test output readable.
        werkzeug_logger = logging.getLogger("werkzeug")
        old_level = werkzeug_logger.level
        werkzeug_logger.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield {
                "key": "testing",
                "secret": "testing",
                "client_kwargs": {"endpoint_url": f"http://{host}:{port}",
                                  "region_name": "us-east-1"},
                "skip_instance_cache": True,
                "use_listings_cache": False,
            }
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()
            werkzeug_logger.setLevel(old_level)


@pytest.fixture
def s3_url(s3_storage_options: dict[str, Any]) -> str:
    """``s3://<fresh bucket>/index``: an empty index prefix on the moto server."""
    boto3 = pytest.importorskip("boto3")

    # boto3 rather than s3fs.mkdir: s3fs sends LocationConstraint=us-east-1, which S3 (and
    # moto) reject for that region.
    client = boto3.client("s3", aws_access_key_id=s3_storage_options["key"],
                          aws_secret_access_key=s3_storage_options["secret"],
                          **s3_storage_options["client_kwargs"])
    bucket = f"semq-test-{next(_bucket_numbers):04d}"
    client.create_bucket(Bucket=bucket)
    client.close()
    return f"s3://{bucket}/index"
