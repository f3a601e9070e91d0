"""The ingestion job's checks before it runs (``semq_transforms.transforms.preflight``), on
local folders and a faulty fsspec store: ``--dry-run`` prints the plan and writes nothing, a
vector width the schema shows to differ from ``input.dim`` and an output location that
cannot be written stop the job with exit 2 before a row is read. (Against the loopback S3
server: tests/test_pipeline_s3.py.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.ingest import JOB_OPTIONS, build_pipeline, main
from semq_transforms.config import parse_config
from semq_transforms.errors import ConfigError
from semq_transforms.format.store import IndexStore
from semq_transforms.sample_data import sample_embeddings
from semq_transforms.transforms import direct_options
from semq_transforms.transforms.preflight import DimensionMismatchError

ROWS, DIM = 600, 16


def write_input(folder: Path, *, width: int = DIM, fixed: bool = True, files: int = 2) -> None:
    """``files`` Parquet files of ROWS // files rows with ``width``-wide vectors."""
    folder.mkdir(parents=True, exist_ok=True)
    x = sample_embeddings(ROWS, width, seed=4)
    per = ROWS // files
    for n in range(files):
        part = x[n * per:(n + 1) * per]
        vectors = (pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), width)
                   if fixed else pa.array(part.tolist(), pa.list_(pa.float32())))
        pq.write_table(pa.table({"id": pa.array(np.arange(n * per, (n + 1) * per)),
                                 "embedding": vectors}),
                       folder / f"part-{n:05d}.parquet", row_group_size=100)


def job_data(url: str, index_url: str, *, dim: int = DIM) -> dict:
    return {"name": "preflight", "input": {"url": url, "dim": dim, "batch_rows": 100},
            "output": {"index_url": index_url},
            "encode": {"codecs": ["semq2", "semq8"], "rows_per_shard": 200},
            "validation": {"k": 5, "sample_queries": 32, "seed": 1, "min_recall_at_k": 0.5,
                           "max_rejected_fraction": 0.0, "min_compression_ratio": 0}}


def config_file(tmp_path: Path, data: dict, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def files_under(folder: Path) -> dict[str, int]:
    """Every file below ``folder`` with its mtime (ns): what a run may not change."""
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# -- --dry-run ------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--dry-run", "--plan-only", "--dry_run"])
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys, flag):
    """Before: ``--dry-run`` was an unknown option passed on to Beam, and the job published."""
    write_input(tmp_path / "in")
    index = tmp_path / "out" / "idx"
    cfg = config_file(tmp_path, job_data(f"{tmp_path}/in/*.parquet", str(index)))
    assert main(["--config", cfg, flag]) == 0
    out, err = capsys.readouterr()
    assert not index.exists() and not (tmp_path / "out").exists()   # nothing written
    assert "did you mean" not in err and "neither job options" not in err
    lines = out.splitlines()
    assert lines[0].startswith("dry run of run preflight-") and "nothing written" in lines[0]
    assert f"input: {tmp_path}/in/*.parquet: 2 file(s), parquet, {ROWS} rows" in out
    assert f"file://{tmp_path}/in/part-00000.parquet: 300 rows, vectors fixed_size_list of " \
           f"{DIM}" in out
    assert f"dimension: {DIM} (input.dim;" in out
    assert "shards: 3 of 200 rows (encode.rows_per_shard)\n" in out
    assert "codecs: semq2, semq8" in out
    assert f"output: {index} (local folder, to be created in a writable folder)" in out
    assert "index: no version yet; the run would publish version 1" in out


