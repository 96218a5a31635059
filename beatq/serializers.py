"""Message body serialization and compression for beatq.

Serializers are keyed by a short name (``"json"``, ``"pickle"``, ``"yaml"``,
``"msgpack"``) or by the matching content type; compression methods by name
(``"zlib"``, ``"gzip"``, ``"bz2"``, ``"lzma"``, ``"zstd"``).

JSON, YAML and msgpack carry the same extra Python types: ``datetime`` (naive
or aware, microseconds and UTC offset kept), ``date``, ``time``, ``UUID``,
``Decimal`` and ``bytes``.  Tuples, ranges, sets, generators and any other
iterable become lists; other mappings become dicts.  Aware datetimes come back
with a fixed-offset ``datetime.timezone`` (same instant, same ``utcoffset()``),
not with the original zoneinfo/pytz zone object.  Pickle round trips
everything pickle can, and must only be accepted from trusted producers.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import json
import lzma
import pickle
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import yaml

__all__ = [
    "ContentDisallowed",
    "DecodeError",
    "compress",
    "compression_methods",
    "content_type",
    "decode",
    "decompress",
    "dumps",
    "encode",
    "loads",
    "short_name",
]


class ContentDisallowed(ValueError):
    """A message's content type is not in the accepted list (``accept_content``)."""


class DecodeError(ValueError):
    """A body could not be decoded: corrupt data, bad compression or unknown format."""


# ---------------------------------------------------------------------------
# Names and content types
# ---------------------------------------------------------------------------

CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "pickle": "application/x-python-serialize",
    "yaml": "application/x-yaml",
    "msgpack": "application/x-msgpack",
}

# Every accepted spelling (short name, canonical or alias content type) -> short name.
_ALIASES: dict[str, str] = {name: name for name in CONTENT_TYPES}
_ALIASES.update({ct: name for name, ct in CONTENT_TYPES.items()})
_ALIASES.update(
    {
        "application/yaml": "yaml",
        "text/yaml": "yaml",
        "application/msgpack": "msgpack",
        "application/vnd.msgpack": "msgpack",
    }
)

_VALID_NAMES = ", ".join(sorted(CONTENT_TYPES))


def _lookup(name: str) -> str | None:
    """Return the short serializer name for a name or content type, or None."""
    found = _ALIASES.get(name)
    if found is None and isinstance(name, str):
        # Tolerate case, whitespace and parameters such as "; charset=utf-8".
        found = _ALIASES.get(name.split(";", 1)[0].strip().lower())
    return found


def content_type(name: str) -> str:
    """Return the content type for a serializer name (a content type is returned as is).

    Raises ValueError naming the valid serializers when ``name`` is unknown.
    """
    short = _lookup(name)
    if short is None:
        raise ValueError(f"unknown serializer {name!r}; use one of: {_VALID_NAMES}")
    return CONTENT_TYPES[short]


def short_name(content_type: str) -> str:
    """Return the short serializer name for a content type (``"application/json"`` -> ``"json"``).

    Short names are accepted too.  Raises ValueError for unknown content types.
    """
    short = _lookup(content_type)
    if short is None:
        raise ValueError(
            f"unknown content type {content_type!r}; use one of: "
            + ", ".join(sorted(CONTENT_TYPES.values()))
        )
    return short


# accept_content as given (a tuple of it) -> the short names it allows: a worker checks
# each message against the same few lists
_ACCEPTED: dict[tuple[str, ...], frozenset[str]] = {}


def _accepted_names(accept: Iterable[str]) -> frozenset[str]:
    if isinstance(accept, str):
        accept = (accept,)
    key = tuple(accept)
    found = _ACCEPTED.get(key)
    if found is None:
        found = _ACCEPTED[key] = _short_names(key)
        if len(_ACCEPTED) > 64:  # lists made per call: kept from growing
            _ACCEPTED.clear()
    return found


def _short_names(accept: tuple[str, ...]) -> frozenset[str]:
    names = set()
    for item in accept:
        short = _lookup(item)
        if short is None:
            raise ValueError(
                f"unknown serializer {item!r} in accept_content; use one of: {_VALID_NAMES}"
            )
        names.add(short)
    return frozenset(names)


# ---------------------------------------------------------------------------
# Shared helpers for the extra types
# ---------------------------------------------------------------------------

_TYPE_KEY = "__type__"
_VALUE_KEY = "__value__"


