"""Tests for beatq.serializers: real round trips, error paths, compression."""

from __future__ import annotations

import sys
import types
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
import pytz
import yaml

from beatq import serializers as s
from beatq.serializers import (
    ContentDisallowed,
    DecodeError,
    compress,
    compression_methods,
    content_type,
    decode,
    decompress,
    dumps,
    encode,
    loads,
    short_name,
)

try:
    import msgpack
except ImportError:  # optional extra
    msgpack = None
try:
    import zstandard
except ImportError:  # optional extra
    zstandard = None

needs_msgpack = pytest.mark.skipif(msgpack is None, reason="msgpack not installed")
needs_zstd = pytest.mark.skipif(zstandard is None, reason="zstandard not installed")
MSGPACK = pytest.param("msgpack", marks=needs_msgpack)
ZSTD = pytest.param("zstd", marks=needs_zstd)

SERIALIZERS = ["json", "pickle", "yaml", MSGPACK]
CONVERTING = ["json", "yaml", MSGPACK]  # turn tuples/iterables into lists
COMPRESSIONS = ["bz2", "gzip", "lzma", "zlib", ZSTD]

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = pytz.timezone("America/New_York")
UUID_VALUE = UUID("6f1c2b4e-8d1a-4c55-9b7e-2a9f0d3c1e55")


