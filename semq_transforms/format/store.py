"""The versioned index layout on any fsspec URL, and the commit step of the two-level write.

An index is a prefix on any fsspec URL (a local path, ``file://``, ``memory://``, ``s3://``,
``gs://``, ...)::

    <prefix>/runs/<run_id>/shard-00000.semq        shard files, written by workers
    <prefix>/manifests/v00000001.manifest.arrow    one manifest per version, never overwritten
    <prefix>/_latest                               hint: the latest version number as text

Workers write shard files (:meth:`IndexStore.open_write` on :func:`shard_path`) and return
:class:`~semq_transforms.format.meta.ShardMeta`; one step then calls :meth:`IndexStore.commit`,
which checks the shard files, picks version ``parent + 1`` and creates that manifest with a
create-if-absent write (local files, ``memory://``, S3, GCS and Azure Blob have one; elsewhere
a commit is refused unless the caller accepts an unsafe one). If another writer created it first, the commit raises
:class:`~semq_transforms.errors.VersionConflictError` and the caller decides what to do (re-run
against the new latest). ``FORMAT.md`` beside this file ("Manifest and index layout") is the
specification.

Readers rely only on the manifests folder: :meth:`IndexStore.versions` lists it. ``_latest`` is a
hint that lets :meth:`IndexStore.latest_version` skip that listing; a missing, stale or garbage
hint changes nothing but speed.

Credentials: ``storage_options`` go to fsspec and nowhere else; nothing this module writes or
logs contains them.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from semq_transforms._urls import check_url_credentials, redact_url
from semq_transforms.errors import (
    FormatError,
    IndexNotFoundError,
    IntegrityError,
    InvalidInputError,
    RunFolderInUseError,
    UnsafeCommitError,
    VersionConflictError,
)
from semq_transforms.format.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    check_rel_path,
    check_run_id,
)
from semq_transforms.format.meta import ShardMeta
from semq_transforms.format.signing import (
    SIGNATURE_BYTES,
    check_signature,
    sign,
    signature_path,
)

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"
MANIFESTS_DIR = "manifests"
LATEST_HINT = "_latest"
_MANIFEST_NAME = re.compile(r"v([0-9]{8,19})\.manifest\.arrow")
#: A local commit's temporary file (see _create_local), and when a later commit removes one.
_TEMP_NAME = re.compile(r"\.v[0-9]{8,19}\.manifest\.arrow\.[0-9a-f]{32}\.tmp")
STALE_TEMP_SECONDS = 3600
_HINT_MAX_BYTES = 64
# memory:// is one dict per process: a process-wide lock makes its check-then-write exclusive.
_MEMORY_CREATE_LOCK = threading.Lock()
# errno values meaning "this filesystem has no hard links" (FAT, some FUSE and SMB mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS,
                  errno.EXDEV}


def shard_path(run_id: str, shard_no: int) -> str:
    """Relative path of shard ``shard_no`` (>= 0) of run ``run_id``:
    ``runs/<run_id>/shard-00000.semq`` (five digits, more when needed)."""
    if type(shard_no) is not int or shard_no < 0:
        raise FormatError(f"shard_no must be an int >= 0, got {shard_no!r}")
    return f"{RUNS_DIR}/{check_run_id(run_id)}/shard-{shard_no:05d}.semq"


def manifest_path(version: int) -> str:
    """Relative path of the manifest of ``version`` (>= 1): ``manifests/v00000001.manifest.arrow``
    (zero-padded to 8 digits so that a listing sorts by version)."""
    if type(version) is not int or not 1 <= version < 2**63:
        raise FormatError(f"version must be an int >= 1, got {version!r}")
    return f"{MANIFESTS_DIR}/v{version:08d}.manifest.arrow"


class IndexStore:
    """The files of one index under ``url``, on any fsspec filesystem.

    Args:
        url: the index prefix: a local path, ``file://...``, ``memory://...``, ``s3://bucket/
            prefix``, ``gs://...`` or any other fsspec URL.
        storage_options: passed to fsspec to build the filesystem (credentials, endpoint);
            kept in memory only, never written or logged.
        public_key: an Ed25519 public key (:func:`~semq_transforms.format.signing.
            load_public_key`): every manifest read must carry its valid signature
            (signed versions, ``signing.py``); None reads unsigned and signed alike.

    Paths given to the methods are relative to the prefix (``runs/r1/shard-00000.semq``) and
    are checked: no leading ``/``, no ``..``, no ``:``.
    """

    shard_path = staticmethod(shard_path)
    manifest_path = staticmethod(manifest_path)

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None,
                 public_key: Any = None) -> None:
        if not isinstance(url, str) or not url:
            raise FormatError(f"url must be a non-empty string, got {url!r}")
        try:
            check_url_credentials(url)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self.fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self.public_key = public_key
        self.root = root.rstrip("/") or "/"
        self.url = redact_url(url.rstrip("/") or url)

    def __repr__(self) -> str:
        return f"IndexStore({self.url!r})"

    # -- paths and files ------------------------------------------------------------------

    def _path(self, rel_path: str) -> str:
        check_rel_path(rel_path, "rel_path")
        return f"{self.root.rstrip('/')}/{rel_path}"

    def _full(self, rel_path: str) -> str:
        """The backend path of ``rel_path`` to read or write; on the local disk, refused
        (FormatError) when symbolic links lead it out of the index folder or in a loop."""
        full = self._path(rel_path)
        if isinstance(self.fs, LocalFileSystem):
            _check_inside(full, self.root, self.url_of(rel_path))
        return full

    def url_of(self, rel_path: str) -> str:
        """Full URL of ``rel_path`` (``s3://bucket/prefix/runs/...``, ``file:///...``)."""
        return redact_url(self.fs.unstrip_protocol(self._path(rel_path)))

    def exists(self, rel_path: str) -> bool:
        """Whether ``rel_path`` exists (asks the backend; no cached listing is used)."""
        full = self._full(rel_path)
        self.fs.invalidate_cache(full)
        return bool(self.fs.exists(full))

    def open_read(self, rel_path: str, *, size: int | None = None) -> IO[bytes]:
        """A binary file object reading ``rel_path`` (use as a context manager).

        ``size``: the size a manifest lists for the file; a file of any other size is
        refused before a byte of it is read, where the backend reports sizes (the caller
        reads at most ``size`` bytes either way).

        Raises:
            FileNotFoundError: nothing at ``rel_path``.
            FormatError: something that is not a regular file is (a directory, or a FIFO,
                whose read would wait forever for a writer), or a symbolic link leads out.
            IntegrityError: the file's size is not ``size``.
        """
        full = self._full(rel_path)
        self.fs.invalidate_cache(full)
        info = self.fs.info(full)
        if info.get("type") != "file":
            raise FormatError(f"{self.url_of(rel_path)} is not a regular file "
                              f"({info.get('type')})")
        actual = info.get("size")       # None: the backend does not say (an HTTP server)
        if size is not None and actual is not None and actual != size:
            raise IntegrityError(f"{self.url_of(rel_path)} is {actual} bytes, expected {size}")
        return self.fs.open(full, "rb")

    def read_bytes(self, rel_path: str, limit: int) -> bytes:
        """The whole of a small file (a manifest, a report, the hint): at most ``limit``
        bytes are read, in blocks; a longer file is a FormatError. Raises like
        :meth:`open_read`."""
        with self.open_read(rel_path) as f:
            data = read_at_most(f, limit + 1)
        if len(data) > limit:
            raise FormatError(f"{self.url_of(rel_path)} is over the {limit}-byte limit")
        return data

    def remove(self, rel_path: str) -> None:
        """Delete ``rel_path`` if it exists (for a run's own temporary files; committed
        manifests are never removed)."""
        full = self._full(rel_path)
        try:
            self.fs.rm_file(full)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(full)

    def open_write(self, rel_path: str) -> IO[bytes]:
        """A binary file object writing ``rel_path``, replacing any file there.

        For shard files (run-unique paths a retried worker may rewrite). Manifests are never
        written this way: :meth:`commit` uses :meth:`create_exclusive`.
        """
        full = self._full(rel_path)
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(posixpath.dirname(full), exist_ok=True)
        return self.fs.open(full, "wb")

    # -- versions -------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Committed versions, ascending, from a listing of the manifests folder.

        Files there that are not named ``vNNNNNNNN.manifest.arrow`` (temporary files of a local
        commit in progress) are ignored.
        """
        folder = self._full(MANIFESTS_DIR)
        try:
            names = self.fs.ls(folder, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _MANIFEST_NAME.fullmatch(posixpath.basename(str(name).rstrip("/")))
            if match:
                found.append(int(match.group(1)))
        return sorted(set(found))

    def latest_version(self) -> int | None:
        """The highest committed version, or None for an empty index.

        Reads the ``_latest`` hint first: when the hinted version exists and the next one does
        not, that is the answer (versions are contiguous, see FORMAT.md). Otherwise (no hint,
        garbage, stale) falls back to :meth:`versions`.
        """
        hinted = self._read_hint()
        if (hinted is not None and self.exists(manifest_path(hinted))
                and not self.exists(manifest_path(hinted + 1))):
            return hinted
        found = self.versions()
        return found[-1] if found else None

    def read_manifest(self, version: int | None = None) -> Manifest:
        """Read and verify the manifest of ``version`` (None: the latest).

        Raises:
            IndexNotFoundError: no manifest at all (None), or no such version.
            FormatError / IntegrityError: the manifest file is corrupt or unsupported.
        """
        if version is None:
            version = self.latest_version()
            if version is None:
                raise IndexNotFoundError(f"no index at {self.url}: no manifest under "
                                         f"{self.url_of(MANIFESTS_DIR)}/")
        rel_path = manifest_path(version)
        try:
            data = self.read_bytes(rel_path, MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            available = self.versions()
            raise IndexNotFoundError(
                f"version {version} not found at {self.url}; available versions: "
                f"{_describe_versions(available)}") from None
        source = self.url_of(rel_path)
        if self.public_key is not None:
            self._check_signature(rel_path, version, data, source)
        manifest = Manifest.from_bytes(data, source=source, max_bytes=MAX_MANIFEST_BYTES)
        if manifest.version != version:
            raise FormatError(f"manifest {source}: holds version {manifest.version}, its file "
                              f"name says {version}")
        return manifest

    def _check_signature(self, rel_path: str, version: int, data: bytes, source: str) -> None:
        try:
            signature: bytes | None = self.read_bytes(signature_path(rel_path, data),
                                                      SIGNATURE_BYTES + 1)
        except (FileNotFoundError, FormatError):
            signature = None
        check_signature(self.public_key, version, data, signature, source)

    def run_version(self, run_id: str, *, after: int = 0) -> Manifest | None:
        """The manifest of the newest committed version above ``after`` that uses the run
        folder ``runs/<run_id>/`` (its ``run_id`` is ``run_id``, or one of its shards lies
        there), or None when no such version does.

        Cheap when the folder does not exist (one existence check, no manifest read);
        otherwise reads manifests from the latest version down to ``after + 1`` until one
        uses the folder, so finding that none does (the rerun of a run that failed its gate)
        reads each of them once: a caller that already checked the versions up to some
        number passes it as ``after``. Works on any index: nothing but the manifests is
        consulted.
        """
        folder = f"{RUNS_DIR}/{check_run_id(run_id)}"
        if not self.exists(folder):
            return None
        prefix = f"{folder}/"
        for version in reversed([v for v in self.versions() if v > after]):
            manifest = self.read_manifest(version)
            if manifest.run_id == run_id or any(s.path.startswith(prefix)
                                                for s in manifest.shards):
                return manifest
        return None

    def refuse_published_run(self, run_id: str, *, after: int = 0) -> None:
        """Raise :class:`RunFolderInUseError` if a committed version (above ``after``: see
        :meth:`run_version`) uses ``runs/<run_id>/``: writing there would change files that
        version serves."""
        owner = self.run_version(run_id, after=after)
        if owner is not None:
            raise self.run_folder_in_use(run_id, owner.version)

    def run_folder_in_use(self, run_id: str, version: int, *, why: str = "",
                          remedy: str = "Use another run id") -> RunFolderInUseError:
        """The error for a run that would write into ``runs/<run_id>/``, which committed
        ``version`` uses; ``why`` (a parenthesis after the version) and ``remedy`` complete
        the message."""
        return RunFolderInUseError(
            f"run {run_id!r}: its run folder {self.url_of(f'{RUNS_DIR}/{run_id}')}/ holds the "
            f"files of published version {version}{f' ({why})' if why else ''}; writing there "
            f"would overwrite them. {remedy}", run_id=run_id, version=version)

    # -- writing --------------------------------------------------------------------------

    def exclusive_create(self) -> str | None:
        """How :meth:`create_exclusive` keeps two writers of one file apart on this store
        (``"os.link"``, ``"process lock"``, ``"If-None-Match"``, ``"ifGenerationMatch=0"``),
        or None where it cannot (any other fsspec backend)."""
        if isinstance(self.fs, LocalFileSystem):
            return "os.link"
        if isinstance(self.fs, MemoryFileSystem):
            return "process lock"
        protocols = _protocols(self.fs)
        if protocols & _S3_PROTOCOLS or protocols & _AZURE_PROTOCOLS:
            return "If-None-Match"
        if protocols & _GCS_PROTOCOLS:
            return "ifGenerationMatch=0"
        return None

    def check_commit(self, *, allow_unsafe: bool = False) -> None:
        """Raise :class:`UnsafeCommitError` if commits here could overwrite each other (no
        :meth:`exclusive_create`), unless ``allow_unsafe``; a job calls it before it writes
        anything."""
        if self.exclusive_create() is None and not allow_unsafe:
            raise UnsafeCommitError(
                f"{self.url}: the {_protocol(self.fs)!r} filesystem has no create-if-absent "
                f"write, so two jobs committing the same version could both succeed and the "
                f"later overwrite the earlier. Publish to a local path, s3://, gs:// or az://, "
                f"or accept the risk with allow_unsafe_commit (output.allow_unsafe_commit: "
                f"true) and never run two publishers of this index at once")

    def create_exclusive(self, rel_path: str, data: bytes, *,
                         allow_unsafe: bool = False) -> None:
        """Create ``rel_path`` with ``data`` if it does not exist; never overwrite.

        Per backend:

        * local files: write a uniquely named temporary file in the same folder, fsync it,
          then ``os.link`` it to ``rel_path``. ``link`` fails if the name exists (exclusive)
          and the file appears complete or not at all (atomic); plain ``O_CREAT | O_EXCL``
          would be exclusive too but lets a reader or a crash see a half-written file. On a
          filesystem without hard links, falls back to ``O_CREAT | O_EXCL``.
        * ``s3://`` (s3fs): opens with mode ``"xb"``, so s3fs sends ``If-None-Match: *`` with
          the PUT (or the multipart completion); the server answers 412 if the key exists.
          Needs a server that honours the header (AWS S3, MinIO, moto; one that ignores it
          would let the write overwrite).
        * ``gs://`` (gcsfs) and ``az://`` / ``abfs://`` (adlfs): ``pipe_file(mode="create")``,
          an upload with ``ifGenerationMatch=0`` (GCS) or ``If-None-Match: *`` (Azure Blob);
          the server refuses it if the object exists.
        * ``memory://``: check-then-write under a process-wide lock (the memory filesystem is
          one dict per process, so this is exclusive).
        * any other backend: refused (:meth:`check_commit`), unless ``allow_unsafe``: then
          check existence and write, with a warning. Two writers can both pass the check
          and the later write wins.

        Raises:
            VersionConflictError: ``rel_path`` already exists.
            UnsafeCommitError: the backend has no create-if-absent write and not
                ``allow_unsafe``.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        full = self._full(rel_path)
        kind = self.exclusive_create()
        if kind == "os.link":
            _create_local(full, bytes(data), self.url_of(rel_path))
        elif kind == "process lock":
            with _MEMORY_CREATE_LOCK:
                if self.fs.exists(full):
                    raise _exists_error(self.url_of(rel_path))
                self.fs.pipe_file(full, bytes(data))
        elif _protocols(self.fs) & _S3_PROTOCOLS:
            self._create_s3(full, bytes(data), self.url_of(rel_path))
        elif kind is not None:
            try:
                self.fs.pipe_file(full, bytes(data), mode="create")
            except FileExistsError:       # gcsfs's 412, adlfs's ResourceExistsError
                raise _exists_error(self.url_of(rel_path)) from None
            self.fs.invalidate_cache(full)
        else:
            self.check_commit(allow_unsafe=allow_unsafe)
            logger.warning(
                "%s: UNSAFE COMMIT (allow_unsafe_commit): the %r filesystem has no "
                "create-if-absent write; creating %s by check-then-write, which two concurrent "
                "writers can both pass (the later one overwrites). Run one committer at a "
                "time on this storage.", self.url, _protocol(self.fs), rel_path)
            self.fs.invalidate_cache(full)
            if self.fs.exists(full):
                raise _exists_error(self.url_of(rel_path))
            with self.fs.open(full, "wb") as f:
                f.write(data)

    def _create_s3(self, full: str, data: bytes, url: str) -> None:
        for attempt in range(3):
            try:
                with self.fs.open(full, "xb") as f:
                    f.write(data)
                return
            except FileExistsError as exc:  # s3fs's mapping of 412 on If-None-Match
                raise _exists_error(url) from exc
            except OSError as exc:
                code = _s3_error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    raise _exists_error(url) from exc
                # AWS answers 409 ConditionalRequestConflict while another conditional write
                # to the same key is in flight; retrying yields 200 or 412.
                if code == "ConditionalRequestConflict" and attempt < 2:
                    time.sleep(0.1 * (attempt + 1))
                    continue
                raise

    def commit(self, shards: Iterable[ShardMeta], *, dim: int, codecs: Sequence[str],
               run_id: str, parent_version: int | None | Literal["latest"] = "latest",
               input_fingerprint: str | None = None,
               allow_unsafe_commit: bool = False, signing_key: Any = None) -> Manifest:
        """Commit a new version listing ``shards``; return its manifest.

        Args:
            shards: what the shard writers returned; their files must already be written.
            dim, codecs: the version's dimension and codec specs (every shard must match).
            run_id: the ingestion run committing (``[A-Za-z0-9._-]``, names a folder).
            parent_version: ``"latest"`` (the current latest, or none for an empty index),
                ``None`` (no parent: this is version 1) or a committed version number.
            input_fingerprint: caller's identifier of the input data, stored as given.
            allow_unsafe_commit: commit on a backend without a create-if-absent write
                (:meth:`check_commit`), where two writers of one version can both succeed.
            signing_key: an Ed25519 private key (``signing.load_private_key``): the
                manifest's signature is written beside it first (signed versions).

        The new version is ``parent + 1``. Steps: validate the shard metadata; check that
        every shard file exists with ``file_bytes`` bytes (one listing per run folder); create
        the manifest with :meth:`create_exclusive`; then write the ``_latest`` hint (best
        effort). Nothing is retried or overwritten.

        Raises:
            FormatError: invalid shard metadata or arguments; a shard file is missing.
            IntegrityError: a shard file's size differs from its ``file_bytes``.
            IndexNotFoundError: ``parent_version`` is a number that is not committed.
            VersionConflictError: the version was committed by another writer first.
            UnsafeCommitError: the backend cannot commit safely (see ``allow_unsafe_commit``).
        """
        shards = tuple(shards)
        check_run_id(run_id)
        self.check_commit(allow_unsafe=allow_unsafe_commit)
        for shard in shards:
            if not isinstance(shard, ShardMeta):
                raise FormatError(f"commit takes ShardMeta objects, got {type(shard).__name__}")
            check_rel_path(shard.path, "shard path")
        self._check_shard_files(shards)

        if parent_version == "latest":
            parent = self.latest_version()
        elif parent_version is None:
            parent = None
        elif type(parent_version) is int and parent_version >= 1:
            if not self.exists(manifest_path(parent_version)):
                raise IndexNotFoundError(
                    f"parent_version {parent_version} is not committed at {self.url}; "
                    f"available versions: {_describe_versions(self.versions())}")
            parent = parent_version
        else:
            raise FormatError(f"parent_version must be 'latest', None or a committed version "
                              f">= 1, got {parent_version!r}")
        version = (parent or 0) + 1
        manifest = Manifest.new(version=version, dim=dim, codecs=codecs, shards=shards,
                                run_id=run_id, parent_version=parent,
                                input_fingerprint=input_fingerprint)
        data = manifest.to_bytes()
        if signing_key is not None:     # first: a visible signed version has its signature
            with self.open_write(signature_path(manifest_path(version), data)) as f:
                f.write(sign(signing_key, version, data))
        try:
            self.create_exclusive(manifest_path(version), data,
                                  allow_unsafe=allow_unsafe_commit)
        except VersionConflictError as exc:
            raise VersionConflictError(
                f"version {version} at {self.url} was committed by another writer; re-run "
                f"against the new latest (parent_version='latest')") from exc
        self._write_hint(version)
        logger.info("%s: committed version %d (run %s, %d shards, %d rows, digest %s)",
                    self.url, version, run_id, len(shards), manifest.rows, manifest.digest[:16])
        return manifest

    # -- internals ------------------------------------------------------------------------

    def _check_shard_files(self, shards: Sequence[ShardMeta]) -> None:
        by_folder: dict[str, list[ShardMeta]] = {}
        for shard in shards:
            by_folder.setdefault(posixpath.dirname(shard.path), []).append(shard)
        missing: list[str] = []
        wrong_size: list[str] = []
        for folder, members in by_folder.items():
            full = self._full(folder) if folder else self.root
            try:
                entries = self.fs.ls(full, detail=True, refresh=True)
            except FileNotFoundError:
                entries = []
            sizes = {posixpath.basename(str(e["name"]).rstrip("/")): e.get("size")
                     for e in entries if e.get("type") == "file"}
            for shard in members:
                size = sizes.get(posixpath.basename(shard.path))
                if size is None:
                    missing.append(shard.path)
                elif size != shard.file_bytes:
                    wrong_size.append(f"{shard.path} ({size} bytes, metadata says "
                                      f"{shard.file_bytes})")
        if missing:
            raise FormatError(f"cannot commit at {self.url}: {len(missing)} shard file(s) "
                              f"missing (upload not finished, or wrong path): "
                              f"{_first(missing)}")
        if wrong_size:
            raise IntegrityError(f"cannot commit at {self.url}: {len(wrong_size)} shard "
                                 f"file(s) differ in size from their metadata: "
                                 f"{_first(wrong_size)}")

    def _read_hint(self) -> int | None:
        try:
            text = self.read_bytes(LATEST_HINT, _HINT_MAX_BYTES)
        except (OSError, FormatError):  # missing, unreadable, too long or not a file: optional
            return None
        try:
            value = int(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            value = 0
        return value if 1 <= value < 2**63 - 1 else None

    def _write_hint(self, version: int) -> None:
        try:
            with self.open_write(LATEST_HINT) as f:
                f.write(f"{version}\n".encode("ascii"))
        except OSError as exc:  # the hint is an optimisation: never fail a commit over it
            logger.warning("%s: committed version %d but could not update the %s hint (%s); "
                           "readers are unaffected", self.url, version, LATEST_HINT, exc)


def read_at_most(f: IO[bytes], limit: int, block: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of ``f``, in blocks: ``f.read(limit)`` would allocate ``limit``
    bytes up front, whatever the file's size (a manifest may claim any size)."""
    parts = []
    got = 0
    while got < limit and (part := f.read(min(block, limit - got))):
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _check_inside(path: str, root: str, url: str) -> None:
    """Raise FormatError unless local ``path`` resolves (symbolic links followed) to a place
    inside folder ``root`` (itself resolved: an index folder may be a link). The check is
    of the path at this moment: a writer of the index folder could still swap a link
    between it and the open (the index folder is trusted not to race its readers)."""
    try:
        real = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        real = os.path.realpath(path)       # not there (yet): resolve what exists
    except OSError as exc:                  # ELOOP: a symbolic link loop
        raise FormatError(f"{url}: cannot resolve the path ({os.strerror(exc.errno or 0)})"
                          ) from None
    real_root = os.path.realpath(root)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise FormatError(f"{url}: a symbolic link leads outside the index folder "
                          f"{real_root}; refused")


def _create_local(path: str, data: bytes, url: str) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # Hidden, unique, never matching the manifest name pattern: listings ignore it.
    temp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        _write_new_file(temp, data)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise _exists_error(url) from None
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            try:  # no hard links here: exclusive, but not atomic for readers
                _write_new_file(path, data)
            except FileExistsError:
                raise _exists_error(url) from None
        _fsync_folder(folder)
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
    _remove_stale_temps(folder)


def _remove_stale_temps(folder: str) -> None:
    """Delete the temporary files that killed commits left in ``folder`` (listings ignore
    them; this keeps them from piling up), once :data:`STALE_TEMP_SECONDS` old: a live
    commit holds its own for well under a second."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:   # gone already, or not ours to delete: harmless either way
            pass


def _write_new_file(path: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o666)  # the umask applies, as for any other file
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exists_error(url: str) -> VersionConflictError:
    return VersionConflictError(f"{url} already exists; it is never overwritten")


_S3_PROTOCOLS = frozenset({"s3", "s3a"})
_GCS_PROTOCOLS = frozenset({"gs", "gcs"})
_AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return protocol if isinstance(protocol, str) else protocol[0]


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


def _s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an s3fs OSError (from the botocore error it was raised from)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            code = error.get("Code")
            if code:
                return str(code)
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _describe_versions(found: Sequence[int]) -> str:
    if not found:
        return "none"
    if list(found) == list(range(found[0], found[-1] + 1)) and len(found) > 3:
        return f"{found[0]}..{found[-1]}"
    return ", ".join(map(str, found))


def _first(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
