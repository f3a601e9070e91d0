"""Reliability trials: corrupted and forged files, concurrent publishers per store, killed jobs.

    python benchmarks/reliability.py [--trials N] [--stores local,memory,s3,gcs,azure]
                                     [--out PATH.json]

Each trial prints its counts (a table) and the JSON goes to ``--out``:

* **corruption**: a small index (two semq4 shards); each trial mutates one shard or the
  manifest (a bit flip, a truncation, 8 overwritten bytes, inserted or deleted bytes at a
  seeded offset) and opens, searches and verifies it. A mutation must be refused with a typed
  error (``SemqError``), reported by ``verify``, or hit a byte no reader interprets (Arrow
  padding, a field pyarrow ignores: the same content is served); "served wrong" and "untyped
  error" must stay 0. (Shards are covered byte for byte by the manifest's file SHA-256; a
  manifest's own bytes only by its content digest.)
* **forgery**: manifests rewritten by a writer that recomputes the digest: shard paths that
  leave the prefix must be refused; a dropped shard is accepted by a reader without a key
  (the digest is integrity, not authenticity) and must be refused by one with the
  publisher's public key (signed versions).
* **concurrent publishers**: per store, rounds of four writers committing the same version at
  once; every round must have exactly one winner and three ``VersionConflictError``.
  S3, GCS and Azure are moto's server, fake-gcs-server and Azurite on loopback (as in the
  tests); a store whose server is not installed is skipped and said so.
* **kills**: the ingestion job in a subprocess (in-process and multi-process runner in turn),
  SIGKILLed after a seeded delay within its run time, or (every third trial) as soon as its
  new manifest appears (between its commit and its report), then run again: after the kill every committed version must verify and the
  version count grow by at most one; the rerun must exit 0 with the latest version's report
  in place.
"""

from __future__ import annotations

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import REPO, write_results

# isort: split
import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from semq_transforms.build import build_index
from semq_transforms.errors import SemqError, VersionConflictError
from semq_transforms.format import manifest as manifest_module
from semq_transforms.format.store import IndexStore
from semq_transforms.index import Index
from semq_transforms.sample_data import sample_embeddings, write_sample_embeddings

DIM = 16
MUTATIONS = ("bit flip", "truncate", "overwrite 8 bytes", "insert bytes", "delete bytes")


# -- corruption --------------------------------------------------------------------------------


def _mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    if kind == "bit flip":
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
    if kind == "truncate":
        return data[:at]
    if kind == "overwrite 8 bytes":
        return data[:at] + rng.randbytes(8) + data[at + 8:]
    if kind == "insert bytes":
        return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]
    return data[:at] + data[at + rng.randint(1, 16):]


def _outcome(root: Path, x: np.ndarray, expected: tuple) -> str:
    """How the reader treated the (possibly mutated) index at ``root``."""
    try:
        index = Index.open(str(root))
        got = index.search(x[:4], k=3)
        report = index.verify()
    except SemqError:
        return "refused (typed error)"
    except Exception:  # noqa: BLE001  (the count that must stay 0)
        return "untyped error"
    if not report.ok:
        return "reported by verify"
    same = all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    # same results and verify ok: the byte was one no reader interprets (Arrow padding, a
    # field pyarrow ignores) outside the content digests; anything else is "served wrong"
    return "served the same content" if same else "served wrong"


def corruption(trials: int, seed: int, work: Path) -> dict[str, Any]:
    x = sample_embeddings(400, DIM, seed=seed)
    base = work / "corruption-base"
    build_index(str(base), x, codecs=["semq4"], rows_per_shard=200)
    expected = Index.open(str(base)).search(x[:4], k=3)
    files = sorted(p.relative_to(base) for p in base.rglob("*")
                   if p.is_file() and p.suffix in (".semq", ".arrow"))
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for trial in range(trials):
        target, kind = rng.choice(files), rng.choice(MUTATIONS)
        root = work / f"corruption-{trial}"
        shutil.copytree(base, root)
        original = (root / target).read_bytes()
        mutated = _mutate(original, kind, rng)
        (root / target).write_bytes(mutated)
        outcome = "no byte changed" if mutated == original else _outcome(root, x, expected)
        counts[outcome] += 1
        shutil.rmtree(root)
    return {"trials": trials, "outcomes": dict(counts),
            "bad": counts["served wrong"] + counts["untyped error"]}


# -- forgery -----------------------------------------------------------------------------------


def _forge(root: Path, shards: list) -> None:
    """Commit ``shards`` as the next version the way a writer that skips the path rules and
    recomputes the digest would."""
    index = Index.open(str(root))
    checked = manifest_module.check_rel_path
    manifest_module.check_rel_path = lambda path, what="path": path
    try:
        forged = manifest_module.Manifest.new(
            version=index.version + 1, dim=index.dim, codecs=index.codecs, shards=shards,
            run_id="forged", parent_version=index.version)
        data = forged.to_bytes()
    finally:
        manifest_module.check_rel_path = checked
    (root / "manifests" / f"v{index.version + 1:08d}.manifest.arrow").write_bytes(data)


