"""engine._rowdecode against orjson and the reference column path of engine.columns.

The scanner may defer any row to orjson, but a row it reads must be JSON that orjson reads the same
way: differential tests over generated documents (several serialisations, duplicate keys, every
number shape) and over corrupted ones (a scanner that accepts what orjson rejects fails them), plus
a check that ordinary rows do take the fast path. Then whole column builds, native against the
reference, value for value."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import _rowdecode as rd
from engine import columns as cols
from engine.columns import ColumnCache, _StreamState, schema_for
from engine.local import LocalStore

FIELDS = ("timestamp", "action_type", "reward", "count", "flag", "nested")
KEYS = st.sampled_from([*FIELDS, "x", "other", "ключ", 'q"uote', "tab\t", ""]) | st.text(max_size=4)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e6, max_value=1e6).map(lambda f: round(f, 3))
    | st.text(max_size=12)
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
documents = st.dictionaries(KEYS, values, max_size=7)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same type; floats bit for bit (so -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


def _expected(doc: Any) -> tuple[Any, ...]:
    return tuple(rd.NESTED if isinstance(doc.get(f), (dict, list)) else doc.get(f) for f in FIELDS)


def _agree(got: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    return all(_same(g, w) or (g is rd.NESTED and w is rd.NESTED) for g, w in zip(got, want, strict=True))


def _check(text: bytes) -> bool:
    """scan_fields agrees with orjson on `text`; True when the scanner read it itself."""
    got = rd.scan_fields(text, FIELDS)
    if got is None:
        return False
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        pytest.fail(f"the scanner read {text!r}, which orjson rejects")
    assert isinstance(doc, dict), text
    want = _expected(doc)
    assert _agree(got, want), (text, got, want)
    return True


def _serialisations(doc: dict[str, Any], style: int) -> bytes:
    if style == 0:
        try:
            return orjson.dumps(doc)
        except TypeError:  # ints past 64 bits
            return json.dumps(doc).encode()
    if style == 1:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    if style == 2:
        return json.dumps(doc, indent=1).encode()
    # duplicate keys: every member twice, the second copy wins in orjson's dict
    members = [json.dumps(k) + " : " + json.dumps(v) for k, v in doc.items()]
    rev = [json.dumps(k) + ":" + json.dumps(v) for k, v in reversed(list(doc.items()))]
    return ("\t{ " + ", ".join(rev + members) + " }\r\n").encode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(0, 3))
def test_scanner_agrees_with_orjson(doc: dict[str, Any], style: int) -> None:
    _check(_serialisations(doc, style))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(0, 3), st.data())
def test_scanner_never_reads_what_orjson_rejects(doc: dict[str, Any], style: int, data: Any) -> None:
    text = bytearray(_serialisations(doc, style))
    assume(text)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate", "append"]))
        byte = data.draw(st.sampled_from(list(b'{}[]",:0123456789.eE+-tfnul \\\x00\x7f\xc3\xff')))
        if op == "replace" and at < len(text):
            text[at] = byte
        elif op == "insert":
            text.insert(at, byte)
        elif op == "delete" and at < len(text):
            del text[at]
        elif op == "truncate":
            del text[at:]
        else:
            text.append(byte)
    _check(bytes(text))


NUMBERS = [
    "0", "-0", "7", "-7", "123456789012345678", "-123456789012345678", "1234567890123456789",
    "18446744073709551616", "0.0", "-0.0", "0.1", "0.30000000000000004", "1.5", "-2.25", "1e22",
    "1e23", "1E5", "1e+5", "1e-5", "2.5e-3", "9007199254740993", "9007199254740993.0",
    "1700000000.123456", "0.5598136790149003", "0.35379132951924075", "1.7976931348623157e308",
    "1.7976931348623159e308", "1e309", "-1e309", "4.9e-324", "2.4e-324", "1e-400", "-1e-400",
    "2.2250738585072011e-308", "123.456e-7", "0.000000000000000000000000000001", "1" * 63 + ".5",
    "1" * 64, "00", "01", "1.", ".5", "+1", "1e", "1e+", "-", "--1", "0x10", "1.5e3.2", "NaN",
    "Infinity",
]  # fmt: skip


@pytest.mark.parametrize("number", NUMBERS)
def test_number_shapes(number: str) -> None:
    for text in (f'{{"reward": {number}}}', f'{{"count":{number} }}', f'{{"x":[{number}],"reward":1}}'):
        _check(text.encode())


def test_plain_rows_take_the_fast_path() -> None:
    row = {
        "timestamp": 1700000000.25,
        "action_type": "code_edit",
        "reward": 0.5598136790149003,
        "count": 3,
        "flag": True,
        "nested": {"files": ["a.py"], "n": [1, 2.5e-7, None, False]},
        "other": "text with spaces",
    }
    assert _check(orjson.dumps(row))
    assert _check(json.dumps(row, indent=2).encode())
    for deferred in (
        {**row, "other": "caf\u00e9"},  # non-ASCII: orjson decides
        {**row, "other": 'say "hi"'},  # an escape
        {**row, "count": 2**70},  # an int past 64 bits
    ):
        text = json.dumps(deferred, ensure_ascii=False).encode()
        assert rd.scan_fields(text, FIELDS) is None
        assert orjson.loads(text)  # still a row orjson reads: the column build asks it
    assert rd.scan_fields(b"[1, 2]", FIELDS) is None
    assert rd.scan_fields(b'{"a": 1} x', FIELDS) is None
    assert rd.scan_fields(b"{" * 100 + b"}" * 100, FIELDS) is None  # deeper than the scanner goes


def test_decode_rows_checks_its_arguments() -> None:
    arrays = [np.empty(4, np.float64)]
    with pytest.raises(ValueError, match="same length"):
        rd.decode_rows(None, 4, orjson.loads, ValueError, ("a", "b"), bytes([0]), arrays, [None], [None])
    with pytest.raises(ValueError, match="want int64"):
        rd.decode_rows(None, 4, orjson.loads, ValueError, ("a",), bytes([1]), arrays, [None], [None])
    with pytest.raises(ValueError, match="length >= 8"):
        rd.decode_rows(None, 8, orjson.loads, ValueError, ("a",), bytes([0]), arrays, [None], [None])
    with pytest.raises(ValueError, match="coded"):
        codes = [np.empty(4, np.int32)]
        rd.decode_rows(None, 4, orjson.loads, ValueError, ("a",), bytes([2]), codes, [None], [None])


# ---------------------------------------------------------------------- whole column builds
def _rows_for_build() -> list[bytes]:
    base = {
        "action_type": "code_edit",
        "environment": "dev",
        "reward": 0.25,
        "confidence": 0.5,
        "execution_time": 1.0,
        "timestamp": 1.7e9,
        "context_hash": None,
    }
    out: list[bytes] = []
    kinds = ["plain", "escape", "unicode", "bigint", "bool", "str-number", "nested", "missing"]
    for i in range(3000):
        row: dict[str, Any] = {**base, "timestamp": 1.7e9 + i * 0.37, "reward": (i % 97) / 7}
        kind = kinds[i % len(kinds)]
        if kind == "escape":
            row["action_type"] = f'type "{i % 5}"'
        elif kind == "unicode":
            row["environment"] = f"env-\u00e9{i % 3}"
        elif kind == "bigint":
            row["execution_time"] = 2**70 + i
        elif kind == "bool":
            row["reward"], row["confidence"] = True, False
        elif kind == "str-number":
            row["reward"] = "0.5"
        elif kind == "nested":
            row["confidence"] = {"v": 1}
            row["action_type"] = ["a"]
        elif kind == "missing":
            row = {"unrelated": i}
        out.append(json.dumps(row).encode())
        if i % 500 == 0:
            out.append(b"not json at all")
        if i % 700 == 0:
            out.append(b"[1, 2, 3]")
    return out


def _same_columns(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for field in a:
        assert a[field].dtype == b[field].dtype, field
        assert a[field].tobytes() == b[field].tobytes(), field  # NaN and -0.0 bit for bit


def test_native_build_matches_the_reference(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "s", durable=False)
    try:
        rows = _rows_for_build()
        with store.write() as b:
            for row in rows:
                store.append(b, "rl_actions", row)
        native = ColumnCache(store, page_rows=333).get("rl_actions")
        monkeypatch.setattr(cols, "_rowdecode", None)  # the ENGINE_PURE=1 path
        reference = ColumnCache(store, page_rows=333).get("rl_actions")
    finally:
        store.close()
    assert native.n == reference.n == len(rows)
    schema = schema_for("rl_actions").columns
    _same_columns({f: native.column(f) for f in schema}, {f: reference.column(f) for f in schema})
    for f, kind in schema.items():
        assert native.categories(f) == reference.categories(f), f
        if kind in (cols.FLOAT, cols.CODE):
            n, r = native.narrow(f), reference.narrow(f)
            assert (n is None) == (r is None) and (n is None or n.tobytes() == r.tobytes()), f
        if kind == cols.FLOAT:
            assert all(
                a.tobytes() == b.tobytes() for a, b in zip(native.zones(f), reference.zones(f), strict=True)
            )
    assert len(native.categories("action_type")) > 5  # escaped and non-ASCII strings got codes too


def test_native_page_fills_missing_rows_past_the_stream(tmp_path: Any) -> None:
    store = LocalStore(tmp_path / "s", durable=False)
    try:
        with store.write() as b:
            for i in range(5):
                store.append(b, "rl_actions", orjson.dumps({"reward": i, "action_type": "a"}))
        state = _StreamState(schema_for("rl_actions"))
        state.decode_page(store, "rl_actions", 3, 4)  # rows 3, 4 exist; 5, 6 do not
        snap = state.take_snapshot()
    finally:
        store.close()
    assert snap.n == 4
    assert snap.column("reward")[:2].tolist() == [3.0, 4.0]
    assert np.isnan(snap.column("reward")[2:]).all()
    assert snap.column("action_type")[2:].tolist() == [cols.MISSING_CODE] * 2