def _b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _parse_value(func: Callable[[str], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"expected a string value, got {type(value).__name__}")
        return func(value)

    return parse


# Tag name -> (type, to-string, from-string).  Order matters for isinstance
# fallbacks: datetime is a subclass of date.
_TAGGED: dict[str, tuple[type, Callable[[Any], str], Callable[[Any], Any]]] = {
    "datetime": (datetime, datetime.isoformat, _parse_value(datetime.fromisoformat)),
    "date": (date, date.isoformat, _parse_value(date.fromisoformat)),
    "time": (time, time.isoformat, _parse_value(time.fromisoformat)),
    "uuid": (UUID, str, _parse_value(UUID)),
    "decimal": (Decimal, str, _parse_value(Decimal)),
    "bytes": (bytes, _b64, _parse_value(_unb64)),
}
_TAG_BY_TYPE: dict[type, str] = {typ: tag for tag, (typ, _, _) in _TAGGED.items()}
_TAG_BY_TYPE[bytearray] = "bytes"
_TAG_BY_TYPE[memoryview] = "bytes"
_FROM_TAG: dict[str, Callable[[Any], Any]] = {tag: parse for tag, (_, _, parse) in _TAGGED.items()}


def _tag_for(obj: Any) -> str | None:
    tag = _TAG_BY_TYPE.get(type(obj))
    if tag is None:
        for typ, candidate in _TAG_BY_TYPE.items():
            if isinstance(obj, typ):
                return candidate
    return tag


def _as_container(obj: Any, fmt: str) -> Any:
    """Turn a non-native mapping into a dict and any other iterable into a list."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if not isinstance(obj, (str, bytes, bytearray, memoryview)):
        try:
            iterator = iter(obj)
        except TypeError:
            pass
        else:
            return list(iterator)
    raise TypeError(f"Object of type {type(obj).__name__} is not {fmt} serializable")


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    tag = _tag_for(obj)
    if tag is not None:
        to_str = _TAGGED[tag][1]
        return {_TYPE_KEY: tag, _VALUE_KEY: to_str(obj)}
    return _as_container(obj, "JSON")


def _json_object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and _VALUE_KEY in obj:
        tag = obj.get(_TYPE_KEY)
        if isinstance(tag, str) and tag in _FROM_TAG:
            return _FROM_TAG[tag](obj[_VALUE_KEY])
    return obj


def one_shot_encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode`, the same text, without its two Python frames around the C
    encoder: that encoder made as `JSONEncoder.iterencode` makes it for a one-shot
    encode, a fresh memo of the containers it is in each call (so threads may share it).
    `encoder.encode` itself where json has no C encoder or indents."""
    make = json.encoder.c_make_encoder
    if make is None or encoder.indent is not None:
        return encoder.encode
    strings = (
        json.encoder.encode_basestring_ascii
        if encoder.ensure_ascii
        else json.encoder.encode_basestring
    )
    circular = encoder.check_circular
    rest = (
        encoder.default,
        strings,
        encoder.indent,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )

    def encode(obj: Any) -> str:
        return "".join(make({} if circular else None, *rest)(obj, 0))

    return encode


def one_shot_decoder(decoder: json.JSONDecoder) -> Callable[[str], Any]:
    """`decoder.decode`, the same value or error, without its three Python frames and two
    whitespace matches around the scanner for a text that is one JSON value with nothing
    around it (what beatq writes); any other text goes to `decoder.decode` itself."""
    scan = decoder.scan_once
    whole = decoder.decode

    def decode(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except StopIteration:  # leading whitespace, or not JSON: json's own error
            return whole(text)
        if end != len(text):  # trailing whitespace, or extra data: json's own error
            return whole(text)
        return value

    return decode


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
# Used when the text holds lone surrogates that cannot be encoded as UTF-8.
_JSON_ASCII_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, default=_json_default
)
_JSON_DECODER = json.JSONDecoder(object_hook=_json_object_hook)
_json_encode = one_shot_encoder(_JSON_ENCODER)
_json_decode = one_shot_decoder(_JSON_DECODER)


def _json_dumps(obj: Any) -> bytes:
    text = _json_encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _JSON_ASCII_ENCODER.encode(obj).encode("ascii")


def _json_loads(data: bytes) -> Any:
    return _json_decode(data.decode("utf-8"))


# ---------------------------------------------------------------------------
# pickle
# ---------------------------------------------------------------------------


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)


# ---------------------------------------------------------------------------
# YAML (safe dumper/loader subclasses only; global yaml state is untouched)
# ---------------------------------------------------------------------------

