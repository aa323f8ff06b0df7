"""Codec: orjson round trips, NaN rejected, embeddings as raw float32."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.errors import ValidationError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip(value):
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize(
    "bad", [math.nan, [1.0, math.inf], {"a": {"b": -math.inf}}, np.array([1.0, np.nan]), np.float32("nan")]
)
def test_non_finite_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        codec.encode(bad)


@pytest.mark.parametrize("bad", [object(), {1: "int key"}, {"s": {1, 2}}])
def test_unserialisable_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        codec.encode(bad)


def test_numpy_values_serialise():
    assert codec.decode(codec.encode({"a": np.arange(3), "b": np.float64(1.5)})) == {"a": [0, 1, 2], "b": 1.5}


def test_embedding_is_stored_as_raw_float32():
    vec = np.linspace(-1, 1, 384, dtype=np.float32)
    blob = codec.encode_embedding({"id": "e1", "metadata": {"k": 1}, "source_type": "code"}, vec)
    assert blob.startswith(codec.EMBEDDING_MAGIC)
    assert vec.tobytes() in blob
    assert len(blob) < 384 * 4 + 100
    header, back = codec.split_embedding(blob)
    assert header == {"id": "e1", "metadata": {"k": 1}, "source_type": "code"}
    assert np.array_equal(back, vec)
    d = codec.decode(blob)
    assert list(d) == ["id", "vector", "metadata", "source_type"]
    assert d["vector"] == vec.tolist()


@pytest.mark.parametrize("bad", [[], [[1.0]], [1.0, float("nan")], "abc"])
def test_bad_embedding_vectors_are_rejected(bad):
    with pytest.raises((ValidationError, ValueError)):
        codec.encode_embedding({"id": "x"}, bad)
