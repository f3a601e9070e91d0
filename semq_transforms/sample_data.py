"""A small, deterministic embedding dataset for the local default run (``configs/local.yaml``).

:func:`write_sample_embeddings` generates clustered, unit-norm float32 vectors shaped like
sentence embeddings and writes them as Parquet files (``id: int64``,
``embedding: fixed_size_list<float32>[dim]``). :func:`ensure_sample_data` does it only when
nothing matches a glob yet; ``pipelines.ingest`` calls it for configs with
``input.generate_sample: true``, so a fresh clone runs with no network and no ``../shared``.

The data (``n_clusters = min(256, rows)`` clusters, in a latent basis, then rotated):

* a common offset shared by every vector (sentence embeddings sit in a narrow cone: random
  pairs have cosine ~0.3, not 0);
* cluster centers with a decaying spectrum (a few directions carry most of the variance);
* per cluster an anisotropic spread: the global decaying spectrum times a per-cluster,
  per-axis log-normal factor, times a per-cluster radius; cluster sizes from a Dirichlet
  draw, so some topics are large and some are rare;
* a fixed random rotation, so the principal axes are not the coordinate axes, then each row
  scaled to unit L2 norm.

Determinism: the same arguments give byte-identical files for a given numpy and pyarrow
version. The rotation is a product of Givens rotations applied with elementwise float64 ops
(no BLAS, whose summation order depends on the library and thread count), and row norms are
accumulated column by column in a fixed order, so the values do not depend on the machine's
BLAS. Files are written under a temporary name and renamed, so an interrupted run never
leaves a partial ``part-*.parquet``.
"""

from __future__ import annotations

import glob as _glob
import posixpath
import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import split_protocol

from semq_transforms.errors import InvalidInputError

__all__ = ["SAMPLE_CLUSTERS", "ensure_sample_data", "sample_embeddings",
           "write_sample_embeddings"]

#: Number of clusters (topics) in the sample, capped at the number of rows.
SAMPLE_CLUSTERS = 256
#: Rows per Parquet row group.
ROW_GROUP_ROWS = 4096
#: Layers of random Givens rotations (each layer pairs up all axes).
_ROTATION_LAYERS = 12

# Shape of the distribution, as norms relative to a unit-variance axis.
_OFFSET_NORM = 0.75       # the common direction (cone)
_CENTER_SCALE = 1.0       # spread of cluster centers
_SPREAD_SCALE = 0.55      # spread of points around their center
_SPECTRUM_DECAY = 12.0    # axis j has scale exp(-j / (dim / _SPECTRUM_DECAY)) ** 0.5


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _givens_rotate(xt: np.ndarray, rng: np.random.Generator, layers: int) -> None:
    """Rotate the vectors stored as the *columns* of float64 ``xt`` (``[dim, rows]``) in place
    by ``layers`` layers of random Givens rotations over random pairings of the axes.
    Elementwise ops only, so the result does not depend on BLAS or threads."""
    d = xt.shape[0]
    for _ in range(layers):
        perm = rng.permutation(d)
        a, b = perm[: d // 2], perm[d // 2: 2 * (d // 2)]
        theta = rng.uniform(0.0, 2.0 * np.pi, size=(d // 2, 1))
        c, s = np.cos(theta), np.sin(theta)
        xa, xb = xt[a], xt[b]
        xt[a] = c * xa - s * xb
        xt[b] = s * xa + c * xb


def _column_norms(xt: np.ndarray) -> np.ndarray:
    """L2 norms of the columns of float64 ``xt``, summed axis by axis in a fixed order."""
    acc = np.zeros(xt.shape[1], dtype=np.float64)
    for row in xt:
        acc += row * row
    return np.sqrt(acc)


def sample_embeddings(rows: int = 20_000, dim: int = 384, *, seed: int = 0) -> np.ndarray:
    """The sample vectors as a float32 ``[rows, dim]`` array of unit-norm rows (in memory;
    :func:`write_sample_embeddings` writes exactly these, ids ``0..rows-1`` in order)."""
    rows = _check_int("rows", rows, 1)
    dim = _check_int("dim", dim, 2)
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    n_clusters = min(SAMPLE_CLUSTERS, rows)

    spectrum = np.exp(-np.arange(dim) / (dim / _SPECTRUM_DECAY)) ** 0.5
    spectrum /= np.sqrt(np.mean(spectrum * spectrum))          # mean axis variance 1
    offset = rng.standard_normal(dim)
    offset *= _OFFSET_NORM * np.sqrt(dim) / np.sqrt(np.sum(offset * offset))
    centers = offset + _CENTER_SCALE * rng.standard_normal((n_clusters, dim)) * spectrum
    shapes = spectrum * np.exp(0.5 * rng.standard_normal((n_clusters, dim)))
    radii = _SPREAD_SCALE * rng.uniform(0.6, 1.4, size=(n_clusters, 1))
    weights = rng.dirichlet(np.full(n_clusters, 1.5))
    assignment = rng.choice(n_clusters, size=rows, p=weights)
    assignment[:n_clusters] = rng.permutation(n_clusters)      # every cluster appears

    x = centers[assignment] + (radii * shapes)[assignment] * rng.standard_normal((rows, dim))
    xt = np.ascontiguousarray(x.T)          # [dim, rows]: the rotation gathers whole rows
    del x
    _givens_rotate(xt, rng, _ROTATION_LAYERS)
    xt /= _column_norms(xt)
    return np.ascontiguousarray(xt.T, dtype=np.float32)


def _table(ids: np.ndarray, x: np.ndarray) -> pa.Table:
    dim = x.shape[1]
    values = pa.array(x.reshape(-1), type=pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(values, dim)
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False),
                        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False)])
    return pa.Table.from_arrays([pa.array(ids, type=pa.int64()), embedding], schema=schema)


