"""The Arrow manifest: round trips, determinism, the version rule, and untrusted bytes."""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import semq_transforms
from semq_transforms.errors import FormatError, IntegrityError
from semq_transforms.format.manifest import (
    MANIFEST_METADATA_KEY,
    MANIFEST_SCHEMA,
    Manifest,
    canonical_json,
    compute_digest,
)
from semq_transforms.format.meta import MANIFEST_FORMAT_VERSION
from tests.manifest_helpers import CODECS, CREATED_AT, DIM, make_shard, make_shards


def new_manifest(shards: Any = None, **kwargs: Any) -> Manifest:
    fields: dict[str, Any] = {"version": 3, "dim": DIM, "codecs": CODECS, "run_id": "run-1",
                              "parent_version": 2, "input_fingerprint": "sha256:abc",
                              "created_at": CREATED_AT}
    fields.update(kwargs)
    return Manifest.new(shards=make_shards(4) if shards is None else shards, **fields)


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return new_manifest()


@pytest.fixture(scope="module")
def manifest_bytes(manifest: Manifest) -> bytes:
    return manifest.to_bytes()


def rewrite(data: bytes, *, meta: Callable[[dict], None] | None = None,
            table: Callable[[pa.Table], pa.Table] | None = None, redigest: bool = True) -> bytes:
    """Re-emit manifest bytes after editing the metadata and/or the table; by default with a
    freshly computed digest, so that only the edited rule is exercised."""
    t = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    metadata = json.loads(t.schema.metadata[MANIFEST_METADATA_KEY])
    if table is not None:
        t = table(t)
    if meta is not None:
        meta(metadata)
    if redigest:
        metadata["digest"] = compute_digest(metadata, t.to_pylist())
    t = t.replace_schema_metadata({MANIFEST_METADATA_KEY: canonical_json(metadata)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, t.schema) as writer:
        writer.write_table(t)
    return sink.getvalue().to_pybytes()


def set_column(name: str, values: list[Any], type_: pa.DataType | None = None
               ) -> Callable[[pa.Table], pa.Table]:
    def edit(t: pa.Table) -> pa.Table:
        index = t.schema.get_field_index(name)
        field = t.schema.field(index)
        if type_ is not None:
            field = pa.field(name, type_, nullable=field.nullable)
        return t.set_column(index, field, pa.array(values, field.type))
    return edit


# -- round trips and determinism -------------------------------------------------------------


def test_bytes_round_trip(manifest: Manifest, manifest_bytes: bytes) -> None:
    back = Manifest.from_bytes(manifest_bytes, source="mem")
    assert back == manifest
    assert back.shards == tuple(make_shards(4))
    assert back.rows == 400
    assert back.format_version == MANIFEST_FORMAT_VERSION
    assert back.created_by == f"semq-transforms {semq_transforms.__version__}"


def test_round_trip_keeps_id_types_extremes_and_floats() -> None:
    shards = [
        make_shard(0, id_min=-(2**63), id_max=2**63 - 1,
                   stats={"tiny": 5e-324, "third": 1 / 3, "big": 2**70, "neg": -0.0}),
        make_shard(2, rows=0, id_min=0, id_max=-1),  # empty shard: id order not checked
    ]
    back = Manifest.from_bytes(new_manifest(shards).to_bytes())
    assert back.shards == tuple(shards)
    assert type(back.shards[0].stats["big"]) is int
    strings = [make_shard(1, id_type="string", id_min="", id_max="ünïcødé \U0001f600 zz")]
    back = Manifest.from_bytes(new_manifest(strings).to_bytes())
    assert back.shards == tuple(strings)
    assert back.shards[0].id_max == "ünïcødé \U0001f600 zz"


def test_shards_of_one_version_share_their_id_type() -> None:
    mixed = [make_shard(0), make_shard(1, id_type="string", id_min="a", id_max="b")]
    with pytest.raises(FormatError, match="mix id types"):
        new_manifest(mixed)


def test_compressed_manifest_is_refused_before_decompression() -> None:
    """A compressed buffer declares its uncompressed size, which pyarrow allocates before
    decompressing: a 5 KB manifest could ask for gigabytes. Manifests are never compressed."""
    good = new_manifest(make_shards(3))
    table = good.to_table()
    for codec in ("zstd", "lz4"):
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=codec)
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        with pytest.raises(FormatError, match="compressed"):
            Manifest.from_bytes(sink.getvalue().to_pybytes())
    assert Manifest.from_bytes(good.to_bytes()) == good   # the same table uncompressed