_YamlDumperBase: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_YamlLoaderBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlDumper(_YamlDumperBase):  # type: ignore[misc]
    """SafeDumper that also writes tuples, iterables, UUID, Decimal and time."""


class _YamlLoader(_YamlLoaderBase):  # type: ignore[misc]
    """SafeLoader that also reads the beatq ``!uuid``/``!decimal``/``!time``/``!datetime`` tags."""


def _yaml_seq(dumper: Any, data: Any) -> Any:
    return dumper.represent_list(list(data))


def _yaml_datetime(dumper: Any, data: datetime) -> Any:
    offset = data.utcoffset()
    if offset is not None and offset % timedelta(minutes=1):
        # YAML timestamps cannot express sub-minute offsets (e.g. LMT zones).
        return dumper.represent_scalar("!datetime", data.isoformat())
    return dumper.represent_scalar("tag:yaml.org,2002:timestamp", data.isoformat(" "))


def _yaml_tagged(name: str) -> Callable[[Any, Any], Any]:
    to_str = _TAGGED[name][1]

    def represent(dumper: Any, data: Any) -> Any:
        return dumper.represent_scalar("!" + name, to_str(data))

    return represent


_YAML_SCALARS: list[tuple[type, Callable[[Any, Any], Any]]] = [
    (datetime, _yaml_datetime),
    (time, _yaml_tagged("time")),
    (UUID, _yaml_tagged("uuid")),
    (Decimal, _yaml_tagged("decimal")),
]


def _yaml_fallback(dumper: Any, data: Any) -> Any:
    """Representer for types without an exact match: subclasses, mappings, iterables."""
    for typ, represent in _YAML_SCALARS:
        if isinstance(data, typ):
            return represent(dumper, data)
    if isinstance(data, bool):
        return dumper.represent_bool(bool(data))
    if isinstance(data, int):
        return dumper.represent_int(int(data))
    if isinstance(data, float):
        return dumper.represent_float(float(data))
    if isinstance(data, str):
        return dumper.represent_str(str(data))
    if isinstance(data, (bytes, bytearray, memoryview)):
        return dumper.represent_binary(bytes(data))
    if isinstance(data, date):
        return dumper.represent_date(data)
    if isinstance(data, Mapping):
        return dumper.represent_dict(dict(data))
    if isinstance(data, list):
        return dumper.represent_list(list(data))
    return dumper.represent_list(_as_container(data, "YAML"))


for _seq_type in (tuple, range, set, frozenset):
    _YamlDumper.add_representer(_seq_type, _yaml_seq)
for _typ, _represent in _YAML_SCALARS:
    _YamlDumper.add_representer(_typ, _represent)
_YamlDumper.add_representer(bytearray, lambda dumper, data: dumper.represent_binary(bytes(data)))
_YamlDumper.add_representer(None, _yaml_fallback)


