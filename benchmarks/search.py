"""Search benchmark: built indexes searched through ``Index.search``, with faiss references.

    python benchmarks/search.py [--data PATH] [--out PATH.json] [--repeat N] [--shards N]
                                [--configs semq2,semq1+semq4,faiss-sq8,...]

Corpus = ``train_x`` (10003 x 384), queries = ``test_x`` (3080 float queries). Each config is
built in-process with ``build_index`` on ``memory://`` (``--shards N``: rows split evenly
over N shards, each fitting its own params) and searched with ``Index.search(q, 10)``:

* bits/dim: code bytes per row summed over the levels, from the manifest's shards, x 8 / d;
* recall@10 against the exact float32 inner-product top-10;
* QPS: all queries in one ``search`` call, best of ``--repeat`` (default 3). The index is
  opened once, with a shard cache holding every shard, and warmed by one search first, so
  reading and verifying shards is not timed;
* multi-level configs (``scan+rerank``, e.g. ``semq1+semq4``): default ``rerank`` (10 * k)
  plus a sweep over rerank = 20, 50, 100, 200 (recall and QPS each).

References (when faiss imports): ``IndexRaBitQ`` 1/2/4 bits behind a seeded random rotation,
``IndexScalarQuantizer`` QT_4bit / QT_8bit, and ``IndexRefine`` of RaBitQ-1bit by SQ4 / SQ8
(k_factor 10, i.e. 100 candidates for k = 10), all on the full corpus in one index. Every
measurement runs on ONE thread. Prints markdown tables and the target check, writes JSON.
Exit code 0 unless it crashed (2 if the dataset is missing).
"""

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import (
    DEFAULT_DATA,
    RABITQ_SEED,
    REPO,
    best_seconds,
    faiss,
    limit_threads,
    load_data,
    machine_info,
    rabitq_index,
    sq_index,
)

# isort: split
import argparse
import json
import os
import sys
import time
from pathlib import Path

from semq_transforms.build import build_index
from semq_transforms.codecs import REFINING_SPECS, SPECS
from semq_transforms.eval import exact_knn, recall_at_k
from semq_transforms.index import DEFAULT_RERANK_FACTOR, Index

DEFAULT_OUT = REPO / "benchmarks/results/search.json"
K = 10
SEMQ_CONFIGS = ("semq1", "semq2", "semq4", "semq8", "int8",
                "semq1+semq4", "semq2+semq4", "semq1+semq8", "binary+semq4", "semq2+semq8",
                "semq1+semqr4", "semq2+semqr3")
RERANK_SWEEP = (20, 50, 100, 200)
#: RaBitQ query quantization widths tried: faiss' default (4) and 8. The setting with the
#: better recall is reported (the stronger baseline), with its own QPS; both are in the JSON.
RABITQ_QB = (None, 8)
REFINE_K_FACTOR = 10      # same candidate count as Index.search's default rerank (10 * k)
TARGET_RECALL, TARGET_BITS = 0.995, 5.34


# -- measuring one search ---------------------------------------------------------------------

def measure(search, ctx: dict) -> dict:
    """Recall@10 and QPS of ``search(queries) -> (D, I)`` over all queries (best of repeat)."""
    q = ctx["data"]["q"]
    seconds, (_, I) = best_seconds(lambda: search(q), ctx["repeat"])
    return {"recall_at_10": recall_at_k(I, ctx["gt"], K), "qps": q.shape[0] / seconds,
            "search_s": seconds}


def row(config: str, kind: str, levels: list[str], bits_per_dim: float, result: dict,
        **extra) -> dict:
    return {"config": config, "kind": kind, "levels": levels, "bits_per_dim": bits_per_dim,
            **result, "notes": [], **extra}


# -- semq_transforms indexes ------------------------------------------------------------------

