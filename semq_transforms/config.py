"""Job configuration of the ingestion pipeline: pydantic models, the YAML loader, redaction.

A job config is a YAML file with five top-level keys (``configs/local.yaml`` and
``configs/s3.yaml`` are commented examples)::

    name: nightly-embeddings          # 1-128 of [A-Za-z0-9._-], starts with a letter or digit
    input:      {url, format, vector_column, id_column, ids_url, dim, batch_rows,
                 storage_options, generate_sample}
    output:     {index_url, run_id, storage_options}
    encode:     {codecs, rows_per_shard}                      # optional, defaults: semq4, 100_000
    validation: {k, sample_queries, seed, min_recall_at_k,   # required: it is the publish gate
                 max_rejected_fraction, min_compression_ratio, reject_zero_vectors}

:func:`load_config` reads a file (a path or any fsspec URL) with a YAML *safe* loader and
validates it; every problem raises :class:`~semq_transforms.errors.ConfigError` whose message
names the file, the field path and the line::

    configs/x.yaml: validation.min_recall_at_k: Input should be less than or equal to 1 (line 31)

Every model forbids unknown keys, so a typo fails instead of being ignored (with a
"did you mean" hint).

**Environment variables** (the one convention: ``${ENV:NAME}`` references). Only values inside
``storage_options`` (at any depth, e.g. ``client_kwargs.endpoint_url``) are resolved, from
the environment, at load time:

* ``"${ENV:NAME}"``: the variable must be set and non-empty, else a ``ConfigError`` naming the
  variable and the field. A reference may be part of a longer string (``"http://${ENV:HOST}"``).
* ``"${ENV:NAME:-default}"``: ``default`` when the variable is unset or empty.
* ``"${ENV:NAME:-}"`` as the *whole* value: when the variable is unset or empty the key is
  left out, so the filesystem's own default applies (for s3fs: botocore's credential chain,
  AWS's endpoint). That makes one file work with keys, with IAM roles and with MinIO.

References anywhere else (URLs, names) are refused rather than silently kept as text.
Credentials therefore never need to be in a config file.

**Secrets never leave the process through this module.** ``repr()`` / ``str()`` of a model
show storage options as ``"***"``; :meth:`JobConfig.model_dump_safe` (a JSON-ready dict) and
:meth:`JobConfig.redacted` (a model) replace every storage option value with ``"***"`` (keys
are kept) and mask user info in URLs and http(s) query strings (``s3://***@bucket/x``,
``https://host/f.parquet?***``); error messages never include input values. Use the safe
dump for reports, manifests and logs. ``model_dump()`` is the real thing (for fsspec) and
must not be written anywhere.

**Relative paths.** A plain relative path in ``input.url``, ``input.ids_url`` or
``output.index_url`` is resolved against the directory of the config file when the config is
loaded from a local file, so ``configs/local.yaml`` can say ``../data/sample/*.parquet``
and work from any working directory. URLs with a protocol are kept as written.

**Digest.** :func:`config_digest` is the SHA-256 of the canonical JSON of the safe dump
(sorted keys, no whitespace). It is stable across loads and processes, changes when any field
changes, and does not depend on credential values (only on which storage option keys are
set), so rotating a key does not change a derived run id.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Self

import fsspec
import yaml
from fsspec.core import split_protocol
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from semq_transforms._formats import FileFormat, infer_format
from semq_transforms._urls import REDACTED, check_url_credentials, redact_url
from semq_transforms.errors import ConfigError, SemqError
from semq_transforms.format._header import MAX_DIM

__all__ = [
    "REDACTED",
    "EncodeConfig",
    "InputConfig",
    "JobConfig",
    "OutputConfig",
    "ValidationConfig",
    "config_digest",
    "infer_format",
    "load_config",
    "parse_config",
    "redact_url",
]

#: Larger config files are refused before parsing.
MAX_CONFIG_BYTES = 1 << 20

InputFormat = FileFormat

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# (a default holds no "${": a nested reference is malformed, not literal text)
_ENV_REF = re.compile(
    r"\$\{ENV:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>(?:(?!\$\{)[^}])*))?\}")
_NUMBER_TYPES = (int, float, int | None, float | None)
_OPTIONAL_REF = re.compile(r"\$\{ENV:[A-Za-z_][A-Za-z0-9_]*:-\}")
_URL_FIELDS = frozenset({"url", "ids_url", "index_url"})


# ---------------------------------------------------------------------------------------------
# helpers: environment references, redaction, formats


def _resolve_env(value: Any, env: Mapping[str, str], path: tuple = ()) -> Any:
    """Resolve ``${ENV:...}`` references in the strings of a storage-options tree.

    Returns the resolved tree; dict entries whose whole value is ``${ENV:NAME:-}`` and that
    resolve to ``""`` are left out. Raises ``PydanticCustomError`` naming the variable (never
    a value)."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            sub = (*path, key)
            if isinstance(item, str) and _OPTIONAL_REF.fullmatch(item.strip()):
                resolved = _resolve_env(item.strip(), env, sub)
                if resolved == "":
                    continue
                out[key] = resolved
            else:
                out[key] = _resolve_env(item, env, sub)
        return out
    if isinstance(value, list | tuple):
        return [_resolve_env(item, env, (*path, i)) for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value
    if "${" in _ENV_REF.sub("", value):
        raise _env_error(path, "malformed environment reference; write ${ENV:NAME}, "
                               "${ENV:NAME:-default} or ${ENV:NAME:-}")

    def substitute(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        found = env.get(name)
        if found:
            return found
        if default is not None:
            return default
        state = "is empty" if found == "" else "is not set"
        raise _env_error(path, f"environment variable {name} {state} (referenced as "
                               f"${{ENV:{name}}}; use ${{ENV:{name}:-}} to make it optional)")

    return _ENV_REF.sub(substitute, value)


def _env_error(subpath: tuple, message: str) -> PydanticCustomError:
    return PydanticCustomError("env_reference", "{message}",
                               {"message": message, "subpath": subpath})


def _redact_tree(value: Any) -> Any:
    """Every leaf of a storage-options tree replaced by ``"***"``; keys kept."""
    if isinstance(value, Mapping):
        return {key: _redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_tree(item) for item in value]
    return REDACTED


def _safe_tree(value: Any) -> Any:
    """A JSON dump with storage options redacted and URL fields masked, at any depth."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "storage_options":
                out[key] = _redact_tree(item)
            elif key in _URL_FIELDS and isinstance(item, str):
                out[key] = redact_url(item)
            else:
                out[key] = _safe_tree(item)
        return out
    if isinstance(value, list):
        return [_safe_tree(item) for item in value]
    return value


def _is_local_relative(url: str) -> bool:
    protocol, path = split_protocol(url)
    return protocol is None and not posixpath.isabs(path) and not path.startswith("~")


# ---------------------------------------------------------------------------------------------
# models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True,
                              coerce_numbers_to_str=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML ``true`` is not the number 1 (pydantic's lax mode would take it as one)."""
        if isinstance(value, bool) and info.field_name is not None and (
                cls.model_fields[info.field_name].annotation in _NUMBER_TYPES):
            raise PydanticCustomError("bool_number", "expected a number, got a boolean")
        return value

    def model_dump_safe(self) -> dict[str, Any]:
        """JSON-ready dict for reports, manifests and logs: every storage option value is
        ``"***"`` (keys kept), URL passwords and query strings are masked."""
        return _safe_tree(self.model_dump(mode="json"))

    def redacted(self) -> Self:
        """A copy of this model built from :meth:`model_dump_safe` (no secret inside)."""
        return type(self).model_validate(self.model_dump_safe(),
                                         context={"env": {}, "base_dir": None})

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "storage_options":
                value = _redact_tree(value)
            elif name in _URL_FIELDS and isinstance(value, str):
                value = redact_url(value)
            yield name, value


def _check_url(value: str, info: ValidationInfo) -> str:
    """Shared URL field check: non-empty, no env reference, relative paths made absolute."""
    value = value.strip()
    if not value:
        raise ValueError("must be a non-empty path or URL")
    if "${" in value:
        raise ValueError("environment references (${ENV:...}) are only resolved inside "
                         "storage_options")
    check_url_credentials(value)
    base_dir = (info.context or {}).get("base_dir")
    if base_dir and _is_local_relative(value):
        value = posixpath.normpath(posixpath.join(base_dir, value))
    return value


def _resolve_storage_options(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    context = info.context or {}
    env = context.get("env", os.environ)
    return _resolve_env(value, env)


class InputConfig(_Model):
    """Where the float embeddings are and how to read them."""

    url: str = Field(description="fsspec URL, path or glob of the input files (file://, "
                                 "memory://, s3://, gs://, plain paths)")
    format: Literal["parquet", "arrow", "npy", "auto"] = Field(
        "auto", description="file format; auto = from each file's suffix (see infer_format)")
    vector_column: str = Field("embedding", min_length=1, description="Parquet/Arrow column "
                               "holding the vectors: fixed_size_list or list of float")
    id_column: str | None = Field("id", min_length=1, description="Parquet/Arrow id column "
                                  "(int64 or string); null = ids generated from row positions. "
                                  "Ignored for npy")
    ids_url: str | None = Field(None, description="npy only: NPY side file(s) with the ids "
                                                  "(int64 [n]); null = ids generated")
    dim: int | None = Field(None, ge=1, le=MAX_DIM, description="vector dimension (at most "
                            "the shard format's 1048576); null = inferred from the first file")
    batch_rows: int = Field(8192, ge=1, description="rows per read batch")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec "
                                            "options for reading; ${ENV:NAME} references")
    generate_sample: bool = Field(False, description="local demo only: when nothing matches "
                                  "url, write the built-in sample dataset there first "
                                  "(semq_transforms.sample_data.ensure_sample_data)")

    _url = field_validator("url")(_check_url)
    _storage = field_validator("storage_options")(_resolve_storage_options)

    @field_validator("ids_url")
    @classmethod
    def _ids_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_url(value, info)

    @model_validator(mode="after")
    def _consistent(self) -> InputConfig:
        if self.ids_url is not None:
            fmt = self.format if self.format != "auto" else infer_format(self.url)
            if fmt in ("parquet", "arrow"):
                raise ValueError(f"ids_url is only for npy input (format is {fmt}); Parquet "
                                 f"and Arrow ids come from id_column")
        if self.generate_sample:
            protocol, _ = split_protocol(self.url)
            if protocol not in (None, "file", "local", "memory"):
                raise ValueError("generate_sample writes the sample dataset and is only for "
                                 "local or memory:// URLs")
            if self.format not in ("auto", "parquet") or infer_format(self.url) not in (
                    None, "parquet"):
                raise ValueError("generate_sample writes Parquet files; format must be "
                                 "parquet or auto and url must not name another format")
            if (self.vector_column, self.id_column) != ("embedding", "id"):
                raise ValueError("generate_sample writes columns 'id' and 'embedding'; keep "
                                 "vector_column and id_column at their defaults")
        return self

    def format_for(self, path: str) -> InputFormat:
        """The format to read ``path`` with: ``format``, or inferred from the suffix when it
        is ``auto``. Raises :class:`ConfigError` when ``auto`` cannot decide."""
        if self.format != "auto":
            return self.format
        fmt = infer_format(path)
        if fmt is None:
            raise ConfigError(f"input.format: 'auto' cannot tell the format of {path!r} from "
                              f"its suffix; set input.format to parquet, arrow or npy")
        return fmt


class OutputConfig(_Model):
    """Where the index is written."""

    index_url: str = Field(description="index prefix (any fsspec URL); shards go under "
                                       "runs/<run_id>/, versions under manifests/")
    run_id: str | None = Field(None, description="run folder name; null = derived "
                                                 "deterministically by the pipeline")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec "
                                            "options for writing; ${ENV:NAME} references")
    allow_unsafe_commit: bool = Field(False, description="publish on storage without a "
                                      "create-if-absent write (not local, s3, gs, az), where "
                                      "two concurrent publishers can overwrite each other")
    signing_key_file: str | None = Field(None, description="Ed25519 private key (PEM file on "
                                         "the launcher) that signs each published version; "
                                         "readers check it with the public key")

    _url = field_validator("index_url")(_check_url)
    _storage = field_validator("storage_options")(_resolve_storage_options)

    @field_validator("signing_key_file")
    @classmethod
    def _key_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_url(value, info)

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError(f"run_id must be 1-128 characters of [A-Za-z0-9._-] starting "
                             f"with a letter or digit (it names a folder), got {value!r}")
        return value


class EncodeConfig(_Model):
    """Code levels and shard size."""

    codecs: list[str] = Field(default_factory=lambda: ["semq4"], min_length=1,
                              description="codec specs per shard, scan level first")
    rows_per_shard: int = Field(100_000, ge=1, description="contiguous rows per shard")

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, value: list[str]) -> list[str]:
        from semq_transforms.codecs import get_codec
        from semq_transforms.codecs.base import check_order

        specs = []
        for i, spec in enumerate(value):
            try:
                specs.append(get_codec(spec).spec)
            except SemqError as exc:
                raise PydanticCustomError("codec_spec", "{message}",
                                          {"message": str(exc), "subpath": (i,)}) from None
        duplicates = sorted({s for s in specs if specs.count(s) > 1})
        if duplicates:
            raise ValueError(f"each code level must appear once, repeated: {duplicates}")
        try:
            check_order([get_codec(s) for s in specs])
        except SemqError as exc:
            raise ValueError(str(exc)) from None
        return specs