def _yaml_constructor(parse: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    def construct(loader: Any, node: Any) -> Any:
        return parse(loader.construct_scalar(node))

    return construct


_YamlLoader.add_constructor("!datetime", _yaml_constructor(_FROM_TAG["datetime"]))
_YamlLoader.add_constructor("!time", _yaml_constructor(_FROM_TAG["time"]))
_YamlLoader.add_constructor("!uuid", _yaml_constructor(_FROM_TAG["uuid"]))
_YamlLoader.add_constructor("!decimal", _yaml_constructor(_FROM_TAG["decimal"]))


def _yaml_dumps(obj: Any) -> bytes:
    try:
        data: bytes = yaml.dump(
            obj,
            Dumper=_YamlDumper,
            encoding="utf-8",
            allow_unicode=True,
            sort_keys=False,
        )
    except yaml.representer.RepresenterError as exc:
        raise TypeError(str(exc)) from exc
    return data


def _yaml_loads(data: bytes) -> Any:
    return yaml.load(data, Loader=_YamlLoader)  # noqa: S506 - safe loader subclass


# ---------------------------------------------------------------------------
# msgpack (optional extra, imported lazily)
# ---------------------------------------------------------------------------

_MSGPACK_MISSING = "msgpack is not installed; pip install 'beatq[msgpack]'"

# Application ext type codes; the payload is the tag's string form in UTF-8,
# except UUID (16 raw bytes).
_EXT_CODES: dict[str, int] = {"datetime": 1, "date": 2, "time": 3, "uuid": 4, "decimal": 5}
_EXT_TAGS: dict[int, str] = {code: tag for tag, code in _EXT_CODES.items()}


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError as exc:
        raise ImportError(_MSGPACK_MISSING) from exc
    return msgpack


def _msgpack_default(obj: Any) -> Any:
    tag = _tag_for(obj)
    if tag == "bytes":
        return bytes(obj)
    if tag is not None:
        payload = obj.bytes if tag == "uuid" else _TAGGED[tag][1](obj).encode("utf-8")
        return _msgpack().ExtType(_EXT_CODES[tag], payload)
    return _as_container(obj, "msgpack")


def _msgpack_ext_hook(code: int, payload: bytes) -> Any:
    tag = _EXT_TAGS.get(code)
    if tag is None:
        raise ValueError(f"unknown msgpack ext type {code}")
    if tag == "uuid":
        return UUID(bytes=payload)
    return _FROM_TAG[tag](payload.decode("utf-8"))


def _msgpack_dumps(obj: Any) -> bytes:
    data: bytes = _msgpack().packb(obj, default=_msgpack_default, use_bin_type=True)
    return data


def _msgpack_loads(data: bytes) -> Any:
    return _msgpack().unpackb(
        data,
        raw=False,
        ext_hook=_msgpack_ext_hook,
        strict_map_key=False,
        timestamp=3,  # standard msgpack timestamps -> aware UTC datetimes
    )


# ---------------------------------------------------------------------------
# Public serialization API
# ---------------------------------------------------------------------------

_DUMPERS: dict[str, Callable[[Any], bytes]] = {
    "json": _json_dumps,
    "pickle": _pickle_dumps,
    "yaml": _yaml_dumps,
    "msgpack": _msgpack_dumps,
}
_LOADERS: dict[str, Callable[[bytes], Any]] = {
    "json": _json_loads,
    "pickle": _pickle_loads,
    "yaml": _yaml_loads,
    "msgpack": _msgpack_loads,
}


def dumps(obj: Any, serializer: str = "json") -> tuple[str, bytes]:
    """Serialize ``obj`` and return ``(content_type, data)``.

    ``serializer`` is a short name or content type.  Unknown serializer ->
    ValueError; unserializable object -> TypeError; msgpack missing -> ImportError.
    """
    short = _lookup(serializer)
    if short is None:
        raise ValueError(f"unknown serializer {serializer!r}; use one of: {_VALID_NAMES}")
    return CONTENT_TYPES[short], _DUMPERS[short](obj)


def _check_accept(content_type: str, short: str | None, accept: Iterable[str]) -> None:
    allowed = _accepted_names(accept)
    if short not in allowed:
        label = f"{content_type!r} ({short})" if short else repr(content_type)
        raise ContentDisallowed(
            f"Refusing to deserialize content of type {label}: it is not in the "
            f"accept_content setting ({', '.join(sorted(allowed)) or 'empty'}). "
            f"To allow it, add {short or content_type!r} to accept_content."
        )


def loads(data: bytes, content_type: str, accept: Iterable[str] | None = None) -> Any:
    """Deserialize ``data`` of the given content type (or short name).

    ``accept`` lists allowed serializer names or content types; None allows all.
    Not accepted -> ContentDisallowed; corrupt data or unknown content type ->
    DecodeError (chained to the underlying error).
    """
    short = _lookup(content_type)
    if accept is not None:
        _check_accept(content_type, short, accept)
    if short is None:
        raise DecodeError(
            f"cannot decode content type {content_type!r}: unknown serializer; "
            f"known: {_VALID_NAMES}"
        )
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, bytes):
        data = bytes(data)
    try:
        return _LOADERS[short](data)
    except Exception as exc:
        raise DecodeError(f"{short} serializer failed to decode body: {exc}") from exc


# ---------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------

_ZSTD_MISSING = "zstd compression needs the zstandard package; pip install zstandard"


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise ImportError(_ZSTD_MISSING) from exc
    return zstandard


def _zstd_compress(data: bytes) -> bytes:
    out: bytes = _zstd().ZstdCompressor().compress(data)
    return out


def _streams(new_decompressor: Callable[[], Any], data: bytes) -> bytes:
    """Decompress one or more concatenated streams, strictly.

    Unlike the stdlib one-shot functions, a truncated stream or trailing garbage
    after the last stream is an error instead of being silently accepted.
    """
    chunks = []
    while True:
        dobj = new_decompressor()
        chunks.append(dobj.decompress(data))
        if not dobj.eof:
            raise ValueError("compressed data is truncated")
        data = dobj.unused_data
        if not data:
            return b"".join(chunks)