def bench_config(config: str, ctx: dict) -> dict:
    """Build ``config`` (levels joined by ``+``) on memory://, then search it."""
    x = ctx["data"]["x"]
    levels = config.split("+")
    url = f"memory://semq-search-bench-{os.getpid()}/{config}"
    build_s, manifest = best_seconds(
        lambda: build_index(url, x, codecs=levels, rows_per_shard=ctx["rows_per_shard"]), 1)
    shards = manifest.shards
    code_bytes = sum(s.rows * s.code_bytes_per_row for s in shards) / manifest.rows
    index = Index.open(url)
    index.search(x[:1], K)  # warm: reads and verifies every shard once, outside the timing

    default = DEFAULT_RERANK_FACTOR * K
    measured = {default: measure(lambda q: index.search(q, K), ctx)}  # the API's default

    def at(rerank: int) -> dict:
        if rerank not in measured:
            measured[rerank] = measure(lambda q: index.search(q, K, rerank=rerank), ctx)
        return measured[rerank]

    r = row(config, "semq_transforms", levels, code_bytes * 8 / x.shape[1], at(default),
            shards=len(shards), build_s=build_s)
    if len(levels) > 1:
        r["rerank"] = default
        r["notes"].append(f"rerank={default} (default)")
        r["rerank_sweep"] = [{"rerank": n, **at(n)} for n in RERANK_SWEEP]
    if len(shards) > 1:
        r["notes"].append(f"{len(shards)} shards")
    return r


# -- faiss references -------------------------------------------------------------------------



def refine_index(d: int, sq_bits: int):
    index = faiss.IndexRefine(rabitq_index(d, 1), sq_index(d, sq_bits))
    index.k_factor = REFINE_K_FACTOR
    return index


def faiss_levels(index) -> list:
    """The code-holding indexes, scan level first (through pre-transforms and refines)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        return faiss_levels(index.base_index) + faiss_levels(index.refine_index)
    if isinstance(index, faiss.IndexPreTransform):
        return faiss_levels(index.index)
    return [index]


FAISS_REFERENCES = {
    "faiss-rabitq1": (["RaBitQ1"], lambda d: rabitq_index(d, 1)),
    "faiss-rabitq2": (["RaBitQ2"], lambda d: rabitq_index(d, 2)),
    "faiss-rabitq4": (["RaBitQ4"], lambda d: rabitq_index(d, 4)),
    "faiss-sq4": (["SQ4"], lambda d: sq_index(d, 4)),
    "faiss-sq8": (["SQ8"], lambda d: sq_index(d, 8)),
    "faiss-rabitq1+sq4": (["RaBitQ1", "SQ4"], lambda d: refine_index(d, 4)),
    "faiss-rabitq1+sq8": (["RaBitQ1", "SQ8"], lambda d: refine_index(d, 8)),
}


def bench_faiss(config: str, ctx: dict) -> dict:
    x = ctx["data"]["x"]
    levels, make = FAISS_REFERENCES[config]
    index = make(x.shape[1])
    index.train(x)
    index.add(x)
    codes = faiss_levels(index)
    rabitq = next((c for c in codes if isinstance(c, faiss.IndexRaBitQ)), None)
    results = {}
    for qb in RABITQ_QB if rabitq is not None else (None,):
        if qb is not None:
            rabitq.qb = qb
        label = f"qb={rabitq.qb}" if rabitq is not None else "default"
        results[label] = measure(lambda q: index.search(q, K), ctx)
    best = max(results, key=lambda label: results[label]["recall_at_10"])
    r = row(config, "faiss", levels, sum(c.code_size for c in codes) * 8 / x.shape[1],
            results[best])
    if rabitq is not None:
        r["notes"].append(best)
        r["by_search_params"] = results
    if isinstance(index, faiss.IndexRefine):
        r["notes"].append(f"k_factor={REFINE_K_FACTOR}")
    return r


# -- report -----------------------------------------------------------------------------------

def markdown_table(header: list[str], lines: list[list[str]], numeric: set[int]) -> str:
    """Markdown table; the columns numbered in ``numeric`` are right-aligned."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def main_table(rows: list[dict]) -> str:
    return markdown_table(
        ["config", "levels", "bits/dim", "recall@10", "QPS", "notes"],
        [[r["config"], " + ".join(r["levels"]), f"{r['bits_per_dim']:.3f}",
          f"{r['recall_at_10']:.4f}", f"{r['qps']:.0f}", "; ".join(r["notes"])] for r in rows], numeric={2, 3, 4})


def sweep_table(rows: list[dict]) -> str:
    return markdown_table(
        ["config", "rerank", "recall@10", "QPS"],
        [[r["config"], str(s["rerank"]), f"{s['recall_at_10']:.4f}", f"{s['qps']:.0f}"]
         for r in rows for s in r.get("rerank_sweep", ())], numeric={1, 2, 3})


