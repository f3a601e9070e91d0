"""``semq-index``: inspect, verify, search, restore, diff and list versions of an index.

Exit codes: 0 ok, 1 a check failed (``verify`` found problems), 2 could not run (bad
arguments, no index at the URL, unreadable or malformed files). ``--json`` prints one JSON
document on stdout; errors always go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from semq_transforms import __version__
from semq_transforms._urls import redact_log_records, redact_text
from semq_transforms.errors import SemqError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


def _storage_options(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(_fail(f"--storage-options is not JSON: {exc}"))
    if not isinstance(options, dict):
        raise SystemExit(_fail("--storage-options must be a JSON object"))
    return options


def _fail(message: str) -> int:
    print(f"semq-index: error: {redact_text(message)}", file=sys.stderr)
    return EXIT_CANNOT_RUN


def _open(args: argparse.Namespace, url: str | None = None, version: int | None = None):
    from semq_transforms.index import Index

    if version is None:
        version = getattr(args, "version", None)   # diff has no --version: its own two
    return Index.open(url or args.url, version,
                      storage_options=_storage_options(args.storage_options),
                      public_key=_public_key(args.public_key))


def _public_key(path: str | None) -> Any:
    """The Ed25519 public key in the PEM file at ``path`` (None: no signature required)."""
    if path is None:
        return None
    from semq_transforms.format.signing import load_public_key

    try:
        with open(path, "rb") as f:
            return load_public_key(f.read(64 << 10))
    except OSError as exc:
        raise SystemExit(_fail(f"--public-key {path}: {exc.strerror or exc}")) from None


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str) if args.json else text)


# -- commands -----------------------------------------------------------------------------------

def cmd_versions(args: argparse.Namespace) -> int:
    from semq_transforms.format.store import IndexStore

    versions = IndexStore(args.url, storage_options=_storage_options(args.storage_options)
                          ).versions()
    _emit(args, {"url": args.url, "versions": versions},
          "\n".join(str(v) for v in versions) or "(no versions)")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    index = _open(args)
    m = index.manifest
    shards = [{"path": s.path, "rows": s.rows, "file_bytes": s.file_bytes,
               "codecs": list(s.codecs), "id_min": s.id_min, "id_max": s.id_max,
               "validation": dict(s.validation)} for s in m.shards]
    payload = {"url": index.url, "version": m.version, "rows": m.rows, "dim": m.dim,
               "codecs": list(m.codecs), "run_id": m.run_id, "parent_version": m.parent_version,
               "created_by": m.created_by, "created_at": m.created_at,
               "input_fingerprint": m.input_fingerprint, "digest": m.digest, "shards": shards}
    stored = sum(s.file_bytes for s in m.shards)
    lines = [(f"{index.url} version {m.version}: {m.rows} rows, dim {m.dim}, "
             f"codecs {' > '.join(m.codecs)}, {len(shards)} shards, {stored} bytes"),
             f"run {m.run_id}, parent {m.parent_version}, {m.created_by}, {m.created_at}"]
    lines += [f"  {s['path']}: {s['rows']} rows, {s['file_bytes']} bytes" for s in shards]
    _emit(args, payload, "\n".join(lines))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    report = _open(args).verify()
    lines = [f"{report.url} version {report.version}: {report.shards_checked} shards checked, "
             + ("OK" if report.ok else f"{len(report.problems)} problem(s)")]
    lines += [f"  {p.path}: {p.problem}" for p in report.problems]
    _emit(args, report.to_json(), "\n".join(lines))
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def cmd_search(args: argparse.Namespace) -> int:
    try:
        queries = np.load(args.queries, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return _fail(f"cannot read queries {args.queries!r}: {exc}")
    if queries.ndim == 1:
        queries = queries[None, :]
    index = _open(args)
    scores, ids = index.search(queries, args.k, rerank=args.rerank,
                               deterministic=args.deterministic)
    results = [[{"id": i.item() if hasattr(i, "item") else i, "score": float(s)}
                for i, s in zip(row_ids, row_scores)]
               for row_ids, row_scores in zip(ids, scores)]
    text = "\n".join(f"query {q}: " + ", ".join(f"{r['id']} ({r['score']:.4f})" for r in row)
                     for q, row in enumerate(results))
    _emit(args, {"url": index.url, "version": index.version, "k": args.k,
                 "results": results}, text)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    index = _open(args)
    rows = index.export_parquet(args.out, level=args.level,
                                storage_options=_storage_options(args.out_storage_options))
    _emit(args, {"url": index.url, "version": index.version, "out": args.out, "rows": rows},
          f"wrote {rows} restored vectors to {args.out}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from semq_transforms.format.store import IndexStore

    if args.base is None or args.other is None:
        versions = IndexStore(args.url, storage_options=_storage_options(args.storage_options)
                              ).versions()
        if args.other is None and args.other_url is None:
            args.other = versions[-1] if versions else None
        if args.base is None:
            earlier = [v for v in versions if args.other_url or args.other is None
                       or v < args.other]
            args.base = earlier[-1] if earlier else None
        if args.base is None or (args.other is None and args.other_url is None):
            return _fail(f"{args.url} needs two versions to diff; it has {versions}")
    base = _open(args, version=args.base)
    other = _open(args, url=args.other_url or args.url, version=args.other)
    report = base.diff(other, k=args.k, sample_queries=args.sample_queries)
    payload = report.to_json()
    overlap = ("n/a" if report.neighbor_overlap is None
               else f"{report.neighbor_overlap:.4f}")
    text = (f"version {base.version} -> {other.version}: +{report.added.size} added, "
            f"-{report.removed.size} removed, {report.changed.size} changed; drift mean "
            f"{report.drift_mean:.4g}, max {report.drift_max:.4g}; neighbor overlap@{args.k} "
            f"{overlap}")
    _emit(args, payload, text)
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semq-index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version-info", action="version",
                        version=f"semq-transforms {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help_text: str, *, version: bool = True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("url", help="index URL (a local path, file://, memory://, s3://, gs://)")
        if version:
            p.add_argument("--version", type=int, default=None,
                           help="manifest version to open (default: the latest)")
        p.add_argument("--storage-options", default=None, metavar="JSON",
                       help="fsspec storage options as a JSON object (credentials are better "
                            "left to the environment, e.g. AWS_* variables)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--public-key", default=None, metavar="PEM",
                       help="Ed25519 public key file: open only versions signed by its "
                            "private key (an unsigned or re-signed manifest is refused)")
        p.set_defaults(func=func)
        return p

    command("versions", cmd_versions, "list the committed versions", version=False)
    command("inspect", cmd_inspect, "show the manifest: rows, codecs, shards")
    command("verify", cmd_verify, "check every shard against its digests and the manifest "
                                  "(exit 1 if anything is wrong)")
    p = command("search", cmd_search, "search with float queries from a .npy file")
    p.add_argument("--queries", required=True, help=".npy file, float32 [nq, d] or [d]")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--rerank", type=int, default=None,
                   help="candidates re-scored per query and shard (default 10*k)")
    p.add_argument("--deterministic", action="store_true",
                   help="exact scores: the same results on every machine (about 2x slower)")
    p = command("restore", cmd_restore, "write restored vectors to Parquet")
    p.add_argument("--out", required=True, help="destination Parquet URL")
    p.add_argument("--level", type=int, default=-1, help="code level (default: the finest)")
    p.add_argument("--out-storage-options", default=None, metavar="JSON")
    p = command("diff", cmd_diff, "compare two versions (ids, vector drift, neighbors)",
                version=False)
    p.add_argument("--base", type=int, default=None, help="base version (default: latest-1)")
    p.add_argument("--other", type=int, default=None, help="other version (default: latest)")
    p.add_argument("--other-url", default=None, help="compare with another index instead")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--sample-queries", type=int, default=100)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    redact_log_records()       # a library's log line may quote a URL with its credentials
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SemqError as exc:
        return _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - storage libraries raise their own types
        return _fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
