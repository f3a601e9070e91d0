"""semq-index: list the versions of an index, inspect, verify, search, restore and diff them;
tune: compare codecs on a sample of your own vectors.

Exit codes: 0 ok, 1 a check failed (verify found problems, a version's manifest is
unreadable), 2 could not run (bad arguments, no index at the URL, unreadable or malformed
files), 141 the output's reader went away (a pipe into head closed early). --json prints one
JSON document on stdout; errors go to stderr and name the URL they concern.

Nothing here imports Apache Beam (its import logs warnings a reader of an index cannot act
on): run reports are read with ``semq_transforms.report.files``, which the job uses too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from semq_transforms import __version__
from semq_transforms._urls import redact_log_records, redact_text, redact_url
from semq_transforms.errors import SemqError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
#: Exit code when stdout is a pipe closed by its reader (128 + SIGPIPE, as a shell reports
#: a command killed by the signal).
EXIT_BROKEN_PIPE = 141
#: Column names ``restore`` writes when the version's run report does not name them: the
#: ingestion job's defaults (``input.id_column``, ``input.vector_column``).
DEFAULT_ID_COLUMN, DEFAULT_VECTOR_COLUMN = "id", "embedding"


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


def _store(args: argparse.Namespace):
    from semq_transforms.format.store import IndexStore

    return IndexStore(args.url, storage_options=_storage_options(args.storage_options),
                      public_key=_public_key(args.public_key))


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


def _no_index(store) -> str:
    """Why there is no index at ``store``'s URL (no folder, or no manifest in it)."""
    if not store.fs.exists(store.root):
        return f"no index at {store.url}: it does not exist"
    return f"no index at {store.url}: no manifest under {store.url_of('manifests')}/"


