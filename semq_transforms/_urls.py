"""URL redaction shared by everything that prints or stores a URL (reports, manifests, logs,
error messages): no credential in a URL ever leaves the process."""

from __future__ import annotations

import logging
import re
import traceback

__all__ = ["REDACTED", "check_url_credentials", "redact_log_records", "redact_text",
           "redact_url"]

#: What a masked value reads as.
REDACTED = "***"
#: A URL inside text: a scheme, ``://``, then up to white space, a quote or a bracket (less
#: the punctuation that ends a sentence or precedes a message: ``url: error``).
#: The user info of any ``scheme://user:password@`` in text, whatever its characters.
_USERINFO = re.compile(r"(?<=://)(?!\*\*\*@)[^\s/@]+@")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]*[^\s'\"<>()\[\]{}:;,.]")


#: Schemes whose URLs have no user info: ``s3://key:secret@bucket`` is a bucket name to their
#: filesystems, whose errors then quote the secret (botocore's "Invalid bucket name").
NO_URL_CREDENTIALS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "file", "local",
                      "memory")
_AZURE_SCHEMES = ("az", "abfs", "abfss")


def check_url_credentials(url: str) -> None:
    """Raise ValueError (its message redacted) if ``url`` (or any part of a chained URL,
    ``simplecache::s3://...``) puts user info (``key:secret@``) in a URL whose scheme takes
    none (:data:`NO_URL_CREDENTIALS`). ``http(s)`` user info is allowed (basic auth), and
    redacted wherever it is printed; so is Azure's ``abfs://container@account...`` form."""
    for part in url.split("::"):
        scheme, sep, rest = part.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in NO_URL_CREDENTIALS or redact_url(part) == part:
            continue
        userinfo = rest.partition("/")[0].rpartition("@")[0] or rest
        if scheme in _AZURE_SCHEMES and ":" not in userinfo:
            continue                      # abfs://<container>@<account>.dfs.core.windows.net
        raise ValueError(f"{redact_text(url)}: {scheme}:// URLs take no credentials; pass "
                         f"them in storage_options or (better) the environment")


def redact_url(url: str) -> str:
    """``url`` with any user info (``user:password@``) masked, and the query string of an
    ``http(s)`` URL (signed-URL tokens). Plain paths are returned as they are (``?`` is a glob
    character there and in object-store URLs). Errs on the side of masking: a password with
    an unescaped ``/`` is masked up to the ``@``.

    >>> redact_url("s3://key:secret@bucket/x/*.parquet")
    's3://***@bucket/x/*.parquet'
    >>> redact_url("https://host/e.parquet?sig=abc")
    'https://host/e.parquet?***'
    >>> redact_url("data/sample/part-?.parquet")
    'data/sample/part-?.parquet'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        rest = f"{REDACTED}@{authority.rpartition('@')[2]}{slash}{tail}"
    elif ":" in authority and "@" in tail:
        rest = f"{REDACTED}@{tail.partition('@')[2]}"
    if scheme.lower() in ("http", "https") and "?" in rest:
        rest = f"{rest.partition('?')[0]}?{REDACTED}"
    return f"{scheme}{sep}{rest}"


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url` (for messages that
    quote URLs, including the text of errors raised by storage libraries).

    >>> redact_text("cannot read https://host/a.parquet?sig=abc: not found")
    'cannot read https://host/a.parquet?***: not found'
    >>> redact_text("404, url='http://u:pw@host/x'")
    "404, url='http://***@host/x'"
    """
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match[0]), text)
    # user info with characters that end a URL in the pattern above (``)``, ``'``)
    return _USERINFO.sub(f"{REDACTED}@", text)


def _redacted_record(factory, *args, **kwargs) -> logging.LogRecord:
    record = factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001  (a malformed log call: keep what it said, redacted)
        message = f"{record.msg} (log arguments that do not fit it: {record.args!r})"
    record.msg, record.args = redact_text(str(message)), None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)))
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    return record


def redact_log_records() -> None:
    """Make every log record of this process, any library's included, carry its message,
    traceback and stack with URLs redacted (:func:`redact_text`), whatever handler prints it.

    Process-wide (a log record factory): for programs such as the ingestion job, not for
    libraries to call on import. Idempotent.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_semq_redacting", False):
        return

    def redacting(*args, **kwargs) -> logging.LogRecord:
        return _redacted_record(factory, *args, **kwargs)

    redacting._semq_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting)