#: Default of ``validation.min_compression_ratio``: an index at least this much smaller than
#: its float32 input (f16 alone gives just under 2x, every other codec more).
DEFAULT_MIN_COMPRESSION_RATIO = 1.5


class ValidationConfig(_Model):
    """The publish gate: recall of the encoded index against exact float search."""

    k: int = Field(10, ge=1, description="neighbors per query for recall@k")
    sample_queries: int = Field(256, ge=1, description="query vectors sampled from the input")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the query sample")
    min_recall_at_k: float = Field(gt=0, le=1, description="publish only if mean recall@k "
                                                           "reaches this")
    max_rejected_fraction: float = Field(ge=0, le=1, description="fail the run if more than "
                                                                 "this fraction of rows is "
                                                                 "rejected")
    min_compression_ratio: float = Field(
        DEFAULT_MIN_COMPRESSION_RATIO, ge=0, allow_inf_nan=False,
        description="publish only if every shard is at least this many times smaller than "
                    "the float32 vectors it encodes (0 = no check; per-shard params can make "
                    "small shards bigger than their input)")
    reject_zero_vectors: bool = Field(True, description="reject all-zero vectors (they have "
                                                        "no direction); false = encode them")


class JobConfig(_Model):
    """One ingestion job: input, output, encoding and the validation gate."""

    name: str = Field(description="job name, 1-128 of [A-Za-z0-9._-]")
    input: InputConfig
    output: OutputConfig
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    validation: ValidationConfig

    def with_index_url(self, index_url: str) -> JobConfig:
        """This config publishing to ``index_url`` instead (checked like the YAML field; a
        relative path is taken from the working directory)."""
        output = OutputConfig.model_validate(
            {**self.output.model_dump(), "index_url": index_url},
            context={"base_dir": os.getcwd(), "env": {}})
        return self.model_copy(update={"output": output})

    def create_transform(self) -> Any:
        """The ingestion job as a PTransform to apply to a pipeline (a PBegin): ``pipeline |
        config.create_transform()``. Its ``run_id`` names the run folder; its output is a
        PCollection of one report dict. (Imports Beam; the config models themselves do not.)"""
        from semq_transforms.transforms.ingest import _IngestJob

        return _IngestJob(self)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"must be 1-128 characters of [A-Za-z0-9._-] starting with a "
                             f"letter or digit, got {value!r}")
        return value