def forgery(seed: int, work: Path) -> list[dict[str, Any]]:
    x = sample_embeddings(400, DIM, seed=seed)
    cases: dict[str, Callable[[list], list]] = {
        "shard path ../../etc/passwd": lambda s: [dataclasses.replace(
            s[0], path="runs/../../etc/passwd"), *s[1:]],
        "shard path %2e%2e/%2e%2e/secret.semq": lambda s: [dataclasses.replace(
            s[0], path="runs/%2e%2e/%2e%2e/secret.semq"), *s[1:]],
        "shard path /etc/passwd": lambda s: [dataclasses.replace(s[0], path="/etc/passwd"),
                                             *s[1:]],
        "rows of a shard edited": lambda s: [dataclasses.replace(s[0], rows=s[0].rows + 1),
                                             *s[1:]],
        "a shard dropped": lambda s: s[1:],
    }
    rows = []
    for number, (name, edit) in enumerate(cases.items()):
        root = work / f"forgery-{number}"
        build_index(str(root), x, codecs=["semq4"], rows_per_shard=200)
        _forge(root, edit(list(Index.open(str(root)).shards)))
        try:
            index = Index.open(str(root), 2)
            index.search(x[:2], k=3)
            outcome = "accepted, verify ok" if index.verify().ok else "reported by verify"
        except SemqError as exc:
            outcome = f"refused ({type(exc).__name__})"
        rows.append({"forgery": name, "outcome": outcome})
        shutil.rmtree(root)
    # the same drop on a signed index, read with the publisher's public key
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    root = work / "forgery-signed"
    build_index(str(root), x, codecs=["semq4"], rows_per_shard=200, signing_key=key)
    _forge(root, list(Index.open(str(root)).shards)[1:])
    try:
        Index.open(str(root), 2, public_key=key.public_key())
        outcome = "accepted, verify ok"
    except SemqError as exc:
        outcome = f"refused ({type(exc).__name__})"
    rows.append({"forgery": "a shard dropped, signed index read with its public key",
                 "outcome": outcome})
    shutil.rmtree(root)
    return rows


# -- concurrent publishers ---------------------------------------------------------------------