def same(actual: Any, expected: Any) -> bool:
    """Equality that also checks types, Decimal digits and datetime offsets."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            same(actual[k], expected[k]) for k in expected
        )
    if isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(
            same(a, e) for a, e in zip(actual, expected, strict=True)
        )
    if isinstance(expected, Decimal):
        return str(actual) == str(expected)
    if isinstance(expected, (datetime, time)):
        return (
            actual == expected
            and (actual.tzinfo is None) == (expected.tzinfo is None)
            and actual.utcoffset() == expected.utcoffset()
        )
    return bool(actual == expected)


def gen():
    yield from (1, 2, 3)


# (id, value factory, expected after a converting serializer)
CASES: list[tuple[str, Any, Any]] = [
    ("int-str-none", lambda: [1, "héllo ☃", None, True, 1.5], [1, "héllo ☃", None, True, 1.5]),
    (
        "naive-datetime",
        lambda: datetime(2024, 3, 1, 12, 30, 45, 123456),
        datetime(2024, 3, 1, 12, 30, 45, 123456),
    ),
    (
        "zoneinfo-shanghai",
        lambda: datetime(2024, 3, 1, 12, 30, 45, 654321, tzinfo=SHANGHAI),
        datetime(2024, 3, 1, 12, 30, 45, 654321, tzinfo=timezone(timedelta(hours=8))),
    ),
    (
        "pytz-new-york-dst",
        lambda: NEW_YORK.localize(datetime(2024, 7, 4, 9, 0, 0, 42)),
        datetime(2024, 7, 4, 9, 0, 0, 42, tzinfo=timezone(timedelta(hours=-4))),
    ),
    (
        "pytz-new-york-std",
        lambda: NEW_YORK.localize(datetime(2024, 1, 15, 23, 59, 59)),
        datetime(2024, 1, 15, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),
    ),
    (
        "sub-minute-offset",
        lambda: datetime(1890, 6, 1, 8, 0, tzinfo=SHANGHAI),
        datetime(1890, 6, 1, 8, 0, tzinfo=timezone(timedelta(hours=8, minutes=5, seconds=43))),
    ),
    ("date", lambda: date(1999, 12, 31), date(1999, 12, 31)),
    ("time", lambda: time(23, 1, 2, 3), time(23, 1, 2, 3)),
    ("uuid", lambda: UUID_VALUE, UUID_VALUE),
    ("decimal-1.10", lambda: Decimal("1.10"), Decimal("1.10")),
    (
        "decimal-big",
        lambda: Decimal("-12345678901234567890.000001"),
        Decimal("-12345678901234567890.000001"),
    ),
    ("bytes", lambda: b"\x00\xffraw\x80", b"\x00\xffraw\x80"),
    ("tuple", lambda: (1, "a", None), [1, "a", None]),
    ("range", lambda: range(5), [0, 1, 2, 3, 4]),
    ("set", lambda: {7}, [7]),
    ("frozenset", lambda: frozenset({"x"}), ["x"]),
    ("dict-keys-view", lambda: {"a": 1}.keys(), ["a"]),
    ("mappingproxy", lambda: types.MappingProxyType({"k": (1,)}), {"k": [1]}),
    (
        "nested",
        lambda: {
            "args": (1, [2, (3,)]),
            "kwargs": {"when": datetime(2020, 1, 1, tzinfo=timezone.utc), "ids": [UUID_VALUE]},
            "deep": {"a": {"b": {"c": [Decimal("0.1"), b"x", range(2)]}}},
        },
        {
            "args": [1, [2, [3]]],
            "kwargs": {"when": datetime(2020, 1, 1, tzinfo=timezone.utc), "ids": [UUID_VALUE]},
            "deep": {"a": {"b": {"c": [Decimal("0.1"), b"x", [0, 1]]}}},
        },
    ),
]


@pytest.mark.parametrize("serializer", CONVERTING)
@pytest.mark.parametrize(("factory", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_round_trip_converting_serializers(serializer, factory, expected):
    ctype, data = dumps(factory(), serializer)
    assert isinstance(data, bytes)
    assert ctype == content_type(serializer)
    result = loads(data, ctype)
    assert same(result, expected), (serializer, result, expected)


@pytest.mark.parametrize("serializer", CONVERTING)
def test_generator_becomes_list(serializer):
    ctype, data = dumps({"g": gen(), "genexp": (i * 2 for i in range(3))}, serializer)
    assert loads(data, ctype) == {"g": [1, 2, 3], "genexp": [0, 2, 4]}


@pytest.mark.parametrize(("factory", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_round_trip_pickle_is_exact(factory, expected):
    value = factory()
    if isinstance(value, (type({}.keys()), types.MappingProxyType)):
        with pytest.raises(TypeError):
            dumps(value, "pickle")
        return
    ctype, data = dumps(value, "pickle")
    assert ctype == "application/x-python-serialize"
    result = loads(data, ctype)
    assert type(result) is type(value)
    assert result == value
    if isinstance(value, datetime):
        assert result.utcoffset() == value.utcoffset()


def test_pickle_refuses_generator():
    with pytest.raises(TypeError, match="generator"):
        dumps(gen(), "pickle")


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize(
    ("value", "offset"),
    [
        (datetime(2024, 2, 29, 23, 0, tzinfo=SHANGHAI), timedelta(hours=8)),
        (NEW_YORK.localize(datetime(2024, 11, 3, 1, 30), is_dst=True), timedelta(hours=-4)),
        (NEW_YORK.localize(datetime(2024, 11, 3, 1, 30), is_dst=False), timedelta(hours=-5)),
    ],
    ids=["shanghai", "ny-ambiguous-dst", "ny-ambiguous-std"],
)
def test_aware_datetime_keeps_instant_and_offset(serializer, value, offset):
    result = loads(*reversed(dumps(value, serializer)))
    assert isinstance(result, datetime)
    assert result.utcoffset() == offset
    assert result.astimezone(timezone.utc) == value.astimezone(timezone.utc)
    assert result.replace(tzinfo=None) == value.replace(tzinfo=None)


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_naive_datetime_stays_naive(serializer):
    value = datetime(2030, 5, 6, 7, 8, 9, 10)
    result = loads(*reversed(dumps(value, serializer)))
    assert result == value
    assert result.tzinfo is None


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_decimal_keeps_exact_digits(serializer):
    result = loads(*reversed(dumps([Decimal("1.10"), Decimal("NaN")], serializer)))
    assert [str(d) for d in result] == ["1.10", "NaN"]
    assert all(type(d) is Decimal for d in result)


# --- names and content types -------------------------------------------------

NAMES = [
    ("json", "application/json"),
    ("pickle", "application/x-python-serialize"),
    ("yaml", "application/x-yaml"),
    ("msgpack", "application/x-msgpack"),
]


@pytest.mark.parametrize(("name", "ctype"), NAMES)
def test_content_type_and_short_name(name, ctype):
    assert content_type(name) == ctype
    assert content_type(ctype) == ctype
    assert short_name(ctype) == name
    assert short_name(name) == name
    assert short_name(ctype.upper() + "; charset=utf-8") == name


def test_unknown_serializer_names_valid_ones():
    with pytest.raises(
        ValueError, match="unknown serializer 'xml'; use one of: json, msgpack, pickle, yaml"
    ):
        content_type("xml")
    with pytest.raises(ValueError, match="text/plain"):
        short_name("text/plain")
    with pytest.raises(ValueError, match="use one of: json, msgpack, pickle, yaml"):
        dumps(1, "xml")


# --- accept / ContentDisallowed ---------------------------------------------


@pytest.mark.parametrize(
    "accept", [["json"], ["application/json"], ("json", "yaml"), "json", {"application/json"}]
)
def test_accept_allows_listed_content(accept):
    ctype, data = dumps({"a": 1})
    assert loads(data, ctype, accept=accept) == {"a": 1}


@pytest.mark.parametrize("accept", [["json"], ["application/json", "application/x-yaml"], []])
def test_disallowed_content_type(accept):
    ctype, data = dumps({"a": 1}, "pickle")
    with pytest.raises(ContentDisallowed) as info:
        loads(data, ctype, accept=accept)
    message = str(info.value)
    assert "application/x-python-serialize" in message
    assert "accept_content" in message
    assert "add 'pickle' to accept_content" in message
    assert isinstance(info.value, ValueError)


def test_unknown_content_type():
    with pytest.raises(ContentDisallowed, match="text/plain"):
        loads(b"hi", "text/plain", accept=["json"])
    with pytest.raises(DecodeError, match="unknown serializer"):
        loads(b"hi", "text/plain")


def test_accept_with_unknown_name_is_config_error():
    with pytest.raises(ValueError, match="'jsno' in accept_content") as info:
        loads(b"{}", "application/json", accept=["jsno"])
    assert not isinstance(info.value, (ContentDisallowed, DecodeError))


def test_decode_checks_accept_before_decompressing():
    # Garbage that is not valid zlib: the accept check must fire first.
    with pytest.raises(ContentDisallowed, match="x-python-serialize"):
        decode(b"not zlib", "application/x-python-serialize", "zlib", accept=["json"])


# --- corrupt bodies -----------------------------------------------------------

CORRUPT = [
    ("json", b'{"a": '),
    ("json", b"\xff\xfe{}"),
    ("json", b'{"__type__":"datetime","__value__":"not a date"}'),
    ("json", b'{"__type__":"bytes","__value__":"***"}'),
    ("json", b'{"__type__":"uuid","__value__":5}'),
    ("pickle", b"\x80\x05not a pickle"),
    ("pickle", b""),
    ("yaml", b"key: [unclosed"),
    ("yaml", b"a: !uuid not-a-uuid"),
    pytest.param("msgpack", b"\xc1", marks=needs_msgpack),
    pytest.param("msgpack", b"\x92\x01", marks=needs_msgpack),
    pytest.param("msgpack", b"\xd4\x63\x00", marks=needs_msgpack),  # unknown ext type 99
]


@pytest.mark.parametrize(("serializer", "data"), CORRUPT)
def test_corrupt_body_raises_decode_error(serializer, data):
    with pytest.raises(DecodeError) as info:
        loads(data, content_type(serializer))
    assert str(info.value).startswith(f"{serializer} serializer failed")
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "body",
    [
        b"!!python/object/apply:os.system ['echo pwned']",
        b"x: !!python/object:collections.OrderedDict {}",
        b"!!python/tuple [1, 2]",
    ],
)
def test_yaml_refuses_python_tags(body):
    with pytest.raises(DecodeError, match="yaml serializer failed") as info:
        loads(body, "application/x-yaml")
    assert isinstance(info.value.__cause__, yaml.YAMLError)


def test_yaml_does_not_touch_global_yaml_state():
    for value in (range(2), UUID_VALUE, gen()):
        with pytest.raises(yaml.representer.RepresenterError):
            yaml.safe_dump(value)
    assert yaml.safe_dump({1}) == "!!set\n1: null\n"
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("!uuid 6f1c2b4e-8d1a-4c55-9b7e-2a9f0d3c1e55")
    assert loads(b"[1, 2]", "yaml") == [1, 2]


# --- JSON specifics ------------------------------------------------------------


def test_json_is_compact_and_tagged():
    ctype, data = dumps({"a": [1, 2], "u": UUID_VALUE, "t": (1,)})
    assert ctype == "application/json"
    assert data == (
        b'{"a":[1,2],"u":{"__type__":"uuid","__value__":"6f1c2b4e-8d1a-4c55-9b7e-2a9f0d3c1e55"},"t":[1]}'
    )


def test_json_only_exact_tag_dicts_are_restored():
    body = (
        b'[{"__type__":"uuid","__value__":"6f1c2b4e-8d1a-4c55-9b7e-2a9f0d3c1e55","x":1},'
        b'{"__type__":"nope","__value__":"1"},{"__type__":1,"__value__":"1"},{"__value__":"1"}]'
    )
    assert loads(body, "json") == [
        {"__type__": "uuid", "__value__": "6f1c2b4e-8d1a-4c55-9b7e-2a9f0d3c1e55", "x": 1},
        {"__type__": "nope", "__value__": "1"},
        {"__type__": 1, "__value__": "1"},
        {"__value__": "1"},
    ]


def test_json_keys_are_strings_and_lone_surrogates_survive():
    assert loads(*reversed(dumps({1: "a", "b": "\ud800"}))) == {"1": "a", "b": "\ud800"}


class Opaque:
    pass


@pytest.mark.parametrize("serializer", CONVERTING)
def test_unserializable_raises_type_error(serializer):
    with pytest.raises(TypeError, match="Opaque"):
        dumps({"x": [Opaque()]}, serializer)


def test_subclasses_are_serialized():
    class MyDT(datetime):
        pass

    class MyDict(dict):
        pass

    value = {"d": MyDT(2020, 1, 2, 3, 4), "m": MyDict(a=(1,))}
    for serializer in ["json", "yaml"] + (["msgpack"] if msgpack else []):
        result = loads(*reversed(dumps(value, serializer)))
        assert same(result, {"d": datetime(2020, 1, 2, 3, 4), "m": {"a": [1]}}), serializer


@needs_msgpack
def test_msgpack_reads_standard_timestamps():
    data = msgpack.packb(datetime(2024, 1, 1, tzinfo=timezone.utc), datetime=True)
    assert loads(data, "application/x-msgpack") == datetime(2024, 1, 1, tzinfo=timezone.utc)


def test_msgpack_missing_gives_clear_error(monkeypatch):
    data = b"\x91\x01"  # msgpack for [1]
    ctype = "application/x-msgpack"
    monkeypatch.setitem(sys.modules, "msgpack", None)
    with pytest.raises(
        ImportError, match=r"msgpack is not installed; pip install 'beatq\[msgpack\]'"
    ):
        dumps([1], "msgpack")
    with pytest.raises(DecodeError, match="msgpack is not installed"):
        loads(data, ctype)


# --- compression ---------------------------------------------------------------

PAYLOAD = b'{"task":"add","args":[1,2]}' * 50


def test_compression_methods_lists_available():
    expected = ["bz2", "gzip", "lzma", "zlib"] + (["zstd"] if zstandard else [])
    assert compression_methods() == expected


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_compression_round_trip(method):
    packed = compress(PAYLOAD, method)
    assert packed != PAYLOAD
    assert len(packed) < len(PAYLOAD) // 5
    assert decompress(packed, method) == PAYLOAD
    assert decompress(compress(b"", method), method) == b""


@pytest.mark.parametrize("method", [None, "", "identity"])
def test_no_compression_is_identity(method):
    assert compress(PAYLOAD, method) is PAYLOAD
    assert decompress(PAYLOAD, method) is PAYLOAD


@pytest.mark.parametrize("method", COMPRESSIONS)
@pytest.mark.parametrize("kind", ["garbage", "truncated", "trailing-garbage"])
def test_corrupt_compressed_data_raises_decode_error(method, kind):
    packed = compress(PAYLOAD, method)
    bad = {
        "garbage": b"this is not compressed at all",
        "truncated": packed[: len(packed) // 2],
        "trailing-garbage": packed + b"\x00junk",
    }[kind]
    with pytest.raises(DecodeError, match=f"{method} decompression failed") as info:
        decompress(bad, method)
    assert info.value.__cause__ is not None


@needs_zstd
def test_unknown_compression():
    with pytest.raises(
        ValueError, match=r"^unknown compression 'zip'; use one of: bz2, gzip, lzma, zlib, zstd$"
    ):
        compress(b"x", "zip")
    with pytest.raises(DecodeError, match="unknown compression 'zip'"):
        decompress(b"x", "zip")
    with pytest.raises(ValueError, match="unknown compression 'zip'"):
        encode(1, "json", "zip")


@needs_zstd
def test_zstd_unavailable(monkeypatch):
    packed = compress(PAYLOAD, "zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)
    assert compression_methods() == ["bz2", "gzip", "lzma", "zlib"]
    with pytest.raises(ImportError, match="zstandard"):
        compress(PAYLOAD, "zstd")
    with pytest.raises(DecodeError, match="zstandard"):
        decompress(packed, "zstd")


@needs_zstd
def test_zstd_reads_frames_without_content_size_and_concatenated():
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"abc" * 100)
    assert decompress(frame + frame, "zstd") == b"abc" * 200


# --- encode / decode -------------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("compression", [None, *COMPRESSIONS])
def test_encode_decode_round_trip(serializer, compression):
    value = {
        "args": [1, "two", 3.0],
        "eta": datetime(2024, 5, 1, 8, 0, tzinfo=SHANGHAI),
        "id": UUID_VALUE,
        "amount": Decimal("1.10"),
    }
    ctype, encoding, data = encode(value, serializer, compression)
    assert ctype == content_type(serializer)
    assert encoding == compression
    assert data == compress(dumps(value, serializer)[1], compression)
    result = decode(data, ctype, encoding, accept=[serializer])
    assert result["args"] == [1, "two", 3.0]
    assert result["eta"] == value["eta"]
    assert result["eta"].utcoffset() == timedelta(hours=8)
    assert result["id"] == UUID_VALUE
    assert str(result["amount"]) == "1.10"


def test_module_exports():
    assert set(s.__all__) >= {
        "ContentDisallowed",
        "DecodeError",
        "encode",
        "decode",
        "loads",
        "dumps",
    }
    assert issubclass(ContentDisallowed, ValueError)
    assert issubclass(DecodeError, ValueError)


# -- the one-shot JSON paths (serializers.one_shot_encoder / one_shot_decoder) -------------
_JSON_VALUES = [
    [[], {}, {}],
    [[1, "ü\u2028", 2.5, None, True], {"k": [1, {"x": -0.0}]}, {"link": [{"task": "a"}]}],
    "plain",
    1e300,
    float("nan"),
    float("-inf"),
    {"dt": datetime(2026, 1, 2, 3, 4, 5), "u": UUID(int=7), "b": b"\x00\xff", "s": {1}},
]


@pytest.mark.parametrize("value", _JSON_VALUES, ids=range(len(_JSON_VALUES)))
def test_the_one_shot_encoder_writes_what_json_writes(value) -> None:
    import json

    indented = json.JSONEncoder(indent=2, default=s._json_default)  # json.encode itself
    for encoder in (s._JSON_ENCODER, s._JSON_ASCII_ENCODER, indented):
        assert s.one_shot_encoder(encoder)(value) == encoder.encode(value)


def test_the_one_shot_encoder_refuses_what_json_refuses() -> None:
    import json

    loop: list[Any] = []
    loop.append(loop)
    fast = s.one_shot_encoder(s._JSON_ENCODER)
    for bad in (loop, {(1, 2): 3}, object()):
        with pytest.raises((ValueError, TypeError)) as slow_error:
            s._JSON_ENCODER.encode(bad)
        with pytest.raises(type(slow_error.value), match=str(slow_error.value)[:20]):
            fast(bad)
    assert fast([1, [2]]) == "[1,[2]]"  # a refused value leaves nothing behind
    strict = json.JSONEncoder(allow_nan=False)
    with pytest.raises(ValueError, match="Out of range"):
        s.one_shot_encoder(strict)(float("nan"))


@pytest.mark.parametrize(
    "text",
    [
        '[[1,2],{"a":null},{}]',
        ' {"a": 1}',
        '{"a": 1} \n',
        '"x"',
        "1.5",
        "NaN",
        '{"a":1}x',
        "",
        "[1,",
    ],
)
def test_the_one_shot_decoder_reads_and_refuses_as_json_does(text) -> None:
    import json

    decoder = json.JSONDecoder()
    fast = s.one_shot_decoder(decoder)
    try:
        expected: Any = decoder.decode(text)
    except json.JSONDecodeError as exc:
        with pytest.raises(json.JSONDecodeError) as caught:
            fast(text)
        assert (caught.value.msg, caught.value.pos) == (exc.msg, exc.pos)
        return
    got = fast(text)
    assert got == expected or (got != got and expected != expected)  # NaN


def test_accept_content_lists_are_checked_alike_however_often() -> None:
    body = dumps([1], "json")[1]
    for _ in range(3):
        assert decode(body, "application/json", None, ["json"]) == [1]
        with pytest.raises(ContentDisallowed, match="accept_content"):
            decode(body, "application/json", None, ["yaml"])
    with pytest.raises(ValueError, match="unknown serializer 'jsn' in accept_content"):
        decode(body, "application/json", None, ["jsn"])