def check_target(rows: list[dict]) -> dict:
    """Which multi-level semq configs reach the recall target within the bits budget."""
    checks = []
    for r in rows:
        if r["kind"] != "semq_transforms" or len(r["levels"]) < 2:
            continue
        recall_ok = r["recall_at_10"] >= TARGET_RECALL
        bits_ok = r["bits_per_dim"] <= TARGET_BITS
        best = max(r["rerank_sweep"], key=lambda s: s["recall_at_10"])
        checks.append({
            "config": r["config"], "status": "PASS" if recall_ok and bits_ok else "FAIL",
            "detail": (f"recall@10 {r['recall_at_10']:.4f} {'>=' if recall_ok else '<'} "
                       f"{TARGET_RECALL} (rerank={r['rerank']}; best in sweep "
                       f"{best['recall_at_10']:.4f} at rerank={best['rerank']}), "
                       f"{r['bits_per_dim']:.3f} bits/dim {'<=' if bits_ok else '>'} "
                       f"{TARGET_BITS}")})
    return {"target": f"multi-level recall@10 >= {TARGET_RECALL} with <= {TARGET_BITS} "
                      "bits/dim",
            "met_by": [c["config"] for c in checks if c["status"] == "PASS"], "checks": checks}


# -- main -------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    known = list(SEMQ_CONFIGS) + (list(FAISS_REFERENCES) if faiss is not None else [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="npz with "
                        "train_x/test_x (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path "
                        "(default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs, best is kept")
    parser.add_argument("--shards", type=int, default=1, help="shards per semq index")
    parser.add_argument("--configs", default=",".join(known), help="comma-separated configs: "
                        "codec specs joined by '+' (scan level first) and faiss references "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in FAISS_REFERENCES
           and not all(level in SPECS + REFINING_SPECS for level in c.split("+"))]
    if bad or not args.configs:
        parser.error(f"unknown config(s) {bad}; use codec specs ({','.join(SPECS)}) joined "
                     f"by '+', or {','.join(FAISS_REFERENCES)}")
    if faiss is None and any(c in FAISS_REFERENCES for c in args.configs):
        parser.error("faiss references need faiss (pip install -e '.[bench]')")
    if args.repeat < 1 or args.shards < 1:
        parser.error("--repeat and --shards must be >= 1")
    return args


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    threads = limit_threads()
    data = load_data(args.data)
    x, q = data["x"], data["q"]
    ctx = {"data": data, "repeat": args.repeat, "gt": exact_knn(q, x, K)[1],
           "rows_per_shard": -(-x.shape[0] // args.shards)}
    print(f"corpus {x.shape}, queries {q.shape}, {args.shards} shard(s) of <= "
          f"{ctx['rows_per_shard']} rows, repeat {args.repeat}, one thread", flush=True)
    if faiss is None:
        print("  faiss not importable: references skipped", flush=True)

    rows = []
    for config in args.configs:
        bench = bench_faiss if config in FAISS_REFERENCES else bench_config
        rows.append(bench(config, ctx))
        print(f"  {config}: done", flush=True)
    target = check_target(rows)
    total = time.perf_counter() - started

    print()
    print(main_table(rows))
    if any("rerank_sweep" in r for r in rows):
        print("\nRerank sweep (multi-level; rerank = scan-level candidates per query and "
              "shard re-scored with the last level):\n")
        print(sweep_table(rows))
    print(f"\nQPS: all {q.shape[0]} queries in one search call, k={K}, best of {args.repeat}, "
          "one thread; semq indexes opened once and warmed (shard loading not timed); faiss "
          "timings are index.search. bits/dim: code bytes per row over all levels x 8 / d.")
    print()
    print("## targets")
    print(f"{target['target']}: met by {', '.join(target['met_by']) or 'none'}")
    for c in target["checks"]:
        print(f"{c['status']}  {c['config']}: {c['detail']}")
    print(f"\ntotal runtime {total:.0f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine_info(), "threads": threads,
        "settings": {"data": str(args.data), "k": K, "repeat": args.repeat,
                     "shards": args.shards, "rows_per_shard": ctx["rows_per_shard"],
                     "queries": int(q.shape[0]), "corpus_rows": int(x.shape[0]),
                     "rerank_default": DEFAULT_RERANK_FACTOR * K, "rerank_sweep": RERANK_SWEEP,
                     "rabitq_seed": RABITQ_SEED, "refine_k_factor": REFINE_K_FACTOR,
                     "timing": "one search call over all queries, best of repeat; semq "
                               "index opened once, every shard cached, warmed first"},
        "rows": rows, "targets": target, "total_seconds": total,
    }
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
