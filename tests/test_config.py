"""Job configs (semq_transforms.config) and the local sample dataset (semq_transforms.sample_data)."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from semq_transforms.config import (
    REDACTED,
    EncodeConfig,
    InputConfig,
    JobConfig,
    OutputConfig,
    ValidationConfig,
    config_digest,
    infer_format,
    load_config,
    parse_config,
    redact_url,
)
from semq_transforms.errors import ConfigError, InvalidInputError, SemqError
from semq_transforms.sample_data import (
    ensure_sample_data,
    sample_embeddings,
    write_sample_embeddings,
)

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "configs" / "local.yaml"
S3 = ROOT / "configs" / "s3.yaml"

SECRET = "s3cr3t-Value/with+chars=="
KEY_ID = "AKIAFAKEKEYID0000"


def local_data() -> dict[str, Any]:
    return yaml.safe_load(LOCAL.read_text())


def write_config(folder: Path, data: Any, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def set_in(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


# ---------------------------------------------------------------------------------------------
# the bundled configs


def test_local_config_loads_with_paths_inside_the_clone(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)            # relative paths follow the file, not the cwd
    config = load_config(LOCAL, env={})
    assert isinstance(config, JobConfig)
    assert config.input.url == f"{ROOT.as_posix()}/data/sample/*.parquet"
    assert config.output.index_url == f"{ROOT.as_posix()}/data/indexes/local-sample"
    assert config.input.generate_sample is True
    assert config.input.format_for(config.input.url) == "parquet"
    assert config.input.dim == 384
    assert config.encode.codecs == ["semq1", "semq4"]
    assert config.output.run_id is None
    assert 0 < config.validation.min_recall_at_k <= 1
    assert config.input.storage_options == {} and config.output.storage_options == {}
    assert "data/" in (ROOT / ".gitignore").read_text().split()


def test_s3_config_reads_credentials_from_the_environment() -> None:
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    config = load_config(S3, env=env)
    for options in (config.input.storage_options, config.output.storage_options):
        assert options == {"key": KEY_ID, "secret": SECRET,
                           "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000",
                                             "region_name": "us-east-1"}}
    assert config.input.url.startswith("s3://") and config.output.index_url.startswith("s3://")
    text = S3.read_text()
    assert SECRET not in text and KEY_ID not in text


def test_s3_config_without_environment_leaves_optional_keys_out() -> None:
    config = load_config(S3, env={})       # botocore's own credential chain then applies
    assert config.input.storage_options == {"client_kwargs": {"region_name": "us-east-1"}}
    config = load_config(S3, env={"AWS_DEFAULT_REGION": "eu-west-1"})
    assert config.output.storage_options["client_kwargs"]["region_name"] == "eu-west-1"


def test_bundled_configs_document_every_field() -> None:
    """Each field of the models appears (commented) in local.yaml."""
    text = LOCAL.read_text()
    for model in (InputConfig, OutputConfig, EncodeConfig, ValidationConfig):
        for field in model.model_fields:
            assert f"\n  {field}:" in text, field
    for field in JobConfig.model_fields:
        assert f"\n{field}:" in text, field
    assert text.count("\n  # ") >= 15


# ---------------------------------------------------------------------------------------------
# bad fields


BAD_FIELDS = [
    ("name", "has spaces", "name", "must be 1-128 characters"),
    ("name", "", "name", "must be 1-128 characters"),
    ("input.url", "  ", "input.url", "non-empty"),
    ("input.format", "csv", "input.format", "Input should be 'parquet', 'arrow', 'npy' or"),
    ("input.vector_column", "", "input.vector_column", "at least 1 character"),
    ("input.id_column", "", "input.id_column", "at least 1 character"),
    ("input.dim", 0, "input.dim", "greater than or equal to 1"),
    ("input.dim", "wide", "input.dim", "valid integer"),
    ("input.batch_rows", -5, "input.batch_rows", "greater than or equal to 1"),
    ("input.storage_options", "key=abc", "input.storage_options", "valid dictionary"),
    ("input.generate_sample", "perhaps", "input.generate_sample", "valid boolean"),
    ("input", "s3://x", "input", "valid dictionary"),
    ("output.index_url", DELETE, "output.index_url", "Field required"),
    ("output.run_id", "../escape", "output.run_id", "run_id must be 1-128 characters"),
    ("output.run_id", "-lead", "output.run_id", "run_id must be 1-128 characters"),
    ("encode.codecs", ["semq4", "nope"], "encode.codecs.1", "unknown codec id 'nope'"),
    ("encode.codecs", ["semq9"], "encode.codecs.0", "takes bits in"),
    ("encode.codecs", [], "encode.codecs", "at least 1 item"),
    ("encode.codecs", "semq4", "encode.codecs", "valid list"),
    ("encode.codecs", ["semq4", "SEMQ4"], "encode.codecs", "repeated: ['semq4']"),
    ("encode.rows_per_shard", 0, "encode.rows_per_shard", "greater than or equal to 1"),
    ("validation.k", 0, "validation.k", "greater than or equal to 1"),
    ("validation.sample_queries", 0, "validation.sample_queries", "greater than or equal to 1"),
    ("validation.seed", -1, "validation.seed", "greater than or equal to 0"),
    ("validation.min_recall_at_k", 1.5, "validation.min_recall_at_k",
     "Input should be less than or equal to 1"),
    ("validation.min_recall_at_k", 0, "validation.min_recall_at_k", "greater than 0"),
    ("validation.min_recall_at_k", DELETE, "validation.min_recall_at_k", "Field required"),
    ("validation.max_rejected_fraction", -0.1, "validation.max_rejected_fraction",
     "greater than or equal to 0"),
    ("validation.max_rejected_fraction", 2, "validation.max_rejected_fraction",
     "less than or equal to 1"),
    ("validation.reject_zero_vectors", "maybe", "validation.reject_zero_vectors",
     "valid boolean"),
    ("validation", DELETE, "validation", "Field required"),
    # YAML booleans are not numbers (pydantic's lax mode took true as 1)
    ("validation.k", True, "validation.k", "expected a number, got a boolean"),
    ("encode.rows_per_shard", True, "encode.rows_per_shard", "got a boolean"),
    ("validation.min_recall_at_k", True, "validation.min_recall_at_k", "got a boolean"),
    ("validation.max_rejected_fraction", False, "validation.max_rejected_fraction",
     "got a boolean"),
    ("input.dim", True, "input.dim", "got a boolean"),
    # a seed numpy cannot take failed while the pipeline was built
    ("validation.seed", 2**64, "validation.seed", "less than or equal to"),
]


@pytest.mark.parametrize(("dotted", "value", "field", "message"), BAD_FIELDS,
                         ids=[f"{c[0]}={c[1]!r}"[:60] for c in BAD_FIELDS])
def test_bad_field_names_file_and_field(tmp_path: Path, dotted: str, value: Any, field: str,
                                        message: str) -> None:
    path = write_config(tmp_path, set_in(local_data(), dotted, value))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    text = str(info.value)
    assert text.startswith(f"{path}: {field}: "), text
    assert message in text
    assert "(line " in text
    assert isinstance(info.value, SemqError) and isinstance(info.value, ValueError)


def test_message_format_matches_the_spec(tmp_path: Path) -> None:
    lines = LOCAL.read_text().replace("min_recall_at_k: 0.95", "min_recall_at_k: 1.01")
    path = write_config(tmp_path, lines, "x.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    line = 1 + lines.splitlines().index("  min_recall_at_k: 1.01")
    assert str(info.value) == (f"{path}: validation.min_recall_at_k: Input should be less than "
                               f"or equal to 1 (line {line})")


def test_every_problem_is_reported(tmp_path: Path) -> None:
    data = set_in(set_in(local_data(), "validation.k", 0), "encode.rows_per_shard", 0)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data), env={})
    assert len(str(info.value).splitlines()) == 2


@pytest.mark.parametrize(("dotted", "typo", "hint"), [
    ("", "validaton", "validation"),
    ("input", "vector_colum", "vector_column"),
    ("output", "runid", "run_id"),
    ("encode", "codec", "codecs"),
    ("validation", "min_recall_at_10", "min_recall_at_k"),
    ("validation", "unrelated_key", None),
])
def test_extra_keys_are_rejected(tmp_path: Path, dotted: str, typo: str,
                                 hint: str | None) -> None:
    data = local_data()
    target = data if not dotted else data[dotted]
    target[typo] = 1
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    field = f"{dotted}.{typo}" if dotted else typo
    assert str(info.value).startswith(f"{path}: {field}: Extra inputs are not permitted")
    if hint:
        assert f"did you mean {hint!r}" in str(info.value)


def test_codec_specs_are_normalized() -> None:
    data = set_in(local_data(), "encode.codecs", [" SEMQ1 ", "int8"])
    assert parse_config(data, env={}).encode.codecs == ["semq1", "int8"]


def test_ids_url_is_for_npy_only(tmp_path: Path) -> None:
    data = set_in(local_data(), "input.ids_url", "ids.npy")
    with pytest.raises(ConfigError, match=r"input: ids_url is only for npy input"):
        load_config(write_config(tmp_path, data), env={})
    npy = set_in(set_in(set_in(data, "input.url", "x/*.npy"), "input.format", "auto"),
                 "input.generate_sample", False)
    config = load_config(write_config(tmp_path, npy), env={})
    assert config.input.ids_url == f"{tmp_path.as_posix()}/ids.npy"
    assert config.input.format_for("x/part-0.npy") == "npy"


def test_generate_sample_needs_a_local_parquet_target() -> None:
    base = local_data()
    with pytest.raises(ConfigError, match="input: generate_sample .* local or memory"):
        parse_config(set_in(base, "input.url", "s3://b/x/*.parquet"), env={})
    with pytest.raises(ConfigError, match="input: generate_sample writes Parquet"):
        parse_config(set_in(base, "input.url", "data/*.npy"), env={})
    with pytest.raises(ConfigError, match="input: generate_sample writes columns"):
        parse_config(set_in(base, "input.vector_column", "vec"), env={})
    assert parse_config(set_in(base, "input.url", "memory://s/*.parquet"), env={})


def test_infer_format_and_auto() -> None:
    assert [infer_format(p) for p in ("a.parquet", "s3://b/a.PQ", "a.feather", "a.arrow",
                                      "x.ipc", "v.npy", "v.csv", "dir/*")] == [
        "parquet", "parquet", "arrow", "arrow", "arrow", "npy", None, None]
    config = parse_config(set_in(set_in(local_data(), "input.format", "auto"),
                                 "input.generate_sample", False), env={})
    assert config.input.format_for("part-1.feather") == "arrow"
    with pytest.raises(ConfigError, match="input.format: 'auto' cannot tell"):
        config.input.format_for("part-1.bin")


@pytest.mark.parametrize(("text", "message"), [
    ("name: [unclosed\n", "while parsing a flow sequence (line 1): expected ',' or ']'"),
    ("name: a\nname: b\n", "duplicate key 'name' (line 2"),
    ("name: &n job\ninput: {url: *n}\n", "aliases"),
    ("- a\n- b\n", "got a list"),
    ("", "got an empty file"),
    ("just text\n", "got a str"),
    ("!!python/object:os.system {}\n", "could not determine a constructor"),
])
def test_bad_yaml_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the config file"):
        load_config(missing)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin\.yaml: config file is not UTF-8"):
        load_config(binary)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big)


def test_load_from_an_fsspec_url() -> None:
    import fsspec

    with fsspec.open("memory://configs/job.yaml", "w") as f:
        f.write(yaml.safe_dump(set_in(local_data(), "input.generate_sample", False)))
    config = load_config("memory://configs/job.yaml", env={})
    assert config.input.url == "../data/sample/*.parquet"     # no local folder to resolve against
    data = set_in(local_data(), "validation.k", -1)
    with fsspec.open("memory://configs/bad.yaml", "w") as f:
        f.write(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"^memory://configs/bad\.yaml: validation\.k: "):
        load_config("memory://configs/bad.yaml", env={})


# ---------------------------------------------------------------------------------------------
# environment references


def with_options(options: Any, where: str = "input") -> dict[str, Any]:
    return set_in(local_data(), f"{where}.storage_options", options)


def test_env_references_resolve() -> None:
    options = {"key": "${ENV:KEY_ID}", "secret": "${ENV:SECRET}",
               "client_kwargs": {"endpoint_url": "http://${ENV:HOST}:${ENV:PORT:-9000}/",
                                 "region_name": "${ENV:REGION:-us-east-1}",
                                 "maybe": "${ENV:UNSET_OPTIONAL:-}"},
               "list": ["${ENV:KEY_ID}", 3], "anon": False, "retries": 5}
    env = {"KEY_ID": KEY_ID, "SECRET": SECRET, "HOST": "minio", "REGION": ""}
    config = parse_config(with_options(options), env=env)
    assert config.input.storage_options == {
        "key": KEY_ID, "secret": SECRET,
        "client_kwargs": {"endpoint_url": "http://minio:9000/", "region_name": "us-east-1"},
        "list": [KEY_ID, 3], "anon": False, "retries": 5}


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEMQ_TEST_SECRET", SECRET)
    path = write_config(tmp_path, with_options({"secret": "${ENV:SEMQ_TEST_SECRET}"}, "output"))
    assert load_config(path).output.storage_options == {"secret": SECRET}


@pytest.mark.parametrize(("options", "env", "field", "message"), [
    ({"secret": "${ENV:SEMQ_MISSING}"}, {}, "storage_options.secret",
     "environment variable SEMQ_MISSING is not set"),
    ({"secret": "${ENV:SEMQ_EMPTY}"}, {"SEMQ_EMPTY": ""}, "storage_options.secret",
     "environment variable SEMQ_EMPTY is empty"),
    ({"client_kwargs": {"endpoint_url": "${ENV:SEMQ_MISSING}"}}, {},
     "storage_options.client_kwargs.endpoint_url", "SEMQ_MISSING is not set"),
    ({"list": ["ok", "${ENV:SEMQ_MISSING}"]}, {}, "storage_options.list.1", "is not set"),
    ({"secret": "${ENV:BAD-NAME}"}, {}, "storage_options.secret", "malformed"),
    ({"secret": "${ENV:UNCLOSED"}, {}, "storage_options.secret", "malformed"),
    # a reference in a default was passed on as literal text (a credential "${ENV:X}")
    ({"key": "${ENV:SEMQ_UNSET:-${ENV:SEMQ_SECRET}}"}, {"SEMQ_SECRET": "s"},
     "storage_options.key", "malformed"),
])
def test_missing_or_bad_env_reference(tmp_path: Path, options: Any, env: dict[str, str],
                                      field: str, message: str) -> None:
    path = write_config(tmp_path, with_options(options, "output"))
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert str(info.value).startswith(f"{path}: output.{field}: ")
    assert message in str(info.value)


def test_env_references_outside_storage_options_are_refused() -> None:
    data = set_in(local_data(), "output.index_url", "s3://${ENV:BUCKET}/index")
    with pytest.raises(ConfigError, match="output.index_url: environment references"):
        parse_config(data, env={"BUCKET": "b"})


# ---------------------------------------------------------------------------------------------
# redaction and digest


def secret_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobConfig:
    monkeypatch.setenv("SEMQ_TEST_KEY_ID", KEY_ID)
    monkeypatch.setenv("SEMQ_TEST_SECRET", SECRET)
    options = {"key": "${ENV:SEMQ_TEST_KEY_ID}", "secret": "${ENV:SEMQ_TEST_SECRET}",
               "client_kwargs": {"endpoint_url": "https://${ENV:SEMQ_TEST_SECRET}.example"},
               "list": ["${ENV:SEMQ_TEST_SECRET}"]}
    data = with_options(options, "input")
    data["output"]["storage_options"] = {"token": "${ENV:SEMQ_TEST_SECRET}"}
    data["output"]["index_url"] = f"https://user:{SECRET}@host/index"
    data["input"]["url"] = f"https://host/e/part-0.parquet?sig={KEY_ID}"
    data["input"]["generate_sample"] = False
    config = load_config(write_config(tmp_path, data))
    assert config.input.storage_options["secret"] == SECRET      # resolved for fsspec
    return config


def test_redacted_dump_contains_no_secret(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = secret_config(tmp_path, monkeypatch)
    safe = config.model_dump_safe()
    text = json.dumps(safe)
    for leaked in (SECRET, KEY_ID):
        assert leaked not in text
        assert leaked not in repr(config) and leaked not in str(config)
        assert leaked not in config.redacted().model_dump_json()
        assert leaked not in repr(config.input) + repr(config.output)
    assert safe["input"]["storage_options"] == {
        "key": REDACTED, "secret": REDACTED, "client_kwargs": {"endpoint_url": REDACTED},
        "list": [REDACTED]}
    assert safe["output"]["index_url"] == "https://***@host/index"
    assert safe["input"]["url"] == "https://host/e/part-0.parquet?***"
    assert isinstance(config.redacted(), JobConfig)
    assert config.redacted().model_dump_safe() == safe


@pytest.mark.parametrize("field", ["input.url", "input.ids_url", "output.index_url"])
@pytest.mark.parametrize("scheme", ["s3", "gs", "az", "file"])
def test_credentials_in_object_store_urls_are_refused_redacted(tmp_path: Path, field: str,
                                                               scheme: str) -> None:
    """``s3://key:secret@bucket`` is a bucket name to s3fs and botocore, whose errors then
    quote the secret: such URLs are refused when the config is read, the secret not shown."""
    data = set_in(local_data(), field, f"{scheme}://{KEY_ID}:{SECRET}@bucket/x.npy")
    if field == "input.ids_url":
        data = set_in(data, "input.format", "npy")
    with pytest.raises(ConfigError, match=f"{field}: .*{scheme}:// URLs take no credentials"
                       ) as info:
        load_config(write_config(tmp_path, data))
    assert SECRET not in str(info.value) and KEY_ID not in str(info.value)


def test_errors_never_show_secret_values(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMQ_TEST_SECRET", SECRET)
    data = with_options({"secret": "${ENV:SEMQ_TEST_SECRET}", "nested": {"x": SECRET}})
    data = set_in(set_in(data, "validation.k", "not a number"), "input.batch_rows", SECRET)
    data = set_in(data, "output.storage_options", SECRET)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data))
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(("url", "safe"), [
    ("gs://bucket/x/*.parquet", "gs://bucket/x/*.parquet"),
    ("s3://bucket/part-?.parquet", "s3://bucket/part-?.parquet"),     # a glob, not a query
    ("/abs/path/*.npy", "/abs/path/*.npy"),
    ("rel/p?.npy", "rel/p?.npy"),
    ("https://u:p@host:8443/p?t=1", "https://***@host:8443/p?***"),
    ("HTTPS://host/p?sig=abc&x=1", "HTTPS://host/p?***"),
    ("sftp://user@host/x", "sftp://***@host/x"),
    ("s3://k:se/cret@bucket/x", "s3://***@bucket/x"),                  # unescaped slash
    ("s3://k:a@b@bucket/x", "s3://***@bucket/x"),
])
def test_redact_url(url: str, safe: str) -> None:
    assert redact_url(url) == safe


def test_config_digest_is_stable_and_tracks_fields(tmp_path: Path) -> None:
    path = write_config(tmp_path, local_data())
    first, second = load_config(path, env={}), load_config(path, env={})
    digest = config_digest(first)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert config_digest(second) == digest
    assert config_digest(pickle.loads(pickle.dumps(first))) == digest
    assert pickle.loads(pickle.dumps(first)) == first
    seen = {digest}
    for dotted, value in [("validation.min_recall_at_k", 0.96), ("encode.codecs", ["semq4"]),
                          ("encode.rows_per_shard", 4999), ("input.batch_rows", 1024),
                          ("output.run_id", "r1"), ("name", "other"),
                          ("validation.reject_zero_vectors", False),
                          ("input.storage_options", {"anon": True})]:
        changed = load_config(write_config(tmp_path, set_in(local_data(), dotted, value),
                                           "changed.yaml"), env={})
        seen.add(config_digest(changed))
    assert len(seen) == 9


def test_config_digest_ignores_credential_values(tmp_path: Path) -> None:
    path = write_config(tmp_path, with_options({"key": "${ENV:K}", "secret": "${ENV:S}"}))
    one = load_config(path, env={"K": "a", "S": "old"})
    two = load_config(path, env={"K": "a", "S": "rotated"})
    assert one != two and config_digest(one) == config_digest(two)


def test_models_are_immutable() -> None:
    config = parse_config(local_data(), env={})
    with pytest.raises(ValueError, match="frozen"):
        config.validation.k = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# sample data


def read_files(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    tables = [pq.read_table(p) for p in paths]
    table = pa.concat_tables(tables)
    ids = table.column("id").to_numpy()
    embedding = table.column("embedding").combine_chunks()
    x = embedding.flatten().to_numpy().reshape(len(table), embedding.type.list_size)
    return ids, x


def test_sample_is_byte_identical_across_runs(tmp_path: Path) -> None:
    a = write_sample_embeddings(str(tmp_path / "a"), rows=3000, dim=48, seed=7, files=3)
    b = write_sample_embeddings(str(tmp_path / "b"), rows=3000, dim=48, seed=7, files=3)
    assert [Path(p).name for p in a] == ["part-00000.parquet", "part-00001.parquet",
                                         "part-00002.parquet"]
    assert a == [f"{tmp_path / 'a'}/{Path(p).name}" for p in a]
    for pa_, pb in zip(a, b, strict=True):
        assert Path(pa_).read_bytes() == Path(pb).read_bytes()
    c = write_sample_embeddings(str(tmp_path / "c"), rows=3000, dim=48, seed=8, files=3)
    assert Path(a[0]).read_bytes() != Path(c[0]).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [Path(p).name for p in a]


def test_sample_schema_and_vectors(tmp_path: Path) -> None:
    paths = write_sample_embeddings(str(tmp_path), rows=2001, dim=64, seed=0, files=4)
    schema = pq.read_schema(paths[0])
    assert schema.field("id").type == pa.int64()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 64)
    assert [pq.read_metadata(p).num_rows for p in paths] == [500, 500, 500, 501]
    ids, x = read_files(paths)
    assert ids.dtype == np.int64 and np.array_equal(ids, np.arange(2001))
    assert x.dtype == np.float32 and x.shape == (2001, 64)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x.astype(np.float64), axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(x, sample_embeddings(2001, 64, seed=0))


def test_sample_default_size_is_clustered_like_sentence_embeddings(tmp_path: Path) -> None:
    paths = write_sample_embeddings(str(tmp_path))
    assert len(paths) == 4
    ids, x = read_files(paths)
    assert x.shape == (20_000, 384) and np.array_equal(ids, np.arange(20_000))
    q = x[np.random.default_rng(0).choice(len(x), 100, replace=False)].astype(np.float64)
    s = np.sort(q @ x.T.astype(np.float64), axis=1)[:, ::-1]
    nearest, tenth, everything = s[:, 1].mean(), s[:, 9].mean(), s.mean()
    assert 0.1 < everything < 0.5                # a common direction, like real embeddings
    assert nearest > everything + 0.35 and tenth > everything + 0.3   # tight neighborhoods
    eig = np.linalg.eigvalsh(np.cov(x[:5000].T.astype(np.float64)))[::-1]
    assert 0.2 < eig[:10].sum() / eig.sum() < 0.6   # anisotropic, not low rank


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rows": 0}, "rows must be an integer >= 1"),
    ({"dim": 1}, "dim must be an integer >= 2"),
    ({"files": 0}, "files must be an integer >= 1"),
    ({"rows": 3, "files": 4}, "must not exceed rows"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"rows": 2.5}, "rows must be an integer"),
])
def test_sample_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        write_sample_embeddings(str(tmp_path), **kwargs)


def test_ensure_sample_data_writes_once(tmp_path: Path) -> None:
    pattern = f"{tmp_path}/data/sample/*.parquet"
    made = ensure_sample_data(pattern, rows=600, dim=16, files=2)
    assert made == [f"{tmp_path}/data/sample/part-00000.parquet",
                    f"{tmp_path}/data/sample/part-00001.parquet"]
    before = [Path(p).stat().st_mtime_ns for p in made]
    again = ensure_sample_data(pattern, rows=999, dim=8, files=3)   # present: left alone
    assert again == made and [Path(p).stat().st_mtime_ns for p in made] == before
    with pytest.raises(InvalidInputError, match="do not match"):
        ensure_sample_data(f"{tmp_path}/other/*.npy", rows=10, dim=4, files=1)
    with pytest.raises(InvalidInputError, match="without wildcards"):
        ensure_sample_data(f"{tmp_path}/x/*/y/*.parquet", rows=10, dim=4, files=1)


def test_ensure_sample_data_on_memory_fs() -> None:
    made = ensure_sample_data("memory://semq-sample-test/s/*.parquet", rows=50, dim=8, files=2)
    assert made == ["memory://semq-sample-test/s/part-00000.parquet",
                    "memory://semq-sample-test/s/part-00001.parquet"]
    import fsspec

    with fsspec.open(made[1], "rb") as f:
        assert pq.read_table(f).num_rows == 25


def test_local_config_drives_sample_generation(tmp_path: Path) -> None:
    """A copy of configs/local.yaml in another clone writes the sample inside that clone."""
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "local.yaml"
    path.write_text(LOCAL.read_text())
    config = load_config(path, env={})
    assert config.input.url == f"{tmp_path.as_posix()}/data/sample/*.parquet"
    files = ensure_sample_data(config.input.url, rows=400, dim=config.input.dim, files=4)
    assert len(files) == 4 and all(f.startswith(f"{tmp_path}/data/sample/") for f in files)
    assert pq.read_schema(files[0]).field(config.input.vector_column).type.list_size == 384


def test_with_index_url_checks_like_the_yaml_field(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    config = load_config(LOCAL)
    monkeypatch.chdir(tmp_path)
    moved = config.with_index_url("  out/idx ")
    assert moved.output.index_url == f"{tmp_path.as_posix()}/out/idx"
    assert moved.input == config.input and config.output.index_url != moved.output.index_url
    assert config.with_index_url("s3://bucket/idx").output.index_url == "s3://bucket/idx"
    with pytest.raises(ValueError, match="only resolved inside storage_options"):
        config.with_index_url("${ENV:WHERE}")
    with pytest.raises(ValueError, match="non-empty"):
        config.with_index_url(" ")


def test_dim_is_at_most_what_a_shard_stores() -> None:
    assert parse_config(set_in(local_data(), "input.dim", 2**20), env={}).input.dim == 2**20
    with pytest.raises(ConfigError, match=r"input\.dim: .*1048576"):
        parse_config(set_in(local_data(), "input.dim", 2**20 + 1), env={})
