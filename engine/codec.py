"""Encoding of values for the local store and the wire: orjson everywhere.

JSON values are orjson bytes (numpy arrays and scalars serialised natively).
NaN and infinity are rejected: orjson would silently write them as `null`.
Embeddings are stored locally as a small JSON header followed by the raw
float32 vector bytes, never as a JSON list of floats (a 384-d vector is
1.5 KB instead of ~8 KB and decodes without parsing). A local value that
starts with the byte 0x00 is such a binary record: valid JSON never does.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from .errors import ValidationError

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
EMBEDDING_MAGIC = b"\x00EV1"
_HEADER = struct.Struct("<4sI")


def check_finite(value: Any, path: str = "value") -> None:
    """Raise ValidationError if a float anywhere inside `value` is NaN or infinite."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path} is not a finite number: {value!r}")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(v, (str, int)):
                check_finite(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if not isinstance(v, (str, int)):
                check_finite(v, f"{path}[{i}]")
    elif isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ValidationError(f"{path} contains NaN or infinite values")
    elif isinstance(value, np.floating) and not np.isfinite(value):
        raise ValidationError(f"{path} is not a finite number: {value!r}")


def encode(value: Any, *, checked: bool = False) -> bytes:
    """JSON bytes for `value`; ValidationError if it is not JSON-serialisable or not finite.

    `checked=True` skips the finiteness walk for values already validated (records).
    """
    if not checked:
        check_finite(value)
    try:
        return orjson.dumps(value, option=JSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ValidationError(f"value is not JSON-serialisable: {exc}") from None


def decode(data: bytes | memoryview) -> Any:
    """Inverse of `encode` (and of `encode_embedding`, which decodes to its dict form)."""
    if data[:1] == b"\x00":
        return decode_embedding(data)
    return orjson.loads(data)


def encode_embedding(fields: dict[str, Any], vector: Any) -> bytes:
    """Binary embedding record: magic, header length, JSON header (fields but the vector), float32 bytes."""
    arr = np.ascontiguousarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValidationError("an embedding vector must be a non-empty 1-D sequence of numbers")
    if not np.isfinite(arr).all():
        raise ValidationError("an embedding vector must not contain NaN or infinite values")
    header = encode(fields)
    return _HEADER.pack(EMBEDDING_MAGIC, len(header)) + header + arr.tobytes()


def split_embedding(data: bytes | memoryview) -> tuple[dict[str, Any], np.ndarray]:
    """(header fields, float32 vector) of a binary embedding record; the vector is a copy."""
    magic, hlen = _HEADER.unpack_from(data, 0)
    if magic != EMBEDDING_MAGIC:
        raise ValidationError("not an embedding record")
    start = _HEADER.size
    header = orjson.loads(bytes(data[start : start + hlen]))
    vec = np.frombuffer(bytes(data[start + hlen :]), dtype=np.float32)
    return header, vec


def decode_embedding(data: bytes | memoryview) -> dict[str, Any]:
    """The embedding's `to_dict()` form: header fields with `vector` as a list of floats, in field order."""
    header, vec = split_embedding(data)
    out: dict[str, Any] = {}
    for k, v in header.items():
        out[k] = v
        if k == "id":
            out["vector"] = vec.tolist()
    if "vector" not in out:
        out["vector"] = vec.tolist()
    return out