@contextmanager
def _store_url(kind: str, work: Path) -> Iterator[tuple[str, dict | None] | None]:
    """A fresh index URL (and storage options) on ``kind``, its server started; None when
    the server is not installed."""
    if kind == "local":
        yield str(work / "race-local"), None
    elif kind == "memory":
        yield f"memory://semq-race-{os.getpid()}", None
    elif kind == "s3":
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            yield None
            return
        import logging

        import boto3

        logging.getLogger("werkzeug").setLevel(logging.WARNING)   # a line per request

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            options = {"key": "testing", "secret": "testing", "client_kwargs": {
                "endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
                "skip_instance_cache": True, "use_listings_cache": False}
            boto3.client("s3", aws_access_key_id="testing", aws_secret_access_key="testing",
                         **options["client_kwargs"]).create_bucket(Bucket="race")
            yield "s3://race/index", options
        finally:
            server.stop()
    else:
        from tests import cloud_servers as cloud

        server = cloud.gcs_options(work) if kind == "gcs" else cloud.azure_options()
        try:
            options = server.__enter__()
        except cloud.ServerMissing:
            yield None
            return
        try:
            yield (cloud.new_gcs_url(options) if kind == "gcs" else cloud.new_azure_url(options),
                   options)
        finally:
            server.__exit__(None, None, None)


def _race(url: str, options: dict | None, version: int, writers: int = 4) -> Counter[str]:
    from tests.manifest_helpers import CODECS, make_shards

    barrier = threading.Barrier(writers)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    parent = None if version == 1 else version - 1

    def commit(number: int) -> None:
        store = IndexStore(url, storage_options=options)
        shards = make_shards(1, run_id=f"r{version}-{number}")
        barrier.wait(timeout=60)
        try:
            store.commit(shards, dim=shards[0].dim, codecs=CODECS,
                         run_id=f"r{version}-{number}", parent_version=parent)
            outcome = "won"
        except VersionConflictError:
            outcome = "conflict"
        except Exception as exc:  # noqa: BLE001  (counted: must stay 0)
            outcome = f"error {type(exc).__name__}"
        with lock:
            outcomes[outcome] += 1

    from tests.manifest_helpers import write_shard_files

    for number in range(writers):
        write_shard_files(IndexStore(url, storage_options=options),
                          make_shards(1, run_id=f"r{version}-{number}"))
    threads = [threading.Thread(target=commit, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def publishers(stores: list[str], rounds: int, work: Path) -> list[dict[str, Any]]:
    rows = []
    for kind in stores:
        with _store_url(kind, work) as made:
            if made is None:
                rows.append({"store": kind, "rounds": 0, "note": "server not installed"})
                continue
            url, options = made
            single = sum(_race(url, options, version) == Counter(won=1, conflict=3)
                         for version in range(1, rounds + 1))
            versions = IndexStore(url, storage_options=options).versions()
            rows.append({"store": kind, "rounds": rounds, "one_winner_rounds": single,
                         "versions": len(versions), "bad": rounds - single})
    return rows


# -- kills -------------------------------------------------------------------------------------


def _job(work: Path, seed: int) -> tuple[Path, Path, dict[str, str]]:
    src = work / "kill-input"
    if not src.exists():
        write_sample_embeddings(str(src), rows=6000, dim=64, seed=seed, files=3)
    config = work / "kill-job.yaml"
    config.write_text(yaml.safe_dump({
        # every file below the folder; ids are row positions (the extra files repeat ids)
        "name": "kills", "input": {"url": str(src), "dim": 64, "id_column": None},
        "output": {"index_url": str(work / "kill-index")},
        "encode": {"codecs": ["semq1", "semq4"], "rows_per_shard": 1000},
        "validation": {"k": 10, "sample_queries": 32, "seed": 1, "min_recall_at_k": 0.5,
                       "max_rejected_fraction": 0.0, "min_compression_ratio": 0}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return config, work / "kill-index", env


def _run(config: Path, env: dict[str, str], extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.ingest", "--config", str(config),
                             *extra], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kills(trials: int, seed: int, work: Path) -> dict[str, Any]:
    config, index, env = _job(work, seed)
    modes = [[], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]]
    started = time.monotonic()
    assert _run(config, env, []).wait() == 0
    duration = time.monotonic() - started
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for trial in range(trials):
        # new input each trial (one more file), so every run has something to publish
        write_sample_embeddings(str(work / "kill-input" / f"extra-{trial}"), rows=500,
                                dim=64, seed=seed + 1 + trial, files=1)
        before = IndexStore(str(index)).versions()
        job = _run(config, env, modes[trial % 2])
        if trial % 3 == 2:     # right after the commit: as soon as the new manifest appears
            while job.poll() is None and len(list(index.glob("manifests/v*"))) <= len(before):
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, duration))
        killed = job.poll() is None
        job.send_signal(signal.SIGKILL)
        job.wait()
        after = IndexStore(str(index)).versions()
        intact = all(Index.open(str(index), v).verify().ok for v in after)
        grew = len(after) - len(before)
        counts["killed mid-run" if killed else "finished before the kill"] += 1
        counts["committed before the kill" if grew == 1 else "nothing committed"] += 1
        if not intact or grew not in (0, 1):
            counts["BAD: a version does not verify or more than one appeared"] += 1
        rerun = _run(config, env, []).wait()
        latest = Index.open(str(index))
        report = index / "runs" / latest.manifest.run_id / "report.json"
        reported = json.loads(report.read_text()).get("version") if report.is_file() else None
        if rerun != 0 or reported != latest.version or not latest.verify().ok:
            counts["BAD: the rerun did not complete the run"] += 1
        else:
            counts["rerun completed (exit 0, the latest version reported)"] += 1
    return {"trials": trials, "job_seconds": round(duration, 2), "outcomes": dict(counts),
            "bad": sum(v for k, v in counts.items() if k.startswith("BAD"))}


# -- main --------------------------------------------------------------------------------------


def _table(title: str, rows: list[tuple[str, Any]]) -> None:
    print(f"\n{title}\n\n| outcome | count |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="corruption trials; the "
                        "other trials scale from it (default 200)")
    parser.add_argument("--stores", default="local,memory,s3,gcs,azure",
                        help="stores for the concurrent-publisher rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks/results/reliability.json")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="semq-rel-")))
        results["corruption"] = corruption(args.trials, args.seed, work)
        _table(f"Corruption ({args.trials} mutated files)",
               sorted(results["corruption"]["outcomes"].items()))
        results["forgery"] = forgery(args.seed, work)
        _table("Forgery (digest recomputed)",
               [(r["forgery"], r["outcome"]) for r in results["forgery"]])
        rounds = max(2, args.trials // 20)
        results["publishers"] = publishers(args.stores.split(","), rounds, work)
        _table(f"Concurrent publishers (4 writers per round, {rounds} rounds)",
               [(r["store"], r.get("note") or f"{r['one_winner_rounds']} of {r['rounds']} "
                 f"rounds with exactly one winner") for r in results["publishers"]])
        results["kills"] = kills(max(2, args.trials // 20), args.seed, work)
        _table(f"Killed jobs ({results['kills']['trials']} kills, job "
               f"{results['kills']['job_seconds']} s)",
               sorted(results["kills"]["outcomes"].items()))
    write_results(args.out, {}, results)
    bad = (results["corruption"]["bad"] + results["kills"]["bad"]
           + sum(r.get("bad", 0) for r in results["publishers"])
           + sum(r["outcome"].startswith("accepted")
                 and ("path" in r["forgery"] or "signed" in r["forgery"])
                 for r in results["forgery"]))
    print(f"\n{'FAIL' if bad else 'PASS'}: {bad} bad outcome(s); JSON: {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
