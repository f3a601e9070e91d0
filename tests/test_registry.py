"""Spec strings, config dicts and the codec registry."""

from __future__ import annotations

import copy
import json

import pytest

from semq_transforms.codecs import SPECS, get_codec, parse_spec, register_codec, registered_ids
from semq_transforms.codecs.semq import SemqCodec
from semq_transforms.errors import CodecConfigError, UnknownCodecError


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trip(spec):
    codec = get_codec(spec)
    assert codec.spec == spec
    assert get_codec(codec.spec) == codec
    assert get_codec(codec) is codec


@pytest.mark.parametrize("spec", SPECS)
def test_spec_parsing_ignores_case_and_spaces(spec):
    assert get_codec(f"  {spec.upper()} ") == get_codec(spec)


@pytest.mark.parametrize("spec", SPECS)
def test_config_json_round_trip(spec):
    """numcodecs ``check_config`` style: the config survives JSON and rebuilds an equal codec."""
    codec = get_codec(spec)
    config = codec.get_config()
    assert config["id"] in registered_ids()
    assert json.loads(json.dumps(config)) == config
    rebuilt = get_codec(json.loads(json.dumps(config)))
    assert rebuilt == codec
    assert rebuilt.spec == codec.spec
    assert rebuilt.get_config() == config
    assert parse_spec(spec) == config


@pytest.mark.parametrize("spec", SPECS)
def test_get_codec_does_not_mutate_config(spec):
    config = get_codec(spec).get_config()
    before = copy.deepcopy(config)
    get_codec(config)
    assert config == before


@pytest.mark.parametrize("spec", SPECS)
def test_equal_configs_are_equal_and_hash_equal(spec):
    a, b = get_codec(spec), get_codec(dict(get_codec(spec).get_config()))
    assert a is not b
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def test_different_codecs_are_not_equal():
    codecs = [get_codec(spec) for spec in SPECS]
    assert len(set(codecs)) == len(SPECS)
    assert get_codec("semq4") != get_codec("semq5")
    assert get_codec("int8") != "int8"


@pytest.mark.parametrize("config", ["nope4", "zzz", {"id": "nope"}, {"bits": 4}, {"id": None}])
def test_unknown_id_lists_known_ids(config):
    with pytest.raises(UnknownCodecError) as info:
        get_codec(config)
    assert isinstance(info.value, CodecConfigError)
    assert isinstance(info.value, LookupError)
    for known in registered_ids():
        assert repr(known) in str(info.value)


def test_unhashable_id_is_a_config_error():
    """A config dict read from a user's JSON may carry any JSON value as its id."""
    with pytest.raises(CodecConfigError, match="id"):
        get_codec({"id": ["semq"], "bits": 4})


@pytest.mark.parametrize("bad", [
    "int3", "int16", "semq9", "semq0", "block2", "block16", "binary1", "f16x",
    "", "4", "semq-4", "semq4.5", "semq" + "9" * 4400, "semq" + "0" * 4400 + "9",
    {"id": "semq", "bits": True},
    {"id": "semq", "bits": 4.0},
    {"id": "semq", "bits": "4"},
    {"id": "semq", "bits": None},
    {"id": "int", "bits": 3},
    {"id": "semq", "bits": 4, "rotation": "pca"},
    {"id": "f16", "bits": 16},
    {"id": "binary", "bits": 1},
])
def test_bad_config_raises_config_error(bad):
    with pytest.raises(CodecConfigError) as info:
        get_codec(bad)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


@pytest.mark.parametrize("bad", [None, 4, 4.0, ["semq4"], b"semq4"])
def test_non_string_non_mapping_raises_config_error(bad):
    with pytest.raises(CodecConfigError):
        get_codec(bad)


def test_register_duplicate_id_with_other_class_raises():
    before = registered_ids()

    class Impostor(SemqCodec):
        codec_id = "semq"

    with pytest.raises(CodecConfigError, match="already registered"):
        register_codec(Impostor)
    assert registered_ids() == before
    assert type(get_codec("semq4")) is SemqCodec


def test_register_same_class_again_is_harmless():
    assert register_codec(SemqCodec) is SemqCodec
    assert type(get_codec("semq4")) is SemqCodec


def test_register_without_codec_id_raises():
    class Nameless(SemqCodec):
        codec_id = ""

    with pytest.raises(CodecConfigError):
        register_codec(Nameless)