# ---------------------------------------------------------------------------------------------
# digest


def config_digest(config: JobConfig | Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config.model_dump_safe()`` (or of such a dict,
    e.g. the ``config`` of a run report): sorted keys, no whitespace, ASCII. Stable across
    loads and processes; independent of credential values. Raises ``ValueError`` /
    ``TypeError`` for a dict that is not JSON."""
    safe = config.model_dump_safe() if isinstance(config, JobConfig) else config
    text = json.dumps(safe, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------------------------
# loading


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing aliases (no expansion bombs) and duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem="YAML aliases (*name) are not allowed in job "
                                               "configs", problem_mark=mark)
        return super().compose_node(parent, index)


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict:
    """``{field path: 1-based line}`` for every mapping entry and sequence item; raises
    ``MarkedYAMLError`` on a duplicate key."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                if key in seen:
                    raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}",
                                               problem_mark=key_node.start_mark)
                seen.add(key)
                out[(*path, key)] = key_node.start_mark.line + 1
                _line_map(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)
    return out


def _parse_yaml(text: str, source: str) -> tuple[Any, dict]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines = _line_map(node)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        context = ""
        if exc.problem and exc.context:
            line = f" (line {exc.context_mark.line + 1})" if exc.context_mark else ""
            context = f"{exc.context}{line}: "
        raise ConfigError(f"{source}: {context}{problem}{where}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _model_fields_at(loc: tuple) -> list[str]:
    """Field names of the model a (parent) location points into, for "did you mean"."""
    cls: Any = JobConfig
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        cls = field.annotation if field is not None else None
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return []
    return list(cls.model_fields)


def _describe(exc: ValidationError, source: str, lines: Mapping[tuple, int]) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_context=True, include_input=False):
        loc = tuple(err["loc"])
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        if (err.get("ctx") or {}).get("subpath"):
            loc = (*loc, *err["ctx"]["subpath"])
        if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            close = difflib.get_close_matches(loc[-1], _model_fields_at(loc[:-1]), n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
        field = ".".join(str(part) for part in loc) or "(top level)"
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines),
                    None)
        problems.append(f"{source}: {field}: {msg}" + (f" (line {line})" if line else ""))
    return "\n".join(problems)