def test_empty_manifest_round_trips() -> None:
    empty = new_manifest([])
    back = Manifest.from_bytes(empty.to_bytes())
    assert back == empty and back.rows == 0 and back.shards == ()


def test_bytes_are_deterministic_given_created_at(manifest_bytes: bytes) -> None:
    assert new_manifest().to_bytes() == manifest_bytes
    later = new_manifest(created_at="2027-01-01T00:00:00.5Z")
    assert later.to_bytes() != manifest_bytes
    # created_at is outside the digest: same content, same digest.
    assert later.digest == Manifest.from_bytes(manifest_bytes).digest


def test_digest_covers_content_and_metadata(manifest: Manifest) -> None:
    assert new_manifest(make_shards(4, rows=101)).digest != manifest.digest
    assert new_manifest(input_fingerprint=None).digest != manifest.digest
    assert new_manifest(run_id="run-2").digest != manifest.digest
    assert new_manifest(list(reversed(make_shards(4)))).digest != manifest.digest


def test_table_schema_and_metadata(manifest: Manifest) -> None:
    table = manifest.to_table()
    assert table.schema.remove_metadata().equals(MANIFEST_SCHEMA)
    raw = table.schema.metadata[MANIFEST_METADATA_KEY]
    metadata = json.loads(raw)
    assert canonical_json(metadata) == raw  # compact, sorted keys
    assert metadata == {
        "format_version": "1.0", "version": 3, "dim": DIM, "codecs": list(CODECS),
        "created_by": f"semq-transforms {semq_transforms.__version__}",
        "created_at": CREATED_AT, "run_id": "run-1", "parent_version": 2,
        "input_fingerprint": "sha256:abc", "rows": 400, "digest": manifest.digest,
    }
    first = table.slice(0, 1).to_pylist()[0]
    assert first["id_min"] == "0" and first["id_max"] == "99"
    assert first["code_bytes_per_row"] == 16 + DIM
    assert json.loads(first["stats"]) == {"mean_norm": 0.1, "rows": 100}


def test_manifest_pickles(manifest: Manifest) -> None:
    assert pickle.loads(pickle.dumps(manifest)) == manifest


def test_default_created_at_is_utc_now() -> None:
    made = Manifest.new(version=1, dim=DIM, codecs=CODECS, shards=make_shards(1),
                        run_id="r")
    assert made.created_at.endswith("Z") and made.created_at[:2] == "20"
    assert Manifest.from_bytes(made.to_bytes()) == made


# -- construction-time validation --------------------------------------------------------------


