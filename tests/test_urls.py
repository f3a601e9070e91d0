"""URL redaction in log records (``semq_transforms._urls.redact_log_records``), which the
job and the CLI install for their process."""

from __future__ import annotations

import logging

import pytest

from semq_transforms._urls import check_url_credentials, redact_log_records, redact_text

SIGNED = "https://host/e.parquet?X-Amz-Signature=TOKEN123"


def test_log_records_of_any_logger_are_redacted(caplog) -> None:
    """Message, arguments and traceback text of another library's log call come out
    redacted through any handler, and installing twice changes nothing."""
    previous = logging.getLogRecordFactory()
    try:
        redact_log_records()
        redact_log_records()
        caplog.set_level(logging.INFO)
        log = logging.getLogger("some.library")
        log.info("fetching %s from s3://%s@bucket/x", SIGNED, "AKIA:pw")
        try:
            raise RuntimeError(f"403, url='{SIGNED}'")
        except RuntimeError:
            log.exception("bundle failed for %s", SIGNED)
        text = caplog.text + "".join(logging.Formatter().format(r) for r in caplog.records)
        assert "TOKEN123" not in text and "AKIA:pw" not in text
        assert "https://host/e.parquet?***" in text and "s3://***@bucket/x" in text
        assert "RuntimeError: 403, url='https://host/e.parquet?***'" in text
    finally:
        logging.setLogRecordFactory(previous)


def test_a_malformed_log_call_is_redacted_too(capsys) -> None:
    """Arguments that do not fit the message: logging prints them itself (to stderr),
    unredacted, unless the record is redacted before."""
    previous = logging.getLogRecordFactory()
    handler = logging.StreamHandler()
    log = logging.getLogger("semq.test.malformed")
    log.addHandler(handler)
    try:
        redact_log_records()
        log.warning("one placeholder %s %s", SIGNED)  # noqa: PLE1206  (the point)
        err = capsys.readouterr().err
        assert "TOKEN123" not in err and "https://host/e.parquet?***" in err
    finally:
        log.removeHandler(handler)
        logging.setLogRecordFactory(previous)


@pytest.mark.parametrize("text", [
    "https://user:pa)SECRET@host/x",            # characters that end a URL in text
    "failed: 'gs://key:pw'SECRET@bucket/x'",
])
def test_user_info_is_masked_whatever_its_characters(text) -> None:
    assert "SECRET" not in redact_text(text)


@pytest.mark.parametrize("url", ["simplecache::s3://AKIA:SECRET@bucket/x",
                                 "s3://AKIA:SECRET@bucket/x", "az://user:SECRET@c/x",
                                 "file://u:SECRET@host/x"])
def test_credentials_in_any_part_of_a_url_are_refused(url) -> None:
    with pytest.raises(ValueError, match="take no credentials") as info:
        check_url_credentials(url)
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize("url", ["abfs://container@account.dfs.core.windows.net/x",
                                 "s3://bucket/path@v1/x", "https://user:pw@host/x"])
def test_urls_with_an_at_sign_that_is_not_a_secret_are_accepted(url) -> None:
    check_url_credentials(url)