def write_sample_embeddings(dest_dir: str, *, rows: int = 20_000, dim: int = 384,
                            seed: int = 0, files: int = 4) -> list[str]:
    """Write the sample as ``files`` Parquet files ``part-00000.parquet``, ... in ``dest_dir``.

    Args:
        dest_dir: a local folder or any fsspec URL (created if missing).
        rows, dim, seed: see :func:`sample_embeddings`.
        files: number of files; rows are split into contiguous, nearly equal parts.
    Returns:
        The written file paths, in order, spelled like ``dest_dir`` (``dest_dir/part-...``).
    """
    files = _check_int("files", files, 1)
    rows = _check_int("rows", rows, 1)
    if files > rows:
        raise InvalidInputError(f"files ({files}) must not exceed rows ({rows})")
    x = sample_embeddings(rows, dim, seed=seed)
    ids = np.arange(rows, dtype=np.int64)

    dest = str(dest_dir).rstrip("/") or "/"
    fs, root = fsspec.core.url_to_fs(dest)
    fs.makedirs(root, exist_ok=True)
    bounds = [rows * number // files for number in range(files + 1)]
    written: list[tuple[str, str]] = []
    tag = uuid.uuid4().hex[:12]
    try:
        for number in range(files):
            start, stop = bounds[number], bounds[number + 1]
            name = f"part-{number:05d}.parquet"
            tmp = posixpath.join(root, f".{name}.{tag}.tmp")
            with fs.open(tmp, "wb") as f:
                pq.write_table(_table(ids[start:stop], x[start:stop]), f,
                               row_group_size=ROW_GROUP_ROWS, compression="snappy",
                               write_statistics=True)
            written.append((tmp, name))
        for tmp, name in written:
            fs.mv(tmp, posixpath.join(root, name))
    except BaseException:
        for tmp, _ in written:
            if fs.exists(tmp):
                fs.rm(tmp)
        raise
    return [posixpath.join(dest, name) for _, name in written]


def ensure_sample_data(path_glob: str, **kwargs: Any) -> list[str]:
    """The files matching ``path_glob``; when none match, first write the sample there.

    ``path_glob`` is a local path or fsspec URL whose last component may be a glob
    (``data/sample/*.parquet``); the files go into its folder, which must not contain
    wildcards. ``kwargs`` go to :func:`write_sample_embeddings` (``rows``, ``dim``, ``seed``,
    ``files``). Existing files are never checked or replaced.

    Returns:
        The matching files, sorted: absolute paths for a local ``path_glob``, URLs spelled
        like ``path_glob``'s folder otherwise (``memory://x/part-00000.parquet``).
    """
    fs, pattern = fsspec.core.url_to_fs(path_glob)
    found = _matches(fs, path_glob, pattern)
    if found:
        return found
    folder, last = posixpath.split(str(path_glob))
    if _glob.has_magic(folder) or not last:
        raise InvalidInputError(f"cannot generate sample data for {path_glob!r}: give a folder "
                                f"without wildcards and a file pattern such as *.parquet")
    write_sample_embeddings(folder or ".", **kwargs)
    found = _matches(fs, path_glob, pattern)
    if not found:
        raise InvalidInputError(f"wrote the sample dataset into {folder!r}, but its files "
                                f"(part-NNNNN.parquet) do not match {path_glob!r}")
    return found


def _matches(fs: fsspec.AbstractFileSystem, original: str, pattern: str) -> list[str]:
    """Sorted files matching ``pattern`` on ``fs``, spelled as :func:`ensure_sample_data`
    documents."""
    if _glob.has_magic(pattern):
        paths = sorted(p for p in fs.glob(pattern) if fs.isfile(p))
    else:
        paths = [pattern] if fs.isfile(pattern) else []
    if split_protocol(str(original))[0] is None:
        return paths
    folder, last = posixpath.split(str(original))
    if _glob.has_magic(folder) or "**" in last:
        return [fs.unstrip_protocol(p) for p in paths]
    return [posixpath.join(folder, posixpath.basename(p)) for p in paths]