def test_dry_run_on_a_published_index_changes_none_of_its_files(tmp_path, capsys):
    write_input(tmp_path / "in")
    index = tmp_path / "idx"
    data = job_data(f"{tmp_path}/in/*.parquet", str(index))
    assert main(["--config", config_file(tmp_path, data)]) == 0
    before = files_under(index)
    # the same job: the real run would find nothing to publish; a dry run says so too
    assert main(["--config", config_file(tmp_path, data), "--dry-run"]) == 0
    assert "nothing to publish" in capsys.readouterr().out
    # another config: a new run folder, planned but not written
    data["encode"]["rows_per_shard"] = 100
    assert main(["--config", config_file(tmp_path, data, "other.yaml"), "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "shards: 6 of 100 rows (encode.rows_per_shard)\n" in out
    assert "local folder, exists and is writable" in out
    assert "latest version 1; the run would publish version 2" in out
    assert files_under(index) == before
    assert IndexStore(str(index)).versions() == [1]


def test_dry_run_keeps_the_unknown_option_checks(tmp_path, capsys):
    """A near-miss of a job option still stops the job (a mistyped dry run must not run
    it); other unknown options still pass with a warning."""
    assert {"--dry-run", "--plan-only"} <= set(JOB_OPTIONS)
    write_input(tmp_path / "in")
    index = tmp_path / "idx"
    cfg = config_file(tmp_path, job_data(f"{tmp_path}/in/*.parquet", str(index)))
    for typo in ("--dry-runn", "--dryrun", "--plan_olny"):
        assert main(["--config", cfg, typo]) == 2
        assert f"unknown option(s) {typo}: did you mean" in capsys.readouterr().err
    assert main(["--config", cfg, "--dry-run", "--my_team_option=7"]) == 0
    assert "--my_team_option are neither job options" in capsys.readouterr().err
    assert not index.exists()


# -- the vector width against input.dim -----------------------------------------------------


def corrupt_data_pages(path: Path) -> None:
    """Overwrite the start of the vector column's first data page: any read of a row fails,
    the footer (all planning reads) is intact."""
    page = pq.ParquetFile(str(path)).metadata.row_group(0).column(1).data_page_offset
    with open(path, "r+b") as f:
        f.seek(page)
        f.write(b"\xff" * 64)


@pytest.mark.parametrize("flag", [[], ["--dry-run"]])
def test_a_fixed_width_other_than_dim_stops_the_job_before_a_row_is_read(tmp_path, capsys,
                                                                          flag):
    """Before: every row was read and rejected as wrong_dimension (empty detail), and the
    summary never said "dimension". The data pages are corrupt here, so reading any row would
    fail with another message."""
    write_input(tmp_path / "in", width=384, files=1)
    corrupt_data_pages(tmp_path / "in" / "part-00000.parquet")
    index = tmp_path / "idx"
    cfg = config_file(tmp_path, job_data(f"{tmp_path}/in/*.parquet", str(index), dim=768))
    assert main(["--config", cfg, *flag]) == 2
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.startswith("ingest:")]
    assert f"file://{tmp_path}/in/part-00000.parquet" in line
    assert "vector column 'embedding' (fixed_size_list of 384)" in line
    assert "input.dim: got 384, expected 768" in line
    assert not index.exists()                                    # no report, nothing


def test_the_api_raises_a_config_error_naming_file_column_and_widths(tmp_path):
    write_input(tmp_path / "in", width=8, files=2)
    config = parse_config(job_data(f"{tmp_path}/in", str(tmp_path / "idx"), dim=12))
    with pytest.raises(DimensionMismatchError, match=r"part-00000.parquet \(and 1 more "
                       r"file\(s\)\): .*got 8, expected 12") as caught:
        build_pipeline(beam.Pipeline(options=direct_options()), config)
    assert isinstance(caught.value, ConfigError)
    assert (caught.value.column, caught.value.got, caught.value.expected) == ("embedding", 8, 12)
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("column, values, message", [
    ("id", pa.array([0.5] * 10),
     "id column 'id' must be an integer or string column, got double"),
    ("embedding", pa.array([[1, 2]] * 10, pa.list_(pa.int32())),
     ("vector column 'embedding' must be a list, large_list or fixed_size_list of "
      "float16/32/64, got list<element: int32>"))])
def test_dry_run_checks_the_column_types(tmp_path, capsys, column, values, message):
    columns = {"id": pa.array(np.arange(10)), "embedding": pa.array([[1.0, 2.0]] * 10)}
    columns[column] = values
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table(columns), tmp_path / "in" / "a.parquet")
    data = job_data(f"{tmp_path}/in/*.parquet", str(tmp_path / "idx"), dim=2)
    assert main(["--config", config_file(tmp_path, data), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert f"ingest: cannot read file://{tmp_path}/in/a.parquet: {message}" in err
    assert not out and not (tmp_path / "idx").exists()


def test_an_npy_width_other_than_dim_stops_the_job(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", sample_embeddings(50, 6, seed=1))
    data = job_data(f"{tmp_path}/in/*.npy", str(tmp_path / "idx"), dim=7)
    assert main(["--config", config_file(tmp_path, data)]) == 2
    assert "a.npy: NPY array does not match input.dim: got 6, expected 7" in \
        capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_variable_length_lists_are_still_checked_row_by_row(tmp_path, capsys):
    """A list<float> column fixes no width: the job runs, and every row is a wrong_dimension
    dead letter saying what it got."""
    write_input(tmp_path / "in", fixed=False, files=1)
    index = tmp_path / "idx"
    data = job_data(f"{tmp_path}/in/*.parquet", str(index), dim=DIM + 2)
    assert main(["--config", config_file(tmp_path, data), "--dry-run"]) == 0
    assert "1 file(s) of variable-length lists: their rows of another length become " \
           "wrong_dimension dead letters" in capsys.readouterr().out
    assert main(["--config", config_file(tmp_path, data)]) == 1      # every row rejected
    [dead_file] = index.glob("runs/*/dead_letters.parquet")
    dead = pq.read_table(dead_file)
    assert dead.num_rows == ROWS
    assert set(dead.column("reason").to_pylist()) == {"wrong_dimension"}
    assert set(dead.column("detail").to_pylist()) == {f"got {DIM}, expected {DIM + 2}"}


# -- the output location --------------------------------------------------------------------


@pytest.mark.parametrize("flag", [[], ["--dry-run"]])
def test_an_output_path_under_a_file_stops_the_job_naming_it(tmp_path, capsys, flag):
    write_input(tmp_path / "in")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the index's parent folder should be")
    index = blocker / "idx"
    cfg = config_file(tmp_path, job_data(f"{tmp_path}/in/*.parquet", str(index)))
    assert main(["--config", cfg, *flag]) == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1] == (
        f"ingest: output {index} cannot be written: {blocker} is not a folder")
    assert "Traceback" not in err and "published" not in out
    assert blocker.read_text().startswith("a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any folder")
def test_a_read_only_output_folder_stops_the_job(tmp_path, capsys):
    write_input(tmp_path / "in")
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        cfg = config_file(tmp_path, job_data(f"{tmp_path}/in/*.parquet", str(parent / "idx")))
        assert main(["--config", cfg]) == 2
        assert f"the folder {parent} is not writable" in capsys.readouterr().err
    finally:
        parent.chmod(0o755)


def test_a_store_refusing_writes_stops_the_job_before_it_runs(tmp_path, capsys):
    """An fsspec store that lists and reads but refuses every write (a real filesystem with a
    fault, under its own protocol): the probe write fails, exit 2 with one line naming the
    index and the probe; nothing was read or written. The dry run stops the same way."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class ReadOnlyMemory(MemoryFileSystem):
        protocol = ("readonlymem",)
        store: ClassVar[dict] = {}
        pseudo_dirs: ClassVar[list] = [""]

        def _open(self, path, mode="rb", **kwargs):
            if "r" not in mode:
                raise PermissionError(f"{path}: this store is read-only")
            return super()._open(path, mode, **kwargs)

    fsspec.register_implementation("readonlymem", ReadOnlyMemory, clobber=True)
    write_input(tmp_path / "in")
    cfg = config_file(tmp_path, job_data(f"{tmp_path}/in/*.parquet", "readonlymem://idx"))
    for flag in ([], ["--dry-run"]):
        assert main(["--config", cfg, *flag]) == 2
        out, err = capsys.readouterr()
        [line] = [x for x in err.splitlines() if x.startswith("ingest:")]
        assert line.startswith("ingest: output readonlymem://idx cannot be written: writing "
                               "readonlymem://idx/runs/preflight-"), line
        assert "/.write-probe failed: PermissionError: " in line and "read-only" in line
        assert not out
    assert ReadOnlyMemory.store == {}