def _zstd_decompress(data: bytes) -> bytes:
    # Frame by frame, so frames without a content size in the header work too.
    return _streams(_zstd().ZstdDecompressor().decompressobj, data)


_COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "bz2": (bz2.compress, lambda data: _streams(bz2.BZ2Decompressor, data)),
    "gzip": (lambda data: gzip.compress(data, mtime=0), gzip.decompress),
    "lzma": (lzma.compress, lambda data: _streams(lzma.LZMADecompressor, data)),
    "zlib": (zlib.compress, lambda data: _streams(zlib.decompressobj, data)),
    "zstd": (_zstd_compress, _zstd_decompress),
}
_NO_COMPRESSION = frozenset({"", "identity"})


def compression_methods() -> list[str]:
    """Return the available compression method names, sorted (zstd only if zstandard imports)."""
    methods = sorted(_COMPRESSORS)
    try:
        _zstd()
    except ImportError:
        methods.remove("zstd")
    return methods


def _compression(method: str) -> str:
    name = method.strip().lower() if isinstance(method, str) else method
    if name not in _COMPRESSORS:
        raise ValueError(
            f"unknown compression {method!r}; use one of: {', '.join(compression_methods())}"
        )
    return name


def compress(data: bytes, method: str | None) -> bytes:
    """Compress ``data`` with ``method``; None (or "" / "identity") returns it unchanged.

    Unknown method -> ValueError naming the valid ones; zstd without zstandard -> ImportError.
    """
    if method is None or method in _NO_COMPRESSION:
        return data
    return _COMPRESSORS[_compression(method)][0](data)


def decompress(data: bytes, method: str | None) -> bytes:
    """Decompress ``data`` compressed with ``method`` (None = unchanged).

    Any failure (corrupt or truncated data, unknown or unavailable method) -> DecodeError.
    """
    if method is None or method in _NO_COMPRESSION:
        return data
    try:
        name = _compression(method)
    except ValueError as exc:
        raise DecodeError(str(exc)) from exc
    try:
        return _COMPRESSORS[name][1](data)
    except Exception as exc:
        raise DecodeError(f"{name} decompression failed: {exc}") from exc


# ---------------------------------------------------------------------------
# Combined
# ---------------------------------------------------------------------------


def encode(
    obj: Any, serializer: str = "json", compression: str | None = None
) -> tuple[str, str | None, bytes]:
    """Serialize then compress; return ``(content_type, encoding, data)``.

    ``encoding`` is the canonical compression name, or None when uncompressed.
    """
    if serializer == "json" and compression is None:  # the default, in fewer steps
        return "application/json", None, _json_dumps(obj)
    ctype, data = dumps(obj, serializer)
    if compression is None or compression in _NO_COMPRESSION:
        return ctype, None, data
    name = _compression(compression)
    return ctype, name, compress(data, name)


def payload_encoder(
    options: Any, serializer: str = "json", compression: str | None = None
) -> Callable[[Any, Any], bytes]:
    """`encode([args, kwargs, options], serializer, compression)`'s data for many args and
    kwargs beside the same `options`: the same bytes, the same errors. JSON uncompressed
    (the default) writes `options` once; any other serializer or compression encodes the
    whole each time."""
    if _lookup(serializer) != "json" or not (compression is None or compression in _NO_COMPRESSION):
        return lambda args, kwargs: encode([args, kwargs, options], serializer, compression)[2]
    # what the C encoder writes for a list: its items' texts between "[" "," and "]"
    tail = "," + _json_encode(options) + "]"
    encode_json = _json_encode

    def encode_one(args: Any, kwargs: Any) -> bytes:
        text = encode_json([args, kwargs])
        try:
            return (text[:-1] + tail).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the whole in ASCII, as _json_dumps
            return _json_dumps([args, kwargs, options])

    return encode_one


def decode(
    data: bytes,
    content_type: str,
    encoding: str | None,
    accept: Iterable[str] | None = None,
) -> Any:
    """Check ``accept``, decompress, then deserialize (inverse of :func:`encode`).

    The accept check runs before decompression, so disallowed bodies are never inflated.
    """
    if accept is not None:
        _check_accept(content_type, _lookup(content_type), accept)
    return loads(decompress(data, encoding), content_type)
