"""The project's exception hierarchy.

Every error the library raises on purpose derives from :class:`SemqError`, and each one also
derives from the matching built-in (``ValueError``, ``TypeError``, ``LookupError``) so callers
that already catch those keep working.
"""

from semq_transforms._urls import redact_text


class SemqError(Exception):
    """Base class of every error semq-transforms raises on purpose."""


class InvalidInputError(SemqError, ValueError):
    """Vectors, queries or codes handed to a codec are not what it takes."""


class InputDtypeError(InvalidInputError, TypeError):
    """An array has the wrong dtype (for example int64 where float32 is expected)."""


class InputShapeError(InvalidInputError):
    """An array has the wrong number of axes or the wrong dimension."""


class EmptyInputError(InvalidInputError):
    """An array has no rows or no columns."""


class NonFiniteError(InvalidInputError):
    """An array holds NaN or +/-Inf."""


class OutOfRangeError(InvalidInputError):
    """A finite value is too large for the codec's storage or for float32 arithmetic."""


class CodecConfigError(SemqError, ValueError):
    """A codec spec string or config dict is malformed."""


class UnknownCodecError(CodecConfigError, LookupError):
    """A codec id is not registered."""


class ParamsError(SemqError, ValueError):
    """Fitted parameters are malformed, corrupt, or belong to another codec or dimension."""


class CodesMismatchError(InvalidInputError):
    """Codes do not belong to the given parameters (wrong width, dtype or shape)."""


class FormatError(SemqError, ValueError):
    """A shard file, manifest or index layout is malformed, truncated, corrupt or of an
    unsupported version. Messages name the file and the part that is wrong."""


class IntegrityError(FormatError):
    """Stored digests do not match the content they cover."""


class VersionConflictError(SemqError, RuntimeError):
    """A manifest version to be committed already exists (another writer won the race)."""


class UnsafeCommitError(SemqError, RuntimeError):
    """The index's storage has no create-if-absent write, so a commit could silently overwrite
    another writer's version; refused unless the caller opts in (``allow_unsafe_commit``)."""


class IndexNotFoundError(SemqError, LookupError):
    """No index (or no such version) exists at the given URL."""


class ConfigError(SemqError, ValueError):
    """A job configuration file is unreadable or invalid. Messages name the file and the field
    path (``configs/x.yaml: validation.k: ...``) and never contain storage option values."""


class InputReadError(SemqError, OSError):
    """An input file of the ingestion pipeline cannot be read at all (missing, truncated, not of
    its format, a required column missing or of the wrong type). The message names the file,
    with the URLs in it redacted (``redact_url``: no signed-URL token or password)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))


class RunFolderInUseError(SemqError, RuntimeError):
    """An ingestion run would write into ``runs/<run_id>/``, the run folder of a committed
    index version, and so overwrite files that version serves. ``run_id`` and ``version``
    (the newest version using the folder) say which; the message says what to change."""

    def __init__(self, message: str, *, run_id: str, version: int) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.version = version


class NothingToPublishError(RunFolderInUseError):
    """The run folder belongs to the latest version, published from the same input
    fingerprint and the same config: the run would publish nothing new. Not a failure for a
    scheduler: ``python -m pipelines.ingest`` exits 0 on it."""