class _OutputClosed(Exception):
    """The reader of stdout went away (a pipe closed early: ``| head -1``)."""


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    try:
        print(json.dumps(payload, indent=2, sort_keys=True, default=str) if args.json else text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise _OutputClosed from None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as text columns, left-aligned text and right-aligned numbers."""
    cells = [list(header)] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               and any(row[i] is not None for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if num else c.ljust(w)
                               for c, w, num in zip(row, widths, numeric)).rstrip()
                     for row in cells)


def _run_report(store, manifest) -> dict[str, Any] | None:
    """The report (``runs/<run_id>/report.json``) of the job run that published
    ``manifest``, or None: no report (an index built with ``build_index``), unreadable, or
    of another attempt of that run (its ``version`` is not the manifest's)."""
    from semq_transforms.report.files import read_report

    try:
        report = read_report(store, manifest.run_id)
    except (OSError, SemqError, RecursionError):
        return None
    if not isinstance(report, dict) or report.get("version") != manifest.version or type(
            report.get("version")) is not int:
        return None
    return report


def _recall(report: dict[str, Any] | None) -> tuple[float | None, int | None]:
    """(recall@k, k) of a run report's validation, each None when not there."""
    validation = (report or {}).get("validation")
    if not isinstance(validation, dict):
        return None, None
    recall, k = validation.get("recall_at_k"), validation.get("k")
    ok = type(recall) in (int, float) and math.isfinite(recall) and 0 <= recall <= 1
    return (float(recall) if ok else None), (k if type(k) is int else None)


# -- commands -----------------------------------------------------------------------------------

def cmd_versions(args: argparse.Namespace) -> int:
    store = _store(args)
    numbers = store.versions()
    if not numbers:
        return _fail(_no_index(store))
    versions = []
    for number in numbers:
        try:
            manifest = store.read_manifest(number)
        except SemqError as exc:
            versions.append({"version": number, "error": str(exc)})
            continue
        recall, k = _recall(_run_report(store, manifest))
        versions.append({"version": number, "created_at": manifest.created_at,
                         "rows": manifest.rows, "shards": len(manifest.shards),
                         "run_id": manifest.run_id, "recall_at_k": recall, "k": k})
    rows = [[v["version"], v["created_at"][:19] + "Z", v["rows"], v["shards"], v["run_id"],
             None if v["recall_at_k"] is None else f"{v['recall_at_k']:.4f} (k={v['k']})"]
            if "error" not in v else [v["version"], "unreadable:", v["error"]]
            for v in versions]
    good = [r for r in rows if len(r) == 6]
    text = _table(["version", "created", "rows", "shards", "run", "recall@k"], good)
    text += "".join(f"\n{r[0]}  {r[1]} {r[2]}" for r in rows if len(r) != 6)
    _emit(args, {"url": store.url, "versions": versions}, text)
    return EXIT_CHECK_FAILED if len(good) < len(rows) else EXIT_OK


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
    from semq_transforms._queries import load_queries, parse_ids, restored_queries
    from semq_transforms.codecs import check_vectors

    if args.query_ids is not None:
        if args.query_column is not None:
            return _fail("--query-column is for --queries files, not --query-ids")
        index = _open(args)
        labels: list[Any] = parse_ids(args.query_ids, index.id_type)
        queries = restored_queries(index, labels)
        name = f"vectors of --query-ids in {index.url}"
    else:
        queries = load_queries(args.queries, column=args.query_column)
        labels = list(range(queries.shape[0]))
        name = f"queries {redact_url(args.queries)}"
        index = _open(args)
    queries = check_vectors(queries, name, dim=index.dim)
    scores, ids = index.search(queries, args.k, rerank=args.rerank,
                               deterministic=args.deterministic)
    results = [[{"id": i.item() if hasattr(i, "item") else i, "score": float(s)}
                for i, s in zip(row_ids, row_scores)]
               for row_ids, row_scores in zip(ids, scores)]
    text = "\n".join(f"query {q}: " + ", ".join(f"{r['id']} ({r['score']:.4f})" for r in row)
                     for q, row in zip(labels, results))
    _emit(args, {"url": index.url, "version": index.version, "k": args.k,
                 "queries": labels, "results": results}, text)
    return EXIT_OK


def _column_names(args: argparse.Namespace, index) -> tuple[str, str]:
    """(id column, vector column) for ``restore``: the options, else the input columns of
    the job run that published the version (its report's config), else the job's defaults."""
    source = (_run_report(_store(args), index.manifest) or {}).get("config")
    source = source.get("input") if isinstance(source, dict) else None
    source = source if isinstance(source, dict) else {}

    def name(given: str | None, key: str, default: str) -> str:
        if given is not None:
            return given
        value = source.get(key)
        return value if isinstance(value, str) and 0 < len(value) <= 256 else default

    return (name(args.id_column, "id_column", DEFAULT_ID_COLUMN),
            name(args.vector_column, "vector_column", DEFAULT_VECTOR_COLUMN))


def cmd_restore(args: argparse.Namespace) -> int:
    index = _open(args)
    id_column, vector_column = _column_names(args, index)
    if not id_column or not vector_column or id_column == vector_column:
        return _fail(f"--id-column and --vector-column must be two different non-empty names, "
                     f"got {id_column!r} and {vector_column!r}")
    rows = index.export_parquet(args.out, level=args.level,
                                storage_options=_storage_options(args.out_storage_options),
                                id_column=id_column, vector_column=vector_column)
    out = redact_url(args.out)
    _emit(args, {"url": index.url, "version": index.version, "out": out, "rows": rows,
                 "id_column": id_column, "vector_column": vector_column},
          f"wrote {rows} restored vectors to {out} (columns {id_column}, {vector_column})")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    if args.base is None or args.other is None:
        store = _store(args)
        versions = store.versions()
        if not versions:
            return _fail(_no_index(store))
        if args.other is None and args.other_url is None:
            args.other = versions[-1]
        if args.base is None:
            earlier = [v for v in versions if args.other_url or args.other is None
                       or v < args.other]
            args.base = earlier[-1] if earlier else None
        if args.base is None or (args.other is None and args.other_url is None):
            return _fail(f"{store.url} needs two versions to diff; it has {versions}")
    base = _open(args, version=args.base)
    other = _open(args, url=args.other_url or args.url, version=args.other)
    report = base.diff(other, k=args.k, sample_queries=args.sample_queries)
    payload = report.to_json()
    overlap = ("n/a" if report.neighbor_overlap is None
               else f"{report.neighbor_overlap:.4f}")
    head = (f"version {base.version} -> {other.version}: +{report.added.size} added, "
            f"-{report.removed.size} removed, ")
    if report.fingerprints:     # changed = the input vector changed (input fingerprints)
        changed, unchanged = report.drift_changed, report.drift_unchanged
        lines = [head + (f"{report.changed.size} changed input, {report.unchanged.size} "
                         f"unchanged"),
                 (f"drift of changed rows: mean {changed.mean:.4g}, max {changed.max:.4g}; "
                  f"of unchanged rows: mean {unchanged.mean:.4g}, max {unchanged.max:.4g}")]
    else:
        lines = [head + (f"{report.changed.size} changed (restored vectors differ), "
                         f"{report.unchanged.size} unchanged"),
                 f"drift: mean {report.drift_mean:.4g}, max {report.drift_max:.4g}",
                 f"note: {report.note}"]
    lines.append(f"neighbor overlap@{args.k}: {overlap}")
    _emit(args, payload, "\n".join(lines))
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from semq_transforms import tune
    from semq_transforms.codecs import check_vectors
    from semq_transforms.report.units import human_bytes, human_count

    for name, value in (("--sample", args.sample), ("--queries", args.held_out), ("-k", args.k)):
        if value < 1:
            return _fail(f"{name} must be at least 1, got {value}")
    if args.rerank is not None and args.rerank < 0:
        return _fail(f"--rerank must be at least 0, got {args.rerank}")
    if not 0 <= args.target <= 1:
        return _fail(f"--target is a recall in [0, 1], got {args.target}")
    try:
        candidates = tune.parse_candidates(args.codecs)
    except SemqError as exc:
        return _fail(str(exc))
    where = redact_url(args.url)
    x = check_vectors(tune.load_data(args.url, column=args.column), f"data {where}")
    corpus, queries = tune.split_sample(x.shape[0], args.sample, args.held_out, args.seed)
    if corpus.size < args.k:
        return _fail(f"data {where}: {x.shape[0]} rows leave {corpus.size} corpus rows beside "
                     f"{queries.size} held-out queries, fewer than -k {args.k}")
    rerank = min(tune.DEFAULT_RERANK_FACTOR * args.k if args.rerank is None else args.rerank,
                 corpus.size)
    rows = tune.evaluate(x[corpus], x[queries], candidates, args.k, rerank=rerank)
    choice = tune.choose(rows, args.target)
    if args.plot:
        try:
            with open(args.plot, "w", encoding="utf-8") as f:
                f.write(tune.tune_svg(rows, k=args.k, target=args.target))
        except OSError as exc:
            return _fail(f"--plot {args.plot}: {exc.strerror or exc}")
    k = args.k
    cells = [[r.name, f"{r.bits_per_dim:.2f}", f"{r.recall_at_k:.4f}",
              human_bytes(r.params_bytes), f"{r.bits_per_dim_all_in:.2f}",
              f"{r.fit_encode_seconds:.2f}", "*" if r.pareto else ""] for r in rows]
    for i in range(1, 6):               # numbers right-aligned
        width = max(len(c[i]) for c in cells)
        cells = [c[:i] + [c[i].rjust(width)] + c[i + 1:] for c in cells]
    lines = [(f"{where}: {human_count(x.shape[0])} rows of dim {x.shape[1]}; corpus "
              f"{human_count(corpus.size)} rows, {human_count(queries.size)} held-out queries "
              f"(seed {args.seed}); recall@{k} against exact search, rerank {rerank}"),
             _table(["candidate", "bits/dim", f"recall@{k}", "params/shard", "all-in bits/dim",
                     "fit+encode s", "pareto"], cells),
             (f"pareto *: no other candidate is at most as large and at least as good "
              f"(bits/dim, recall@{k})"),
             (f"all-in: codes and params of one shard of {human_count(corpus.size)} rows "
              f"(params weigh less in larger shards)"),
             (f"smallest reaching recall@{k} >= {args.target:g}: {choice.name} "
              f"({choice.bits_per_dim:.2f} bits/dim, recall@{k} {choice.recall_at_k:.4f})"
              if choice else f"no candidate reaches recall@{k} >= {args.target:g}")]
    if args.plot:
        lines.append(f"plot: {args.plot}")
    _emit(args, {"data": where, "rows": x.shape[0], "dim": x.shape[1],
                 "corpus_rows": int(corpus.size), "query_rows": int(queries.size),
                 "seed": args.seed, "k": k, "rerank": rerank, "target": args.target,
                 "candidates": [r.to_json() for r in rows],
                 "choice": choice.name if choice else None, "plot": args.plot},
          "\n".join(lines))
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semq-index", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[1])
    parser.add_argument("--version-info", action="version",
                        version=f"semq-transforms {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; semq-index COMMAND --help lists its options")

    def command(name: str, func, help_text: str, *, version: bool = True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("url", help="index URL (a local path, file://, memory://, s3://, gs://)")
        if version:
            p.add_argument("--version", type=int, default=None,
                           help="manifest version to open (default: the latest)")
        p.add_argument("--storage-options", default=None, metavar="JSON",
                       help="fsspec storage options as a JSON object (credentials are better "
                            "left to the environment, e.g. AWS_* variables)")
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("--public-key", default=None, metavar="PEM",
                       help="Ed25519 public key file: open only versions signed by its "
                            "private key (an unsigned or re-signed manifest is refused)")
        p.set_defaults(func=func)
        return p

    command("versions", cmd_versions, "list the committed versions: created, rows, shards, "
                                      "run, validation recall (from the run's report)",
            version=False)
    command("inspect", cmd_inspect, "show the manifest: rows, codecs, shards")
    command("verify", cmd_verify, "check every shard against its digests and the manifest "
                                  "(exit 1 if anything is wrong)")
    p = command("search", cmd_search, "search with float query vectors from a file, or with "
                                      "the stored vectors of some ids")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--queries", metavar="FILE",
                      help="query vectors: .npy (float [nq, d] or [d]), or .parquet, .arrow, "
                           ".feather with a list-of-float column")
    what.add_argument("--query-ids", action="append", metavar="ID[,ID...]",
                      help="query with the vectors of these ids, restored from the index: "
                           "ints or strings, as the index's ids (repeatable)")
    p.add_argument("--query-column", default=None, metavar="NAME",
                   help="the vector column of a Parquet or Arrow queries file (default: its "
                        "only list-of-float column)")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--rerank", type=int, default=None, metavar="N",
                   help="candidates re-scored per query and shard (default 10*k)")
    p.add_argument("--deterministic", action="store_true",
                   help="exact scores: the same results on every machine (about 2x slower)")
    p = command("restore", cmd_restore, "write the restored vectors to a Parquet file")
    p.add_argument("--out", required=True, metavar="URL",
                   help="destination Parquet file (a path or any fsspec URL)")
    p.add_argument("--level", type=int, default=-1,
                   help="code level to restore from (default -1: the finest)")
    p.add_argument("--id-column", default=None, metavar="NAME",
                   help="name of the id column written (default: the input's, from the report "
                        f"of the run that built the version; else {DEFAULT_ID_COLUMN})")
    p.add_argument("--vector-column", default=None, metavar="NAME",
                   help="name of the vector column written (default: the input's, from the "
                        f"report of the run that built the version; else "
                        f"{DEFAULT_VECTOR_COLUMN})")
    p.add_argument("--out-storage-options", default=None, metavar="JSON",
                   help="fsspec storage options of --out as a JSON object")
    p = command("diff", cmd_diff, "compare two versions (ids, vector drift, neighbors)",
                version=False)
    p.add_argument("--base", type=int, default=None, help="base version (default: latest-1)")
    p.add_argument("--other", type=int, default=None, help="other version (default: latest)")
    p.add_argument("--other-url", default=None, metavar="URL",
                   help="compare with another index instead")
    p.add_argument("-k", type=int, default=10,
                   help="neighbors compared per sample query (default 10)")
    p.add_argument("--sample-queries", type=int, default=100,
                   help="queries drawn from the base version's vectors to compare neighbors "
                        "(default 100; 0 skips the comparison)")
    p = sub.add_parser("tune", help="fit every codec candidate on a sample of your vectors "
                                    "and compare recall@k against bits/dim",
                       description="fit every codec candidate on a seeded sample of your "
                                   "vectors, search held-out rows of the same file as "
                                   "queries, and print recall@k against bits/dim (Pareto "
                                   "front marked, the smallest reaching --target named)")
    p.add_argument("url", metavar="DATA",
                   help="vectors: .npy (float [n, d]), or .parquet, .arrow, .feather with a "
                        "list-of-float column, or a glob of such files")
    p.add_argument("--column", default=None, metavar="NAME",
                   help="the vector column of a Parquet or Arrow file (default: its only "
                        "list-of-float column)")
    p.add_argument("--sample", type=int, default=20_000, metavar="N",
                   help="corpus rows fitted and searched (default 20000)")
    p.add_argument("--queries", type=int, default=500, metavar="M", dest="held_out",
                   help="other rows held out as queries, never in the corpus (default 500)")
    p.add_argument("-k", type=int, default=10, help="recall@k cut-off (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    p.add_argument("--codecs", default=None, metavar="LIST",
                   help="candidates, comma-separated, levels joined by + (default: "
                        "semq1, semq2, semq4, semq8, int8, int4, binary, semq1+semq4, semq2+semq4, "
                        "semq1+semqr4, semq2+semqr3)")
    p.add_argument("--rerank", type=int, default=None, metavar="N",
                   help="candidates re-scored per query by a pair's last level (default "
                        "10*k, as search)")
    p.add_argument("--target", type=float, default=0.95,
                   help="recall@k to reach: the smallest candidate reaching it is named "
                        "(default 0.95)")
    p.add_argument("--plot", default=None, metavar="SVG",
                   help="also write an SVG scatter of recall@k against bits/dim here")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_tune)
    return parser


def _named_url(args: argparse.Namespace, message: str) -> str:
    """``message``, prefixed with the index URL unless it names one of the URLs at hand."""
    urls = [getattr(args, name, None) for name in ("url", "other_url", "queries", "out")]
    if any(u and (u in message or redact_url(u) in message) for u in urls):
        return message
    return f"{args.url}: {message}"


def _run(argv: Sequence[str] | None) -> int:
    redact_log_records()       # a library's log line may quote a URL with its credentials
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _OutputClosed:
        raise
    except SemqError as exc:
        return _fail(_named_url(args, str(exc)))
    except Exception as exc:  # noqa: BLE001 - storage libraries raise their own types
        return _fail(_named_url(args, f"{type(exc).__name__}: {exc}"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``semq-index`` with ``argv`` (default: the process arguments); the exit code."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()      # a closed pipe shows here, not at interpreter exit
    except (_OutputClosed, BrokenPipeError):    # BrokenPipeError: from --help, the flush
        try:                        # the exit's own flush of what is left: into /dev/null
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
