"""Which input format a file name implies: the one table of file suffixes, used by the job's
config, its readers and the command line's query files. No I/O (the readers fall back to a
file's first bytes when its name says nothing)."""

from __future__ import annotations

from typing import Literal

__all__ = ["SUFFIX_FORMATS", "FileFormat", "infer_format"]

FileFormat = Literal["parquet", "arrow", "npy"]

#: File suffixes (lower case) and the format each implies.
SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
    ".npy": "npy",
}


def infer_format(path: str) -> FileFormat | None:
    """The format ``path``'s name implies (its last component, a URL's query left out, case
    ignored), or None."""
    name = path.rstrip("/").rsplit("/", 1)[-1].partition("?")[0].lower()
    for suffix, fmt in SUFFIX_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None
