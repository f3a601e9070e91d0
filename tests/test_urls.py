"""URL redaction in log records (``semq_transforms._urls.redact_log_records``), which the
job and the CLI install for their process."""

from __future__ import annotations

import logging

from semq_transforms._urls import redact_log_records

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