def parse_config(data: Any, *, source: str = "<config>",
                 env: Mapping[str, str] | None = None, base_dir: str | None = None,
                 _lines: Mapping[tuple, int] | None = None) -> JobConfig:
    """Validate already-parsed config data (a dict) into a :class:`JobConfig`.

    Args:
        data: the mapping (as from YAML).
        source: names the config in error messages.
        env: where ``${ENV:NAME}`` references are looked up (default ``os.environ``).
        base_dir: local directory relative paths are resolved against (``None``: kept).
    Raises:
        ConfigError: one line per problem, ``<source>: <field path>: <message>``.
    """
    if not isinstance(data, Mapping):
        kind = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: a job config must be a YAML mapping with keys name, "
                          f"input, output, encode, validation; got {kind}")
    context = {"env": os.environ if env is None else env, "base_dir": base_dir}
    try:
        return JobConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, _lines or {})) from None


def load_config(path_or_url: str | os.PathLike[str], *,
                env: Mapping[str, str] = os.environ) -> JobConfig:
    """Read, parse (YAML safe loader) and validate a job config file.

    Args:
        path_or_url: a local path or any fsspec URL (default credentials for remote ones).
        env: where ``${ENV:NAME}`` references in storage options are looked up.
    Raises:
        ConfigError: unreadable file, invalid YAML, or invalid fields; the message names the
            file (as given), the field path and the line.
    """
    source = path_or_url if isinstance(path_or_url, str) else os.fspath(path_or_url)
    try:
        with fsspec.open(source, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: cannot read the config file "
                          f"({type(exc).__name__}: {exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: config file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: config file is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from None
    data, lines = _parse_yaml(text, source)
    protocol, local = split_protocol(source)
    base_dir = (posixpath.dirname(os.path.abspath(local))
                if protocol in (None, "file", "local") else None)
    return parse_config(data, source=source, env=env, base_dir=base_dir, _lines=lines)