@pytest.mark.parametrize("shards, message", [
    ([make_shard(0, dim=32)], "dim"),
    ([make_shard(0, codecs=("semq1",))], "codecs"),
    ([make_shard(0), make_shard(0)], "listed twice"),
    ([make_shard(0, path="/abs/shard.semq")], "relative"),
    ([make_shard(0, path="runs/../../etc/passwd")], "'..'"),
    ([make_shard(0, path="s3://other-bucket/x.semq")], "':'"),
    ([make_shard(0, stats={"norm": float("nan")})], "finite"),
    ([make_shard(0, content_sha256="ABC")], "content_sha256"),
    ([make_shard(0, id_min=5, id_max=4)], "id_min"),
    ([make_shard(0, rows=-1)], "rows"),
])
def test_new_refuses_inconsistent_shards(shards: list, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        new_manifest(shards)


@pytest.mark.parametrize("kwargs, message", [
    ({"version": 0}, "version"),
    ({"parent_version": 3}, "parent_version"),
    ({"run_id": "../x"}, "run_id"),
    ({"codecs": ()}, "codecs"),
    ({"created_at": "yesterday"}, "created_at"),
])
def test_new_refuses_bad_fields(kwargs: dict, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        new_manifest(**kwargs)


def test_replaced_manifest_is_not_written_with_a_stale_digest(manifest: Manifest) -> None:
    with pytest.raises(IntegrityError, match=r"Manifest\.new"):
        dataclasses.replace(manifest, version=4).to_bytes()


# -- the version rule --------------------------------------------------------------------------


def test_newer_major_is_refused_with_upgrade_message(manifest_bytes: bytes) -> None:
    data = rewrite(manifest_bytes, meta=lambda m: m.update(format_version="2.0"))
    with pytest.raises(FormatError, match=r"(?s)2\.0.*upgrade semq-transforms"):
        Manifest.from_bytes(data, source="s3://bucket/idx/manifests/v00000003.manifest.arrow")
    # Also when everything else about it is unreadable to this version.
    data = rewrite(manifest_bytes, meta=lambda m: m.update(format_version="3.1", dim="?"),
                   table=set_column("rows", ["x"] * 4, pa.utf8()), redigest=False)
    with pytest.raises(FormatError, match="upgrade"):
        Manifest.from_bytes(data)


def test_older_major_is_refused(manifest_bytes: bytes) -> None:
    data = rewrite(manifest_bytes, meta=lambda m: m.update(format_version="0.9"))
    with pytest.raises(FormatError, match="older"):
        Manifest.from_bytes(data)


def test_newer_minor_with_new_fields_is_read(manifest: Manifest, manifest_bytes: bytes) -> None:
    def add_column(t: pa.Table) -> pa.Table:
        return t.append_column(pa.field("future_column", pa.utf8()),
                               pa.array(["a", "b", "c", "d"]))

    data = rewrite(manifest_bytes, table=add_column,
                   meta=lambda m: m.update(format_version="1.7", future_key={"x": 1}))
    back = Manifest.from_bytes(data)
    assert back.format_version == (1, 7)
    assert back.shards == manifest.shards and back.version == manifest.version
    with pytest.raises(FormatError, match="cannot rewrite"):
        back.to_bytes()
    # The digest covers the columns this version does not know.
    tampered = rewrite(data, table=set_column("future_column", ["a", "b", "c", "X"]),
                       redigest=False)
    with pytest.raises(IntegrityError):
        Manifest.from_bytes(tampered)


def test_unknown_metadata_key_in_same_version_is_refused(manifest_bytes: bytes) -> None:
    data = rewrite(manifest_bytes, meta=lambda m: m.update(extra=1))
    with pytest.raises(FormatError, match="unknown keys"):
        Manifest.from_bytes(data)


# -- corrupt and hostile bytes -----------------------------------------------------------------


def test_digest_mismatch_is_integrity_error_naming_the_source(manifest_bytes: bytes) -> None:
    data = rewrite(manifest_bytes, table=set_column("rows", [100, 100, 100, 7]),
                   redigest=False)
    source = "s3://bucket/idx/manifests/v00000003.manifest.arrow"
    with pytest.raises(IntegrityError, match=f"manifest {source}: digest mismatch"):
        Manifest.from_bytes(data, source=source)


def _drop_column(t: pa.Table) -> pa.Table:
    return t.drop_columns(["validation"])


def _nullable_table(t: pa.Table) -> pa.Table:
    return t.cast(pa.schema([f.with_nullable(True) for f in t.schema]))


@pytest.mark.parametrize("edit, message", [
    ({"table": set_column("rows", [1, 2, 3, 4], pa.int32())}, "schema"),
    ({"table": _drop_column}, "schema"),
    ({"table": _nullable_table}, "schema"),
    ({"meta": lambda m: m.pop("run_id")}, "lacks required keys"),
    ({"meta": lambda m: m.update(rows=5)}, "'rows'"),
    ({"meta": lambda m: m.update(dim=0)}, "dim"),
    ({"meta": lambda m: m.update(version=True)}, "version"),
    ({"meta": lambda m: m.update(codecs="semq1")}, "codecs"),
    ({"meta": lambda m: m.update(format_version="1")}, "MAJOR.MINOR"),
    ({"meta": lambda m: m.update(digest="zz"), "redigest": False}, "digest"),
    ({"table": set_column("id_min", ["007", "100", "200", "300"])}, "decimal"),
    ({"table": set_column("id_max", ["99", "199", "299", str(2**63)])}, "int64"),
    ({"table": set_column("code_bytes_per_row", [1, 80, 80, 80])}, "code_bytes_per_row"),
    ({"table": set_column("path", ["a", "../b", "c", "d"])}, "'..'"),
    ({"table": set_column("path", ["a", "a", "c", "d"])}, "listed twice"),
    ({"table": set_column("stats", ["{}", "[]", "{}", "{}"])}, "JSON object"),
    ({"table": set_column("stats", ["{}", '{"a":NaN}', "{}", "{}"])}, "NaN"),
    ({"table": set_column("stats", ["{}", '{"a":1,"a":2}', "{}", "{}"])}, "duplicate"),
    ({"table": set_column("id_type", ["int64", "uuid", "int64", "int64"])}, "id_type"),
    ({"table": set_column("codecs", [["semq1", "int8"]] * 3 + [["semq1"]])}, "lengths"),
    ({"table": set_column("file_sha256", [None, "a" * 64, "a" * 64, "a" * 64])},
     "file_sha256"),
])
def test_malformed_manifests_raise_format_error(manifest_bytes: bytes, edit: dict,
                                                message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Manifest.from_bytes(rewrite(manifest_bytes, **edit))


def test_missing_or_garbage_metadata(manifest_bytes: bytes) -> None:
    t = pa.ipc.open_file(pa.py_buffer(manifest_bytes)).read_all()
    for metadata, message in [(None, "not a semq manifest"),
                              ({MANIFEST_METADATA_KEY: b"{not json"}, "not valid JSON"),
                              ({MANIFEST_METADATA_KEY: b"\xff\xfe"}, "not valid JSON"),
                              ({MANIFEST_METADATA_KEY: b"[1, 2]"}, "not a JSON object")]:
        sink = pa.BufferOutputStream()
        table = t.replace_schema_metadata(metadata)
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with pytest.raises(FormatError, match=message):
            Manifest.from_bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("cut", [0, 1, 8, 100, -100, -7, -1])
def test_truncated_bytes(manifest_bytes: bytes, cut: int) -> None:
    with pytest.raises(FormatError, match="manifest x: "):
        Manifest.from_bytes(manifest_bytes[:cut], source="x")


def test_not_bytes_and_size_limit(manifest_bytes: bytes) -> None:
    with pytest.raises(FormatError, match="expected bytes"):
        Manifest.from_bytes("a string")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="limit"):
        Manifest.from_bytes(manifest_bytes, max_bytes=len(manifest_bytes) - 1)
    assert Manifest.from_bytes(memoryview(manifest_bytes)).digest


def test_other_arrow_files_are_not_manifests() -> None:
    sink = pa.BufferOutputStream()
    table = pa.table({"x": [1, 2, 3]})
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(FormatError, match="not a semq manifest"):
        Manifest.from_bytes(sink.getvalue().to_pybytes())


@settings(derandomize=True, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_raise_format_error_or_change_nothing(manifest: Manifest,
                                                         manifest_bytes: bytes,
                                                         data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.integers(0, len(manifest_bytes) * 8 - 1), min_size=1,
                               max_size=3, unique=True))
    corrupted = bytearray(manifest_bytes)
    for bit in flips:
        corrupted[bit // 8] ^= 1 << (bit % 8)
    try:
        back = Manifest.from_bytes(bytes(corrupted))
    except FormatError:
        return
    # The flip hit bytes that carry no content (padding, the schema copy before the first
    # batch, alignment) or created_at, the one field outside the digest.
    assert back.digest == manifest.digest
    assert dataclasses.replace(back, created_at=manifest.created_at) == manifest
