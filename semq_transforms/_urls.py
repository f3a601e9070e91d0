"""URL redaction shared by everything that prints or stores a URL (reports, manifests, logs,
error messages): no credential in a URL ever leaves the process."""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_text", "redact_url"]

#: What a masked value reads as.
REDACTED = "***"
#: A URL inside text: a scheme, ``://``, then up to white space, a quote or a bracket (less
#: the punctuation that ends a sentence or precedes a message: ``url: error``).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]*[^\s'\"<>()\[\]{}:;,.]")


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
    return _URL_IN_TEXT.sub(lambda match: redact_url(match[0]), text)
